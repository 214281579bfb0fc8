"""Look inside the model: which image matters (occlusion), where it looks (attention), where the answer forms
(logit lens) - for one example as an offline page, or for a whole split.

    # one example (CPU, seconds): occlusion table printed, page under <root>/analysis/inside/
    python scripts/look_inside.py --uid dev-0-1-0
    python scripts/look_inside.py --uid dev-0-1-0 --adapter RUN          # fine-tuned AND base, same axes
    python scripts/look_inside.py --bookmarks hard --adapter RUN --per_head
    # a split: occlusion.jsonl + summary per statement family / slice (resumable: same command continues)
    python scripts/look_inside.py --split validation --adapter RUN
    python scripts/look_inside.py --split validation --limit 200 --occluder blur
    # Qwen2-VL-2B on NLVR2 dev (GPU)
    python scripts/look_inside.py --model Qwen/Qwen2-VL-2B-Instruct --source pingzhili/nlvr2 --mode cached \\
        --max_pixels 401408 --uid dev-850-0-0 --adapter RUN
    python scripts/look_inside.py --model Qwen/Qwen2-VL-2B-Instruct --source pingzhili/nlvr2 --mode cached \\
        --max_pixels 401408 --split validation --limit 500 --batch_size 2

RUN is a training run name under <root>/checkpoints/, a run dir, or an adapter folder. With --uid or
--bookmarks each example gets a page (<name>/uid/<uid>/index.html); without them the split (first
--limit examples) is run. Every flag also takes its dashed spelling (--per-head), as in every script.
"""

from __future__ import annotations

import argparse
import sys

from utils.cli import ArgumentParser, add_data_args, add_root_arg, main_guard
from utils.errors import VLMStudiesError
from vlm_datasets.bookmarks import add_bookmarks_arg, bookmarked_uids


def _bool(text: str) -> bool:
    v = str(text).strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def make_parser() -> argparse.ArgumentParser:
    from scoring.occlusion import OCCLUDERS

    ap = ArgumentParser(description=__doc__,
                                 allow_abbrev=False)
    ap.add_argument("--uid", nargs="+", default=[], help="one or more NLVR2 identifiers (one page each)")
    add_bookmarks_arg(ap)
    add_data_args(ap, source="synthetic")
    ap.add_argument("--model", default="local:small", help="Hub id, local folder, local:tiny or local:small")
    ap.add_argument("--adapter", default=None, help="LoRA adapter: run name, run dir or adapter folder")
    ap.add_argument("--template", default="tf", help="prompt template (vlm_datasets.prompts.TEMPLATES)")
    ap.add_argument("--limit", type=int, default=None, help="split run: only the first N examples")
    ap.add_argument("--occluder", default="mean", choices=OCCLUDERS,
                    help="what replaces an image: its mean colour (default) or a heavy blur of it")

    def flag(name, default, text):
        ap.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name, nargs="?", const=True, default=default,
                        type=_bool, metavar="true|false", help=text)

    flag("per_head", False, "uid pages: also each head's attention (shares per layer x head)")
    flag("with_base", True, "with an adapter, also look with the adapter switched off (the base); default true")
    flag("overwrite", False, "start over when the output folder holds results of a different look")
    flag("inline", False, "uid pages: embed the pictures in the HTML (one file to share; split pages always do)")
    flag("load_in_4bit", False, "load the base in 4-bit NF4 (as Q-LoRA trains)")
    for name, kind, text in (("batch_size", int, "examples per forward pass, each x5 inputs (default 4)"),
                             ("min_pixels", int, "image resize lower bound (pixels; default the lab's 4*28*28)"),
                             ("max_pixels", int, "image resize upper bound (pixels; default the lab's 512*28*28)"),
                             ("dtype", str, "auto (bf16 on capable GPUs, else fp32), bf16, fp32"),
                             ("run_name", str, "output folder under <root>/analysis/inside/ (default: "
                                               "model-adapter-source-split)")):
        ap.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name, type=kind,
                        default={"batch_size": 4, "dtype": "auto"}.get(name), help=text)
    add_root_arg(ap)
    return ap


def parse(argv=None):
    """Options from the command line; a misspelt flag is a one-line error naming the closest ones."""
    import difflib

    from evals.inside.run import InsideOptions

    ap = make_parser()
    args, rest = ap.parse_known_args(argv)
    if rest:
        flags = [o for a in ap._actions for o in a.option_strings]
        bad = next((x.split("=")[0] for x in rest if x.startswith("-")), rest[0])
        close = difflib.get_close_matches(bad, flags, n=3, cutoff=0.6)
        raise VLMStudiesError(f"unknown option '{bad}'" + (f"; did you mean {', '.join(close)}?" if close else
                                                           "; run with --help to list every option"))
    uids = list(args.uid)
    if args.bookmarks is not None:
        uids += bookmarked_uids(args.bookmarks, args.split, args.root)
    opts = InsideOptions(model=args.model, adapter=args.adapter, source=args.source, split=args.split,
                         mode=args.mode, template=args.template, uids=list(dict.fromkeys(uids)), limit=args.limit,
                         occluder=args.occluder, per_head=args.per_head, with_base=args.with_base,
                         batch_size=args.batch_size, dtype=args.dtype, load_in_4bit=args.load_in_4bit,
                         min_pixels=args.min_pixels, max_pixels=args.max_pixels, run_name=args.run_name,
                         overwrite=args.overwrite, inline=args.inline)
    return opts, args.root


def main(argv=None):
    from evals.inside.run import look_at_uids, run_split

    opts, root = parse(argv)
    if opts.uids:
        return look_at_uids(opts, root=root)
    return run_split(opts, root=root)


if __name__ == "__main__":
    sys.exit(main_guard(main))
