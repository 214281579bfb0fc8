"""Save chosen NLVR2 pairs as a browsable gallery: raw images, a captioned side-by-side composite each,
and an index.html of them all.

    python scripts/sample_gallery.py --random 12 --seed 0                  # -> <root>/analysis/gallery/random12-seed0-validation/
    python scripts/sample_gallery.py --uid dev-0-1-0 dev-3-0-1 --split validation
    python scripts/sample_gallery.py --bookmarks hard                      # bookmarked uids tagged 'hard'
    python scripts/sample_gallery.py --random 24 --seed 1 --source pingzhili/nlvr2 --mode cached --out /tmp/g

The same --seed (on the same source and split) always draws the same examples. A default gallery
name that is taken gets a -2, -3... suffix; an --out folder holding a gallery is replaced only with
--overwrite, and one holding anything else is always refused.
"""

from __future__ import annotations

import sys

from utils.cli import ArgumentParser, add_data_args, add_root_arg, main_guard
from utils.errors import VLMStudiesError
from vlm_datasets.bookmarks import ALL, add_bookmarks_arg, bookmarked_uids


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    pick = ap.add_mutually_exclusive_group(required=True)
    pick.add_argument("--uid", nargs="+", help="these identifiers, in this order")
    pick.add_argument("--random", type=int, metavar="N", help="N examples drawn at random (see --seed)")
    add_bookmarks_arg(pick)
    ap.add_argument("--seed", type=int, default=0, help="seed of the --random draw (default %(default)s)")
    add_data_args(ap, source="synthetic")
    ap.add_argument("--name", default=None, help="gallery name under <root>/analysis/gallery/ (default: from the "
                                                 "selection)")
    ap.add_argument("--out", default=None, metavar="DIR", help="write the gallery here instead")
    ap.add_argument("--overwrite", action="store_true", help="replace an earlier gallery in --out (never other files)")
    add_root_arg(ap)
    return ap


def main(argv=None):
    from utils.run_meta import run_metadata
    from vlm_datasets import load_nlvr2
    from vlm_datasets.gallery import INDEX, gallery_dir, write_gallery
    from vlm_datasets.inspect import find_samples, random_samples

    args = make_parser().parse_args(argv)

    split = load_nlvr2(args.source, args.split, args.mode, root=args.root, quiet=True)
    if args.random is not None:
        samples = random_samples(split, args.random, args.seed)
        selection = f"random {args.random}, seed {args.seed}"
        name = f"random{args.random}-seed{args.seed}-{args.split}"
    else:
        if args.uid:
            uids, selection = args.uid, "uids " + " ".join(args.uid)
            name = f"uids-{args.uid[0]}" + (f"-and-{len(args.uid) - 1}" if len(args.uid) > 1 else "") + f"-{args.split}"
        else:
            tag = None if args.bookmarks == ALL else args.bookmarks
            uids = bookmarked_uids(args.bookmarks, args.split, args.root)
            selection = f"bookmarks{' tagged ' + tag if tag else ''}"
            name = f"bookmarks-{tag or 'all'}-{args.split}"
        samples = find_samples(split, uids, with_siblings=False)
    if not samples:
        raise VLMStudiesError("nothing selected")
    folder = gallery_dir(args.name or name, args.out, args.overwrite, root=args.root)
    info = {"selection": selection, "seed": args.seed if args.random is not None else None, **split.info,
            "uids": [s.uid for s in samples], "run": run_metadata(args.seed)}
    write_gallery(samples, folder, title=f"{args.name or name}", info=info, overwrite=args.overwrite)
    print(f"gallery of {len(samples)} example(s) ({selection}) -> {folder / INDEX}")
    return folder


if __name__ == "__main__":
    sys.exit(main_guard(main))
