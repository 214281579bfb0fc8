"""Re-run a finished run from its saved config into a new run dir and report whether the results match.

    python scripts/reproduce.py <root>/checkpoints/RUN      # training: same adapter sha256, accuracy, loss?
    python scripts/reproduce.py <root>/evals/RUN            # eval: same predictions (uid, answer, p_true), metrics?
    python scripts/reproduce.py RUN                         # a run name under $VLM_STUDIES_ROOT
    python scripts/reproduce.py RUN --name RUN-check        # name the new run dir yourself

CPU smoke (same config + seed on CPU => identical metrics and adapter hash):
    python scripts/train.py --config training/configs/smoke_cpu.yaml --run_name smoke
    python scripts/reproduce.py smoke

Writes <new run dir>/reproduce.json (every check, both commits and devices); exits with status 2 and
names what differs when the reproduction does not match.
"""

from __future__ import annotations

import sys

from utils.cli import ArgumentParser, add_root_arg, main_guard


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("run", help="a training or eval run dir (or its run name under the root)")
    parser.add_argument("--name", default=None, help="run name of the reproduction (default: RUN-repro[N])")
    add_root_arg(parser)
    return parser


def main(argv=None):
    from studies.reproduce import format_report, reproduce
    from utils.errors import VLMStudiesError

    args = make_parser().parse_args(argv)
    report = reproduce(args.run, root=args.root, name=args.name)
    print(format_report(report))
    if not report["match"]:
        raise VLMStudiesError(f"{args.run} did not reproduce ({', '.join(report['mismatches'])}); details in "
                              f"{report['reproduction']}/reproduce.json")
    return report


if __name__ == "__main__":
    sys.exit(main_guard(main))
