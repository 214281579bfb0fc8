"""Ask the model anything about images: files, or an NLVR2 example's pair; every answer is logged.

    python scripts/model_playground.py --uid dev-0-1-0                       # the eval prompt (template tf), local:small
    python scripts/model_playground.py --uid dev-0-1-0 --prompt "Describe the left image."
    python scripts/model_playground.py --image a.png --image b.jpg --prompt "What differs?" --max_new_tokens 32
    python scripts/model_playground.py --bookmarks hard --adapter <root>/checkpoints/RUN    # every bookmark, fine-tuned
    python scripts/model_playground.py --interactive --uid dev-0-1-0        # keeps the model loaded; :help
    python scripts/model_playground.py --uid dev-0-1-0 --adapter RUN --look_inside   # + occlusion, attention, lens
                                                                            # (interactive: :inside [--per_head])
    python scripts/model_playground.py --model Qwen/Qwen2-VL-2B-Instruct --source pingzhili/nlvr2 \\
        --uid dev-850-0-0 --do_sample --temperature 0.7 --top_p 0.9 --seed 1 --max_pixels 401408   # GPU

Each response is printed and appended to <root>/playground/log.jsonl with the model, adapter, the
images (file hashes, or uid), prompt, knobs, the decoding settings used and whose they were, the pixel
budget, response, latency and tokens/s. A uid without --prompt gets exactly the evaluation prompt; a
free-form prompt follows the images in the same message form.

Decoding is the lab's, built from the knobs below (greedy by default, no repetition penalty), whatever
the checkpoint's generation_config.json says; --checkpoint_defaults decodes with the checkpoint's own
settings instead (Qwen2-VL's: sampling with top_k 1, repetition_penalty 1.05). Images are resized
within --min_pixels/--max_pixels, else the lab's budget (4*28*28 .. 512*28*28), never the processor's own.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from utils.cli import ArgumentParser, add_data_args, add_root_arg, main_guard
from utils.errors import VLMStudiesError
from evals.playground import Knobs
from vlm_datasets.bookmarks import add_bookmarks_arg, bookmarked_uids


def add_knob_args(parser: argparse.ArgumentParser) -> None:
    """One flag per `Knobs` field, so the CLI and interactive `:set` cannot drift apart."""
    g = parser.add_argument_group("decoding")
    for f in dataclasses.fields(Knobs):
        flag = "--" + f.name
        about = f.metadata.get("help", "")
        if f.type in (bool, "bool"):
            g.add_argument(flag, action="store_true", help=about)
        else:
            kind = {"int": int, "float": float}.get(f.type, f.type)
            g.add_argument(flag, type=kind, default=f.default, help=f"{about} (default {f.default})")


def make_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="local:small", help="Hub id, local folder, local:tiny or local:small")
    ap.add_argument("--adapter", default=None, help="LoRA adapter folder or training run dir")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on capable GPUs, else fp32), bf16, fp32")
    ap.add_argument("--torch_threads", type=int, default=None,
                    help="torch CPU threads (default: the cores the 1-min load leaves free, at least 1; utils/threads.py)")
    ap.add_argument("--load_in_4bit", action="store_true", help="load the base in 4-bit NF4 (as Q-LoRA trains)")
    ap.add_argument("--min_pixels", type=int, default=None, help="image resize lower bound (default: the lab's 3136)")
    ap.add_argument("--max_pixels", type=int, default=None,
                    help="image resize upper bound (default: the lab's 401408 = 512*28*28)")
    ap.add_argument("--image", action="append", default=[], metavar="PATH", help="an image file (repeatable)")
    ap.add_argument("--uid", nargs="+", default=[], help="NLVR2 example(s) whose image pair to use")
    add_bookmarks_arg(ap)
    add_data_args(ap, source="synthetic")
    ap.add_argument("--prompt", default=None, help="the text after the images (default for a uid: its eval prompt)")
    ap.add_argument("--template", default="tf", help="prompt template for a uid without --prompt")
    ap.add_argument("--interactive", action="store_true", help="read prompts and :commands from stdin")
    ap.add_argument("--no_log", action="store_true", help="do not append to <root>/playground/log.jsonl")
    ap.add_argument("--look_inside", "--look-inside", action="store_true",
                    help="also look inside each uid with the loaded model (scripts/look_inside.py: occlusion table, "
                         "page with attention overlays and logit lens); interactive mode: the :inside command")
    add_knob_args(ap)
    add_root_arg(ap)
    return ap


def main(argv=None):
    from evals.playground import Playground, Session, describe_subject, format_record

    args = make_parser().parse_args(argv)

    knobs = Knobs(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Knobs)}).validate()
    if args.image and (args.uid or args.bookmarks is not None):
        raise VLMStudiesError("give images either as --image files or as --uid/--bookmarks, not both")
    uids = list(args.uid) + (bookmarked_uids(args.bookmarks, args.split, args.root) if args.bookmarks else [])
    if not args.interactive and not args.image and not uids:
        raise VLMStudiesError("nothing to look at: pass --image PATH, --uid UID or --bookmarks [TAG] "
                              "(or --interactive)")
    if args.image:  # check files before spending time on the model
        from utils.images import check_image_file

        for p in args.image:
            check_image_file(p)

    pg = Playground(args.model, args.adapter, args.dtype, args.load_in_4bit, args.min_pixels, args.max_pixels,
                    args.template, root=args.root, torch_threads=args.torch_threads)
    from vlm_datasets.prompts import processor_pixel_limits

    lo, hi = processor_pixel_limits(pg.processor)
    decoding = "the checkpoint's generation_config.json" if knobs.checkpoint_defaults else "lab settings from the knobs"
    print(f"loaded {args.model}{' + ' + args.adapter if args.adapter else ''} on {pg.device} in {pg.load_s:.1f}s; "
          f"pixels {lo}..{hi}; decoding: {decoding}", flush=True)
    data = (args.source, args.split, args.mode)
    log = not args.no_log
    records = []
    if args.interactive:
        first = pg.images_from_paths(args.image) if args.image else pg.images_from_uid(uids[0], *data) if uids else None
        session = Session(pg, knobs, first, data, bookmarks=uids if args.bookmarks else [], log=log,
                          commands={"inside": inside_command(pg, args)})
        if first:
            print(f"looking at {describe_subject(first)}; type a prompt, or :help")
        if args.prompt:
            session.ask(args.prompt)
        session.loop(sys.stdin, "> " if sys.stdin.isatty() else "")
    else:
        subjects = [pg.images_from_paths(args.image)] if args.image else [pg.images_from_uid(u, *data) for u in uids]
        for subject in subjects:
            record = pg.run(subject, args.prompt, knobs, log=log)
            records.append(record)
            print(f"\n[{describe_subject(subject)}]\n> {record['prompt']}\n{format_record(record)}")
        if args.look_inside:
            if not uids:
                raise VLMStudiesError("--look_inside looks at NLVR2 examples: give --uid or --bookmarks")
            look_inside(pg, args, uids)
    if log:
        print(f"\nlogged to {pg.log_path}")
    return records


def look_inside(pg, args, uids: list[str], per_head: bool = False) -> list[dict]:
    """scripts/look_inside.py's views of `uids` with the playground's loaded model (no second load)."""
    from evals.inside.run import InsideOptions, format_uid, look_at_uids

    opts = InsideOptions(model=pg.model_name, adapter=pg.adapter, source=args.source, split=args.split, mode=args.mode,
                         template=args.template, uids=uids, per_head=per_head, **pg.options)
    looks = look_at_uids(opts, root=args.root, model_and_processor=(pg.model, pg.processor), quiet=True)
    for look in looks:
        print(format_uid(look["result"]) + f"\n  page: {look['page']}")
    return looks


def inside_command(pg, args):
    def inside(session, cmd_args):
        """look inside the current uid: occlusion table + page (add --per_head for each head)"""
        if session.subject is None or session.subject.uid is None:
            raise VLMStudiesError(":inside needs an NLVR2 example: :uid UID first (image files have no statement)")
        unknown = [a for a in cmd_args if a not in ("--per_head", "--per-head")]
        if unknown:
            raise VLMStudiesError(f":inside takes only --per_head, not {' '.join(unknown)}")
        source, split, mode = session.data
        look_inside(pg, argparse.Namespace(**{**vars(args), "source": source, "split": split, "mode": mode}),
                    [session.subject.uid], per_head=bool(cmd_args))

    return inside


if __name__ == "__main__":
    sys.exit(main_guard(main))
