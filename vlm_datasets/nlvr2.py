"""NLVR2 loading: one entry, `load_nlvr2(source, split, mode)`, yielding normalised `Example`s.

`source` is a Hub id (default `pingzhili/nlvr2`), a local folder or parquet file in that schema,
or `synthetic` (the default synthetic set under the root, generated on first use). `mode` is
`streaming` (read the source as it comes) or `cached` (read manifest-checked local shards written
by `scripts/prepare_data.py`; see `vlm_datasets.cache`). Both modes pass the same raw rows through
the same normaliser, so they yield identical examples.

A bad row (corrupt or missing image, an image Qwen2-VL's processor refuses, an image path outside the
source's folder, unparseable label, no sentence) is reported with its uid and,
per `on_error`, skipped and counted (`skip`, the default; a summary is printed when iteration
ends) or raised (`raise`). It is never silently dropped.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from utils.errors import hub_error, VLMStudiesError
from utils.hub import go_offline_unless_reachable
from utils.images import decode_image_bytes, processor_size_problem, to_rgb
from utils.paths import path_inside

DEFAULT_SOURCE = "pingzhili/nlvr2"
SYNTHETIC = "synthetic"
MODES = ("streaming", "cached")
ON_ERROR = ("skip", "raise")

# Column names seen across NLVR2 copies, first match wins.
COLUMN_ALIASES = {
    "uid": ("identifier", "uid", "id"),
    "sentence": ("sentence", "text", "statement", "caption"),
    "label": ("label", "answer", "gt_value"),
    "left": ("image0", "left_image", "image_0", "img0", "left"),
    "right": ("image1", "right_image", "image_1", "img1", "right"),
    "left_url": ("left_url", "image0_url"),
    "right_url": ("right_url", "image1_url"),
}
IMAGE_KEYS = ("left", "right")


@dataclass
class Example:
    """One normalised NLVR2 example: a statement about a (left, right) image pair and its truth."""

    uid: str
    sentence: str
    label: bool
    left: Any  # PIL.Image.Image, RGB
    right: Any
    meta: dict = field(default_factory=dict)

    @property
    def images(self) -> list:
        return [self.left, self.right]


class BadRow(ValueError):
    """A row that cannot become an `Example`; `uid` names it."""

    def __init__(self, uid: str, reason: str):
        super().__init__(f"{uid}: {reason}")
        self.uid, self.reason = uid, reason


# NLVR2 identifiers, parsed here and nowhere else (Setup/NOTES.md §5).
#
#   <split>-<set>-<pair>-<sentence>      e.g. dev-850-0-0, train-10171-3-1, test1-0-1-0, test2-189-2-1
#
# split    train | dev | test1 (test-P) | test2 (test-U) in the NLVR2 release; the hub copy's split
#          names (train | validation | test) are accepted in this field too.
# set      the set of photographs the sentence was written for (digits);
# pair     which image pair of that set (digits): the images are <split>-<set>-<pair>-img0/img1.png;
# sentence which sentence of that set (digits). One sentence is shown with several (1-4) pairs of its
#          set, and one pair with several sentences.
#
# Consistency (NLVR2's nlvr2/eval/metrics.py) groups the rows of one sentence: it blanks the PAIR
# field, so dev-850-0-0, dev-850-1-0 and dev-850-3-0 all become the group dev-850--0. An identifier
# that does not follow the format gets no group: every consumer counts such a row as its own group.
UID_SPLITS = {"train": "train", "dev": "validation", "test1": "test", "test2": "test2",
              "validation": "validation", "test": "test"}  # split field -> the loader's split name
_UID = re.compile(r"(?P<split>" + "|".join(UID_SPLITS) + r")-(?P<set>\d+)-(?P<pair>\d+)-(?P<sentence>\d+)")


def parse_uid(uid: str) -> dict:
    """The parts of an NLVR2 identifier (format above); every value is None when `uid` does not follow it.

    `set_id` is `<split>-<set>`; `pair_key` (`<split>-<set>-<pair>`) names one image pair, shared by the
    sentences shown with it; `consistency_group` (`<split>-<set>--<sentence>`) is the official
    consistency group: one sentence with every pair it was shown with.
    """
    m = _UID.fullmatch(str(uid))
    if m is None:
        return {"uid_split": None, "set_id": None, "pair_id": None, "sentence_id": None, "pair_key": None,
                "consistency_group": None}
    split, set_no, pair, sentence = m.group("split", "set", "pair", "sentence")
    return {"uid_split": split, "set_id": f"{split}-{set_no}", "pair_id": pair, "sentence_id": sentence,
            "pair_key": f"{split}-{set_no}-{pair}", "consistency_group": f"{split}-{set_no}--{sentence}"}


def normalise_label(value: Any) -> bool:
    """bool, "True"/"true"/"FALSE" (any case, surrounding space ignored), or 0/1 -> bool; else ValueError."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if hasattr(value, "item"):  # numpy scalars
        return normalise_label(value.item())
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "1"):
            return True
        if v in ("false", "0"):
            return False
    raise ValueError(f"unparseable label {value!r} (expected bool, 'True'/'False' or 0/1)")


def image_bytes(value: Any, dataset_dir: str | os.PathLike | None = None) -> bytes | None:
    """Raw encoded bytes of an image given as `{bytes, path}`, raw bytes, a path, or a PIL image.

    A path stored in a row is data, not an instruction: it is read only inside `dataset_dir` (the
    local source's own folder; relative paths start there) and refused anywhere else, so a row cannot
    make the loader read `/etc/...`. Without a `dataset_dir` (a Hub or cached source) a path is
    refused too. ValueError says why; None means the row holds no image at all.
    """
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return bytes(value["bytes"])
        return _read_inside(value["path"], dataset_dir) if value.get("path") else None
    if isinstance(value, (str, os.PathLike)):
        return _read_inside(value, dataset_dir) if str(value) else None
    if hasattr(value, "save"):  # an already-decoded PIL image
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    return None


def _read_inside(path, dataset_dir) -> bytes:
    if dataset_dir is None:
        raise ValueError(f"image stored only as the path {str(path)!r}, and this source has no folder to read it "
                         f"from; store the image bytes in the dataset")
    try:
        target = path_inside(dataset_dir, str(path))
    except VLMStudiesError:
        raise ValueError(f"image path {str(path)!r} points outside the dataset folder {dataset_dir}; refused "
                         f"(paths in a dataset are read only inside its own folder)") from None
    if not target.is_file():
        raise ValueError(f"missing image: {str(path)!r} is not a file in {dataset_dir}")
    return target.read_bytes()


def decode_image(value: Any, dataset_dir=None, min_pixels: int | None = None, max_pixels: int | None = None):
    """Decode to an RGB PIL image; ValueError for missing or corrupt data (truncation included).

    `min_pixels` / `max_pixels`: the run's pixel budget (see `utils.images.decode_image_bytes`).
    """
    return _decode(value, dataset_dir, min_pixels, max_pixels)[0]


def _decode(value, dataset_dir, min_pixels, max_pixels):
    """`(RGB image, (width, height) as stored, upright)` through the one decoder, `utils.images`."""
    if hasattr(value, "convert") and hasattr(value, "size"):
        return to_rgb(value), value.size
    data = image_bytes(value, dataset_dir)
    if data is None:
        raise ValueError("missing image")
    return decode_image_bytes(data, min_pixels=min_pixels, max_pixels=max_pixels)


def row_uid(row: dict) -> str:
    """The identifier of a raw row, as a string ('<no identifier>' when it has none)."""
    _, uid = _pick(row, "uid")
    return str(uid) if uid is not None else "<no identifier>"


def _pick(row: dict, key: str):
    for name in COLUMN_ALIASES[key]:
        if name in row:
            return name, row[name]
    return None, None


REQUIRED = ("uid", "sentence", "label", "left", "right")


def check_columns(row: dict, where: str) -> None:
    """A source whose rows lack a column every example needs is refused as a whole (not row by row)."""
    missing = [k for k in REQUIRED if _pick(row, k)[0] is None]
    if missing:
        wanted = "; ".join(f"{k}: {' / '.join(COLUMN_ALIASES[k])}" for k in missing)
        raise VLMStudiesError(f"{where} has no column for {', '.join(missing)} (accepted names: {wanted}); its "
                              f"columns are {', '.join(map(str, row)) or 'none'}: rename them, or check --source")


def normalise_row(row: dict, split: str | None = None, dataset_dir=None, min_pixels: int | None = None,
                  max_pixels: int | None = None) -> Example:
    """Turn one raw row (any accepted schema variant) into an `Example`; `BadRow` if it cannot.

    `dataset_dir`: the only folder image paths in the row may be read from (None: none).
    `min_pixels` / `max_pixels`: the run's pixel budget for decoding. An image Qwen2-VL's processor
    would refuse (`utils.images.processor_size_problem`) makes the row bad here, before any batch.
    `meta["left_size"]` / `["right_size"]` are the images' sizes as stored (upright), even when a
    large one was decoded small.
    """
    _, uid = _pick(row, "uid")
    uid = str(uid) if uid is not None else "<no identifier>"
    _, sentence = _pick(row, "sentence")
    if not isinstance(sentence, str) or not sentence.strip():
        raise BadRow(uid, "missing sentence")
    lname, label = _pick(row, "label")
    if lname is None:
        raise BadRow(uid, "missing label")
    try:
        label = normalise_label(label)
    except ValueError as exc:
        raise BadRow(uid, str(exc)) from None
    images, sizes = {}, {}
    for key in IMAGE_KEYS:
        col, value = _pick(row, key)
        if col is None:
            raise BadRow(uid, f"missing {key} image column (looked for {', '.join(COLUMN_ALIASES[key])})")
        try:
            images[key], sizes[key] = _decode(value, dataset_dir, min_pixels, max_pixels)
        except ValueError as exc:
            raise BadRow(uid, f"{col}: {exc}") from None
        problem = processor_size_problem(*sizes[key])
        if problem:
            raise BadRow(uid, f"{col}: {problem}")
    meta = parse_uid(uid)
    meta.update(split=split or meta["uid_split"], left_size=sizes["left"], right_size=sizes["right"],
                left_url=_pick(row, "left_url")[1], right_url=_pick(row, "right_url")[1])
    used = {n for k in COLUMN_ALIASES for n in COLUMN_ALIASES[k]}
    for k, v in row.items():  # keep extra columns (e.g. the synthetic set's family/template)
        if k not in used and not isinstance(v, (bytes, dict)):
            meta[k] = v
    return Example(uid=uid, sentence=sentence.strip(), label=label, left=images["left"], right=images["right"],
                   meta=meta)


# ----------------------------------------------------------------------------- sources

@dataclass
class SourceInfo:
    """Where a split comes from: `kind` is hub or local; `files` are parquet files for local sources."""

    source: str
    kind: str
    split: str
    files: list[str] = field(default_factory=list)
    revision: str | None = None

    @property
    def folder(self) -> Path | None:
        """The local source's own folder: the only place image paths stored in its rows are read from."""
        if self.kind != "local":
            return None
        path = Path(self.source).expanduser()
        return path if path.is_dir() else path.parent

    @property
    def name(self) -> str:
        if self.kind == "hub":
            return self.source.replace("/", "__")
        base = Path(self.source).name or "local"
        return Path(base).stem if base.endswith(".parquet") else base

    def fingerprint(self) -> str:
        """Content hash of local files (name + bytes), or the Hub revision."""
        if self.kind == "hub":
            return self.revision or "main"
        h = hashlib.sha256()
        for f in self.files:
            h.update(Path(f).name.encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()[:16]


def _local_split_files(folder: Path, split: str) -> list[str]:
    aliases = {split, {"validation": "dev", "dev": "validation"}.get(split, split)}
    patterns = []
    for s in aliases:
        patterns += [f"{s}-*.parquet", f"{s}.parquet", f"{s}/*.parquet", f"data/{s}-*.parquet", f"data/{s}/*.parquet",
                     f"*/{s}-*.parquet"]
    for pat in patterns:
        files = sorted(glob.glob(str(folder / pat)))
        if files:
            return files
    return []


def resolve_source(source: str | None, split: str, root=None, revision: str | None = None) -> SourceInfo:
    """Decide what `source` names: the synthetic set, a local folder/file, or a Hub dataset."""
    source = source or DEFAULT_SOURCE
    if source == SYNTHETIC:
        from vlm_datasets.synthetic import ensure_default_synthetic

        source = str(ensure_default_synthetic(root))
    path = Path(source).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix != ".parquet":
                raise VLMStudiesError(f"source {path} is not a parquet file; give a folder of parquet splits, "
                                      f"a .parquet file, or a Hub dataset id")
            return SourceInfo(str(path), "local", split, [str(path)])
        files = _local_split_files(path, split)
        if not files:
            found = sorted({Path(f).name.split("-")[0] for f in glob.glob(str(path / "**/*.parquet"), recursive=True)})
            raise VLMStudiesError(f"no parquet files for split '{split}' in {path} (found splits: "
                                  f"{', '.join(found) or 'none'}); expected files named {split}-*.parquet")
        return SourceInfo(str(path), "local", split, files)
    looks_local = source.startswith((".", "/", "~", "\\")) or source.endswith(".parquet") or os.sep in source.strip("/") \
        and source.count("/") != 1
    if looks_local:
        raise VLMStudiesError(f"local source {source} does not exist; check the path, or give a Hub id such as "
                              f"{DEFAULT_SOURCE}, or 'synthetic'")
    go_offline_unless_reachable(f"dataset {source}")  # seconds, not minutes of retries, when the Hub is away
    return SourceInfo(source, "hub", split, revision=revision)


def _hint(source: str) -> str:
    return (f"Use a cached copy (`python scripts/prepare_data.py --source {source} --split SPLIT` on a machine with "
            f"network, then --mode cached), a local folder of parquet files (--source DIR), or --source synthetic")


def iter_raw_rows(info: SourceInfo) -> Iterator[dict]:
    """Raw rows of the split with images undecoded (`{bytes, path}`), straight from the source."""
    if info.kind == "local":
        yield from _iter_parquet(info.files, info.source)
        return
    import datasets

    try:
        ds = datasets.load_dataset(info.source, split=info.split, streaming=True, revision=info.revision)
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise VLMStudiesError(f"dataset '{info.source}' has no split '{info.split}' ({str(exc)[:160]})") from None
        raise hub_error("dataset", info.source, exc, _hint(info.source)) from None
    except Exception as exc:
        raise hub_error("dataset", info.source, exc, _hint(info.source)) from None
    # Undecoded images: a corrupt image becomes one bad row instead of crashing the stream.
    features = ds.features or {}
    for col, feat in features.items():
        if type(feat).__name__ == "Image":
            ds = ds.cast_column(col, datasets.Image(decode=False))
    try:
        yield from ds
    except VLMStudiesError:
        raise
    except Exception as exc:
        if info.kind == "hub":
            raise hub_error("dataset", info.source, exc, _hint(info.source)) from None
        raise VLMStudiesError(f"cannot read {info.source} split '{info.split}': {type(exc).__name__}: "
                              f"{str(exc)[:160]}") from None


def _iter_parquet(files, what: str, fix: str | None = None) -> Iterator[dict]:
    """Rows of local parquet files, read batch by batch (images stay encoded until normalised)."""
    from vlm_datasets.parquet import DEFAULT_FIX, iter_rows

    yield from iter_rows(files, what, fix or DEFAULT_FIX)


# ----------------------------------------------------------------------------- the loader

def iter_normalised(rows, normalise, on_error: str, where: str, bad: list, quiet: bool = False) -> Iterator:
    """`normalise(row)` for each raw row. A `BadRow` is raised as a one-line error (`on_error="raise"`)
    or appended to `bad` as `(uid, reason)` and counted, with a summary printed when the pass ends."""
    total = 0
    for row in rows:
        total += 1
        try:
            yield normalise(row)
        except BadRow as exc:
            if on_error == "raise":
                raise bad_row_error(where, exc) from None
            bad.append((exc.uid, exc.reason))
    if not quiet:
        report_bad_rows(bad, total, where)


def bad_row_error(where: str, exc: BadRow) -> VLMStudiesError:
    """The one-line error of a bad row under `on_error="raise"`."""
    return VLMStudiesError(f"bad row in {where} {exc.uid}: {exc.reason}; fix the source or load with on_error='skip'")


def report_bad_rows(bad: list, total: int, where: str) -> None:
    """The summary printed when a pass that skipped bad rows ends (nothing when there were none)."""
    if bad:
        shown = "; ".join(f"{u} ({r})" for u, r in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        print(f"[vlm_datasets] skipped {len(bad)} bad row(s) of {total} in {where}: {shown}{more}", file=sys.stderr)


class NLVR2Split:
    """An iterable over normalised `Example`s of one split; each pass re-reads the source lazily.

    `bad_rows` lists `(uid, reason)` for rows skipped in the last complete pass; `info` describes
    the source (and, in cached mode, the manifest and its hash) for run metadata.
    """

    def __init__(self, source: str | None, split: str, mode: str, root=None, on_error: str = "skip",
                 limit: int | None = None, verify_hashes: bool = False, revision: str | None = None,
                 quiet: bool = False, min_pixels: int | None = None, max_pixels: int | None = None):
        if mode not in MODES:
            raise VLMStudiesError(f"unknown mode '{mode}'; choose streaming or cached")
        if on_error not in ON_ERROR:
            raise VLMStudiesError(f"unknown on_error policy '{on_error}'; choose skip or raise")
        self.split, self.mode, self.on_error, self.limit, self.quiet = split, mode, on_error, limit, quiet
        self.min_pixels, self.max_pixels = min_pixels, max_pixels  # the run's pixel budget for decoding
        self.bad_rows: list[tuple[str, str]] = []
        self.source_info = resolve_source(source, split, root, revision)
        self.root = root
        self.cache = None
        if mode == "cached":
            from vlm_datasets.cache import open_cache

            self.cache = open_cache(self.source_info, root=root, verify_hashes=verify_hashes)

    @property
    def info(self) -> dict:
        d = {"source": self.source_info.source, "source_kind": self.source_info.kind, "split": self.split,
             "mode": self.mode, "limit": self.limit}
        if self.cache is not None:
            d.update(cache_dir=str(self.cache.path), manifest_sha256=self.cache.manifest_sha256,
                     revision=self.cache.manifest.get("revision"), fingerprint=self.cache.manifest.get("fingerprint"),
                     num_rows=self.cache.manifest.get("num_rows"))
        elif self.source_info.kind == "local":
            from vlm_datasets.cache import source_fingerprint

            d.update(fingerprint=source_fingerprint(self.source_info, self.root))  # remembered: not re-hashed
        else:
            d.update(revision=self.source_info.revision or "main")
        return d

    def __len__(self) -> int:
        n = self.num_rows()
        if n is None:
            raise TypeError("length unknown for a streaming Hub split; use --mode cached or --limit")
        return n

    def num_rows(self) -> int | None:
        """Rows in the split (before bad-row skipping), when known without reading it."""
        if self.cache is not None:
            n = self.cache.num_rows
        elif self.source_info.kind == "local":
            from vlm_datasets.parquet import num_rows

            n = num_rows(self.source_info.files, self.where)
        else:
            return self.limit
        return min(n, self.limit) if self.limit is not None else n

    @property
    def where(self) -> str:
        return f"{self.source_info.source} [{self.split}]"

    @property
    def dataset_dir(self) -> Path | None:
        """Where image paths in raw rows may be read from: the local source's folder (cached rows hold bytes)."""
        return self.source_info.folder if self.cache is None else None

    def normalise(self, row: dict) -> Example:
        """`normalise_row` with this split's name, folder and pixel budget; `BadRow` if it cannot."""
        return normalise_row(row, self.split, self.dataset_dir, self.min_pixels, self.max_pixels)

    def raw_rows(self) -> Iterator[dict]:
        rows = self.cache.iter_rows() if self.cache is not None else iter_raw_rows(self.source_info)
        for i, row in enumerate(rows):
            if self.limit is not None and i >= self.limit:
                return
            if i == 0:
                check_columns(row, self.where)
            yield row

    def __iter__(self) -> Iterator[Example]:
        self.bad_rows = []
        yield from iter_normalised(self.raw_rows(), self.normalise, self.on_error, self.where, self.bad_rows,
                                   self.quiet)

    # The row protocol `evals.feed` reads a split through (decoding in DataLoader workers): the raw items in
    # order, one item's column (a task filter tested before decoding), one item normalised (`BadRow` if it cannot).
    def raw_items(self) -> Iterator[dict]:
        return self.raw_rows()

    @staticmethod
    def item_column(row: dict, name: str):
        return row.get(name)

    def normalise_item(self, row: dict) -> Example:
        return self.normalise(row)

    def find(self, uid: str) -> Example:
        """The example with identifier `uid`; an unknown uid is an error naming the closest ones."""
        import difflib

        uids = []
        for row in self.raw_rows():
            _, u = _pick(row, "uid")
            if str(u) == uid:
                try:
                    return self.normalise(row)
                except BadRow as exc:
                    raise VLMStudiesError(f"example {uid} exists but cannot be read: {exc.reason}") from None
            uids.append(str(u))
        close = difflib.get_close_matches(uid, uids, n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else f"; uids look like {uids[0]}" if uids else ""
        raise VLMStudiesError(f"unknown uid '{uid}' in {self.source_info.source} [{self.split}]{hint}")


def load_nlvr2(source: str | None = DEFAULT_SOURCE, split: str = "validation", mode: str = "streaming", *,
               root=None, on_error: str = "skip", limit: int | None = None, verify_hashes: bool = False,
               revision: str | None = None, quiet: bool = False, min_pixels: int | None = None,
               max_pixels: int | None = None) -> NLVR2Split:
    """Open one NLVR2 split. Iterate the result for `Example`s; see the module docstring.

    `min_pixels` / `max_pixels`: the run's pixel budget (None: the Qwen2-VL processor's defaults). An
    image at least twice the processor's target size on both sides is decoded small and resized to that
    target here, so it costs the same visual tokens; give the budget the model's processor uses.
    """
    return NLVR2Split(source, split, mode, root=root, on_error=on_error, limit=limit, verify_hashes=verify_hashes,
                      revision=revision, quiet=quiet, min_pixels=min_pixels, max_pixels=max_pixels)
