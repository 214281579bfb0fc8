"""Image helpers for the looking tools: raw bytes and their hashes, file checks, the pair composite."""

from __future__ import annotations

import io
import os
from pathlib import Path

from utils.errors import VLMStudiesError
from utils.io import sha256_bytes

LABEL_COLORS = {True: (20, 130, 50), False: (190, 30, 30)}
MIN_PANEL_HEIGHT = 224  # small images (the synthetic set's 56 px) are enlarged so the composite is readable
MAX_PANEL_HEIGHT = 512


def sha256_hex(data: bytes) -> str:
    return sha256_bytes(data)


def image_format(data: bytes, name_hint: str | None = None) -> str:
    """File extension for encoded image bytes ('png', 'jpg', ...), from the bytes themselves."""
    from PIL import Image

    try:
        fmt = (Image.open(io.BytesIO(data)).format or "").lower()
    except Exception:
        fmt = ""
    if not fmt and name_hint:
        fmt = Path(name_hint).suffix.lstrip(".").lower()
    return {"jpeg": "jpg", "": "bin"}.get(fmt, fmt)


def check_image_file(path: str | os.PathLike) -> Path:
    """`path` as a Path if it is a readable image file; a clear error otherwise."""
    from PIL import Image

    p = Path(path).expanduser()
    if not p.exists():
        raise VLMStudiesError(f"image file {p} does not exist; check the path (relative paths start at "
                              f"{Path.cwd()})")
    if not p.is_file():
        raise VLMStudiesError(f"image path {p} is not a file; give an image file (png, jpg, ...)")
    try:
        with Image.open(p) as img:
            img.verify()
    except Exception as exc:
        raise VLMStudiesError(f"{p} is not a readable image ({type(exc).__name__}: {str(exc)[:80]}); give a png, "
                              f"jpg or webp file") from None
    return p


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the fixed bitmap font
        return ImageFont.load_default()


def _wrap(text: str, font, width: int, draw) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines or [""]


def panel_size(size: tuple[int, int], height: int) -> tuple[int, int]:
    w, h = size
    return max(1, round(w * height / h)), height


def resize_for_panel(img, height: int):
    """Scale to `height`: nearest-neighbour when enlarging (shows the stored pixels as they are), Lanczos
    when shrinking."""
    from PIL import Image

    if img.size[1] == height:
        return img
    method = Image.NEAREST if height > img.size[1] else Image.LANCZOS
    return img.resize(panel_size(img.size, height), method)


def compose_pair(left, right, lines: list[str], label: bool | None = None, label_line: int = -1, gap: int = 12,
                 margin: int = 10, font_size: int = 16):
    """Left and right side by side on one height, with `lines` of text (wrapped) drawn under them.

    Returns `(image, layout)`; `layout` holds the `left` and `right` boxes (x0, y0, x1, y1) and the
    panel `height`, so callers and tests can find each image inside the composite. When `label` is
    given, line `label_line` is drawn in green (True) or red (False). A grey frame just outside each
    box separates the images (white backgrounds would otherwise run together).
    """
    from PIL import Image, ImageDraw

    height = min(max(left.size[1], right.size[1], MIN_PANEL_HEIGHT), MAX_PANEL_HEIGHT)
    lp, rp = resize_for_panel(left.convert("RGB"), height), resize_for_panel(right.convert("RGB"), height)
    width = margin * 2 + lp.size[0] + gap + rp.size[0]
    font = _font(font_size)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [(i, w) for i, text in enumerate(lines) for w in _wrap(text, font, width - 2 * margin, scratch)]
    line_h = font_size + 6
    canvas = Image.new("RGB", (width, margin + height + margin + line_h * len(wrapped) + margin), (255, 255, 255))
    lbox = (margin, margin, margin + lp.size[0], margin + height)
    rbox = (lbox[2] + gap, margin, lbox[2] + gap + rp.size[0], margin + height)
    canvas.paste(lp, lbox[:2])
    canvas.paste(rp, rbox[:2])
    draw = ImageDraw.Draw(canvas)
    for x0, y0, x1, y1 in (lbox, rbox):
        draw.rectangle([x0 - 2, y0 - 2, x1 + 1, y1 + 1], outline=(150, 150, 150), width=2)
    y = margin + height + margin
    colored = label_line % len(lines) if lines else None
    for i, text in wrapped:
        color = LABEL_COLORS[bool(label)] if (i == colored and label is not None) else (20, 20, 20)
        draw.text((margin, y), text, fill=color, font=font)
        y += line_h
    return canvas, {"left": lbox, "right": rbox, "height": height}
