"""Everything known about one NLVR2 example: statement, label, ids, the other statements about the same
image pair, the other pairs its sentence was shown with (its consistency group), image sizes/URLs/hashes
and the visual tokens each image costs.

    python scripts/inspect_sample.py --uid dev-0-1-0                       # synthetic set, validation split
    python scripts/inspect_sample.py --uid dev-0-1-0 --export /tmp/raw     # + the two raw images and SHA256SUMS
    python scripts/inspect_sample.py --bookmarks hard --json               # every bookmarked uid tagged 'hard'
    python scripts/inspect_sample.py --source pingzhili/nlvr2 --split validation --mode cached \\
        --uid dev-850-0-0 --max_pixels 1003520                             # real NLVR2 at 1280*28*28 pixels
    python scripts/inspect_sample.py --uid dev-0-1-0 --model Qwen/Qwen2-VL-2B-Instruct   # its processor's patch size

Visual tokens are counted at the lab's pixel budget (4*28*28 .. 512*28*28, what training and evaluation
use by default) unless --min_pixels/--max_pixels say otherwise; --model only supplies its processor's
patch and merge sizes. Finding the other statements of a pair reads the whole split.
"""

from __future__ import annotations

import json
import sys

from utils.cli import ArgumentParser, add_data_args, add_root_arg, main_guard
from utils.errors import VLMStudiesError
from vlm_datasets.bookmarks import add_bookmarks_arg, bookmarked_uids


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--uid", nargs="+", default=[], help="one or more NLVR2 identifiers (split-setid-pairid-sentenceid)")
    add_bookmarks_arg(ap)
    add_data_args(ap, source="synthetic")
    ap.add_argument("--model", default=None, help="take pixel limits from this model's processor (e.g. local:small)")
    ap.add_argument("--min_pixels", type=int, default=None, help="image resize lower bound (default: the lab's 3136)")
    ap.add_argument("--max_pixels", type=int, default=None,
                    help="image resize upper bound (default: the lab's 401408 = 512*28*28)")
    ap.add_argument("--export", default=None, metavar="DIR",
                    help="write the raw images (bytes as stored) and SHA256SUMS into DIR")
    ap.add_argument("--json", action="store_true", help="print JSON (one object per uid) instead of text")
    add_root_arg(ap)
    return ap


def main(argv=None):
    from vlm_datasets import load_nlvr2
    from vlm_datasets.inspect import describe, export_raw_images, find_samples, format_description, pixel_limits

    args = make_parser().parse_args(argv)
    if not args.uid and args.bookmarks is None:
        raise VLMStudiesError("say which example: --uid UID, or --bookmarks [TAG]")
    uids = list(args.uid)
    if args.bookmarks is not None:
        uids += bookmarked_uids(args.bookmarks, args.split, args.root)

    processor = None
    if args.model:  # its processor's patch and merge sizes count the visual tokens
        from utils.models import load_processor

        processor = load_processor(args.model, root=args.root)
    limits = pixel_limits(args.min_pixels, args.max_pixels, processor, args.model)
    split = load_nlvr2(args.source, args.split, args.mode, root=args.root, quiet=True,
                       min_pixels=limits["min_pixels"], max_pixels=limits["max_pixels"])
    described = []
    for i, sample in enumerate(find_samples(split, uids)):
        d = describe(sample, limits)
        described.append(d)
        if args.export:
            d["exported"] = export_raw_images(sample, args.export)
        if args.json:
            print(json.dumps(d, default=str))
            continue
        print(("\n" if i else "") + format_description(d))
        for w in d.get("exported", []):
            print(f"exported {w['side']:<5} {w['path']}  sha256 {w['sha256']}")
    return described


if __name__ == "__main__":
    sys.exit(main_guard(main))
