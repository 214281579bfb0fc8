"""A gallery of image pairs: raw images, a captioned side-by-side composite per example, an index.html.

Galleries live in `<root>/analysis/gallery/<name>/`. A default name that is taken gets a numeric
suffix, and an explicit `--out` that already holds files is refused unless asked to overwrite, so
one gallery never silently replaces another. Files are written into `<dir>.partial` and renamed at
the end: an interrupted run leaves no half gallery under the real name.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path

from utils.errors import VLMStudiesError
from utils.io import atomic_write_json, atomic_write_text

INDEX = "index.html"
MANIFEST = "gallery.json"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "gallery"


def gallery_dir(name: str, out: str | os.PathLike | None = None, overwrite: bool = False, root=None) -> Path:
    """Where a new gallery goes: `out`, or `<root>/analysis/gallery/<name>[-N]` (first free N)."""
    if out is not None:
        path = Path(out).expanduser()
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise VLMStudiesError(f"gallery folder {path} already holds files; pick another --out, or pass --overwrite "
                                  f"to replace it")
        return path
    from utils.paths import subdir

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
    from utils.images import compose_pair, image_format, sha256_hex
    from utils.paths import path_inside, safe_file_stem

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


def write_gallery(samples: list, folder: str | os.PathLike, title: str, info: dict,
                  overwrite: bool = False) -> Path:
    """Write every sample's files, `index.html` and `gallery.json` (selection + entries) into `folder`."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    entries = [write_entry(s, tmp) for s in samples]
    subtitle = f"{len(entries)} example(s) of {info.get('source')} [{info.get('split')}] · {info.get('selection')}"
    atomic_write_text(tmp / INDEX, render_index(title, subtitle, entries))
    atomic_write_json(tmp / MANIFEST, dict(info, title=title, entries=entries))
    if folder.exists():
        if any(folder.iterdir()) and not overwrite:  # filled by someone else while we were writing
            raise VLMStudiesError(f"{folder} was created by someone else meanwhile; the new gallery is in {tmp}")
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder
