"""Evaluate a Qwen2-VL (zero-shot, or with a LoRA adapter) on NLVR2 or another registered task.

    # CPU smoke (seconds): local small model, synthetic grounding statements
    python scripts/evaluate.py --config evals/configs/smoke_cpu.yaml
    python scripts/evaluate.py --config evals/configs/smoke_cpu.yaml --adapter RUN   # RUN: a run name under <root>/checkpoints/
    # Qwen2-VL-2B on NLVR2 dev (GPU), zero-shot and with a trained adapter
    python scripts/evaluate.py --config evals/configs/qwen2vl_2b_nlvr2_zeroshot.yaml
    python scripts/evaluate.py --config evals/configs/qwen2vl_2b_nlvr2_adapter.yaml --adapter RUN_DIR_OR_NAME
    # any option is a flag: a quick look, generate mode, another split or task
    python scripts/evaluate.py --config evals/configs/qwen2vl_2b_nlvr2_zeroshot.yaml --limit 200 --answer_mode generate
    python scripts/evaluate.py --config evals/configs/smoke_cpu.yaml --task nlvr2_synth_count --split test
    python scripts/evaluate.py --list_tasks
    # CPU threads and the DataLoader workers that read, decode and encode ahead of the model (same predictions)
    python scripts/evaluate.py --config evals/configs/smoke_cpu.yaml --torch_threads 1 --num_workers 0
    # sharded: one shard per process of a launch, or by hand; the shards merge into one predictions.jsonl
    CUDA_VISIBLE_DEVICES= accelerate launch --config_file training/configs/accelerate/cpu_2proc.yaml \\
        scripts/evaluate.py --config evals/configs/smoke_cpu.yaml
    python scripts/evaluate.py --config evals/configs/smoke_cpu.yaml --num_shards 2 --shard_index 0   # and 1

A --task typed on the command line brings its own dataset (nlvr2: pingzhili/nlvr2) unless --source is typed
too; a source other than the task's own is printed before the run and recorded in metrics.json.

Writes <root>/evals/<run_name>/ (predictions.jsonl, metrics.json, config.yaml, run_meta.json, tb/).
Killed mid-way? Run the same command again: it continues where it stopped. Then:
    python scripts/analyze.py <root>/evals/<run_name> [--compare <root>/evals/<other_run>]
"""

from __future__ import annotations

import sys

from utils.cli import main_guard, quick_check

HELP_FIRST = ("model", "adapter", "task", "split", "limit", "answer_mode", "run_name")


def _extra(parser):
    parser.add_argument("--root", default=None, help="artifact root (default: $VLM_STUDIES_ROOT, else Drive on "
                                                     "Colab, else the repo's artifacts/)")
    parser.add_argument("--list_tasks", action="store_true", help="list the registered tasks and exit")


def parse_args(argv=None):
    """`((EvalArgs,), resolved, extra)` from --config and the flags; nothing runs."""
    from evals.runner import EvalArgs
    from utils.config import parse_config

    return parse_config((EvalArgs,), argv, extra_flags=_extra, description=__doc__, first=HELP_FIRST)


def make_parser(full: bool = False):
    """The full parser, for --help (utils.cli.quick_check stores its text)."""
    from evals.runner import EvalArgs
    from utils.config import config_parser

    return config_parser((EvalArgs,), _extra, __doc__, HELP_FIRST, full=full)[0]


def main(argv=None):
    quick_check("evaluate", argv)  # --help and a misspelt flag answered before the libraries load
    from evals.runner import run_eval

    (args,), resolved, extra = parse_args(argv)
    if extra.list_tasks:
        from scoring.tasks import list_tasks

        for name, task in list_tasks().items():
            print(f"{task.tag:34s} {task.default_source:18s} {task.description}")
        return
    # what was typed decides the data: a --task brings its own dataset unless --source is typed too
    run_eval(args, resolved, root=extra.root, config_path=extra.config, typed=extra.cli_keys)


if __name__ == "__main__":
    sys.exit(main_guard(main))
