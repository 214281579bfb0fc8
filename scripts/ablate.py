"""Run an ablation grid: each cell a fine-tune + eval (or an eval alone) in its own run dirs; one table.

CPU, synthetic set, small local model (no downloads; a few minutes on 2 cores):
    python scripts/ablate.py --grid evals/configs/ablations/cpu_synthetic.yaml
Qwen2-VL-2B on NLVR2 (one GPU; see each file's header for its hardware and time):
    python scripts/ablate.py --grid evals/configs/ablations/qwen2vl_2b_nlvr2_template.yaml
    python scripts/ablate.py --grid evals/configs/ablations/qwen2vl_2b_nlvr2_pixels.yaml
    python scripts/ablate.py --grid evals/configs/ablations/qwen2vl_2b_nlvr2_lora_rank.yaml
    python scripts/ablate.py --grid evals/configs/ablations/qwen2vl_2b_tasks.yaml        # NLVR2 and VSR
Look before running, run a subset, or only rebuild the table and plots:
    python scripts/ablate.py --grid GRID.yaml --dry_run
    python scripts/ablate.py --grid GRID.yaml --only 'lora_r-8'
    python scripts/ablate.py --grid GRID.yaml --report_only

Interrupted? Run the same command again: finished cells are skipped, an interrupted fine-tune resumes
from its last checkpoint and an interrupted eval from its last batch. Outputs: <root>/ablations/<name>/
(results.md, results.csv, *.png, cells/<cell>/ with each cell's options and logs); run dirs under
<root>/checkpoints/ and <root>/evals/ named abl-<name>.<cell>. Grid format: studies/ablation.py.
"""

from __future__ import annotations

import shlex
import sys

from utils.cli import ArgumentParser, add_root_arg, main_guard


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--grid", required=True, help="grid file (evals/configs/ablations/*.yaml)")
    add_root_arg(parser)
    parser.add_argument("--only", default=None, help="run only cells whose id matches this regular expression")
    parser.add_argument("--dry_run", action="store_true", help="list the cells and their options; run nothing")
    parser.add_argument("--report_only", action="store_true", help="rebuild results.md/csv and plots; run nothing")
    return parser


def main(argv=None):
    from studies.ablation import load_grid, run_grid
    from utils.paths import get_root

    args = make_parser().parse_args(argv)
    grid = load_grid(args.grid)
    root = get_root(args.root)
    command = shlex.join(["python", "scripts/ablate.py", *(sys.argv[1:] if argv is None else argv)])
    out = run_grid(grid, root, only=args.only, dry_run=args.dry_run, report_only=args.report_only, command=command)
    if out.get("failed"):
        from utils.errors import VLMStudiesError

        raise VLMStudiesError(f"{len(out['failed'])} cell(s) failed: {', '.join(out['failed'])}; see {out['md']} and "
                              f"each cell's log, fix, and run the same command again (finished cells are kept)")
    return out


if __name__ == "__main__":
    sys.exit(main_guard(main))
