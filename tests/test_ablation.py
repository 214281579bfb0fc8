"""Ablations: grid files become the right cells (presets, exclusions, key routing, clear errors), results
tables and plots, and scripts/ablate.py killed mid-grid resumes without redoing finished cells."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from utils.errors import VLMStudiesError

REPO = Path(__file__).resolve().parent.parent
GRIDS = sorted((REPO / "evals" / "configs" / "ablations").glob("*.yaml"))


def _grid(tmp_path, spec: dict, name="g.yaml") -> Path:
    spec = {"train_config": "training/configs/smoke_cpu.yaml", "eval_config": "evals/configs/smoke_cpu.yaml", **spec}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("path", GRIDS, ids=[p.name for p in GRIDS])
def test_every_shipped_grid_parses_and_says_how_to_run_it(path):
    from studies.ablation import load_grid

    grid = load_grid(path)
    head = path.read_text(encoding="utf-8").split("\n\n")[0]
    assert f"python scripts/ablate.py --grid evals/configs/ablations/{path.name}" in head and "Hardware" in head
    assert grid.cells and len({c.cell_id for c in grid.cells}) == len(grid.cells)
    for c in grid.cells:  # a fine-tune is always evaluated with the prompt and pixels it was trained with
        if c.finetune:
            for k in ("template", "max_pixels", "min_pixels", "model", "load_in_4bit"):
                if k in c.train_options:
                    assert c.eval_options.get(k) == c.train_options[k], (c.cell_id, k)


def test_grid_cells_presets_exclusions_and_routing(tmp_path):
    from studies.ablation import load_grid

    path = _grid(tmp_path, {
        "name": "demo", "base": {"max_steps": 5, "eval.batch_size": 4},
        "presets": {"task": {"a": {"eval.task": "nlvr2_synth_grounding"},
                             "v": {"train.dataset": "vsr", "train.families": [], "eval.task": "vsr_synth"}}},
        "grids": [{"task": ["a", "v"], "lora_r": [4, 8], "template": ["tf"]},
                  {"task": ["a"], "lora_r": [8], "template": ["tf"]}],  # overlaps the first: not run twice
        "cells": [{"task": "v", "finetune": False}],
        "exclude": [{"task": "v", "lora_r": 4}]})
    grid = load_grid(path)
    ids = [c.cell_id for c in grid.cells]
    assert len(ids) == 4 and ids[0].startswith("task-a.lora_r-4.template-tf.") and grid.axes == ["task", "lora_r",
                                                                                                  "template",
                                                                                                  "finetune"]
    a4, a8, v8, v0 = grid.cells
    assert a4.train_options["max_steps"] == 5 and a4.train_options["lora_r"] == 4
    assert a4.train_options["template"] == a4.eval_options["template"] == "tf"  # a shared key goes to both
    assert "lora_r" not in a4.eval_options and a4.eval_options["batch_size"] == 4
    assert v8.train_options["dataset"] == "vsr" and v8.eval_options["task"] == "vsr_synth"
    assert not v0.finetune and v0.train_options == {} and v0.eval_options["require_adapter"] is False
    assert [c.cell_id for c in load_grid(path).cells] == ids  # stable ids: reruns find their cells

    # A changed value is a new cell (new run dirs), never a finished one reused; cells it does not touch
    # (the zero-shot one: max_steps is a training option) stay the same cells.
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec["base"]["max_steps"] = 6
    changed = [c.cell_id for c in load_grid(_grid(tmp_path, spec, "g2.yaml")).cells]
    assert not set(ids[:3]) & set(changed) and changed[3] == ids[3]

    for bad, msg in [({"grid": {"source": ["x"]}}, "both train.py and evaluate.py.*train.source or eval.source"),
                     ({"grid": {"lora_rr": [4]}}, "'lora_rr'.*did you mean lora_r"),
                     ({"grid": {"run_name": ["x"]}}, "set by the ablation itself"),
                     ({"grid": {"eval.lora_r": [4]}}, "'eval.lora_r'.*not an eval option"),
                     ({"presets": {"task": {"a": {}}}, "grid": {"task": ["b"]}}, "takes the presets a"),
                     ({"gird": {"lora_r": [4]}}, "unknown key.*gird"),
                     ({}, "defines no cells")]:
        with pytest.raises(VLMStudiesError, match=msg):
            load_grid(_grid(tmp_path, bad, "bad.yaml"))
    # the file itself: missing, not YAML (with its line), not a mapping; the CLI prints one line
    (tmp_path / "broken.yaml").write_text("name: x\n  grid: [\n", encoding="utf-8")
    (tmp_path / "list.yaml").write_text("- lora_r\n", encoding="utf-8")
    for path, msg in [(tmp_path / "missing.yaml", "grid file .*missing.yaml does not exist; see evals/configs/ablations/"),
                      (tmp_path / "broken.yaml", "grid file .*broken.yaml is not valid YAML at line 2"),
                      (tmp_path / "list.yaml", "grid file .*list.yaml must be a mapping")]:
        with pytest.raises(VLMStudiesError, match=msg):
            load_grid(path)


def test_results_table_and_plots(tmp_path):
    from studies.ablation import Grid, write_results

    grid = Grid("t", tmp_path / "t.yaml", "", None, tmp_path / "e.yaml", [], [], [], ["task", "rank"],
                {"task": {"task"}, "rank": {"lora_r", "lora_alpha"}})

    def row(cell, task, r, acc, vis, status="done", finetune=True):
        return {"cell": cell, "axis:task": task, "axis:rank": f"r{r}" if r else None, "status": status,
                "finetune": finetune, "task": task, "lora_r": r, "n": 100, "accuracy": acc,
                "ci_low": None if acc is None else acc - 0.1, "ci_high": None if acc is None else min(1, acc + 0.1), "consistency": acc,
                "consistency_groups": None if acc is None else 30, "share_pred_true": 0.5, "visual_tokens_per_example": vis,
                "train_seconds": 12.5 if finetune else None, "global_step": 200 if finetune else None,
                "train_peak_rss_mib": 1200.0 if finetune else None, "train_peak_gpu_mib": None, "eval_seconds": 2.0,
                "eval_peak_rss_mib": 1000.0, "eval_peak_gpu_mib": None, "git_sha": "a" * 40, "git_dirty": False,
                "train_run_dir": f"/r/checkpoints/abl-t.{cell}" if finetune else None,
                "eval_run_dir": f"/r/evals/abl-t.{cell}", "error": "boom: bad option" if status == "failed" else None}

    rows = [row("c1", "nlvr2", 2, 0.6, 8), row("c2", "nlvr2", 8, 0.9, 8), row("c3", "vsr", 2, 0.5, 4),
            row("c4", "vsr", 8, 0.55, 4), row("c5", "nlvr2", None, 0.5, 8, finetune=False),
            row("c6", "vsr", 32, None, None, status="failed")]
    out = write_results(grid, rows, tmp_path, "python scripts/ablate.py --grid t.yaml")
    md = out["md"].read_text(encoding="utf-8")
    assert "| `c2` | nlvr2 | r8 | nlvr2 | 100 | 90.0 (80.0–100.0) | 90.0 (30) | 50.0 | 8 | 12.5 | 200 | 1200 / 1000 |" in md
    assert "[train](../../checkpoints/abl-t.c2) · [eval](../../evals/abl-t.c2)" in md
    assert "zero-shot" in md and "Failed cells:" in md and "boom: bad option" in md
    assert "command: `python scripts/ablate.py --grid t.yaml`" in md and "aaaaaaaaaa" in md
    assert [p.name for p in out["plots"]] == ["accuracy_vs_visual_tokens.png", "accuracy_vs_lora_rank.png"]
    assert all(p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG" for p in out["plots"])
    with open(out["csv"], encoding="utf-8") as fh:
        got = list(csv.DictReader(fh))
    assert len(got) == 6 and got[1]["accuracy"] == "0.9" and got[5]["status"] == "failed"


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="only Linux kills the training child with the ablation (PR_SET_PDEATHSIG)")
def test_killed_ablation_resumes_without_redoing_finished_cells(tiny_model_dir, synthetic_dir, root, tmp_path):
    """A real scripts/ablate.py, SIGKILLed while its second cell trains; the rerun skips the first cell and
    resumes the second from its checkpoint."""
    spec = {"name": "kill", "base": {"model": str(tiny_model_dir), "train.source": str(synthetic_dir),
                                     "eval.source": str(synthetic_dir), "max_steps": 40, "save_steps": 4,
                                     "per_device_train_batch_size": 4, "lora_dropout": 0.0, "eval_split": "none",
                                     "accuracy_eval_steps": 0, "report_to": "none", "disable_tqdm": True,
                                     "torch_threads": 1, "dataloader_num_workers": 0, "eval.limit": 16,
                                     "eval.batch_size": 8, "activation_checkpointing": False},
            "grid": {"lora_r": [2, 4]}}
    path = _grid(tmp_path, spec)
    from studies.ablation import load_grid, run_names

    grid = load_grid(path)
    first, second = (run_names(grid, c) for c in grid.cells)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", VLM_STUDIES_ROOT=str(root))
    cmd = [sys.executable, "scripts/ablate.py", "--grid", str(path)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    second_run = root / "checkpoints" / second
    deadline = time.time() + 200
    while proc.poll() is None and time.time() < deadline:
        if any((p / "trainer_state.json").is_file() for p in second_run.glob("checkpoint-*")):
            proc.kill()
            break
        time.sleep(0.005)
    rc = proc.wait()
    assert rc == -signal.SIGKILL, proc.stdout.read().decode()[-3000:]
    time.sleep(0.5)  # the training child dies with the ablation (PR_SET_PDEATHSIG), not a moment later
    assert not (second_run / "adapter").exists()
    done_metrics = root / "evals" / first / "metrics.json"
    assert done_metrics.is_file()
    stamps = {p: p.stat().st_mtime_ns for p in (done_metrics, root / "checkpoints" / first / "adapter"
                                                / "adapter_model.safetensors", root / "evals" / first
                                                / "predictions.jsonl")}
    steps_before = max(int(p.name.split("-")[1]) for p in second_run.glob("checkpoint-*"))

    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", timeout=240)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert f"{grid.cells[0].cell_id}: done already, skipped" in again.stdout
    assert f"{grid.cells[1].cell_id}: resuming" in again.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # the finished cell was not touched
    log = (root / "ablations" / "kill" / "cells" / grid.cells[1].cell_id / "train.log").read_text(encoding="utf-8")
    assert "--resume" in log and f"resuming {second} from checkpoint-{steps_before}" in log
    with open(root / "ablations" / "kill" / "results.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["done", "done"] and all(r["global_step"] == "40" for r in rows)
    assert all(len(r["adapter_sha256"]) == 64 for r in rows)
    md = (root / "ablations" / "kill" / "results.md").read_text(encoding="utf-8")
    assert f"[eval](../../evals/{second})" in md and (root / "ablations" / "kill" / "accuracy_vs_lora_rank.png").is_file()
    state = json.loads((root / "ablations" / "kill" / "cells" / grid.cells[1].cell_id / "cell.json")
                       .read_text(encoding="utf-8"))
    assert state["status"] == "done" and state["train_options"]["lora_r"] == 4


def test_a_cell_job_runs_through_the_library_in_its_own_process_and_fails_in_one_line(tiny_model_dir, synthetic_dir,
                                                                                      root, tmp_path):
    """A cell's eval is `studies.ablation.cell_job` in a spawned process (no script, no argv): a bad adapter gives
    exit status 2 and one `error:` line in the cell's log, after what the log already held; a good one writes the
    eval run."""
    import yaml

    from studies.ablation import _run_cell_job, _tail

    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "source": str(synthetic_dir), "task": "nlvr2",
                                      "split": "validation", "limit": 4, "batch_size": 4, "torch_threads": 1}),
                      encoding="utf-8")
    log = tmp_path / "cell" / "eval.log"
    log.parent.mkdir()
    log.write_text("earlier output\n", encoding="utf-8")
    job = ("eval", str(config), "abl-bad", str(root), str(log), False, str(tmp_path / "no-such-adapter"))
    assert _run_cell_job([sys.executable], ["python", "scripts/evaluate.py"], job, log) == 2
    text = log.read_text(encoding="utf-8")
    assert text.startswith("earlier output\n") and "cell_job in a spawned process" in text
    assert _tail(log).startswith("error: ") and "no-such-adapter" in _tail(log).splitlines()[0]
    assert not (root / "evals" / "abl-bad" / "metrics.json").exists()

    ok = ("eval", str(config), "abl-good", str(root), str(log), False, None)
    assert _run_cell_job([sys.executable], ["python", "scripts/evaluate.py"], ok, log) == 0
    assert json.loads((root / "evals" / "abl-good" / "metrics.json").read_text(encoding="utf-8"))["n"] == 4
