"""Visual Spatial Reasoning (VSR, Liu et al. 2023): is a caption about the spatial relation of two
objects in ONE image true? `load_vsr(source, split)` yields `VSRExample`s.

The schema is the one of `cambridgeltl/vsr_random` / `vsr_zeroshot` (their `train/dev/test.jsonl`,
checked against the dataset's data README):

    {"image": "000000050403.jpg", "image_link": "http://images.cocodataset.org/train2017/000000050403.jpg",
     "caption": "The teddy bear is in front of the person.", "label": 1, "relation": "in front of",
     "annotator_id": 31, "vote_true_validator_id": [2, 6], "vote_false_validator_id": []}

`label` 1 = True, 0 = False. Rows carry no identifier, so the uid is `<split>-<row index>-<image
stem>` (rows keep their order in every copy, so uids are stable). Images are NOT in the rows: they
are COCO 2017 train/val pictures named by `image`. They are found, first match wins, in: the
`image_dir` argument, `$VSR_IMAGE_DIR`, `<local source>/images/`, `<local source>/`,
`<root>/datasets/coco/{trainval2017,train2017,val2017}/`, `<root>/datasets/vsr/images/`. A copy with the
image embedded (an `image` column of `{bytes, path}` or raw bytes, e.g. a parquet export) needs none.

`source` is a Hub id (`cambridgeltl/vsr_random`, split names train / validation / test), a local
folder holding `{split}.jsonl` (`dev.jsonl` for validation) or `{split}*.parquet`, one such file,
or `synthetic`: a small VSR-schema set of rendered shapes under the root (`vlm_datasets.synthetic_vsr`),
built on first use. Both data modes read the source directly (VSR's annotations are a few MB).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from utils.errors import hub_error, VLMStudiesError
from utils.hub import go_offline_unless_reachable
from utils.images import processor_size_problem
from utils.paths import get_root
from vlm_datasets.nlvr2 import _decode, iter_normalised, normalise_label, BadRow
from vlm_datasets.parquet import iter_rows, num_rows
from vlm_datasets.synthetic_vsr import ensure_default_synthetic_vsr

DEFAULT_SOURCE = "cambridgeltl/vsr_random"
SYNTHETIC = "synthetic"
IMAGE_DIR_ENV = "VSR_IMAGE_DIR"
SPLIT_ALIASES = {"validation": ("validation", "dev", "val"), "dev": ("dev", "validation", "val"),
                 "train": ("train",), "test": ("test",)}
COCO_HINT = ("VSR images are COCO 2017 train/val pictures (the rows hold only their file names): download "
             "http://images.cocodataset.org/zips/train2017.zip and val2017.zip (or only VSR's images, linked from "
             "github.com/cambridgeltl/visual-spatial-reasoning/tree/master/data), unzip them into one folder and set "
             f"${IMAGE_DIR_ENV} to it (or put them in <source folder>/images/ or <root>/datasets/coco/trainval2017/)")


@dataclass
class VSRExample:
    """One VSR example: a caption about one image and whether it is true."""

    uid: str
    sentence: str  # the caption; named like NLVR2's statement so prompts, records and slices share code
    label: bool
    image: Any  # PIL.Image.Image, RGB
    meta: dict = field(default_factory=dict)

    @property
    def images(self) -> list:
        return [self.image]


# ----------------------------------------------------------------------------- sources and images

@dataclass
class VSRSource:
    source: str
    kind: str  # hub | local
    split: str
    files: list[str] = field(default_factory=list)
    folder: Path | None = None

    def fingerprint(self) -> str:
        if self.kind == "hub":
            return "main"
        h = hashlib.sha256()
        for f in self.files:
            h.update(Path(f).name.encode())
            h.update(Path(f).read_bytes())
        return h.hexdigest()[:16]


def _split_files(folder: Path, split: str) -> list[str]:
    for name in SPLIT_ALIASES.get(split, (split,)):
        for pat in (f"{name}.jsonl", f"{name}.json", f"{name}-*.parquet", f"{name}.parquet", f"data/{name}-*.parquet",
                    f"*-{name}.parquet", f"{name}/*.parquet"):
            files = sorted(glob.glob(str(folder / pat)))
            if files:
                return files
    return []


def resolve_vsr_source(source: str | None, split: str, root=None) -> VSRSource:
    source = source or DEFAULT_SOURCE
    if source == SYNTHETIC:

        source = str(ensure_default_synthetic_vsr(root))
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix not in (".jsonl", ".json", ".parquet"):
            raise VLMStudiesError(f"VSR source {path} is not a .jsonl or .parquet file; give a folder in VSR's schema, "
                                  f"one of its files, or a Hub id such as {DEFAULT_SOURCE}")
        return VSRSource(str(path), "local", split, [str(path)], path.parent)
    if path.is_dir():
        files = _split_files(path, split)
        if not files:
            found = sorted({Path(f).name.split(".")[0].split("-")[0] for f in glob.glob(str(path / "*.jsonl"))
                            + glob.glob(str(path / "**/*.parquet"), recursive=True)})
            raise VLMStudiesError(f"no VSR file for split '{split}' in {path} (found: {', '.join(found) or 'none'}); "
                                  f"expected {split}.jsonl (dev.jsonl for validation) or {split}-*.parquet")
        return VSRSource(str(path), "local", split, files, path)
    if source.startswith((".", "/", "~")) or source.endswith((".jsonl", ".parquet")) or source.count("/") != 1:
        raise VLMStudiesError(f"VSR source {source} does not exist; check the path, or give a Hub id such as "
                              f"{DEFAULT_SOURCE}, or 'synthetic'")
    go_offline_unless_reachable(f"dataset {source}")  # seconds, not minutes of retries, when the Hub is away
    return VSRSource(source, "hub", split)


def image_dirs(src: VSRSource, root=None, image_dir=None) -> list[Path]:
    """Folders searched for images named by file, in order (see the module docstring)."""
    out = []
    for d in (image_dir, os.environ.get(IMAGE_DIR_ENV)):
        if d:
            out.append(Path(d).expanduser())
    if src.folder is not None:
        out += [src.folder / "images", src.folder]
    base = get_root(root, create=False) / "datasets"
    out += [base / "coco" / "trainval2017", base / "coco" / "train2017", base / "coco" / "val2017",
            base / "vsr" / "images"]
    seen, uniq = set(), []
    for d in out:
        if str(d) not in seen:
            seen.add(str(d))
            uniq.append(d)
    return uniq


class _ImageFinder:
    """Maps an image file name to its path in the first folder that has it (folders listed once, lazily)."""

    def __init__(self, dirs: list[Path]):
        self.dirs = [d for d in dirs if d.is_dir()]
        self.searched = dirs

    def find(self, name: str) -> Path | None:
        for d in self.dirs:
            p = d / name
            if p.is_file():
                return p
        return None


def _embedded(value) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview)) or (
        isinstance(value, dict) and value.get("bytes") is not None) or (hasattr(value, "size") and hasattr(value, "convert"))


def _image_name(row: dict) -> str | None:
    value = row.get("image")
    if isinstance(value, str):
        return Path(value).name
    if isinstance(value, dict) and value.get("path"):
        return Path(value["path"]).name
    link = row.get("image_link")
    return link.rsplit("/", 1)[-1] if isinstance(link, str) and link else None


def uid_of(split: str, index: int, row: dict) -> str:
    name = _image_name(row) or "noimage"
    return f"{split}-{index:05d}-{Path(name).stem}"


# ----------------------------------------------------------------------------- rows

def _iter_jsonl(path: str) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise VLMStudiesError(f"{path} line {i} is not valid JSON; VSR files hold one JSON object per "
                                      f"line") from None
            if not isinstance(row, dict):
                raise VLMStudiesError(f"{path} line {i} holds a JSON {type(row).__name__}, not an object; VSR files "
                                      f"hold one JSON object per line") from None
            yield row


def _iter_parquet(path: str) -> Iterator[dict]:

    yield from iter_rows([path], "a VSR source")


def iter_raw_rows(src: VSRSource) -> Iterator[dict]:
    """Raw rows in file order (images undecoded: a file name, or embedded bytes)."""
    if src.kind == "local":
        for f in src.files:
            yield from (_iter_parquet(f) if f.endswith(".parquet") else _iter_jsonl(f))
        return
    import datasets

    try:
        ds = datasets.load_dataset(src.source, split=src.split, streaming=True)
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise VLMStudiesError(f"dataset '{src.source}' has no split '{src.split}' (VSR's Hub copies have train, "
                                  f"validation and test)") from None
        raise hub_error("dataset", src.source, exc, _hint(src.source)) from None
    except Exception as exc:
        raise hub_error("dataset", src.source, exc, _hint(src.source)) from None
    for col, feat in (ds.features or {}).items():
        if type(feat).__name__ == "Image":
            ds = ds.cast_column(col, datasets.Image(decode=False))
    try:
        yield from ds
    except Exception as exc:
        raise hub_error("dataset", src.source, exc, _hint(src.source)) from None


def _hint(source: str) -> str:
    return (f"Download the VSR files on a machine with network (https://huggingface.co/datasets/{source}: "
            f"train.jsonl, dev.jsonl, test.jsonl) into a folder and pass --source FOLDER, or use --source synthetic")


def row_image(row: dict, finder: _ImageFinder):
    """The row's image as something `decode_image` reads (bytes or a path); ValueError if not found."""
    value = row.get("image")
    if _embedded(value):
        return value
    name = _image_name(row)
    if not name:
        raise ValueError("no image column")
    path = finder.find(name)
    if path is None:
        raise FileNotFoundError(name)
    return str(path)


def normalise_vsr_row(row: dict, uid: str, split: str, finder: _ImageFinder, min_pixels: int | None = None,
                      max_pixels: int | None = None) -> VSRExample:
    caption = row.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise BadRow(uid, "missing caption")
    if "label" not in row:
        raise BadRow(uid, "missing label")
    try:
        label = normalise_label(row["label"])
    except ValueError as exc:
        raise BadRow(uid, str(exc)) from None
    try:
        ref = row_image(row, finder)
    except FileNotFoundError as exc:
        raise BadRow(uid, f"image {exc.args[0]} not found") from None
    except ValueError as exc:
        raise BadRow(uid, str(exc)) from None
    try:
        if isinstance(ref, str):  # a file the finder found in the image folders (a name, never a path from the row)
            ref = Path(ref).read_bytes()
        image, size = _decode(ref, None, min_pixels, max_pixels)
    except (ValueError, OSError) as exc:
        raise BadRow(uid, f"image: {exc}") from None
    problem = processor_size_problem(*size)
    if problem:
        raise BadRow(uid, f"image: {problem}")
    meta = {"split": split, "image": _image_name(row), "image_link": row.get("image_link"),
            "relation": row.get("relation"), "image_size": size, "pair_key": None}
    for k in ("subj", "obj", "annotator_id", "family"):
        if row.get(k) is not None:
            meta[k] = row[k]
    return VSRExample(uid=uid, sentence=caption.strip(), label=label, image=image, meta=meta)


# ----------------------------------------------------------------------------- the loader

class VSRSplit:
    """An iterable over `VSRExample`s of one split (re-read lazily on every pass), like `NLVR2Split`."""

    def __init__(self, source: str | None, split: str, mode: str = "streaming", root=None, on_error: str = "skip",
                 limit: int | None = None, image_dir=None, quiet: bool = False, min_pixels: int | None = None,
                 max_pixels: int | None = None):
        if mode not in ("streaming", "cached"):
            raise VLMStudiesError(f"unknown mode '{mode}'; choose streaming or cached")
        if on_error not in ("skip", "raise"):
            raise VLMStudiesError(f"unknown on_error policy '{on_error}'; choose skip or raise")
        self.split, self.mode, self.on_error, self.limit, self.quiet = split, mode, on_error, limit, quiet
        self.min_pixels, self.max_pixels = min_pixels, max_pixels  # the run's pixel budget for decoding
        self.src = resolve_vsr_source(source, split, root)
        self.finder = _ImageFinder(image_dirs(self.src, root, image_dir))
        self.bad_rows: list[tuple[str, str]] = []
        self._checked = False

    @property
    def info(self) -> dict:
        d = {"source": self.src.source, "source_kind": self.src.kind, "split": self.split, "mode": self.mode,
             "limit": self.limit, "dataset": "vsr", "image_dirs": [str(p) for p in self.finder.dirs]}
        if self.src.kind == "local":
            d["fingerprint"] = self.src.fingerprint()
        else:
            d["revision"] = "main"
        return d

    def num_rows(self) -> int | None:
        if self.src.kind == "hub":
            return self.limit
        n = 0
        for f in self.src.files:
            if f.endswith(".parquet"):

                n += num_rows([f], f"{self.src.source} [{self.split}]")
            else:
                with open(f, encoding="utf-8") as fh:
                    n += sum(1 for line in fh if line.strip())
        return min(n, self.limit) if self.limit is not None else n

    def __len__(self) -> int:
        n = self.num_rows()
        if n is None:
            raise TypeError("length unknown for a Hub split; pass --limit")
        return n

    def raw_rows(self) -> Iterator[tuple[str, dict]]:
        """`(uid, raw row)` pairs in order."""
        for i, row in enumerate(iter_raw_rows(self.src)):
            if self.limit is not None and i >= self.limit:
                return
            yield uid_of(self.split, i, row), row

    def check_images(self, row: dict) -> None:
        """A first row whose image is nowhere to be found means the images were never fetched: say how."""
        if self._checked:
            return
        self._checked = True
        if _embedded(row.get("image")):
            return
        name = _image_name(row)
        if name and self.finder.find(name) is None:
            where = ", ".join(str(d) for d in self.finder.searched)
            raise VLMStudiesError(f"VSR image {name} (the first row of {self.src.source} [{self.split}]) is in none of "
                                  f"the image folders searched ({where}). {COCO_HINT}")

    @property
    def where(self) -> str:
        return f"{self.src.source} [{self.split}] (VSR)"

    def __iter__(self) -> Iterator[VSRExample]:
        self.bad_rows = []
        yield from iter_normalised(self.raw_rows(), self.normalise_item, self.on_error, self.where, self.bad_rows,
                                   self.quiet)

    # The row protocol of `evals.feed` (see `vlm_datasets.nlvr2.NLVR2Split.raw_items`).
    def raw_items(self) -> Iterator[tuple[str, dict]]:
        return self.raw_rows()

    @staticmethod
    def item_column(pair: tuple[str, dict], name: str):
        return pair[1].get(name)

    def normalise_item(self, pair: tuple[str, dict]) -> VSRExample:
        uid, row = pair
        self.check_images(row)
        return normalise_vsr_row(row, uid, self.split, self.finder, self.min_pixels, self.max_pixels)

    def find(self, uid: str) -> VSRExample:
        for u, row in self.raw_rows():
            if u == uid:
                return normalise_vsr_row(row, u, self.split, self.finder, self.min_pixels, self.max_pixels)
        raise VLMStudiesError(f"unknown uid '{uid}' in {self.src.source} [{self.split}]; VSR uids look like "
                              f"{self.split}-00000-<image stem>")


def load_vsr(source: str | None = DEFAULT_SOURCE, split: str = "validation", mode: str = "streaming", *, root=None,
             on_error: str = "skip", limit: int | None = None, image_dir=None, quiet: bool = False,
             min_pixels: int | None = None, max_pixels: int | None = None) -> VSRSplit:
    """Open one VSR split; iterate it for `VSRExample`s (see the module docstring; `min_pixels` /
    `max_pixels`: the run's pixel budget for decoding, as in `vlm_datasets.load_nlvr2`)."""
    return VSRSplit(source, split, mode, root=root, on_error=on_error, limit=limit, image_dir=image_dir, quiet=quiet,
                    min_pixels=min_pixels, max_pixels=max_pixels)
