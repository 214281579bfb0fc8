"""Looking at examples: find them by uid (or draw them at random), describe them, export their raw images.

A `Sample` is an `Example` plus the raw row it came from, so the images can be written exactly as
stored (bytes, not re-encoded) and hashed, plus the other statements about the same image pair and
the other image pairs its sentence was shown with (the sentence's NLVR2 consistency group).
Used by `scripts/inspect_sample.py`, `scripts/sample_gallery.py` and the playground.
"""

from __future__ import annotations

import difflib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from utils.errors import VLMStudiesError
from utils.images import image_format, sha256_hex
from utils.io import atomic_write_text
from utils.paths import path_inside, safe_file_stem
from vlm_datasets.nlvr2 import image_bytes, normalise_label, parse_uid, row_uid, BadRow, COLUMN_ALIASES, Example
from vlm_datasets.parquet import DEFAULT_FIX, iter_rows, open_parquet, read_rows
from vlm_datasets.prompts import budget_record, count_visual_tokens

SIDES = ("left", "right")


@dataclass
class Sample:
    example: Example
    raw: dict  # the source row, images still encoded
    siblings: list[dict] = field(default_factory=list)  # other statements about this pair: {uid, sentence, label}
    same_sentence: list[dict] = field(default_factory=list)  # this sentence's other pairs (its consistency group)
    dataset_dir: Path | None = None  # where image paths in `raw` may be read from (the local source's folder)

    @property
    def uid(self) -> str:
        return self.example.uid

    def raw_image(self, side: str) -> bytes:
        """The image as stored in the source (its encoded bytes)."""
        for col in COLUMN_ALIASES[side]:
            if col in self.raw:
                try:
                    data = image_bytes(self.raw[col], self.dataset_dir)
                except ValueError as exc:
                    raise VLMStudiesError(f"{self.uid}: the {side} image cannot be read ({exc})") from None
                if data is not None:
                    return data
        raise VLMStudiesError(f"{self.uid}: no stored bytes for the {side} image")

    def raw_name(self, side: str) -> str | None:
        for col in COLUMN_ALIASES[side]:
            v = self.raw.get(col)
            if isinstance(v, dict) and v.get("path"):
                return str(v["path"])
        return None


def _row_label(row: dict):
    for col in COLUMN_ALIASES["label"]:
        if col in row:
            try:
                return normalise_label(row[col])
            except ValueError:
                return row[col]
    return None


def _row_sentence(row: dict) -> str | None:
    for col in COLUMN_ALIASES["sentence"]:
        if col in row:
            return row[col]
    return None


def _where(split) -> str:
    return f"{split.source_info.source} [{split.split}]"


def unknown_uids_error(missing: list[str], seen: list[str], split) -> VLMStudiesError:
    """One line naming each unknown uid with its closest existing uids (same wording as NLVR2Split.find)."""
    parts = []
    for uid in missing[:5]:
        close = difflib.get_close_matches(uid, seen, n=3, cutoff=0.5)
        parts.append(f"'{uid}'" + (f" (closest: {', '.join(close)})" if close else ""))
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    hint = f"; uids look like {seen[0]}" if seen and not any(difflib.get_close_matches(u, seen, n=1, cutoff=0.5)
                                                              for u in missing[:5]) else ""
    noun = "uid" if len(missing) == 1 else "uids"
    return VLMStudiesError(f"unknown {noun} {', '.join(parts)}{more} in {_where(split)}{hint}; check the uid and "
                           f"--source/--split")


def _to_sample(row: dict, split) -> Sample:
    try:
        return Sample(split.normalise(row), row, dataset_dir=split.dataset_dir)
    except BadRow as exc:
        raise VLMStudiesError(f"example {exc.uid} exists in {_where(split)} but cannot be read: {exc.reason}") from None


def _damage_advice(split) -> tuple[str, str]:
    """(what the files are, the fix) for errors about damaged parquet files behind `split`."""

    if split.cache is not None:
        return f"the cache {split.cache.path}", f"the cache is damaged: {split.cache._fix()}"
    return _where(split), DEFAULT_FIX


def _parquet_files(split) -> list | None:
    """The parquet files behind `split` when it is local or cached (and not cut by a limit), else None."""
    if split.limit is not None:
        return None
    if split.cache is not None:
        return [str(f) for f in split.cache.files]
    if split.source_info.kind == "local":
        return list(split.source_info.files)
    return None


def _light_scan(files, wanted: set, what: str, fix: str) -> tuple[list[dict], dict[str, dict]]:
    """`(rows with only uid/sentence/label, in split order; full rows of the wanted uids)`.

    Parquet stores columns apart, so the scan skips the image bytes: finding a uid and its pair's
    statements in a cached NLVR2 split reads megabytes instead of the whole split; the images are
    then read for the wanted rows only.
    """

    light, located = [], {}
    for f in files:
        names = open_parquet(f, what).schema_arrow.names
        uid_col, *rest = [next((c for c in COLUMN_ALIASES[k] if c in names), None) for k in ("uid", "sentence", "label")]
        cols = [uid_col] + [c for c in rest if c]
        if uid_col is None:
            raise VLMStudiesError(f"{f} has no identifier column (looked for {', '.join(COLUMN_ALIASES['uid'])})")
        for row in iter_rows([f], what, fix, columns=cols, batch_size=4096):
            light.append(row)
            if str(row[uid_col]) in wanted:
                located.setdefault(f, (uid_col, []))[1].append(row[uid_col])
    full: dict[str, dict] = {}
    for f, (uid_col, keys) in located.items():
        for row in read_rows(f, what, fix, filters=[(uid_col, "in", keys)]):
            full.setdefault(str(row[uid_col]), row)
    return light, full


def find_samples(split, uids: Iterable[str], with_siblings: bool = True) -> list[Sample]:
    """The samples for `uids`, in that order, read in one pass over `split` (an `NLVR2Split`).

    With `with_siblings` the whole split is scanned, since the statements about one pair need not
    sit together; without, a streamed split is read only until every uid was found. Local and
    cached splits scan only the text columns and read the images of the wanted rows alone.
    """
    uids = list(dict.fromkeys(uids))
    wanted = set(uids)
    # keyed by the parsed identifier (None for one that is not NLVR2's: such a row has no siblings)
    keys = {u: parse_uid(u) for u in uids}
    siblings: dict[str, list[dict]] = {k["pair_key"]: [] for k in keys.values() if k["pair_key"]} \
        if with_siblings else {}
    sentence_rows: dict[str, list[dict]] = {k["consistency_group"]: [] for k in keys.values()
                                            if k["consistency_group"]} if with_siblings else {}
    seen = []
    files = _parquet_files(split)
    rows, found = _light_scan(files, wanted, *_damage_advice(split)) if files is not None else (split.raw_rows(), {})
    for row in rows:
        uid = row_uid(row)
        seen.append(uid)
        if uid in wanted and uid not in found:
            found[uid] = row
        parsed = parse_uid(uid)
        if parsed["pair_key"] in siblings or parsed["consistency_group"] in sentence_rows:
            item = {"uid": uid, "sentence": _row_sentence(row), "label": _row_label(row)}
            if parsed["pair_key"] in siblings:
                siblings[parsed["pair_key"]].append(item)
            if parsed["consistency_group"] in sentence_rows:
                sentence_rows[parsed["consistency_group"]].append(item)
        if not with_siblings and len(found) == len(wanted):
            break
    missing = [u for u in uids if u not in found]
    if missing:
        raise unknown_uids_error(missing, seen, split)
    out = []
    for uid in uids:
        s = _to_sample(found[uid], split)
        s.siblings = [d for d in siblings.get(keys[uid]["pair_key"], []) if d["uid"] != uid]
        s.same_sentence = [d for d in sentence_rows.get(keys[uid]["consistency_group"], []) if d["uid"] != uid]
        out.append(s)
    return out


def random_samples(split, n: int, seed: int) -> list[Sample]:
    """`n` examples drawn uniformly without replacement, in split order; same seed and split, same draw.

    One pass (reservoir sampling), so it works on a streaming Hub split of unknown length and holds
    only `n` rows in memory.
    """
    if n < 1:
        raise VLMStudiesError(f"--random must be at least 1 (got {n})")
    rng = random.Random(seed)
    chosen: list[tuple[int, dict]] = []
    i = -1
    for i, row in enumerate(split.raw_rows()):
        if i < n:
            chosen.append((i, row))
        else:
            j = rng.randint(0, i)
            if j < n:
                chosen[j] = (i, row)
    if i < 0:
        raise VLMStudiesError(f"{_where(split)} has no rows")
    return [_to_sample(row, split) for _, row in sorted(chosen, key=lambda t: t[0])]


# ---------------------------------------------------------------------- description

def pixel_limits(min_pixels: int | None = None, max_pixels: int | None = None, processor=None,
                 model: str | None = None) -> dict:
    """The resize bounds that decide visual tokens: the flags, else the lab's budget (what a run uses,
    `vlm_datasets.prompts.pixel_budget`); a `processor` (of `model`, for the record) supplies only its patch
    and merge sizes."""

    budget = budget_record(min_pixels, max_pixels, given_by="flags")
    limits = {"min_pixels": budget["min_pixels"], "max_pixels": budget["max_pixels"], "patch_size": 14,
              "merge_size": 2, "from": budget["from"]}
    if processor is not None:
        ip = processor.image_processor
        limits.update(patch_size=int(getattr(ip, "patch_size", 14) or 14),
                      merge_size=int(getattr(ip, "merge_size", 2) or 2))
        limits["from"] += f"; patches of {model or 'the model'}'s processor"
    return limits


def describe(sample: Sample, limits: dict | None = None) -> dict:
    """Everything known about one sample, as plain data (JSON-serialisable)."""

    limits = limits or pixel_limits()
    ex = sample.example
    m = ex.meta
    images = []
    for side, img in zip(SIDES, ex.images):
        data = sample.raw_image(side)
        w, h = m.get(f"{side}_size") or img.size  # as stored (a very large image is decoded smaller)
        images.append({"side": side, "width": w, "height": h, "url": m.get(f"{side}_url"),
                       "stored_as": sample.raw_name(side), "format": image_format(data, sample.raw_name(side)),
                       "bytes": len(data), "sha256": sha256_hex(data),
                       "visual_tokens": count_visual_tokens(w, h, limits["min_pixels"], limits["max_pixels"],
                                                            limits["patch_size"], limits["merge_size"])})
    known = {"uid_split", "split", "set_id", "pair_id", "sentence_id", "pair_key", "consistency_group", "left_size",
             "right_size", "left_url", "right_url"}
    return {"uid": ex.uid, "split": m.get("split"), "sentence": ex.sentence, "label": ex.label,
            "set_id": m.get("set_id"), "pair_id": m.get("pair_id"), "sentence_id": m.get("sentence_id"),
            "pair_key": m.get("pair_key"), "consistency_group": m.get("consistency_group"),
            "extra": {k: v for k, v in m.items() if k not in known},
            "images": images, "visual_tokens_total": sum(i["visual_tokens"] for i in images),
            "pixel_limits": limits, "same_pair": sample.siblings, "same_sentence": sample.same_sentence}


def format_description(d: dict) -> str:
    lim = d["pixel_limits"]
    lines = [f"uid        {d['uid']}", f"split      {d['split']}", f"sentence   {d['sentence']}",
             f"label      {d['label']}", f"set / pair {d['set_id']} / pair {d['pair_id']} (sentence {d['sentence_id']}, "
             f"pair key {d['pair_key']}, consistency group {d['consistency_group']})"]
    for k, v in d["extra"].items():
        lines.append(f"{k:<10} {v}")
    lines.append(f"images     (visual tokens at min_pixels {lim['min_pixels']}, max_pixels {lim['max_pixels']}; "
                 f"{lim['from']})")
    for im in d["images"]:
        lines.append(f"  {im['side']:<5} {im['width']}x{im['height']} {im['format']} {im['bytes']} B  "
                     f"{im['visual_tokens']} visual tokens  url {im['url'] or '-'}  sha256 {im['sha256'][:16]}")
    lines.append(f"  total {d['visual_tokens_total']} visual tokens")
    if d["same_pair"]:
        lines.append(f"same image pair, {len(d['same_pair'])} other statement(s):")
        for s in d["same_pair"]:
            lines.append(f"  {s['uid']:<20} {str(s['label']):<5} {s['sentence']}")
    else:
        lines.append("same image pair: no other statements in this split")
    if d["same_sentence"]:
        lines.append(f"same sentence (its NLVR2 consistency group), {len(d['same_sentence'])} other image pair(s):")
        for s in d["same_sentence"]:
            lines.append(f"  {s['uid']:<20} {str(s['label']):<5}")
    else:
        lines.append("same sentence: shown with no other image pair in this split")
    return "\n".join(lines)


def export_raw_images(sample: Sample, out_dir: str | os.PathLike) -> list[dict]:
    """Write both images exactly as stored to `out_dir/<uid>-<side>.<ext>`, and `SHA256SUMS` beside them.

    The uid is made a safe file name first (`utils.paths.safe_file_stem`: a uid with `/`, `..` or other
    characters a file name cannot hold gets them replaced and a short hash appended).
    A file already there with other bytes (e.g. the same uid from another source) is an error, never
    overwritten.
    """
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VLMStudiesError(f"cannot use {out} as the export folder ({exc.strerror}); pass --export with a "
                              f"folder path") from None
    written = []
    for side in SIDES:
        data = sample.raw_image(side)
        # the uid comes from the data: made a plain file name, so `../../x` stays inside out_dir
        path = path_inside(out, f"{safe_file_stem(sample.uid)}-{side}.{image_format(data, sample.raw_name(side))}")
        digest = sha256_hex(data)
        if path.exists() and sha256_hex(path.read_bytes()) != digest:
            raise VLMStudiesError(f"{path} exists with different content; export to another folder (--export DIR)")
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        written.append({"side": side, "path": str(path), "sha256": digest, "bytes": len(data)})
    sums = out / "SHA256SUMS"
    lines = sums.read_text(encoding="utf-8").splitlines() if sums.is_file() else []
    names = {Path(w["path"]).name for w in written}
    lines = [ln for ln in lines if ln.split("  ", 1)[-1] not in names]
    lines += [f"{w['sha256']}  {Path(w['path']).name}" for w in written]  # `sha256sum -c SHA256SUMS` format
    atomic_write_text(sums, "\n".join(lines) + "\n")
    return written
