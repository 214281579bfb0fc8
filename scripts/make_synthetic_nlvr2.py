"""Write a synthetic NLVR2 (rendered shapes, labels computed from the scenes) as parquet splits.

    python scripts/make_synthetic_nlvr2.py --out /tmp/synth --train 2000 --validation 400 --test 400 --seed 0
    python scripts/make_synthetic_nlvr2.py --out /tmp/ground --train 4000 --validation 400 --test 0 \\
        --families grounding_left grounding_right --grounding_colors red

Then read it like any NLVR2 copy: `--source /tmp/synth`. Columns: identifier, sentence, label,
image0 (left), image1 (right), plus family and template for slicing.
"""

from __future__ import annotations

import sys

from utils.cli import ArgumentParser, main_guard


def make_parser() -> ArgumentParser:
    from vlm_datasets.synthetic import COLORS, DEFAULT_RECIPE, FAMILIES

    d = DEFAULT_RECIPE
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="folder to write (an earlier synthetic set there is replaced; a "
                                                 "folder of anything else is refused)")
    for split in ("train", "validation", "test"):
        ap.add_argument(f"--{split}", type=int, default=d["sizes"][split], help=f"rows in {split} (0: none)")
    ap.add_argument("--seed", type=int, default=d["seed"], help="the same seed writes the same set (default %(default)s)")
    ap.add_argument("--families", nargs="+", default=list(d["families"]), choices=FAMILIES,
                    help="statement families to write (default: all)")
    ap.add_argument("--grounding_colors", nargs="+", default=list(d["grounding_colors"]), choices=list(COLORS),
                    help="colours the grounding statements ask about")
    ap.add_argument("--sentences_per_set", type=int, default=d["sentences_per_set"],
                    help="sentences written for each set of four image pairs")
    ap.add_argument("--pairs_per_sentence", type=int, nargs="+", default=list(d["pairs_per_sentence"]),
                    help="how many of its set's pairs a sentence is shown with, drawn from these (1-4)")
    ap.add_argument("--image_size", type=int, default=d["image_size"], help="side of each square image in pixels")
    return ap


def main(argv=None):
    from vlm_datasets.synthetic import write_synthetic_nlvr2

    args = make_parser().parse_args(argv)
    out = write_synthetic_nlvr2(args.out, {"train": args.train, "validation": args.validation, "test": args.test},
                                seed=args.seed, families=args.families, sentences_per_set=args.sentences_per_set,
                                pairs_per_sentence=args.pairs_per_sentence,
                                image_size=args.image_size, grounding_colors=args.grounding_colors)
    import json

    info = json.loads((out / "synthetic_info.json").read_text(encoding="utf-8"))
    for split, s in info["splits"].items():
        fams = ", ".join(f"{k} {v}" for k, v in sorted(s["families"].items()))
        print(f"{split}: {s['rows']} rows ({fams})")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main_guard(main))
