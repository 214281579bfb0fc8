"""torch's CPU threads: the default rule (utils/threads.py), applied during an eval, recorded, and restored after."""

from __future__ import annotations

import json

import pytest

from utils.cli import main_guard

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_default_leaves_busy_cores_alone(monkeypatch):
    import utils.threads as threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "physical_cores", lambda: 4)
    assert threads.default_torch_threads(0, load=0.2)[0] == 4  # capped at the physical cores
    assert threads.default_torch_threads(2, load=0.2)[0] == 4
    assert threads.default_torch_threads(0, load=5.4)[0] == 3
    assert threads.default_torch_threads(2, load=5.4)[0] == 1
    assert threads.default_torch_threads(0, load=30.0)[0] == 1  # never fewer than one
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "physical_cores", lambda: 2)
    assert threads.default_torch_threads(0, load=0.3)[0] == 2  # an idle 2-core machine
    assert threads.default_torch_threads(0, load=1.0)[0] == 1  # another process on one of the two cores
    n, why = threads.default_torch_threads(2, load=0.0)
    assert n == 1 and "2 DataLoader worker(s)" in why


def test_eval_runs_with_the_threads_asked_records_them_and_restores(root, tiny_model_dir, synthetic_dir, monkeypatch):
    import torch

    import evals.runner as runner  # the eval scores through the name it imported from scoring.modes
    from scripts.evaluate import main

    seen = []
    real = runner.score_encoded

    def spy(*a, **kw):
        seen.append(torch.get_num_threads())
        return real(*a, **kw)

    monkeypatch.setattr(runner, "score_encoded", spy)
    assert torch.get_num_threads() == 1
    argv = ["--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--task", "nlvr2", "--limit", "8",
            "--batch_size", "4", "--progress", "false", "--num_workers", "0"]
    assert main_guard(main, [*argv, "--run_name", "t2", "--torch_threads", "2"]) == 0
    assert seen == [2, 2] and torch.get_num_threads() == 1
    meta = json.loads((root / "evals" / "t2" / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["sessions"][0]["torch_threads"] == {"threads": 2, "from": "given (--torch_threads)"}

    seen.clear()
    assert main_guard(main, [*argv, "--run_name", "auto"]) == 0
    meta = json.loads((root / "evals" / "auto" / "run_meta.json").read_text(encoding="utf-8"))
    recorded = meta["sessions"][0]["torch_threads"]
    assert recorded["from"].startswith("auto:") and seen == [recorded["threads"]] * 2 and recorded["threads"] >= 1
    assert main_guard(main, [*argv, "--run_name", "bad", "--torch_threads", "0"]) == 2


def test_playground_applies_and_logs_its_threads(root, tiny_model_dir, synthetic_dir):
    import torch

    from evals.playground import Playground

    pg = Playground(str(tiny_model_dir), root=root, torch_threads=2)
    assert torch.get_num_threads() == 2
    rec = pg.run(pg.images_from_uid("dev-0-0-0", str(synthetic_dir), "validation"), "Say True.", log=False)
    assert rec["torch_threads"] == {"threads": 2, "from": "given (--torch_threads)"}
