"""Decoding a very large image: at full size (what the loader did) vs under the run's pixel budget (what it does).

    python -m bench.decode_large                                   # 12000x12000 JPEG and PNG, 512 and 16384 *28*28
    python -m bench.decode_large --size 6000x4000 --formats JPEG --pixels 512 --json out.json

For each image and budget, two ways from the encoded bytes to the processor's tensors, each in a fresh
process so its peak memory is its own:
  full    PIL decodes every pixel, converts to RGB, and Qwen2-VL's image processor resizes it
  budget  `utils.images.decode_image_bytes(max_pixels=...)`: JPEG `draft` decodes at 1/2, 1/4 or 1/8
          scale, the result is resized to the processor's target, the processor then has nothing to resize
Reported: seconds (decode + processor) and peak RSS above the process's baseline, and whether both ways
give the same `image_grid_thw` (the visual tokens) and how far apart their pixel values are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from utils.cli import ArgumentParser

DEFAULT_PIXELS = (512, 16384)  # units of 28x28: the lab's budget and the processor's default


def _peak_mib() -> float | None:
    """This process's peak resident memory. Linux: VmHWM, which starts afresh at exec (ru_maxrss carries the
    parent's peak over an exec, so a child of a large parent would report the parent's)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    from utils.run_meta import peak_rss_mib

    return peak_rss_mib()


def _measure(path: str, way: str, max_pixels: int, out_npy: str) -> dict:
    """One decode + processor pass in this process (run in a child by `run`)."""
    import numpy as np
    from PIL import Image
    from transformers import Qwen2VLImageProcessor

    from utils.images import decode_image_bytes
    from utils.tiny_model import MIN_PIXELS

    Image.MAX_IMAGE_PIXELS = None  # the 12000x12000 test image is above PIL's warning threshold on purpose
    ip = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=max_pixels)
    data = open(path, "rb").read()
    base = _peak_mib()
    t0 = time.perf_counter()
    if way == "full":
        img = Image.open(path)
        img.load()
        img = img.convert("RGB")
    else:
        img, _ = decode_image_bytes(data, max_pixels=max_pixels)
    t1 = time.perf_counter()
    out = ip(images=[img], return_tensors="pt")
    t2 = time.perf_counter()
    np.save(out_npy, out["pixel_values"].numpy())
    return {"decode_s": t1 - t0, "processor_s": t2 - t1, "total_s": t2 - t0, "decoded_size": list(img.size),
            "grid_thw": out["image_grid_thw"].tolist(), "peak_rss_above_baseline_mib": (_peak_mib() or 0) - (base or 0)}


def _child(path: str, way: str, max_pixels: int, out_npy: str) -> dict:
    code = ("import json, sys; from bench.decode_large import _measure; "
            f"print(json.dumps(_measure({path!r}, {way!r}, {max_pixels}, {out_npy!r})))")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", env=env,
                       check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def run(size=(12000, 12000), formats=("JPEG", "PNG"), pixels=DEFAULT_PIXELS) -> dict:
    import numpy as np
    from PIL import Image

    work = tempfile.mkdtemp(prefix="bench_decode_")
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    rows = []
    for fmt in formats:
        # a smooth colour gradient: realistic JPEG/PNG sizes, and pixel differences that mean something
        picture = Image.fromarray(np.stack([np.broadcast_to(x, (h, w)), np.broadcast_to(y, (h, w)),
                                            np.broadcast_to((x + y) / 2, (h, w))], -1).astype(np.uint8))
        path = os.path.join(work, f"big.{fmt.lower()}")
        picture.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
        del picture
        for units in pixels:
            res = {}
            for way in ("full", "budget"):
                res[way] = _child(path, way, units * 784, os.path.join(work, f"{way}.npy"))
            a, b = np.load(os.path.join(work, "full.npy")), np.load(os.path.join(work, "budget.npy"))
            rows.append({"format": fmt, "file_mib": round(os.path.getsize(path) / 2**20, 1), "max_pixels_units": units,
                         **{f"{way}_{k}": v for way in res for k, v in res[way].items()},
                         "same_grid": res["full"]["grid_thw"] == res["budget"]["grid_thw"],
                         "pixel_values_mean_abs_diff": float(np.abs(a - b).mean()) if a.shape == b.shape else None})
    return {"benchmark": "decode_large", "size": list(size), "cpu_count": os.cpu_count(),
            "what": "decode + Qwen2-VL image processor of one very large image, full-size decode vs the pixel budget; "
                    "each way in a fresh process", "results": rows}


def _diff(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def format_table(res: dict) -> str:
    w, h = res["size"]
    lines = [f"one {w}x{h} image through decode + Qwen2-VL image processor (fresh process each)",
             f"{'format':>6s} {'budget':>12s} {'full s':>7s} {'budget s':>9s} {'speed-up':>8s} {'full MiB':>9s} "
             f"{'budget MiB':>10s} {'decoded':>11s} {'same grid':>9s} {'|diff|':>7s}"]
    for r in res["results"]:
        lines.append(f"{r['format']:>6s} {str(r['max_pixels_units']) + '*28*28':>12s} {r['full_total_s']:7.2f} "
                     f"{r['budget_total_s']:9.2f} {r['full_total_s'] / r['budget_total_s']:7.1f}x "
                     f"{r['full_peak_rss_above_baseline_mib']:9.0f} {r['budget_peak_rss_above_baseline_mib']:10.0f} "
                     f"{'x'.join(map(str, r['budget_decoded_size'])):>11s} {'yes' if r['same_grid'] else 'NO':>9s} "
                     f"{_diff(r['pixel_values_mean_abs_diff']):>7s}")
    lines.append("|diff|: mean absolute difference of the processor's normalised pixel values (full vs budget)")
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="12000x12000", help="WIDTHxHEIGHT of the picture (default %(default)s)")
    ap.add_argument("--formats", nargs="+", default=["JPEG", "PNG"],
                    help="image formats to write and decode (default JPEG PNG)")
    ap.add_argument("--pixels", type=int, nargs="+", default=list(DEFAULT_PIXELS), help="max_pixels in units of 28x28")
    ap.add_argument("--json", default=None, help="also write the figures here")
    return ap


def main(argv=None):
    args = make_parser().parse_args(argv)
    res = run(_size(args.size), tuple(args.formats), tuple(args.pixels))
    from bench import emit

    return emit(res, format_table(res), args.json)


if __name__ == "__main__":
    from utils.cli import main_guard

    sys.exit(main_guard(main))
