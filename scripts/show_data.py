"""The data part of the quick start: build the local model and synthetic set, load a split both ways.

    python scripts/show_data.py
    python scripts/show_data.py --source pingzhili/nlvr2 --split validation --model Qwen/Qwen2-VL-2B-Instruct

Prints one example as the model sees it (prompt text, visual tokens per image) and checks that
streaming and cached loading give identical examples.
"""

from __future__ import annotations

import sys
import time

from utils.cli import ArgumentParser, add_data_args, add_root_arg, main_guard
from utils.errors import VLMStudiesError


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    add_data_args(ap, source="synthetic")
    ap.add_argument("--model", default="local:small", help="whose processor renders the prompt (default %(default)s)")
    ap.add_argument("--template", default="tf", help="prompt template (vlm_datasets.prompts.TEMPLATES)")
    ap.add_argument("--limit", type=int, default=200, help="examples loaded each way (default %(default)s)")
    add_root_arg(ap)
    return ap


def main(argv=None):
    args = make_parser().parse_args(argv)  # a misspelt flag fails before the libraries load
    import numpy as np

    from utils.models import load_processor
    from vlm_datasets import build_inputs, load_nlvr2
    from vlm_datasets.cache import prepare_split
    from vlm_datasets.prompts import count_visual_tokens, processor_pixel_limits, render_prompt


    processor = load_processor(args.model, root=args.root)
    t0 = time.time()
    streamed = list(load_nlvr2(args.source, args.split, "streaming", root=args.root, limit=args.limit))
    t1 = time.time()
    prepare_split(args.source, args.split, args.root, progress=False)
    cached = list(load_nlvr2(args.source, args.split, "cached", root=args.root, limit=args.limit))
    t2 = time.time()
    same = len(streamed) == len(cached) and all(
        a.uid == b.uid and a.label == b.label and a.sentence == b.sentence
        and np.array_equal(np.asarray(a.left), np.asarray(b.left))
        and np.array_equal(np.asarray(a.right), np.asarray(b.right)) for a, b in zip(streamed, cached))
    if not same:
        raise VLMStudiesError("streaming and cached loading disagree; run prepare_data.py --verify")
    print(f"loaded {len(streamed)} examples of {args.source} [{args.split}]: streaming {t1 - t0:.2f}s, "
          f"cached (prepare + load) {t2 - t1:.2f}s; identical: {same}")
    ex = streamed[0]
    lo, hi = processor_pixel_limits(processor)
    print(f"\nuid {ex.uid}  label {ex.label}  family {ex.meta.get('family', '-')}\nsentence: {ex.sentence}")
    for side, img in (("left", ex.left), ("right", ex.right)):
        print(f"{side} image {img.size[0]}x{img.size[1]} -> {count_visual_tokens(*img.size, lo, hi)} visual tokens")
    print("\nprompt as the model sees it:\n" + render_prompt(processor, build_inputs(ex, args.template)))


if __name__ == "__main__":
    sys.exit(main_guard(main))
