"""Build a randomly initialised Qwen2-VL (the real class) with a processor in the real chat format.

    python scripts/make_tiny_model.py --size tiny --out /tmp/qwen2vl-tiny
    python scripts/make_tiny_model.py --size small --out artifacts/models/my-small --seed 1
    python scripts/make_tiny_model.py --size tiny --vocab qwen2 --out /tmp/qwen2vl-tiny-q2   # Qwen2's real vocabulary

--vocab toy (default) is a ~620-token BPE trained here: fast, used by the CPU demo and most tests.
--vocab qwen2 is Qwen2's real 151,643-token vocabulary with Qwen2-VL's special tokens at their real ids,
rebuilt offline from the ranks dashscope ships (pip install dashscope==2.0.2); the embedding then has
Qwen2-VL-2B's 151,936 rows (hidden sizes stay tiny), and building takes a few seconds.

The folder loads with the same code as Qwen/Qwen2-VL-2B-Instruct:
    AutoModelForImageTextToText.from_pretrained(DIR); AutoProcessor.from_pretrained(DIR)
Scripts also accept `--model local:small` / `local:tiny`, which builds the default one under the root.
"""

from __future__ import annotations

import sys

from utils.cli import ArgumentParser, main_guard


def make_parser() -> ArgumentParser:
    from utils.tiny_model import SIZES, VOCABS

    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--size", choices=list(SIZES), default="tiny", help="tiny: unit tests; small: CPU fine-tuning")
    ap.add_argument("--out", required=True,
                    help="folder to write (an earlier tiny model there is replaced; a folder of anything else is refused)")
    ap.add_argument("--seed", type=int, default=0, help="weights and nothing else depend on it")
    ap.add_argument("--vocab", choices=list(VOCABS), default="toy",
                    help="toy: small BPE trained here (fast); qwen2: Qwen2's real vocabulary (needs dashscope)")
    return ap


def main(argv=None):
    args = make_parser().parse_args(argv)
    from utils.tiny_model import save_tiny_qwen2vl

    out = save_tiny_qwen2vl(args.out, size=args.size, seed=args.seed, vocab=args.vocab)
    import json

    info = json.loads((out / "tiny_model_info.json").read_text(encoding="utf-8"))
    print(f"wrote {args.size} Qwen2-VL ({info['parameters']:,} parameters, seed {args.seed}, {args.vocab} vocabulary "
          f"of {info['vocab_tokens']:,} tokens) to {out}")


if __name__ == "__main__":
    sys.exit(main_guard(main))
