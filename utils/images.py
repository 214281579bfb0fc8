"""Images: the one decoder every loader uses, the processor's size rule, and helpers for the looking tools
(raw bytes and their hashes, file checks, the pair composite).

`decode_image_bytes` turns encoded bytes into the RGB picture the model sees:
  - EXIF orientation is applied (a phone photo tagged "rotate 90°" is used upright);
  - 16-bit grey (`I;16`, `I;16B`, `I`) is scaled to 8 bits (0..65535 -> 0..255), not clipped;
    32-bit float (`F`) in [0, 1] is scaled by 255, otherwise taken as 0..255 like PIL does;
  - transparency (`RGBA`, `LA`, `PA`, a palette or grey/RGB image with a transparent colour) is
    composited on white, as qwen-vl-utils' `to_rgb` does for RGBA;
  - every other mode (`1`, `L`, `P`, `CMYK`, `YCbCr`, `LAB`, `HSV`, ...) goes through PIL's conversion.
Under a pixel budget (the run's max_pixels) an image at least twice the processor's target size on
both sides is decoded small where the format allows it (JPEG `draft`: the DCT scales by 1/2, 1/4 or
1/8, never below the target) and then resized to exactly the size the processor would resize it to,
so a 12000x12000 photo never sits decoded at full size and the model input keeps its visual tokens.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

from utils.errors import VLMStudiesError
from utils.io import sha256_bytes

# The Qwen2-VL image processor's defaults (Setup/NOTES.md §2), the budget when a caller gives none.
DEFAULT_MIN_PIXELS = 4 * 28 * 28
DEFAULT_MAX_PIXELS = 16384 * 28 * 28
RESIZE_FACTOR = 28  # patch 14 x spatial merge 2: the processor resizes to multiples of this
MAX_ASPECT_RATIO = 200  # transformers' Qwen2-VL smart_resize raises above this (Setup/NOTES.md §2)
EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that turn the picture by 90 degrees
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}

LABEL_COLORS = {True: (20, 130, 50), False: (190, 30, 30)}
MIN_PANEL_HEIGHT = 224  # small images (the synthetic set's 56 px) are enlarged so the composite is readable
MAX_PANEL_HEIGHT = 512


def sha256_hex(data: bytes) -> str:
    return sha256_bytes(data)


def processor_size_problem(width: int, height: int) -> str | None:
    """Why Qwen2-VL's image processor would refuse a `width` x `height` image, or None when it takes it.

    transformers' `smart_resize` refuses an aspect ratio above 200 (whatever the pixel limits) and
    upsizes any smaller image to `min_pixels`, so a tiny image is fine and a 2000x5 strip is not.
    A plain function of the size, so loaders can drop such a row before it reaches a batch.
    """
    w, h = int(width), int(height)
    if w < 1 or h < 1:
        return f"image is {w}x{h}, it has no pixels"
    ratio = max(w, h) / min(w, h)
    if ratio > MAX_ASPECT_RATIO:
        return (f"image is {w}x{h}: aspect ratio {ratio:.0f} exceeds {MAX_ASPECT_RATIO}, which Qwen2-VL's image "
                f"processor refuses")
    return None


def _orientation(img) -> int:
    try:
        return int(img.getexif().get(EXIF_ORIENTATION) or 1)
    except Exception:  # unreadable EXIF: treat as upright, as viewers do
        return 1


def stored_size(data: bytes) -> tuple[int, int]:
    """(width, height) as the picture is meant to be seen (EXIF orientation applied), from the header only."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # see decode_image_bytes
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            return (h, w) if _orientation(img) in _SWAPS_SIDES else (w, h)


def to_rgb(img):
    """An RGB copy of a decoded PIL image of any mode (the rules are in the module docstring; what PIL's own
    `convert("RGB")` gets wrong is in Setup/NOTES.md §3)."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _SIXTEEN_BIT:
        import numpy as np

        values = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)  # rounded, 65535 -> 255, 32768 -> 128
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        import numpy as np

        values = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA") if mode != "La" else img.convert("LA").convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def budget_target(width: int, height: int, min_pixels: int | None = None, max_pixels: int | None = None,
                  factor: int = RESIZE_FACTOR) -> tuple[int, int] | None:
    """(width, height) the processor will resize an image to under this budget, when it is worth decoding
    small: the image is at least twice that size on both sides and resizing to it is a fixed point of the
    processor's resize (so the processor leaves it as it is). None otherwise."""
    min_pixels = int(min_pixels or DEFAULT_MIN_PIXELS)
    max_pixels = int(max_pixels or DEFAULT_MAX_PIXELS)
    if width * height <= max_pixels or processor_size_problem(width, height):
        return None  # within budget (the processor resizes it at most a little), or refused anyway
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    th, tw = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    if width < 2 * tw or height < 2 * th:
        return None
    if smart_resize(th, tw, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels) != (th, tw):
        return None  # extreme shapes where the processor's rounding is not idempotent: leave it to the processor
    return tw, th


def decode_image_bytes(data: bytes, min_pixels: int | None = None, max_pixels: int | None = None,
                       factor: int = RESIZE_FACTOR):
    """`(rgb_image, (width, height) as stored and upright)`; ValueError for data that is not a readable image.

    `min_pixels` / `max_pixels` are the run's pixel budget (None: the Qwen2-VL processor's defaults);
    see the module docstring for what is done to large images and to each mode.
    """
    import warnings

    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            # PIL warns above ~89M pixels; such photos are decoded small here. Above twice that it raises
            # DecompressionBombError, which stays an error (a bad row).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        orientation = _orientation(img)
        w, h = img.size
        size = (h, w) if orientation in _SWAPS_SIDES else (w, h)
        target = budget_target(size[0], size[1], min_pixels, max_pixels, factor)
        if target is not None and img.format in ("JPEG", "MPO"):
            stored_target = target[::-1] if orientation in _SWAPS_SIDES else target
            img.draft(None, stored_target)  # the DCT decodes at 1/2, 1/4 or 1/8 scale, never below the target
        img.load()  # decode now, so a truncated file fails here and not mid-batch
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
        rgb = to_rgb(img)
    except Exception as exc:  # PIL raises several types for bad data
        # without object addresses ("<_io.BytesIO object at 0x7f...>"): the reason lands in metrics.json, which
        # must be the same on every run of the same eval
        text = re.sub(r" at 0x[0-9a-fA-F]+", "", str(exc))
        raise ValueError(f"corrupt image ({type(exc).__name__}: {text[:80]})") from None
    if target is not None and rgb.size != target:
        rgb = rgb.resize(target, Image.BICUBIC)  # the processor's resample, so it then has nothing left to do
    return rgb, size


def image_format(data: bytes, name_hint: str | None = None) -> str:
    """File extension for encoded image bytes ('png', 'jpg', ...), from the bytes themselves."""
    from PIL import Image

    try:
        fmt = (Image.open(io.BytesIO(data)).format or "").lower()
    except Exception:
        fmt = ""
    if not fmt and name_hint:
        fmt = Path(name_hint).suffix.lstrip(".").lower()
        if not fmt.isalnum() or len(fmt) > 5:  # the hint is data: only a plain extension becomes part of a file name
            fmt = ""
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


def processor_pixel_limits(processor) -> tuple[int, int]:
    size = processor.image_processor.size
    get = size.get if isinstance(size, dict) else lambda k, d=None: getattr(size, k, d)
    return int(get("shortest_edge") or get("min_pixels")), int(get("longest_edge") or get("max_pixels"))


def set_pixel_limits(processor, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
    """Set the image processor's resize bounds (they fix the visual-token budget per image); a bound left
    None keeps the processor's current one."""
    cur_min, cur_max = processor_pixel_limits(processor)
    lo, hi = min_pixels or cur_min, max_pixels or cur_max
    if lo > hi:
        raise VLMStudiesError(f"min_pixels {lo} exceeds max_pixels {hi}; lower min_pixels or raise max_pixels")
    processor.image_processor.size = {"shortest_edge": int(lo), "longest_edge": int(hi)}


# ----------------------------------------------------------------------------- the lab's pixel budget
# Every run (training, evaluation, playground, inspect, planner) resizes images within a budget that it
# records. A config or command line may set min_pixels / max_pixels; otherwise these apply, never the
# image processor's own 16384*28*28, which lets one 12000x12000 photo cost 16,388 visual tokens
# (Setup/NOTES.md §2). The Qwen2-VL-2B configs use the same 512*28*28, so zero-shot and fine-tuned
# numbers see the same pixels.
PIXEL_UNIT = 28 * 28  # one visual token per 28x28 area (14 px patches, merged 2x2)
LAB_MIN_PIXELS = 4 * PIXEL_UNIT  # Qwen2-VL's own floor; a higher one would upscale the 56 px synthetic images
LAB_MAX_PIXELS = 512 * PIXEL_UNIT  # <= 512 visual tokens per image; an NLVR2 pair of 1024x768 photos: 988


def pixel_budget(min_pixels: int | None = None, max_pixels: int | None = None) -> tuple[int, int]:
    """`(min_pixels, max_pixels)` of a run: the given bounds, the lab's default for any left None."""
    lo = int(min_pixels) if min_pixels else LAB_MIN_PIXELS
    hi = int(max_pixels) if max_pixels else LAB_MAX_PIXELS
    if lo < 1 or hi < PIXEL_UNIT:
        raise VLMStudiesError(f"pixel budget min_pixels {lo} / max_pixels {hi} is too small: max_pixels must be at "
                              f"least {PIXEL_UNIT} (one 28x28 visual token)")
    if lo > hi:
        raise VLMStudiesError(f"min_pixels {lo} exceeds max_pixels {hi}; lower min_pixels or raise max_pixels "
                              f"(lab default {LAB_MIN_PIXELS}..{LAB_MAX_PIXELS})")
    return lo, hi
