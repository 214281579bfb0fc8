"""Beyond one process: training under `accelerate launch` with 2 CPU processes (DDP over gloo), and eval
sharded across processes (launched, or by hand) merging into the same predictions.jsonl as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils.errors import VLMStudiesError

REPO = Path(__file__).resolve().parent.parent
ACCELERATE_CPU = REPO / "training" / "configs" / "accelerate" / "cpu_2proc.yaml"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script: str, *args, timeout=240):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CPU),
           "--main_process_port", str(_free_port()), script, *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8", timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


def _eval_argv(tiny_model_dir, synthetic_dir, run_name, *extra):
    return ["--model", str(tiny_model_dir), "--task", "nlvr2_synth", "--source", str(synthetic_dir), "--batch_size",
            "4", "--run_name", run_name, "--progress", "false", "--tensorboard", "false", *extra]


def test_two_process_training_completes_and_its_adapter_loads(tiny_model_dir, synthetic_dir, root):
    from utils.models import load_model_and_processor

    out = _launch("scripts/train.py", "--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--run_name",
                  "ddp", "--max_steps", "4", "--per_device_train_batch_size", "4", "--lora_r", "4", "--save_steps", "2",
                  "--eval_limit", "8", "--activation_checkpointing", "false", "--report_to", "none", "--disable_tqdm",
                  "true", "--dataloader_num_workers", "0", "--torch_threads", "1",
                  "--ddp_find_unused_parameters", "false")
    assert "2 process(es)" in out
    assert out.count("[train] done in") == 1  # the summary (and every file) comes from the main process only
    run = root / "checkpoints" / "ddp"
    assert sorted(p.name for p in run.iterdir()) == ["accuracy.json", "adapter", "checkpoint-2", "checkpoint-4",
                                                     "config.yaml", "run_meta.json"]
    meta = json.loads((run / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["results"]["processes"] == 2 and meta["results"]["global_step"] == 4
    state = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["train_batch_size"] == 4 and state["global_step"] == 4
    model, _ = load_model_and_processor(str(tiny_model_dir), adapter=str(run))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().sum()) > 0 for p in lora_b)  # trained weights, not a fresh adapter


def test_launched_sharded_eval_merges_to_the_single_process_predictions(tiny_model_dir, synthetic_dir, root):
    from scripts.evaluate import main as evaluate

    evaluate(_eval_argv(tiny_model_dir, synthetic_dir, "single"))
    out = _launch("scripts/evaluate.py", *_eval_argv(tiny_model_dir, synthetic_dir, "sharded"))
    assert "shard 0 of 2" in out and "shard 1 of 2" in out
    single, sharded = (root / "evals" / n for n in ("single", "sharded"))
    assert (sharded / "predictions.jsonl").read_bytes() == (single / "predictions.jsonl").read_bytes()
    a, b = (json.loads((d / "metrics.json").read_text(encoding="utf-8")) for d in (single, sharded))
    assert {k: v for k, v in a.items() if k != "run_name"} == {k: v for k, v in b.items() if k != "run_name"}
    assert not list((sharded / "shards").glob("shard-*"))  # merged, nothing left over


def test_shards_by_hand_merge_when_the_last_finishes_and_refuse_gaps(tiny_model_and_processor, synthetic_dir, root):
    from scoring.predictions import read_predictions
    from evals.runner import EvalArgs, merge_shards, run_eval, shard_paths

    def run(name, **kw):
        args = EvalArgs(model="tiny", task="nlvr2_synth", source=str(synthetic_dir), batch_size=3, run_name=name,
                        progress=False, tensorboard=False, **kw)
        return run_eval(args, root=root, model_and_processor=tiny_model_and_processor)

    single = run("one")["run_dir"]
    assert run("three", num_shards=3, shard_index=2)["metrics"] is None
    assert run("three", num_shards=3, shard_index=0)["metrics"] is None
    three = root / "evals" / "three"
    assert not (three / "predictions.jsonl").exists()
    last = run("three", num_shards=3, shard_index=1)
    assert last["metrics"]["n"] == 32 and last["metrics"]["accuracy"] == json.loads(
        (single / "metrics.json").read_text(encoding="utf-8"))["accuracy"]
    assert (three / "predictions.jsonl").read_bytes() == (single / "predictions.jsonl").read_bytes()

    # A shard whose file lost a prediction: the merge names the uid and the shard that owed it.
    run("gap", num_shards=2, shard_index=0)
    gap = root / "evals" / "gap"
    shard0, _ = shard_paths(gap, 0, 2)
    recs = read_predictions(shard0)
    shard0.write_text("".join(json.dumps(r) + "\n" for r in recs[1:]), encoding="utf-8")  # drop the shard's first record
    with pytest.raises(VLMStudiesError, match=f"1 uid.*first: {recs[0]['uid']}, owed by shard 0"):
        run("gap", num_shards=2, shard_index=1)
    # ... and shards that walked different examples (another batch size) are refused, not interleaved.
    run("mixed", num_shards=2, shard_index=0)
    with pytest.raises(VLMStudiesError, match="saw different examples|no prediction"):
        args = EvalArgs(model="tiny", task="nlvr2_synth", source=str(synthetic_dir), batch_size=3, run_name="mixed",
                        progress=False, tensorboard=False, limit=20, num_shards=2, shard_index=1)
        run_eval(args, root=root, model_and_processor=tiny_model_and_processor)
    assert merge_shards(root / "evals" / "one", 2) is None  # not a sharded run: nothing to merge
    with pytest.raises(VLMStudiesError, match="shard_index"):
        from utils.config import parse_config

        parse_config((EvalArgs,), ["--num_shards", "2"])
