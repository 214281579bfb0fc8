"""Tiny model, processor format, prompts, the synthetic generator, the artifact root, and the data scripts."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from utils.errors import VLMStudiesError


# ----------------------------------------------------------------------------- tiny model

def test_tiny_model_reloads_with_identical_logits(tiny_model_dir, synthetic_dir, root):
    from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2VLForConditionalGeneration, \
        Qwen2VLProcessor

    from utils.tiny_model import build_tiny_qwen2vl
    from vlm_datasets import build_inputs, load_nlvr2
    from vlm_datasets.prompts import render_prompt

    model, processor = build_tiny_qwen2vl("tiny", seed=0)
    loaded = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    proc2 = AutoProcessor.from_pretrained(tiny_model_dir)
    assert type(loaded) is Qwen2VLForConditionalGeneration and type(proc2) is Qwen2VLProcessor
    ex = next(iter(load_nlvr2(str(synthetic_dir), "validation")))
    inputs = build_inputs(ex)
    text = render_prompt(processor, inputs)
    assert render_prompt(proc2, inputs) == text
    with torch.no_grad():
        a = model(**processor(text=[text], images=[inputs["images"]], return_tensors="pt")).logits
        b = loaded(**proc2(text=[text], images=[inputs["images"]], return_tensors="pt")).logits
    assert torch.equal(a, b)


def test_tiny_model_is_deterministic_in_seed():
    from utils.tiny_model import build_tiny_qwen2vl

    a, _ = build_tiny_qwen2vl("tiny", seed=0)
    b, _ = build_tiny_qwen2vl("tiny", seed=0)
    c, _ = build_tiny_qwen2vl("tiny", seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_processor_has_real_qwen2vl_format(tiny_model_and_processor):
    from utils.tiny_model import SPECIAL_TOKENS

    model, processor = tiny_model_and_processor
    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert len(set(ids)) == len(SPECIAL_TOKENS) and tok.unk_token_id not in ids[1:]
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.text_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
                                         tokenize=False, add_generation_prompt=True, add_vision_id=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "Picture 1: <|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<|im_start|>assistant\n")
    # each answer is a single token, as in Qwen's real vocabulary
    assert len(tok("True", add_special_tokens=False)["input_ids"]) == 1
    assert len(tok("False", add_special_tokens=False)["input_ids"]) == 1


def test_make_tiny_model_script(tmp_path, capsys):
    from scripts.make_tiny_model import main

    main(["--size", "small", "--out", str(tmp_path / "m"), "--seed", "3"])
    info = json.loads((tmp_path / "m" / "tiny_model_info.json").read_text(encoding="utf-8"))
    assert info["size"] == "small" and info["seed"] == 3 and info["spec"]["initializer_range"] == 0.1
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
            "chat_template.jinja"} <= {p.name for p in (tmp_path / "m").iterdir()}
    assert "parameters" in capsys.readouterr().out


# ----------------------------------------------------------------------------- prompts

@pytest.mark.parametrize("template", ["tf", "tf_picture_ids", "terse"])
def test_prompt_carries_both_images_visual_tokens_and_statement(tiny_model_and_processor, synthetic_dir, root,
                                                                 template):
    from vlm_datasets import build_inputs, load_nlvr2
    from vlm_datasets.prompts import count_visual_tokens, processor_pixel_limits, render_prompt

    _, processor = tiny_model_and_processor
    ex = next(iter(load_nlvr2(str(synthetic_dir), "validation")))
    ex.right = ex.right.resize((112, 84))  # different sizes: the count must follow each image
    inputs = build_inputs(ex, template)
    assert inputs["images"][0] is ex.left and inputs["images"][1] is ex.right
    assert inputs["completion"][0]["content"][0]["text"] == ("True" if ex.label else "False")
    text = render_prompt(processor, inputs)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 2 and ex.sentence in text
    if template == "tf_picture_ids":
        assert text.index("Picture 1: <|vision_start|>") < text.index("Picture 2: <|vision_start|>")
    enc = processor(text=[text], images=[inputs["images"]], return_tensors="pt")
    lo, hi = processor_pixel_limits(processor)
    expected = count_visual_tokens(*ex.left.size, lo, hi) + count_visual_tokens(*ex.right.size, lo, hi)
    n_image_tokens = int((enc["input_ids"] == processor.image_token_id).sum())
    assert n_image_tokens == expected == 4 + 12
    decoded = processor.tokenizer.decode(enc["input_ids"][0])
    assert ex.sentence in decoded


def test_unknown_template_is_clear():
    from vlm_datasets.prompts import get_template

    with pytest.raises(VLMStudiesError, match="did you mean tf"):
        get_template("tff")


def test_pixel_limits_change_visual_tokens(tiny_model_and_processor):
    from vlm_datasets.prompts import count_visual_tokens

    assert count_visual_tokens(1024, 768, 4 * 28 * 28, 16384 * 28 * 28) > count_visual_tokens(1024, 768, 4 * 784, 256 * 784)
    assert count_visual_tokens(1024, 768, 4 * 784, 256 * 784) <= 256


# ----------------------------------------------------------------------------- synthetic data

def _rows(folder, split):
    return [r for f in sorted(folder.glob(f"{split}-*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_synthetic_schema_ids_and_pairs(synthetic_dir):
    rows = _rows(synthetic_dir, "train")
    assert len(rows) == 64
    assert set(rows[0]) == {"identifier", "sentence", "label", "image0", "image1", "family", "template"}
    assert {r["label"] for r in rows} == {"True", "False"}
    assert all(r["identifier"].startswith("train-") and len(r["identifier"].split("-")) == 4 for r in rows)
    assert all(r["identifier"].startswith("dev-") for r in _rows(synthetic_dir, "validation"))
    assert len({r["identifier"] for r in rows}) == 64


def test_synthetic_has_nlvr2_structure(tmp_path):
    """NLVR2's structure (Setup/NOTES.md §5): a set's sentences are each shown with 3-4 of its four image
    pairs, a pair with every sentence that uses it, True and False pairs inside a sentence's group, and
    identifiers whose pair field is the only thing that differs within a group."""
    from vlm_datasets.synthetic import write_synthetic_nlvr2

    rows = _rows(write_synthetic_nlvr2(tmp_path / "s", {"validation": 400}, seed=3), "validation")
    assert len(rows) == 400
    groups, pairs = {}, {}
    for r in rows:
        split, set_no, pair, sentence = r["identifier"].split("-")
        assert split == "dev" and 0 <= int(pair) <= 3
        groups.setdefault(f"{split}-{set_no}--{sentence}", []).append(r)  # the official grouping
        pairs.setdefault(f"{split}-{set_no}-{pair}", []).append(r)
    for key, g in groups.items():
        assert len({r["sentence"] for r in g}) == 1, key  # one sentence per group
        assert len({r["family"] for r in g}) == 1
    sizes = Counter(len(g) for g in groups.values())
    assert set(sizes) - {1, 2} <= {3, 4} and sizes[3] + sizes[4] >= len(groups) - 1  # only the last set may be cut
    mixed = sum(len({r["label"] for r in g}) == 2 for g in groups.values())
    assert mixed >= len(groups) - 1  # True and False pairs inside (nearly) every sentence
    # a pair shown with several sentences is the same two images every time; different sentences
    shared = [p for p in pairs.values() if len(p) > 1]
    assert len(shared) > len(pairs) / 2
    for p in shared:
        assert len({(r["image0"]["bytes"], r["image1"]["bytes"]) for r in p}) == 1
        assert len({r["sentence"] for r in p}) == len(p)
    # one sentence's rows are contiguous, in pair order (as in NLVR2's files, a group reads as a block)
    order = [r["identifier"] for r in rows]
    for g in groups.values():
        idx = [order.index(r["identifier"]) for r in g]
        assert idx == list(range(idx[0], idx[0] + len(idx)))


def _red_present(png: bytes) -> bool:
    import io

    from PIL import Image

    from vlm_datasets.synthetic import COLORS

    arr = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    return bool((np.abs(arr.astype(int) - np.array(COLORS["red"])).sum(1) == 0).any())


def test_synthetic_grounding_labels_follow_the_pixels(tmp_path):
    """Grounding labels agree with the rendered image, read back from pixels alone."""
    from vlm_datasets.synthetic import write_synthetic_nlvr2

    out = write_synthetic_nlvr2(tmp_path / "g", {"train": 200}, seed=5, families=("grounding_left", "grounding_right"),
                                grounding_colors=("red",))
    rows = _rows(out, "train")
    assert {r["family"] for r in rows} == {"grounding_left", "grounding_right"}
    for r in rows:
        image = r["image0"] if r["family"] == "grounding_left" else r["image1"]
        assert _red_present(image["bytes"]) == (r["label"] == "True"), r["identifier"]


def test_synthetic_is_balanced_per_sentence_and_deterministic(tmp_path):
    from vlm_datasets.synthetic import write_synthetic_nlvr2

    a = write_synthetic_nlvr2(tmp_path / "a", {"train": 600}, seed=1)
    b = write_synthetic_nlvr2(tmp_path / "b", {"train": 600}, seed=1)
    c = write_synthetic_nlvr2(tmp_path / "c", {"train": 600}, seed=2)
    ra, rb, rc = _rows(a, "train"), _rows(b, "train"), _rows(c, "train")
    assert ra == rb and ra != rc
    counts = Counter((r["sentence"], r["label"]) for r in ra)
    for sentence in {r["sentence"] for r in ra}:
        assert abs(counts[(sentence, "True")] - counts[(sentence, "False")]) <= 1, sentence
    # and within every template: the text alone never gives the answer away (Setup/NOTES.md §4)
    per_template = Counter((r["template"], r["label"]) for r in ra)
    for t in {r["template"] for r in ra}:
        n_sentences = len({r["sentence"] for r in ra if r["template"] == t})
        assert abs(per_template[(t, "True")] - per_template[(t, "False")]) <= n_sentences, t
    fam = Counter(r["family"] for r in ra)
    assert len(fam) == 5 and min(fam.values()) > 0.12 * len(ra)  # families get comparable shares


def test_synthetic_family_selection_and_errors(tmp_path, capsys):
    from scripts.make_synthetic_nlvr2 import main
    from utils.cli import main_guard

    main(["--out", str(tmp_path / "s"), "--train", "20", "--validation", "10", "--test", "0", "--families", "count"])
    assert {r["family"] for r in _rows(tmp_path / "s", "train")} == {"count"}
    assert not list((tmp_path / "s").glob("test-*"))
    from vlm_datasets.synthetic import write_synthetic_nlvr2

    with pytest.raises(VLMStudiesError, match="unknown grounding colour"):
        write_synthetic_nlvr2(tmp_path / "x", {"train": 2}, grounding_colors=("pink",))
    assert main_guard(lambda _: write_synthetic_nlvr2(tmp_path / "y", {"train": 2}, families=("nope",))) == 2
    assert "unknown statement family" in capsys.readouterr().err
    assert main_guard(main, ["--out", str(tmp_path / "z"), "--train", "8", "--pairs-per-sentence", "3", "5"]) == 2
    assert "pairs_per_sentence [3, 5]: each must be 1-4" in capsys.readouterr().err
    assert main_guard(main, ["--out", str(tmp_path / "z"), "--train", "8", "--sentences-per-set", "0"]) == 2
    assert "sentences_per_set must be at least 1" in capsys.readouterr().err
    assert not list(tmp_path.glob("z*")) and not list(tmp_path.glob("y*"))  # refused before writing anything


# ----------------------------------------------------------------------------- root and scripts

def test_root_resolution(monkeypatch, tmp_path):
    import utils.paths as paths

    monkeypatch.setenv("VLM_STUDIES_ROOT", str(tmp_path / "r"))
    assert paths.get_root() == tmp_path / "r" and (tmp_path / "r").is_dir()
    assert paths.get_root(tmp_path / "flag") == tmp_path / "flag"  # --root beats the variable
    assert paths.subdir("logs/tb").is_dir()
    monkeypatch.setattr(paths, "DRIVE_MYDRIVE", tmp_path / "not-mounted" / "MyDrive")
    with pytest.raises(VLMStudiesError, match="Drive is not mounted"):
        paths.get_root("/content/drive/MyDrive/VLM_Studies_Files")
    monkeypatch.delenv("VLM_STUDIES_ROOT")
    assert paths.get_root(create=False) == paths.LOCAL_ROOT  # no Drive: a local folder
    monkeypatch.setattr(paths, "DRIVE_MYDRIVE", tmp_path)  # "mounted"
    assert paths.get_root(create=False) == paths.DRIVE_ROOT


def test_prepare_data_script_and_verify(root, synthetic_dir, capsys):
    from scripts.prepare_data import main
    from utils.cli import main_guard

    assert main_guard(main, ["--source", str(synthetic_dir), "--split", "validation", "--limit", "10"]) == 0
    assert "10 rows" in capsys.readouterr().out
    assert main_guard(main, ["--source", str(synthetic_dir), "--split", "validation", "--verify"]) == 0
    shard = next((root / "datasets").rglob("shard-00000.parquet"))
    shard.write_bytes(shard.read_bytes()[:-7] + b"xxxxxxx")
    assert main_guard(main, ["--source", str(synthetic_dir), "--split", "validation", "--verify"]) == 2
    assert "is damaged" in capsys.readouterr().err
    assert main_guard(main, ["--source", "pingzhili/nlvr2", "--split", "validation"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not load dataset 'pingzhili/nlvr2'") and err.count("\n") == 1


def test_show_data_script(root, capsys):
    from scripts.show_data import main

    main(["--source", "synthetic", "--model", "local:tiny", "--limit", "20"])
    out = capsys.readouterr().out
    assert "identical: True" in out and "<|im_start|>assistant" in out and "visual tokens" in out


def test_model_loading_errors(root):
    from utils.models import apply_adapter, load_model, load_processor

    with pytest.raises(VLMStudiesError, match="could not load model 'Qwen/Qwen2-VL-2B-Instruct'.*local:small"):
        load_model("Qwen/Qwen2-VL-2B-Instruct")
    with pytest.raises(VLMStudiesError, match="unknown local model"):
        load_processor("local:huge")
    with pytest.raises(VLMStudiesError, match="does not exist"):
        apply_adapter(None, root / "no-such-adapter")
    with pytest.raises(VLMStudiesError, match="not a LoRA adapter folder"):
        apply_adapter(None, root)


def test_peak_memory_works_without_posix_resource(monkeypatch):
    """Windows has no `resource` module: the psutil fallback must still give a figure."""
    import sys

    from utils.run_meta import peak_rss_mib

    linux = peak_rss_mib()
    assert linux is not None and linux > 10
    import psutil  # noqa: F401  (imported while the platform is still the real one)

    monkeypatch.setattr(sys, "platform", "win32")  # the Windows branch (psutil) on this machine
    monkeypatch.setitem(sys.modules, "resource", None)  # and `import resource` would fail there
    fallback = peak_rss_mib()
    assert fallback is not None and fallback > 10
