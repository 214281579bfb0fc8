"""Training dynamics of a fine-tuning run as an offline HTML page: when each family is learned, and when the
model starts to depend on the image a statement is about.

    write_training_report(run_dir) -> <run_dir>/report/index.html (+ PNGs)

Reads what the run dir keeps (training/trainer.py): `dynamics.jsonl` (per-family accuracy and, when
`occlusion_eval_steps` was set, the occlusion summary on a fixed validation subset, at step 0 and every N
steps), `accuracy.json` (before / after on the whole eval split), the newest checkpoint's
`trainer_state.json` (the loss log), `config.yaml` and `run_meta.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from scoring.predictions import read_predictions
from utils.errors import VLMStudiesError
from utils.io import output_dir
from evals.report import CSS, TOOL, _Assets, _e, _pct

DYNAMICS_FILE = "dynamics.jsonl"


def is_training_run(path: Path) -> bool:
    """A training run dir (config.yaml and what its trainer writes), as opposed to an eval run dir."""
    return (path / "config.yaml").is_file() and not (path / "metrics.json").is_file() and any(
        (path / f).is_file() for f in (DYNAMICS_FILE, "accuracy.json", "run_meta.json"))


def read_dynamics(run_dir: Path) -> list[dict]:
    return sorted(read_predictions(Path(run_dir) / DYNAMICS_FILE, key="step"), key=lambda r: r["step"])


def loss_log(run_dir: Path) -> list[dict]:
    """The loss entries of the newest checkpoint's trainer_state.json ([] without a checkpoint)."""
    ckpts = sorted((p for p in Path(run_dir).glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
                   key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
    if not ckpts:
        return []
    state = json.loads((ckpts[-1] / "trainer_state.json").read_text(encoding="utf-8"))
    return [r for r in state.get("log_history", []) if "loss" in r]


def first_step_at(steps: list[dict], family: str, threshold: float = 0.9) -> int | None:
    """The first step at which `family`'s subset accuracy reached `threshold` (None if it never did)."""
    for s in steps:
        a = s.get("accuracy", {}).get(family)
        if a and a["accuracy"] >= threshold:
            return s["step"]
    return None


def write_training_report(run_dir: str | Path, out: str | Path | None = None, inline: bool = False) -> dict:
    """Write the dynamics page; returns `{"html", "folder", "steps"}`."""

    run_dir = Path(run_dir).expanduser()
    if not is_training_run(run_dir):
        raise VLMStudiesError(f"{run_dir} is not a training run dir (no config.yaml with accuracy.json, dynamics.jsonl "
                              f"or run_meta.json beside it); training runs live in <root>/checkpoints/<run_name>/")
    steps = read_dynamics(run_dir)
    acc = json.loads((run_dir / "accuracy.json").read_text(encoding="utf-8")) \
        if (run_dir / "accuracy.json").is_file() else {}
    meta = json.loads((run_dir / "run_meta.json").read_text(encoding="utf-8")) \
        if (run_dir / "run_meta.json").is_file() else {}
    folder = Path(out).expanduser() if out else run_dir / "report"
    # written aside and swapped in: only a folder analyze.py wrote is ever replaced (utils.io.output_dir)
    with output_dir(folder, TOOL, hint="pass another --out") as tmp:
        _write_into(tmp, run_dir, steps, acc, meta, inline)
    folder = folder.resolve()
    return {"html": folder / "index.html", "folder": folder, "steps": steps}


def _write_into(folder: Path, run_dir: Path, steps: list[dict], acc: dict, meta: dict, inline: bool) -> None:
    from evals.inside import figures

    assets = _Assets(folder, inline)
    parts = []
    if steps:
        parts.append(assets.img("dynamics.png", figures.dynamics_png(steps, f"{run_dir.name}: fixed validation subset"),
                                "training dynamics"))
        families = sorted({f for s in steps for f in s.get("accuracy", {}) if f != "all"})
        rows = "".join(f"<tr><td>{_e(f)}</td><td class=num>{_e(first_step_at(steps, f))}</td></tr>" for f in families)
        if rows:
            parts.append(f"<table><tr><th>family</th><th>first step at 90% subset accuracy</th></tr>{rows}</table>")
        occ = [s for s in steps if s.get("occlusion")]
        if occ:
            head = "<tr><th>step</th>" + "".join(
                f"<th>{_e(g.removeprefix('family:'))}<br>left / right replaced</th>"
                for g in occ[-1]["occlusion"] if g.startswith("family:")) + "</tr>"
            body = "".join("<tr><td class=num>" + str(s["step"]) + "</td>" + "".join(
                f"<td class=num>{e['left']['mean_abs_delta']:.3f} / {e['right']['mean_abs_delta']:.3f}</td>"
                for g, e in s["occlusion"].items() if g.startswith("family:")) + "</tr>" for s in occ)
            parts.append("<h2>Which image each family depends on, over training</h2><p class=muted>mean |change in "
                         "P(True)| when the left / right image is replaced by its mean colour (evals/inside)</p>"
                         f"<table>{head}{body}</table>")
    else:
        parts.append("<p class=warn>no dynamics.jsonl: train with --accuracy_eval_steps N (and --occlusion_eval_steps "
                     "N for the image dependence) to record the curves</p>")
    log = loss_log(run_dir)
    if log:
        parts.append(assets.img("loss.png", figures.loss_png(log, "training loss"), "training loss"))
    if acc.get("before") or acc.get("after"):
        groups = sorted(set(acc.get("before") or {}) | set(acc.get("after") or {}), key=lambda g: (g == "all", g))
        cell = lambda t, g: (f"{_pct(t[g]['accuracy'])} ({_pct(t[g]['share_pred_true'])} True)"  # noqa: E731
                             if t and g in t else "-")
        rows = "".join(f"<tr><td>{_e(g)}</td><td class=num>{(acc.get('after') or acc['before'])[g]['n']}</td>"
                       f"<td class=num>{cell(acc.get('before'), g)}</td><td class=num>{cell(acc.get('after'), g)}</td>"
                       f"</tr>" for g in groups)
        parts.append(f"<h2>Whole {_e(acc.get('split'))} split, before and after</h2><table><tr><th>family</th>"
                     f"<th>n</th><th>before</th><th>after</th></tr>{rows}</table>")
    info = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in (
        ("run", run_dir), ("model", meta.get("model")), ("git", f"{meta.get('git_sha')}"
                                                                 f"{' (dirty)' if meta.get('git_dirty') else ''}"),
        ("date / command", f"{meta.get('date')} - {meta.get('command')}")))
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Training dynamics: {_e(run_dir.name)}</title><style>{CSS}</style>
</head><body><h1>Training dynamics: {_e(run_dir.name)}</h1>
<p class=muted>written by scripts/analyze.py; opens offline</p><table>{info}</table>
<h2>Over training</h2>{''.join(parts)}
</body></html>
"""
    (folder / "index.html").write_text(html, encoding="utf-8")
