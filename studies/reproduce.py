"""Re-run a finished run from its saved config into a new run dir, and say whether it came out the same.

    report = reproduce("<root>/checkpoints/RUN")    # a training run: same adapter hash and accuracy?
    report = reproduce("<root>/evals/RUN")          # an eval run: same predictions and metrics?

A training run is re-run by `training.trainer.train` on the options of RUN/config.yaml (every option
it used, seed included) and the torch thread count it recorded (CPU matrix kernels may sum in another
order with another thread count); compared: the sha256 of `adapter/adapter_model.safetensors`, accuracy
before/after per family, final training loss and steps. An eval run is re-run by `evals.runner.run_eval`
on the options of RUN/config.yaml; compared: every prediction (uid, answer, p_true) and the metrics. On CPU
both must match exactly (tests/test_reproducibility.py); on GPUs, kernels that are not deterministic
can move the last bits, and the report shows by how much.

The report goes to `<new run dir>/reproduce.json` and the screen; it names both commits, so a
mismatch from changed code is told apart from one of the same code.
"""

from __future__ import annotations

import json
from pathlib import Path

from scoring.predictions import read_predictions
from utils.config import parse_config
from utils.errors import closest, VLMStudiesError
from utils.io import atomic_write_json, sha256_file
from utils.paths import existing_names, get_root
from evals.runner import EvalArgs, run_eval

REPORT_FILE = "reproduce.json"
# metrics.json keys that describe the run rather than its results
_EVAL_VOLATILE = {"run_name", "adapter"}


def run_kind(run_dir: Path) -> str:
    """`train` or `eval` (by the files the run dir holds); a clear error for anything else."""
    if (run_dir / "eval_identity.json").is_file() or (run_dir / "predictions.jsonl").is_file():
        if not (run_dir / "metrics.json").is_file() or not (run_dir / "config.yaml").is_file():
            raise VLMStudiesError(f"eval run {run_dir} has not finished (no metrics.json or config.yaml); run its "
                                  f"command again to finish it before reproducing it")
        return "eval"
    if (run_dir / "config.yaml").is_file() and (run_dir / "run_meta.json").is_file():
        if not (run_dir / "adapter" / "adapter_model.safetensors").is_file():
            raise VLMStudiesError(f"training run {run_dir} has not finished (no adapter/); resume it with "
                                  f"`python scripts/train.py --config {run_dir / 'config.yaml'} --run_name "
                                  f"{run_dir.name} --resume` first")
        return "train"
    raise VLMStudiesError(f"{run_dir} is neither a training run dir (<root>/checkpoints/RUN with config.yaml) nor an "
                          f"eval run dir (<root>/evals/RUN with metrics.json)")


def resolve_run_dir(run: str, root=None) -> Path:
    path = Path(run).expanduser()
    if path.is_dir():
        return path.resolve()

    base = get_root(root, create=False)
    found = [base / sub / run for sub in ("checkpoints", "evals") if (base / sub / run).is_dir()]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise VLMStudiesError(f"'{run}' names both {found[0]} and {found[1]}; give the run dir's path")

    raise VLMStudiesError(f"run dir {run} does not exist (looked for it as a path and under {base}/checkpoints, "
                          f"{base}/evals){closest(run, existing_names(run, root))}")


def _new_name(parent: Path, name: str, wanted: str | None) -> str:
    if wanted:
        if (parent / wanted).exists():
            raise VLMStudiesError(f"{parent / wanted} already exists; choose another --name")
        return wanted
    i = 1
    while (parent / (f"{name}-repro" + (str(i) if i > 1 else ""))).exists():
        i += 1
    return f"{name}-repro" + (str(i) if i > 1 else "")


def _check(checks: dict, name: str, original, reproduction) -> None:
    checks[name] = {"original": original, "reproduction": reproduction, "match": original == reproduction}


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def reproduce_train(run_dir: Path, root: Path, name: str | None = None) -> dict:
    import yaml

    from training.options import train_options
    from training.trainer import train

    meta = _read(run_dir / "run_meta.json")
    results = meta.get("results") or {}
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    new = _new_name(run_dir.parent, run_dir.name, name)
    overrides = {"run_name": new}
    threads = results.get("torch_threads") or meta.get("torch_threads")
    if threads and not config.get("torch_threads"):
        overrides["torch_threads"] = int(threads)  # the count the run actually used
    shown = " ".join(f"--{k} {v}" for k, v in overrides.items())
    print(f"[reproduce] re-running training {run_dir.name} as {new}: python scripts/train.py --config "
          f"{run_dir / 'config.yaml'} {shown} --root {root}", flush=True)
    train(train_options(config=run_dir / "config.yaml", overrides=overrides, root=str(root)))
    new_dir = run_dir.parent / new
    new_meta = _read(new_dir / "run_meta.json")
    new_results = new_meta.get("results") or {}
    checks: dict = {}
    _check(checks, "adapter_sha256", sha256_file(run_dir / "adapter" / "adapter_model.safetensors"),
           sha256_file(new_dir / "adapter" / "adapter_model.safetensors"))
    old_acc, new_acc = _read(run_dir / "accuracy.json"), _read(new_dir / "accuracy.json")
    for when in ("before", "after"):
        if old_acc.get(when) is not None or new_acc.get(when) is not None:
            _check(checks, f"accuracy_{when}", old_acc.get(when), new_acc.get(when))
    for key in ("train_loss", "global_step"):
        _check(checks, key, results.get(key), new_results.get(key))
    return _report("train", run_dir, new_dir, meta, new_meta, checks)


def reproduce_eval(run_dir: Path, root: Path, name: str | None = None) -> dict:

    new = _new_name(run_dir.parent, run_dir.name, name)
    overrides = {"run_name": new, "progress": False}
    print(f"[reproduce] re-running eval {run_dir.name} as {new}: python scripts/evaluate.py --config "
          f"{run_dir / 'config.yaml'} --run_name {new} --root {root} --progress false", flush=True)
    (args,), resolved, extra = parse_config((EvalArgs,), [], config=run_dir / "config.yaml", overrides=overrides)
    # as if typed: the saved config's task and source stand as they are (evals.runner's data choice)
    run_eval(args, resolved, root=str(root), config_path=extra.config, typed=frozenset(overrides))
    new_dir = run_dir.parent / new
    checks: dict = {}
    old_m, new_m = _read(run_dir / "metrics.json"), _read(new_dir / "metrics.json")
    for key in sorted(set(old_m) | set(new_m)):
        if key not in _EVAL_VOLATILE:
            a, b = old_m.get(key), new_m.get(key)
            if key == "pixel_budget":  # the bounds must match; where they came from differs by design (the
                a, b = ({k: v for k, v in (x or {}).items() if k != "from"} for x in (a, b))  # copy reads config.yaml)
            _check(checks, f"metrics.{key}", a, b)
    old_p = {r["uid"]: r for r in read_predictions(run_dir / "predictions.jsonl")}
    new_p = {r["uid"]: r for r in read_predictions(new_dir / "predictions.jsonl")}
    _check(checks, "uids", sorted(old_p), sorted(new_p))
    common = old_p.keys() & new_p.keys()
    flipped = sorted(u for u in common if old_p[u]["prediction"] != new_p[u]["prediction"])
    deltas = [abs(old_p[u]["p_true"] - new_p[u]["p_true"]) for u in common
              if old_p[u].get("p_true") is not None and new_p[u].get("p_true") is not None]
    _check(checks, "predictions_flipped", [], flipped[:20])
    _check(checks, "max_abs_p_true_difference", 0.0, max(deltas, default=0.0))
    for c in ("uids",):  # long lists: keep the verdict, not the lists
        checks[c] = {"match": checks[c]["match"], "original": len(old_p), "reproduction": len(new_p)}
    return _report("eval", run_dir, new_dir, _read(run_dir / "run_meta.json"), _read(new_dir / "run_meta.json"),
                   checks)


def _report(kind, run_dir, new_dir, meta, new_meta, checks) -> dict:
    report = {"kind": kind, "original": str(run_dir), "reproduction": str(new_dir),
              "match": all(c["match"] for c in checks.values()),
              "mismatches": [k for k, c in checks.items() if not c["match"]],
              "original_commit": [meta.get("git_sha"), meta.get("git_dirty")],
              "reproduction_commit": [new_meta.get("git_sha"), new_meta.get("git_dirty")],
              "original_device": (meta.get("device") or {}).get("gpu") or "cpu",
              "reproduction_device": (new_meta.get("device") or {}).get("gpu") or "cpu",
              "checks": checks}
    atomic_write_json(new_dir / REPORT_FILE, report)
    return report


def format_report(report: dict) -> str:
    lines = [f"{report['kind']} run {report['original']}", f"  reproduced as {report['reproduction']}"]
    oc, rc = report["original_commit"], report["reproduction_commit"]
    same_code = oc == rc and not oc[1]
    lines.append(f"  commits: {(oc[0] or '?')[:10]}{'+dirty' if oc[1] else ''} -> {(rc[0] or '?')[:10]}"
                 f"{'+dirty' if rc[1] else ''}{'' if same_code else ' (not the same clean commit: differences may come from code)'}")
    for name, c in report["checks"].items():
        if name.startswith("metrics.") and c["match"] and name not in ("metrics.accuracy", "metrics.n"):
            continue  # the full metric set is in reproduce.json; show the headline and any difference
        shown = c["original"] if c["match"] else f"{_short(c['original'])} -> {_short(c['reproduction'])}"
        lines.append(f"  {'same' if c['match'] else 'DIFFERENT':9s} {name}: {_short(shown)}")
    lines.append(f"  verdict: {'REPRODUCED exactly' if report['match'] else 'NOT reproduced: ' + ', '.join(report['mismatches'])}")
    return "\n".join(lines)


def _short(x) -> str:
    text = json.dumps(x, default=str) if not isinstance(x, str) else x
    return text if len(text) <= 100 else text[:97] + "..."


def reproduce(run: str, root=None, name: str | None = None) -> dict:
    """Re-run `run` (a run dir or a run name) into a new run dir; returns the report (also written to it)."""
    run_dir = resolve_run_dir(run, root)
    kind = run_kind(run_dir)
    run_root = Path(root) if root else run_dir.parent.parent  # models, data and outputs of the original root
    if kind == "train":
        return reproduce_train(run_dir, run_root, name)
    return reproduce_eval(run_dir, run_root, name)
