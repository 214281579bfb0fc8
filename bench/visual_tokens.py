"""Visual tokens per NLVR2-sized image pair at several max_pixels settings, counted by the image processor.

    python -m bench.visual_tokens                                   # 1024x768 pairs, 256..1280*28*28 and the default
    python -m bench.visual_tokens --pair 4032x3024 --pixels 256 512 16384 --json vt.json

For each setting, the pair goes through Qwen2-VL's image processor (`Qwen2VLImageProcessor` with the real
model's patch 14 / merge 2 / temporal patch 2 and min_pixels 4*28*28); the visual tokens are what its
`image_grid_thw` says the language model receives (t*h*w / merge^2 per image), and they are checked against
the arithmetic that the length guard and the planner use (`vlm_datasets.prompts.count_visual_tokens`).
Also reported: the processor's CPU time per pair (resize + normalise + patchify, best of --repeats), the
data-side work each training example costs on top of decoding its images.
"""

from __future__ import annotations

import os
import sys
import time

from utils.cli import ArgumentParser, main_guard

DEFAULT_PIXELS = (256, 512, 768, 1024, 1280, 16384)  # units of 28x28; 16384 is the processor's default


def run(pixels=DEFAULT_PIXELS, pair=((1024, 768), (1024, 768)), repeats: int = 3) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import Qwen2VLImageProcessor

    from utils.tiny_model import MIN_PIXELS
    from vlm_datasets.prompts import count_visual_tokens

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in pair]
    rows = []
    for units in pixels:
        ip = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=units * 784)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = ip(images=images, return_tensors="pt")
            best = min(best, time.perf_counter() - t0)
        per_image = (out["image_grid_thw"].prod(-1) // ip.merge_size ** 2).tolist()
        arithmetic = [count_visual_tokens(w, h, MIN_PIXELS, units * 784) for w, h in pair]
        rows.append({"max_pixels": units * 784, "max_pixels_units": units, "visual_tokens_per_image": per_image,
                     "visual_tokens_per_pair": sum(per_image), "arithmetic_agrees": per_image == arithmetic,
                     "grid_thw": out["image_grid_thw"].tolist(), "processor_ms_per_pair": best * 1e3})
    return {"benchmark": "visual_tokens", "pair": [list(s) for s in pair], "min_pixels": MIN_PIXELS,
            "what": "visual tokens the language model receives per image pair (image_grid_thw / merge^2), and the "
                    "image processor's CPU time per pair (best of %d)" % repeats,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "results": rows}


def format_table(res: dict) -> str:
    pair = " + ".join(f"{w}x{h}" for w, h in res["pair"])
    lines = [f"visual tokens per pair ({pair}), Qwen2-VL image processor, min_pixels 4*28*28",
             f"{'max_pixels':>12s} {'per image':>12s} {'per pair':>9s} {'arith. ok':>9s} {'processor ms':>13s}"]
    for r in res["results"]:
        lines.append(f"{str(r['max_pixels_units']) + '*28*28':>12s} {'+'.join(map(str, r['visual_tokens_per_image'])):>12s} "
                     f"{r['visual_tokens_per_pair']:9d} {'yes' if r['arithmetic_agrees'] else 'NO':>9s} "
                     f"{r['processor_ms_per_pair']:13.1f}")
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--pixels", type=int, nargs="+", default=list(DEFAULT_PIXELS), help="max_pixels in units of 28x28")
    ap.add_argument("--pair", nargs="+", default=["1024x768"], help="one size (both images) or two (left right)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes; the best counts (default %(default)s)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    return ap


def main(argv=None):
    args = make_parser().parse_args(argv)
    sizes = [_size(s) for s in args.pair]
    pair = (sizes[0], sizes[0]) if len(sizes) == 1 else tuple(sizes[:2])
    res = run(args.pixels, pair, args.repeats)
    from bench import emit

    return emit(res, format_table(res), args.json)


if __name__ == "__main__":
    sys.exit(main_guard(main))
