"""Build a randomly initialised Qwen2-VL (the real class) with a processor in the real chat format.

    python scripts/make_tiny_model.py --size tiny --out /tmp/qwen2vl-tiny
    python scripts/make_tiny_model.py --size small --out artifacts/models/my-small --seed 1

The folder loads with the same code as Qwen/Qwen2-VL-2B-Instruct:
    AutoModelForImageTextToText.from_pretrained(DIR); AutoProcessor.from_pretrained(DIR)
Scripts also accept `--model local:small` / `local:tiny`, which builds the default one under the root.
"""

from __future__ import annotations

import argparse
import sys

from utils.cli import main_guard


def main(argv=None):
    from utils.tiny_model import SIZES, save_tiny_qwen2vl

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=list(SIZES), default="tiny", help="tiny: unit tests; small: CPU fine-tuning")
    ap.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
    ap.add_argument("--seed", type=int, default=0, help="weights and nothing else depend on it")
    args = ap.parse_args(argv)
    out = save_tiny_qwen2vl(args.out, size=args.size, seed=args.seed)
    import json

    info = json.loads((out / "tiny_model_info.json").read_text())
    print(f"wrote {args.size} Qwen2-VL ({info['parameters']:,} parameters, seed {args.seed}) to {out}")


if __name__ == "__main__":
    sys.exit(main_guard(main))
