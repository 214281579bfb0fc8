"""Exact resume: a run killed with SIGKILL mid-run and resumed ends with the adapter of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def _argv(tiny_model_dir, synthetic_dir, run_name):
    # LoRA dropout on: the resumed run must also restore the RNG state to match.
    return ["--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--run_name", run_name,
            "--max_steps", "60", "--per_device_train_batch_size", "8", "--learning_rate", "5e-3", "--lora_r", "4",
            "--lora_alpha", "8", "--lora_dropout", "0.1", "--activation_checkpointing", "false",
            "--logging_steps", "4", "--save_steps", "4", "--save_total_limit", "2", "--eval_split", "none",
            "--disable_tqdm", "true", "--torch_threads", "1", "--report_to", "none"]


def _adapter(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def test_killed_run_resumes_to_the_same_adapter(tiny_model_dir, synthetic_dir, root):
    from scripts.train import main

    main(_argv(tiny_model_dir, synthetic_dir, "straight"))
    straight = _adapter(root / "checkpoints" / "straight")

    run = root / "checkpoints" / "killed"
    proc = subprocess.Popen([sys.executable, "scripts/train.py", *_argv(tiny_model_dir, synthetic_dir, "killed")],
                            cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if (run / "checkpoint-8" / "trainer_state.json").is_file():
            proc.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
            break
        time.sleep(0.005)
    rc = proc.wait()
    assert rc == (-signal.SIGKILL if hasattr(signal, "SIGKILL") else 1), proc.stderr.read().decode()[-2000:]
    assert not (run / "adapter").exists()  # killed mid-run: no final adapter yet
    steps = sorted(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*"))
    assert steps and max(steps) < 60

    main(_argv(tiny_model_dir, synthetic_dir, "killed") + ["--resume"])
    resumed = _adapter(run)
    assert resumed.keys() == straight.keys()
    for k in straight:
        assert torch.allclose(resumed[k], straight[k], atol=1e-6, rtol=0), k
    assert any(v.abs().sum() > 0 for k, v in straight.items() if "lora_B" in k)
