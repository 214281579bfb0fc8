"""A gallery of image pairs: raw images, a captioned side-by-side composite per example, an index.html.

Galleries live in `<root>/analysis/gallery/<name>/`. A default name that is taken gets a numeric
suffix, and an explicit `--out` holding an earlier gallery is replaced only when asked (`--overwrite`),
so one gallery never silently replaces another; an `--out` holding anything else is always refused
(utils.io.output_dir: only folders this tool wrote are replaced). Files are written aside and renamed
at the end: an interrupted run leaves no half gallery under the real name.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from utils.errors import VLMStudiesError
from utils.images import compose_pair, image_format, sha256_hex
from utils.io import atomic_write_json, atomic_write_text, check_output_dir, files_match, output_dir, read_json_field
from utils.paths import path_inside, safe_file_stem, subdir

INDEX = "index.html"
MANIFEST = "gallery.json"
TOOL = "scripts/sample_gallery.py"  # named in each gallery's marker (utils.io.output_dir)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "gallery"


def gallery_dir(name: str, out: str | os.PathLike | None = None, overwrite: bool = False, root=None) -> Path:
    """Where a new gallery goes: `out`, or `<root>/analysis/gallery/<name>[-N]` (first free N)."""
    if out is not None:
        path = Path(out).expanduser()
        check_output_dir(path, TOOL, recognise=_legacy_gallery, hint="pick another --out")  # a gallery, or nothing
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise VLMStudiesError(f"gallery folder {path} already holds a gallery; pick another --out, or pass "
                                  f"--overwrite to replace it")
        return path

    base = subdir("analysis/gallery", root)
    name = safe_name(name)
    path, n = base / name, 1
    while path.exists():
        n += 1
        path = base / f"{name}-{n}"
    return path


def _caption(sample) -> list[str]:
    ex = sample.example
    extra = ex.meta.get("family")
    return [ex.sentence, f"label {ex.label}   ·   {ex.uid}" + (f"   ·   {extra}" if extra else "")]


def write_entry(sample, folder: Path) -> dict:
    """Both raw images (bytes as stored) and the captioned composite of one sample."""
    entry = {"uid": sample.uid, "sentence": sample.example.sentence, "label": sample.example.label,
             "family": sample.example.meta.get("family")}
    stem = safe_file_stem(sample.uid)  # the uid is data: one safe file name, distinct per uid
    for side in ("left", "right"):
        data = sample.raw_image(side)
        name = f"{stem}-{side}.{image_format(data, sample.raw_name(side))}"
        path_inside(folder, name).write_bytes(data)
        size = sample.example.meta.get(f"{side}_size") or getattr(sample.example, side).size
        entry[side] = {"file": name, "sha256": sha256_hex(data), "size": list(size)}
    composite, layout = compose_pair(sample.example.left, sample.example.right, _caption(sample),
                                     label=sample.example.label)
    entry["composite"] = f"{stem}-pair.png"
    entry["layout"] = {k: list(v) if isinstance(v, tuple) else v for k, v in layout.items()}
    composite.save(path_inside(folder, entry["composite"]))
    return entry


def render_index(title: str, subtitle: str, entries: list[dict]) -> str:
    e = html.escape
    cards = []
    for en in entries:
        color = "#148232" if en["label"] else "#be1e1e"
        cards.append(
            f'<figure><a href="{e(en["composite"])}"><img src="{e(en["composite"])}" alt="{e(en["uid"])}"></a>'
            f'<figcaption><b style="color:{color}">{en["label"]}</b> <code>{e(en["uid"])}</code>'
            f'{" · " + e(en["family"]) if en.get("family") else ""}<br>{e(en["sentence"])}<br>'
            f'<small>raw: <a href="{e(en["left"]["file"])}">left</a> · <a href="{e(en["right"]["file"])}">right</a>'
            f'</small></figcaption></figure>')
    return ("<!doctype html>\n<html><head><meta charset='utf-8'><title>" + e(title) + "</title><style>"
            "body{font-family:sans-serif;margin:1.5em}figure{display:inline-block;vertical-align:top;margin:.5em;"
            "max-width:560px}img{max-width:100%;border:1px solid #ccc}figcaption{font-size:.9em}</style></head>"
            f"<body><h1>{e(title)}</h1><p>{e(subtitle)}</p>\n" + "\n".join(cards) + "\n</body></html>\n")


def _legacy_gallery(folder: Path) -> bool:
    """A gallery written before galleries carried a marker: its gallery.json, index.html and image files."""
    return read_json_field(folder / MANIFEST, "entries") is not None and files_match(
        folder, (INDEX, MANIFEST, "*-left.*", "*-right.*", "*-pair.png"))


def write_gallery(samples: list, folder: str | os.PathLike, title: str, info: dict,
                  overwrite: bool = False) -> Path:
    """Write every sample's files, `index.html` and `gallery.json` (selection + entries) into `folder`.

    An existing `folder` is replaced only with `overwrite` and only when it holds a gallery (nothing
    else is ever deleted); checked again at the end, in case it was filled while we wrote.
    """
    folder = Path(folder)
    if not overwrite:
        gallery_dir("", folder, overwrite=False)
    with output_dir(folder, TOOL, recognise=_legacy_gallery, hint="pick another --out") as tmp:
        entries = [write_entry(s, tmp) for s in samples]
        subtitle = f"{len(entries)} example(s) of {info.get('source')} [{info.get('split')}] · {info.get('selection')}"
        atomic_write_text(tmp / INDEX, render_index(title, subtitle, entries))
        atomic_write_json(tmp / MANIFEST, dict(info, title=title, entries=entries))
        if not overwrite and folder.is_dir() and any(folder.iterdir()):  # filled by another run while we wrote
            raise VLMStudiesError(f"{folder} was filled by another run meanwhile; run again with another --out")
    return folder
