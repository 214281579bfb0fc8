"""Error analysis of an eval run: a self-contained HTML report (metrics, plots, slices, mistakes with images);
the training dynamics of a training run.

    python scripts/analyze.py RUN_DIR                                   # -> RUN_DIR/report/index.html
    python scripts/analyze.py RUN_DIR --compare OTHER_RUN_DIR           # + uids flipped each way, McNemar test
    python scripts/analyze.py local-small-RUN-nlvr2_synth_grounding-validation-score \\
        --compare local-small-zeroshot-nlvr2_synth_grounding-validation-score     # smoke: fine-tuned vs zero-shot
    python scripts/analyze.py RUN_DIR --inline                          # one HTML file, images embedded
    python scripts/analyze.py RUN_DIR --bookmark hard                   # also bookmark the shown mistakes
    python scripts/analyze.py RUN_DIR --look_inside                     # + a look-inside page per shown mistake
    python scripts/analyze.py <root>/checkpoints/RUN                    # a TRAINING run: accuracy per family and
                                                                        # image dependence over steps

RUN_DIR is <root>/evals/<run_name>/ as written by scripts/evaluate.py, or a training run dir
<root>/checkpoints/<run_name>/ (a bare run name is looked up in both, evals first). Each mistake card
links to its look-inside page (scripts/look_inside.py) when it exists, else shows the command that
makes it; --look_inside makes them (loading the eval's model once).
The gallery reads the two images of each shown mistake from the run's source, so that
source must be readable (for the Hub copy offline: evaluate with --mode cached, or pass --no_images).

The report folder is written aside and swapped in; an existing one is replaced only when it is an
earlier report (it carries analyze.py's marker), so --out never deletes a run dir or anyone's files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.cli import ArgumentParser, add_root_arg, main_guard


def _run_dir(name: str, root) -> Path:
    from utils.paths import get_root

    path = Path(name).expanduser()
    if not path.exists() and not path.is_absolute():
        for kind in ("evals", "checkpoints"):
            candidate = get_root(root, create=False) / kind / name
            if candidate.exists():
                return candidate
    return path


def make_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("run_dir", help="eval run dir (or run name under <root>/evals/)")
    ap.add_argument("--compare", default=None, metavar="OTHER_RUN_DIR", help="a second run on the same examples")
    ap.add_argument("--out", default=None, help="report folder (default RUN_DIR/report or RUN_DIR/report-vs-OTHER); "
                                             "must be new, empty, or an earlier report")
    ap.add_argument("--max_mistakes", type=int, default=24, help="mistakes shown in the gallery (default %(default)s)")
    ap.add_argument("--no_images", action="store_true", help="do not read the dataset for the gallery's images")
    ap.add_argument("--inline", action="store_true", help="embed every image in the HTML (one file to share)")
    ap.add_argument("--bookmark", default=None, metavar="TAG",
                    help="bookmark the gallery's mistakes with TAG (vlm_datasets/bookmarks.py; list them with "
                         "`python -m vlm_datasets.bookmarks list --tag TAG`)")
    ap.add_argument("--look_inside", "--look-inside", action="store_true",
                    help="also write the look-inside page (occlusion, attention, logit lens) of every shown mistake "
                         "under <root>/analysis/inside/, linked from its card")
    add_root_arg(ap)
    return ap


def main(argv=None):
    from evals.report import check_report, print_comparison, write_report
    from utils.errors import VLMStudiesError

    args = make_parser().parse_args(argv)
    if args.max_mistakes < 0:
        raise VLMStudiesError("--max_mistakes must be 0 or more")

    run_dir = _run_dir(args.run_dir, args.root)
    from evals.dynamics import is_training_run

    if is_training_run(run_dir):
        if args.compare or args.bookmark or args.look_inside:
            raise VLMStudiesError(f"{run_dir} is a training run: --compare, --bookmark and --look_inside work on eval "
                                  f"runs (evaluate its adapter with scripts/evaluate.py --adapter {run_dir.name})")
        from evals.dynamics import write_training_report

        out = write_training_report(run_dir, out=args.out, inline=args.inline)
        broken = check_report(out["html"])
        if broken:
            raise VLMStudiesError(f"report {out['html']} references missing files: {', '.join(broken[:3])}")
        print(f"training dynamics ({len(out['steps'])} measured steps): {out['html']}")
        return out
    other = _run_dir(args.compare, args.root) if args.compare else None
    if args.look_inside:
        _look_inside(run_dir, args)
    out = write_report(run_dir, compare=other, out=args.out, max_mistakes=args.max_mistakes,
                       images=not args.no_images, inline=args.inline, root=args.root)
    broken = check_report(out["html"])
    if broken:  # cannot happen unless the writer has a bug; never hand out a report with holes
        raise VLMStudiesError(f"report {out['html']} references missing files: {', '.join(broken[:3])}")
    if out["comparison"]:
        print_comparison(out["comparison"])
    if out["image_problem"]:
        print(f"note: gallery without some images: {out['image_problem']}", file=sys.stderr)
    if args.bookmark:
        from vlm_datasets.bookmarks import Bookmarks
        from evals.report import load_run

        run = load_run(run_dir)
        cfg = run["config"]
        Bookmarks(root=args.root).add_many(out["mistakes"], tags=[args.bookmark],
                                           note=f"mistake in eval {run['name']}", source=cfg.get("source"),
                                           split=run["metrics"].get("split"))
        print(f"bookmarked {len(out['mistakes'])} mistakes with tag '{args.bookmark}'")
    print(f"report: {out['html']}")


def _look_inside(run_dir: Path, args) -> None:
    """Look-inside pages for the mistakes the report will show (one model load for all of them)."""
    import dataclasses

    from evals.inside.run import look_at_uids, options_for_eval_run
    from evals.report import load_run, pick_mistakes
    from utils.errors import VLMStudiesError

    run = load_run(run_dir)
    opts = options_for_eval_run(run)
    if opts is None:
        raise VLMStudiesError(f"--look_inside needs an NLVR2 eval run (two images and a statement); {run_dir} is a "
                              f"{run['metrics'].get('task')} run")
    uids = [r["uid"] for r in pick_mistakes(run["records"], args.max_mistakes)]
    if uids:
        pages = look_at_uids(dataclasses.replace(opts, uids=uids), root=args.root, quiet=True)
        print(f"look-inside pages for {len(pages)} mistakes under {pages[0]['folder']}")


if __name__ == "__main__":
    sys.exit(main_guard(main))
