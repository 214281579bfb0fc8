"""How long `--help` and a misspelt flag take: the stored help text (utils/cli_help) vs the full parser.

    python -m bench.cli_help                      # train, evaluate, plan_run; best of 3 each, interleaved
    python -m bench.cli_help --repeats 5 --json out.json

Each figure is the wall time of a fresh `python scripts/X.py ...` process (interpreter start included):
`--help`, and `--config <smoke> --lora_rr 3` (a typo, refused), once answered from the stored text
before any library loads (what every command does) and once with VLM_STUDIES_FULL_HELP=1, which makes
the script build its full parser from the dataclasses (importing transformers / TRL / torch), as every
--help did before. The two variants alternate, so a change in the machine's load hits both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from utils.cli import ArgumentParser, main_guard
from utils.paths import REPO_ROOT

CASES = {
    "train": ["--config", "training/configs/smoke_cpu.yaml"],
    "evaluate": ["--config", "evals/configs/smoke_cpu.yaml"],
    "plan_run": ["--config", "training/configs/qwen2vl_2b_lora.yaml"],
}
TYPO = {"train": ["--lora_rr", "3"], "evaluate": ["--answer_mod", "score"], "plan_run": ["--lora_rr", "3"]}


def _time(argv: list[str], full: bool) -> tuple[float, int]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    if full:
        env["VLM_STUDIES_FULL_HELP"] = "1"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=env, capture_output=True, timeout=900)
    return time.perf_counter() - t0, proc.returncode


def measure(repeats: int = 3) -> dict:
    rows = {}
    for script, config in CASES.items():
        for what, args in (("--help", ["--help"]), ("typo", [*config, *TYPO[script]])):
            best = {"stored": float("inf"), "full parser": float("inf")}
            codes = set()
            for _ in range(repeats):
                for variant in best:
                    s, code = _time([f"scripts/{script}.py", *args], variant == "full parser")
                    best[variant] = min(best[variant], s)
                    codes.add(code)
            rows[f"{script} {what}"] = {**best, "ratio": best["full parser"] / best["stored"],
                                        "exit_codes": sorted(codes)}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"benchmark": "cli_help", "repeats": repeats, "cpu_count": os.cpu_count(), "load_1min": load,
            "what": "wall seconds of a fresh process, best of N, variants interleaved", "results": rows}


def format_table(res: dict) -> str:
    load = f", 1-min load {res['load_1min']:.1f}" if res["load_1min"] is not None else ""
    lines = [f"--help and a misspelt flag, fresh process each (best of {res['repeats']}; {res['cpu_count']} CPUs{load})",
             f"{'command':22s} {'stored s':>9s} {'full parser s':>14s} {'ratio':>7s}"]
    for name, r in res["results"].items():
        lines.append(f"{name:22s} {r['stored']:9.2f} {r['full parser']:14.2f} {r['ratio']:7.1f}")
    return "\n".join(lines)


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the best counts (default 3)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    return ap


def main(argv=None):
    from bench import emit

    args = make_parser().parse_args(argv)
    res = measure(args.repeats)
    return emit(res, format_table(res), args.json)


if __name__ == "__main__":
    sys.exit(main_guard(main))
