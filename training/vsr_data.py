"""Training data for VSR (`--dataset vsr`): one image + caption rows -> TRL prompt/completion examples.

The NLVR2 path (`training.data`) reads two images per row; VSR rows hold one image referenced by
file name (or embedded). The pieces that matter are shared, so nothing about prompts or lengths can
drift: rows become model input only through `vlm_datasets.prompts.build_inputs`, and the same
`LengthGuard` (exact lengths, skip-and-count or refuse, never truncate) admits each example. VSR's
annotations are small (~10k rows), so they are held as a map-style dataset of light rows (a caption,
a label, an image path or bytes) whose images are decoded per batch; both data modes read the same.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from utils.errors import VLMStudiesError
from vlm_datasets.nlvr2 import decode_image, BadRow
from vlm_datasets.prompts import build_inputs, get_template
from vlm_datasets.vsr import load_vsr, row_image, VSRExample
from training.data import LengthGuard, TrainData, header_size


def _guard_class():
    """`training.data.LengthGuard` measuring one-image prompts (it builds NLVR2's two-image prompt itself)."""

    class OneImageGuard(LengthGuard):
        def text_tokens(self, sentence: str, label: bool, n_images: int = 1) -> tuple[int, int]:
            key = (sentence, bool(label), n_images)
            if key not in self._text_cache:
                from trl.data_utils import apply_chat_template, prepare_multimodal_messages

                # rendered exactly as TRL's collator renders it (no dependence on the NLVR2 guard's text cache)
                ex = build_inputs(VSRExample("len", sentence, bool(label), None), self.template)
                texts = apply_chat_template({"prompt": prepare_multimodal_messages(ex["prompt"], images=ex["images"]),
                                             "completion": prepare_multimodal_messages(ex["completion"])},
                                            self.processor)
                prompt_text, completion_text = texts["prompt"], texts["completion"]
                tok = self.processor.tokenizer
                prompt = tok(prompt_text, add_special_tokens=False)["input_ids"]
                completion = tok(completion_text, add_special_tokens=False)["input_ids"]
                n_pad = sum(1 for t in prompt if t == self.image_pad_id)
                self._text_cache[key] = (len(prompt) - n_pad, len(completion))
            return self._text_cache[key]

    return OneImageGuard


class _VSRTransform:
    def __init__(self, split: str, template: str, min_pixels: int | None = None, max_pixels: int | None = None):
        self.split, self.template = split, template
        self.min_pixels, self.max_pixels = min_pixels, max_pixels  # the processor's: large images decode small

    def __call__(self, batch: dict) -> dict:
        out = {"images": [], "prompt": [], "completion": []}
        for uid, caption, label, path, data in zip(batch["uid"], batch["caption"], batch["label"], batch["path"],
                                                   batch["bytes"]):
            try:  # `path` is a file the image finder found in the image folders, never a path from the row
                image = decode_image(data if data is not None else Path(path).read_bytes(),
                                     min_pixels=self.min_pixels, max_pixels=self.max_pixels)
            except (ValueError, OSError) as exc:
                raise VLMStudiesError(f"training row {uid} cannot be read ({exc})") from None
            ex = build_inputs(VSRExample(uid, caption, label, image), self.template)
            for k in out:
                out[k].append(ex[k])
        return out


def load_vsr_train_data(data_opts, processor, max_length: int | None, seed: int, root=None):
    """A `training.data.TrainData` over a VSR split, length-guarded like the NLVR2 path."""
    import datasets


    t = get_template(data_opts.template)
    if t.picture_ids:
        raise VLMStudiesError(f"template {t.tag} speaks of two pictures; VSR has one image: use tf or terse")
    if data_opts.families:
        raise VLMStudiesError("--families selects synthetic NLVR2 statement families; VSR has none (drop it)")
    split = load_vsr(data_opts.source, data_opts.split, data_opts.mode, root=root, limit=data_opts.train_limit)
    guard = _guard_class()(processor, t.name, max_length, data_opts.overlong)
    rows = {"uid": [], "caption": [], "label": [], "path": [], "bytes": []}
    relations, bad = Counter(), []
    for uid, row in split.raw_rows():
        split.check_images(row)
        try:
            ref = row_image(row, split.finder)
            from vlm_datasets.nlvr2 import image_bytes, normalise_label

            data = image_bytes(ref) if not isinstance(ref, str) else None
            size = header_size(data if data is not None else Path(ref).read_bytes())
            label = normalise_label(row.get("label"))
            caption = row.get("caption")
            if not isinstance(caption, str) or not caption.strip():
                raise BadRow(uid, "missing caption")
        except FileNotFoundError as exc:
            bad.append((uid, f"image {exc.args[0]} not found"))
            continue
        except (ValueError, BadRow) as exc:
            bad.append((uid, str(exc)))
            continue
        if guard.admit(uid, caption.strip(), label, [size]):
            rows["uid"].append(uid)
            rows["caption"].append(caption.strip())
            rows["label"].append(label)
            rows["path"].append(ref if isinstance(ref, str) else None)
            rows["bytes"].append(data)
            relations[row.get("relation") or "all"] += 1
    if bad:
        print(f"[train] skipped {len(bad)} bad VSR row(s): {', '.join(u for u, _ in bad[:3])}", file=sys.stderr)
    guard.report(data_opts.split)
    if not rows["uid"]:
        raise VLMStudiesError(f"no training examples left in {split.src.source} [{data_opts.split}]; check --source "
                              f"and --max_length")
    ds = datasets.Dataset.from_dict(rows).with_transform(_VSRTransform(data_opts.split, t.name, guard.min_pixels,
                                                                       guard.max_pixels))
    return TrainData(ds, guard, split.info, len(rows["uid"]), relations)
