"""use_liger_kernel: a GPU-only option, refused with one clear line where it cannot run, before anything is written."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from training.options import check_liger
from utils.errors import VLMStudiesError

REPO = Path(__file__).resolve().parent.parent


def test_liger_is_refused_on_cpu_before_the_run_dir(tiny_model_dir, synthetic_dir, root):
    from scripts.train import main

    with pytest.raises(VLMStudiesError, match="use_liger_kernel needs a CUDA GPU"):
        main(["--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--run_name", "liger",
              "--use_liger_kernel", "true"])
    assert not (root / "checkpoints" / "liger").exists()


def test_liger_needs_the_package_on_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = SimpleNamespace(use_liger_kernel=True, use_cpu=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "liger_kernel" else real(name, *a))
    with pytest.raises(VLMStudiesError, match="liger-kernel is not installed: pip install liger-kernel"):
        check_liger(gpu)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "liger_kernel" else real(name, *a))
    check_liger(gpu)  # a GPU with the package: accepted
    check_liger(SimpleNamespace(use_liger_kernel=False, use_cpu=True))  # off: nothing to check


def test_the_planner_plans_a_liger_config_from_a_cpu(capsys):
    from scripts.plan_run import main

    plan = main(["--config", str(REPO / "training/configs/qwen2vl_2b_lora.yaml"), "--use_liger_kernel", "true"])
    assert any("use_liger_kernel" in n for n in plan.notes) and "use_liger_kernel is on" in capsys.readouterr().out
