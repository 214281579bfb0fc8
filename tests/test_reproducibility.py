"""Exact reproducibility on CPU: the same config and seed give the same adapter bytes and the same metrics;
scripts/reproduce.py re-runs a finished training or eval run from its saved config and says so."""

from __future__ import annotations

import hashlib
import json

import pytest

from utils.errors import VLMStudiesError


def _argv(tiny_model_dir, synthetic_dir, run_name, *extra):
    # LoRA dropout and a worker process on: the RNG streams and the data order must repeat too.
    return ["--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--run_name", run_name,
            "--max_steps", "8", "--per_device_train_batch_size", "4", "--learning_rate", "5e-3", "--lora_r", "4",
            "--lora_alpha", "8", "--lora_dropout", "0.1", "--activation_checkpointing", "false",
            "--save_steps", "4", "--eval_limit", "16", "--eval_batch_size", "8", "--report_to", "none",
            "--disable_tqdm", "true", "--torch_threads", "1", "--dataloader_num_workers", "1", *extra]


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_config_and_seed_give_identical_adapter_and_metrics(tiny_model_dir, synthetic_dir, root, capsys):
    from scripts.reproduce import main as reproduce
    from scripts.train import main as train

    a = train(_argv(tiny_model_dir, synthetic_dir, "a"))
    b = train(_argv(tiny_model_dir, synthetic_dir, "b"))
    c = train(_argv(tiny_model_dir, synthetic_dir, "c", "--seed", "7"))
    runs = {n: root / "checkpoints" / n for n in "abc"}
    hashes = {n: _sha(r / "adapter" / "adapter_model.safetensors") for n, r in runs.items()}
    assert hashes["a"] == hashes["b"] == a["adapter_sha256"] == b["adapter_sha256"]
    assert hashes["c"] != hashes["a"]  # the hash does see the seed: equality above is not vacuous
    acc = {n: json.loads((r / "accuracy.json").read_text(encoding="utf-8")) for n, r in runs.items()}
    assert acc["a"] == acc["b"] and a["train_loss"] == b["train_loss"] and a["train_loss"] != c["train_loss"]

    # From the saved config alone, into a new run dir, with a report of what matched.
    report = reproduce([str(runs["a"])])
    assert report["match"] and report["reproduction"].endswith("a-repro")
    assert report["checks"]["adapter_sha256"]["reproduction"] == hashes["a"]
    assert {"adapter_sha256", "accuracy_before", "accuracy_after", "train_loss", "global_step"} <= set(report["checks"])
    saved = json.loads((root / "checkpoints" / "a-repro" / "reproduce.json").read_text(encoding="utf-8"))
    assert saved["match"] and saved["original"] == str(runs["a"])
    assert "REPRODUCED exactly" in capsys.readouterr().out


def test_eval_reproduces_predictions_and_metrics(tiny_model_dir, synthetic_dir, root, capsys):
    from scripts.evaluate import main as evaluate
    from scripts.reproduce import main as reproduce

    evaluate(["--model", str(tiny_model_dir), "--task", "nlvr2_synth", "--source", str(synthetic_dir),
              "--batch_size", "8", "--run_name", "ev", "--progress", "false", "--tensorboard", "false"])
    report = reproduce(["ev"])  # a run name under the root
    assert report["match"] and report["checks"]["max_abs_p_true_difference"]["reproduction"] == 0.0
    orig, new = (root / "evals" / n / "predictions.jsonl" for n in ("ev", "ev-repro"))
    assert orig.read_bytes() == new.read_bytes()
    assert report["checks"]["metrics.accuracy"]["match"] and report["checks"]["uids"]["original"] == 32

    # A reproduction that differs says what differs (here: the original's predictions were tampered with).
    lines = orig.read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[0])
    rec["prediction"], rec["p_true"] = not rec["prediction"], 1 - rec["p_true"]
    orig.write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(VLMStudiesError, match="did not reproduce.*predictions_flipped"):
        reproduce(["ev", "--name", "ev-check"])
    with pytest.raises(VLMStudiesError, match="neither a training run dir"):
        reproduce([str(root)])
