"""DataLoader workers started with spawn, as on Windows and macOS: a fresh interpreter that re-imports the
entry script (guarded by `if __name__ == "__main__"`) and unpickles the dataset and the collator.

Linux forks by default, so nothing else in the suite would notice a lambda, a local class or an open file
handed to a worker. Here the smoke training runs as `python scripts/train.py` with spawn forced and its one
worker, and a streaming training set goes through a spawned worker batch for batch like the main process; the
smoke eval runs as `python scripts/evaluate.py` with spawn forced and two feed workers (evals/feed.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from utils.paths import REPO_ROOT

# `python scripts/train.py ARGS` with spawn as the start method; records what each spawned process runs.
SPAWN_RUNNER = """
import atexit, json, multiprocessing, multiprocessing.context as context, runpy, sys

multiprocessing.set_start_method("spawn")
started, launch = [], context.SpawnProcess._Popen

def record(process_obj):
    target = process_obj._target
    started.append(f"{target.__module__}.{target.__name__}" if target else process_obj.name)
    return launch(process_obj)

context.SpawnProcess._Popen = staticmethod(record)
record_path, sys.argv = sys.argv[1], sys.argv[2:]
atexit.register(lambda: open(record_path, "w", encoding="utf-8").write(json.dumps(started)))
runpy.run_path(sys.argv[0], run_name="__main__")
"""
WORKER_LOOP = "torch.utils.data._utils.worker._worker_loop"


def test_smoke_training_with_spawned_workers(root, tiny_model_dir, synthetic_dir, tmp_path):
    """Over two epochs: the smoke config's persistent worker is spawned once, not once per epoch."""
    record = tmp_path / "spawned.json"
    argv = ["scripts/train.py", "--config", "training/configs/smoke_cpu.yaml", "--model", str(tiny_model_dir),
            "--source", str(synthetic_dir), "--max_steps", "12", "--per_device_train_batch_size", "4",
            "--eval_split", "none", "--accuracy_eval_steps", "0", "--save_steps", "5", "--run_name", "spawned",
            "--disable_tqdm", "true"]
    env = dict(os.environ, VLM_STUDIES_ROOT=str(root), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SPAWN_RUNNER, str(record), *argv], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = root / "checkpoints" / "spawned"
    meta = json.loads((run / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["results"]["global_step"] == 12 and (run / "adapter" / "adapter_model.safetensors").is_file()
    assert meta["dataset"]["train_rows"] / 4 < 12  # more than one epoch
    # the batches came from one spawned worker, kept for the second epoch
    assert json.loads(record.read_text(encoding="utf-8")).count(WORKER_LOOP) == 1


@pytest.mark.usefixtures("one_torch_thread")
def test_streaming_batches_from_a_spawned_worker_equal_the_main_process(root, tiny_model_dir, synthetic_dir):
    """The streaming set (a generator over the source with a shuffle buffer) and the run's collator, pickled
    into a spawned worker, give the very batches the main process builds."""
    import torch
    from torch.utils.data import DataLoader
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from training.data import GuardedCollator, load_train_data
    from training.options import DataOptions
    from utils.models import load_processor

    processor = load_processor(str(tiny_model_dir))
    data = load_train_data(DataOptions(source=str(synthetic_dir), mode="streaming", eval_split=None), processor,
                           512, seed=0)
    collator = GuardedCollator(DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True),
                               processor, 512)

    def batches(**kw):
        loader = DataLoader(data.dataset, batch_size=4, collate_fn=collator, **kw)
        out = []
        for batch in loader:
            out.append(batch)
            if len(out) == 2:
                return out

    here = batches(num_workers=0)
    spawned = batches(num_workers=1, multiprocessing_context="spawn")
    for a, b in zip(here, spawned, strict=True):
        assert set(a) == set(b)
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_persistent_workers_only_with_workers():
    """smoke_cpu.yaml keeps its worker; run with no workers (benchmarks, ablations) there is none to keep."""
    from training.options import parse_train_options

    (_, _, _, args), resolved, _ = parse_train_options(["--config", "training/configs/smoke_cpu.yaml"])
    assert args.dataloader_num_workers == 1 and args.dataloader_persistent_workers is True
    (_, _, _, args), resolved, _ = parse_train_options(["--config", "training/configs/smoke_cpu.yaml",
                                                        "--dataloader_num_workers", "0"])
    assert args.dataloader_persistent_workers is False and resolved["dataloader_persistent_workers"] is False


def test_smoke_eval_with_spawned_feed_workers(root, tiny_model_dir, synthetic_dir, tmp_path):
    """The smoke eval (`python scripts/evaluate.py`, evals/configs/smoke_cpu.yaml) with spawn forced and two feed
    workers: each unpickles the split, the task's name and the processor; the predictions equal an in-process
    run's (a fork would hide an unpicklable filter, split or processor)."""
    record = tmp_path / "spawned.json"
    argv = ["scripts/evaluate.py", "--config", "evals/configs/smoke_cpu.yaml", "--model", str(tiny_model_dir),
            "--source", str(synthetic_dir), "--batch_size", "4", "--progress", "false", "--torch_threads", "1"]
    env = dict(os.environ, VLM_STUDIES_ROOT=str(root), OMP_NUM_THREADS="1")
    runs = {}
    for name, workers, runner in (("spawned", "2", [sys.executable, "-c", SPAWN_RUNNER, str(record)]),
                                  ("in_process", "0", [sys.executable])):
        proc = subprocess.run([*runner, *argv, "--num_workers", workers, "--run_name", name], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = (root / "evals" / name / "predictions.jsonl").read_text(encoding="utf-8")
    assert runs["spawned"] == runs["in_process"] and len(runs["spawned"].splitlines()) > 4  # the grounding rows
    assert json.loads(record.read_text(encoding="utf-8")).count(WORKER_LOOP) == 2
