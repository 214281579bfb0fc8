"""The main jobs on a simulated Windows: no load average, no CPU affinity, no `resource` / `fcntl`, no
SIGKILL, `sys.platform == "win32"` (tests/winsim.py; spawned DataLoader workers: tests/test_spawn.py).

No Windows machine runs here; this is what stands in for one. A POSIX-only call that creeps back into
training, evaluation, the playground or the benchmarks fails here. Kept small: the tiny model, a few steps.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from utils.cli import main_guard
from winsim import REAL_PLATFORM, launcher, simulate_windows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def windows(monkeypatch):
    simulate_windows(monkeypatch)
    yield


def test_the_simulation_removes_what_windows_lacks(windows):
    import signal

    assert sys.platform == "win32"
    for name in ("getloadavg", "sched_getaffinity", "sched_setaffinity"):
        assert not hasattr(os, name), name
    assert not hasattr(signal, "SIGKILL")
    for module in ("resource", "fcntl"):
        with pytest.raises(ImportError):
            __import__(module)


def test_train_eval_playground_on_simulated_windows(windows, root, tiny_model_dir, synthetic_dir, capsys):
    from scripts.evaluate import main as evaluate
    from scripts.model_playground import main as playground
    from scripts.train import main as train

    # the smoke config as `python dev.py demo` runs it (1 DataLoader worker), a few steps
    argv = ["--config", "training/configs/smoke_cpu.yaml", "--model", str(tiny_model_dir), "--source",
            str(synthetic_dir), "--max_steps", "3", "--per_device_train_batch_size", "4", "--save_steps", "2",
            "--eval_limit", "8", "--accuracy_eval_steps", "0", "--run_name", "win", "--disable_tqdm", "true"]
    assert main_guard(train, argv) == 0, capsys.readouterr().err
    run = root / "checkpoints" / "win"
    results = json.loads((run / "run_meta.json").read_text(encoding="utf-8"))["results"]
    assert results["global_step"] == 3 and (run / "adapter" / "adapter_model.safetensors").is_file()
    assert results["load_average_1m"] == [None, None]  # Windows has none: recorded as unknown, not faked
    assert results["peak_rss_mib"] > 10  # psutil's peak working set stands in for `resource`
    assert "1-min load average n/a -> n/a" in capsys.readouterr().out

    assert main_guard(evaluate, ["--config", "evals/configs/smoke_cpu.yaml", "--model", str(tiny_model_dir),
                                 "--source", str(synthetic_dir), "--adapter", "win", "--limit", "8",
                                 "--run_name", "win-eval", "--progress", "false"]) == 0
    metrics = json.loads((root / "evals" / "win-eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n"] == 8

    assert main_guard(playground, ["--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--uid",
                                   "dev-0-0-0", "--prompt", "Describe the left image.", "--max-new-tokens", "3"]) == 0
    assert len((root / "playground" / "log.jsonl").read_text(encoding="utf-8").splitlines()) == 1


def test_bench_suite_on_simulated_windows(windows, monkeypatch, tmp_path, capsys):
    """`python -m bench.run --quick --only train eval`, at test sizes; its training children run simulated too."""
    import bench.run

    if REAL_PLATFORM != "win32":
        monkeypatch.setattr(sys, "executable", launcher(tmp_path))
    monkeypatch.setitem(bench.run.SIZES, True, dict(bench.run.SIZES[True], train_steps=2, train_warmup=1,
                                                    train_rounds=1, train_rows=32, eval_n=4, eval_repeats=1,
                                                    eval_train_steps=2, eval_feed_rows=2))
    out = bench.run.main(["--quick", "--only", "train", "eval", "--root", str(tmp_path / "root"),
                          "--json", str(tmp_path / "suite.json")])
    assert not out["errors"], out["errors"]
    assert out["load_average_1m_start"] is None and out["load_average_1m_end"] is None
    rows = {r["measure"]: r["value"] for r in out["rows"]}
    for measure in ("training: ours (scripts/train.py path)", "training: bare TRL SFTTrainer",
                    "peak RSS: ours (scripts/train.py path)", "peak RSS: bare TRL SFTTrainer",
                    "eval: score (batched)", "eval: generate (one at a time)"):
        assert rows[measure] > 0, measure
    assert out["sections"]["train"]["result"]["settings"]["pinned_to_one_cpu"] is False  # no sched_setaffinity
    children = out["sections"]["train"]["result"]["alone"]
    assert all(c["rss_after_imports_mib"] > 10 for c in children.values())  # psutil, not /proc
    assert "1-min load n/a -> n/a" in capsys.readouterr().out


def test_run_names_valid_on_every_platform():
    """Letters of any script are fine in a run name; what Windows cannot hold in a folder name is refused."""
    from utils.paths import run_name_problem

    for ok in ("smoke", "étude-r8", "实验_1", "lr=2e-3+r8", "run@v2", "a.b"):
        assert run_name_problem(ok) is None, ok
    for bad in ("a/b", "a\\b", "x:y", "what?", "trailing.", "", " lead", "-x", "CON", "nul.txt", "com1"):
        assert run_name_problem(bad), bad


def test_thread_and_worker_defaults_on_simulated_windows(windows):
    """The thread rule and the feed's worker default (issue 13) use CPU affinity and the load average, which
    Windows lacks: without them they fall back to the core count and no load, and say so."""
    from evals.feed import default_num_workers
    from utils.run_meta import load_average_1m
    from utils.threads import default_torch_threads, usable_cores

    assert not hasattr(os, "sched_getaffinity") and load_average_1m() is None
    assert usable_cores() == (os.cpu_count() or 1)
    threads, why = default_torch_threads()
    assert 1 <= threads <= usable_cores() and why
    assert default_num_workers(accelerator=False) == 0
    assert default_num_workers(accelerator=True) == (2 if usable_cores() >= 2 else 0)
