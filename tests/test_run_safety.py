"""Nothing lost, nothing half-done: output folders, run locks, failed starts, full disks, an unreachable Hub.

Each test is a case a user met (issue 11): the tool must refuse with one line naming the thing and
the fix, and every file already written must be exactly as it was.
"""

from __future__ import annotations

import errno
import hashlib
import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from utils.cli import main_guard
from utils.errors import VLMStudiesError
from utils.paths import REPO_ROOT

MARKER = ".vlm_studies_output.json"  # utils.io.OUTPUT_MARKER, spelt out: this file is also run against older code

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def evaluate(argv):
    from scripts.evaluate import main

    return main_guard(main, [*argv, "--progress", "false"])


def eval_argv(model_dir, data_dir, *extra):
    return ["--model", str(model_dir), "--source", str(data_dir), "--task", "nlvr2", "--split", "validation",
            "--batch_size", "4", "--tensorboard", "false", *extra]


def analyze(argv):
    from scripts.analyze import main

    return main_guard(main, argv)


def snapshot(folder: Path, skip: str | None = None) -> dict:
    """Every file under `folder` (relative path -> sha256), optionally leaving one subfolder out."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not (skip and p.relative_to(folder).parts[0] == skip)}


def last_error(capsys) -> str:
    """The one-line error (library warnings may come before it)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err[-5:]
    return err[-1]


def train_argv(tiny_model_dir, synthetic_dir, run_name, *extra):
    return ["--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--run_name", run_name, "--max_steps", "6",
            "--per_device_train_batch_size", "4", "--learning_rate", "5e-3", "--lora_r", "4", "--lora_alpha", "8",
            "--lora_dropout", "0.1", "--activation_checkpointing", "false", "--logging_steps", "3", "--save_steps", "3",
            "--eval_split", "none", "--disable_tqdm", "true", "--torch_threads", "1", "--report_to", "none", *extra]


def train(argv):
    from scripts.train import main

    return main(argv)


def rewrite_parquet(src: Path, dst: Path, split: str, change) -> Path:
    """A copy of the split's rows with `change(list_of_row_dicts)` applied (pyarrow only, not our loader)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [r for f in sorted(src.glob(f"{split}-*.parquet")) for r in pq.read_table(f).to_pylist()]
    rows = change(rows)
    dst.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), dst / f"{split}-00000.parquet")
    return dst


# ----------------------------------------------------------------------------- 1: folders a tool owns

def test_output_dir_replaces_only_what_its_tool_wrote(tmp_path):
    from utils.io import OUTPUT_MARKER, output_dir

    assert OUTPUT_MARKER == MARKER
    out = tmp_path / "out"
    with output_dir(out, "tool-a") as d:
        (d / "a.txt").write_text("1", encoding="utf-8")
    with output_dir(out, "tool-a") as d:  # its own folder: replaced whole (no stale a.txt)
        (d / "b.txt").write_text("2", encoding="utf-8")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "b.txt"]
    with pytest.raises(VLMStudiesError, match="tool-b did not write"):
        with output_dir(out, "tool-b"):
            raise AssertionError("refused before any work")
    (out / "mine.txt").write_text("user", encoding="utf-8")  # added by hand: not the tool's to delete
    with pytest.raises(VLMStudiesError, match=r"tool-a did not write \(mine.txt\)"):
        with output_dir(out, "tool-a"):
            pass
    assert (out / "mine.txt").read_text(encoding="utf-8") == "user" and (out / "b.txt").is_file()
    (out / "mine.txt").unlink()
    with pytest.raises(RuntimeError):  # a failure while writing: the old folder stays, nothing is left aside
        with output_dir(out, "tool-a") as d:
            (d / "c.txt").write_text("3", encoding="utf-8")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "empty").mkdir()
    with output_dir(tmp_path / "empty", "tool-a") as d:  # an empty folder (made by the user) is fine
        (d / "x.txt").write_text("x", encoding="utf-8")
    assert (tmp_path / "empty" / "x.txt").is_file()


def test_analyze_never_deletes_a_run_or_files_it_did_not_write(root, tiny_model_dir, synthetic_dir, tmp_path, capsys):
    assert evaluate(eval_argv(tiny_model_dir, synthetic_dir, "--run_name", "r", "--limit", "8")) == 0
    run = root / "evals" / "r"
    before = snapshot(run)
    assert {"predictions.jsonl", "metrics.json", "config.yaml"} <= set(before)
    assert analyze([str(run), "--out", str(run), "--no_images"]) == 2  # the run dir itself
    assert "did not write" in last_error(capsys) and snapshot(run) == before
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "paper.md").write_text("draft", encoding="utf-8")
    assert analyze([str(run), "--out", str(notes), "--no_images"]) == 2  # any folder of someone else's
    assert "paper.md" in last_error(capsys) and sorted(p.name for p in notes.iterdir()) == ["paper.md"]

    # its own report folder is replaced, also one written before reports carried a marker
    assert analyze([str(run), "--no_images"]) == 0 and analyze([str(run), "--no_images"]) == 0
    report = run / "report"
    (report / MARKER).unlink()
    assert analyze([str(run), "--no_images"]) == 0 and (report / MARKER).is_file()
    (report / "my-notes.md").write_text("mine", encoding="utf-8")
    assert analyze([str(run), "--no_images"]) == 2
    assert "my-notes.md" in last_error(capsys) and (report / "my-notes.md").read_text(encoding="utf-8") == "mine"
    assert snapshot(run, skip="report") == before
    assert not [p for p in run.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_model_and_data_writers_never_replace_a_foreign_folder(tmp_path, capsys):
    from scripts.make_synthetic_nlvr2 import main as make_synth
    from scripts.make_tiny_model import main as make_model

    for tool, argv in ((make_model, ["--size", "tiny"]), (make_synth, ["--train", "4", "--validation", "2",
                                                                       "--test", "0"])):
        out = tmp_path / f"out-{tool.__module__.split('.')[-1]}"
        out.mkdir()
        (out / "thesis.tex").write_text("years of work", encoding="utf-8")
        assert main_guard(tool, [*argv, "--out", str(out)]) == 2
        assert "thesis.tex" in last_error(capsys)
        assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
        (out / "thesis.tex").unlink()
        assert main_guard(tool, [*argv, "--out", str(out)]) == 0  # empty, then its own output: both fine
        assert main_guard(tool, [*argv, "--out", str(out)]) == 0
        assert not [p for p in tmp_path.iterdir() if ".partial" in p.name or ".old-" in p.name]


def test_ablation_never_deletes_a_foreign_folder_under_a_cells_run_name(root, tmp_path):
    import yaml

    from studies.ablation import load_grid, run_cell, run_names

    spec = {"train_config": "training/configs/smoke_cpu.yaml", "eval_config": "evals/configs/smoke_cpu.yaml",
            "name": "safe", "base": {"max_steps": 2}, "grids": [{"lora_r": [4]}]}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    grid = load_grid(tmp_path / "g.yaml")
    cell = grid.cells[0]
    foreign = root / "checkpoints" / run_names(grid, cell)
    foreign.mkdir(parents=True)
    (foreign / "results.csv").write_text("someone's numbers", encoding="utf-8")
    state = run_cell(grid, cell, root, log=lambda *a: None)
    assert state["status"] == "failed" and "nothing was deleted" in state["error"]
    assert (foreign / "results.csv").read_text(encoding="utf-8") == "someone's numbers"


# ----------------------------------------------------------------------------- 16: commands in the report

@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell to paste the command into")
def test_report_commands_survive_pasting_into_a_shell(root, tiny_model_dir, synthetic_dir, tmp_path):
    def nasty(rows):
        for i, r in enumerate(rows):
            r["identifier"] = f"dev-{i}-0-0;touch${{IFS}}pwned{i};#"
        return rows

    data = rewrite_parquet(synthetic_dir, tmp_path / "nasty", "validation", nasty)
    assert evaluate(eval_argv(tiny_model_dir, data, "--run_name", "nasty")) == 0
    run = root / "evals" / "nasty"
    assert analyze([str(run), "--no_images"]) == 0
    page = (run / "report" / "index.html").read_text(encoding="utf-8")
    commands = [html.unescape(c) for c in re.findall(r"<code>(python scripts/inspect_sample\.py.*?)</code>", page)]
    assert commands, "the report shows no inspect command"
    for cmd in commands:
        shown = subprocess.run(["sh", "-c", "printf '%s\\n' " + cmd], cwd=tmp_path, capture_output=True, text=True,
                               encoding="utf-8", timeout=30)
        args = shown.stdout.splitlines()
        uid = args[args.index("--uid") + 1]
        assert re.fullmatch(r"dev-\d+-0-0;touch\$\{IFS\}pwned\d+;#", uid), args
    assert not list(tmp_path.glob("pwned*"))


# ----------------------------------------------------------------------------- 2: a finished run is kept

def test_a_partial_eval_never_overwrites_a_finished_one(root, tiny_model_dir, synthetic_dir, capsys):
    full = eval_argv(tiny_model_dir, synthetic_dir)
    assert evaluate(full) == 0
    (run,) = [p for p in (root / "evals").iterdir() if not p.name.startswith(".")]  # .locks/ aside
    before = snapshot(run)
    assert json.loads((run / "metrics.json").read_text(encoding="utf-8"))["n"] == 32

    assert evaluate([*full, "--limit", "8"]) == 0  # the default name of a partial run is its own
    partial = run.with_name(run.name + "-limit8")
    assert json.loads((partial / "metrics.json").read_text(encoding="utf-8"))["n"] == 8
    assert snapshot(run) == before

    for extra, named in ((["--limit", "8"], "limit: None -> 8"), (["--ece_bins", "5"], "ece_bins: 10 -> 5")):
        assert evaluate([*full, "--run_name", run.name, *extra]) == 2
        err = last_error(capsys)
        assert named in err and "finished eval" in err
        assert snapshot(run) == before  # metrics.json and config.yaml untouched
    assert evaluate([*full, "--run_name", partial.name, "--limit", "16"]) == 0  # a longer limit extends a run
    assert json.loads((partial / "metrics.json").read_text(encoding="utf-8"))["n"] == 16
    assert evaluate([*full, "--run_name", partial.name, "--limit", "4", "--overwrite", "true"]) == 0  # starts over
    lines = (partial / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and json.loads((partial / "metrics.json").read_text(encoding="utf-8"))["n"] == 4


# ----------------------------------------------------------------------------- 3: one process per run

@pytest.mark.parametrize("shard", [[], ["--num_shards", "2", "--shard_index", "0"]], ids=["run", "shard"])
def test_a_second_eval_of_the_same_run_is_refused_while_the_first_runs(root, tiny_model_dir, synthetic_dir, shard,
                                                                        monkeypatch, capsys):
    import evals.runner

    argv = eval_argv(tiny_model_dir, synthetic_dir, "--run_name", "busy", "--batch_size", "8", *shard)
    second = {}
    real = evals.runner.predict_batch

    def predict_and_race(*a, **kw):
        if not second:  # while the first eval holds the run: the same command in another process
            env = dict(os.environ, VLM_STUDIES_ROOT=str(root), OMP_NUM_THREADS="1")
            p = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "evaluate.py"), *argv, "--progress",
                                "false"], env=env, capture_output=True, text=True, encoding="utf-8", timeout=300)
            second.update(rc=p.returncode, err=p.stderr.strip().splitlines()[-1])
        return real(*a, **kw)

    monkeypatch.setattr(evals.runner, "predict_batch", predict_and_race)
    assert evaluate(argv) == 0
    assert second["rc"] == 2, second
    assert "eval run" in second["err"] and "busy" in second["err"] and "in use by another process" in second["err"]
    assert ("shard 0 of 2" in second["err"]) == bool(shard)
    assert f"pid {os.getpid()}" in second["err"]  # names the holder
    written = root / "evals" / "busy" / ("shards/shard-000-of-002.jsonl" if shard else "predictions.jsonl")
    uids = [json.loads(x)["uid"] for x in written.read_text(encoding="utf-8").splitlines()]
    assert len(uids) == len(set(uids)) == (16 if shard else 32)


def _hold_lock(lock_file: Path):
    """Another process holding `lock_file` through the run lock, until it is killed."""
    code = ("import sys, time; from utils.locks import run_lock\n"
            "with run_lock(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock_file)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), text=True, encoding="utf-8")
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_shard_locks_and_a_killed_holder(root, tiny_model_and_processor, synthetic_dir):
    from evals.runner import EvalArgs, run_eval

    def run(name, **kw):
        args = EvalArgs(model="tiny", task="nlvr2_synth", source=str(synthetic_dir), batch_size=4, run_name=name,
                        progress=False, tensorboard=False, **kw)
        return run_eval(args, root=root, model_and_processor=tiny_model_and_processor)

    holder = _hold_lock(root / "evals" / ".locks" / "s.shard-000-of-002.lock")
    try:
        with pytest.raises(VLMStudiesError, match=f"shard 0 of 2 of eval run .*s is in use .*pid {holder.pid}"):
            run("s", num_shards=2, shard_index=0)
        assert run("s", num_shards=2, shard_index=1)["metrics"] is None  # the other shard is free
        with pytest.raises(VLMStudiesError, match="eval run .*s is in use by another process"):
            run("s")  # a whole-run eval while a shard runs: refused too
    finally:
        holder.kill()  # as kill -9 would: the OS frees its lock
        holder.wait(timeout=30)
    merged = run("s", num_shards=2, shard_index=0)  # no stale lock: the shard runs and, last, merges
    assert merged["metrics"]["n"] == 32


# ----------------------------------------------------------------------------- 9 / 13: starts and resumes

def test_a_failed_start_leaves_no_run_dir(tiny_model_dir, synthetic_dir, root, monkeypatch, capsys):
    import training.trainer

    with pytest.raises(VLMStudiesError, match="--learning_rate -0.001 is out of range"):
        train(train_argv(tiny_model_dir, synthetic_dir, "neg", "--learning_rate", "-0.001"))
    assert not (root / "checkpoints" / "neg").exists()

    def broken(*a, **kw):
        raise RuntimeError("the data could not be loaded")

    with monkeypatch.context() as m:  # any failure before the first checkpoint
        m.setattr(training.trainer, "load_data", broken)
        with pytest.raises(RuntimeError, match="could not be loaded"):
            train(train_argv(tiny_model_dir, synthetic_dir, "boom"))
    assert not (root / "checkpoints" / "boom").exists() and not (root / "logs" / "tb" / "boom").exists()
    train(train_argv(tiny_model_dir, synthetic_dir, "boom", "--max_steps", "1"))  # the rerun just works
    assert (root / "checkpoints" / "boom" / "adapter").is_dir()

    # an eval whose model cannot be loaded leaves no run dir either
    assert evaluate(eval_argv("nobody/no-such-model", synthetic_dir, "--run_name", "nomodel")) == 2
    assert "could not load" in last_error(capsys) and not (root / "evals" / "nomodel").exists()


def test_train_disk_full_resumes_exactly_and_a_changed_option_is_named(tiny_model_dir, synthetic_dir, root,
                                                                        monkeypatch, capsys):
    import torch
    from safetensors.torch import load_file

    from training.trainer import complete

    train(train_argv(tiny_model_dir, synthetic_dir, "straight"))
    real_save = torch.save

    def full_disk_save(obj, f, *a, **kw):
        if str(f).endswith(os.path.join("checkpoint-6", "optimizer.pt")):
            Path(f).write_bytes(b"PK\x03\x04partial")  # what a write cut short leaves
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return real_save(obj, f, *a, **kw)

    argv = train_argv(tiny_model_dir, synthetic_dir, "full")
    with monkeypatch.context() as m:
        m.setattr(torch, "save", full_disk_save)
        assert main_guard(train, argv) == 2
    err = last_error(capsys)
    run = root / "checkpoints" / "full"
    assert "the disk is full" in err and str(run) in err and "--run_name full --resume" in err
    assert complete(run / "checkpoint-3") and not complete(run / "checkpoint-6")  # what was saved is whole
    torch.load(run / "checkpoint-3" / "optimizer.pt", weights_only=True)
    train(argv + ["--resume"])
    a, b = load_file(str(run / "adapter" / "adapter_model.safetensors")), \
        load_file(str(root / "checkpoints" / "straight" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)

    # 13: resuming a finished run with another option names it instead of saying "already finished"
    with pytest.raises(VLMStudiesError, match="finished with other options.*lora_r: 4 -> 8"):
        train(train_argv(tiny_model_dir, synthetic_dir, "straight", "--lora_r", "8", "--resume"))
    assert train(train_argv(tiny_model_dir, synthetic_dir, "straight", "--resume"))["global_step"] == 6


# ----------------------------------------------------------------------------- 10: eval on a full disk

def test_eval_disk_full_is_one_line_and_the_rerun_completes_it(root, tiny_model_dir, synthetic_dir, monkeypatch,
                                                               capsys):
    from scoring.predictions import PredictionWriter

    argv = eval_argv(tiny_model_dir, synthetic_dir, "--run_name", "full")
    real = PredictionWriter.append
    calls = []

    def append_until_full(self, records):
        calls.append(len(records))
        if len(calls) == 3:  # the third batch: half a write, then no space left
            self._fh.write(json.dumps(records[0]).encode()[:40])
            self._fh.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        return real(self, records)

    with monkeypatch.context() as m:
        m.setattr(PredictionWriter, "append", append_until_full)
        assert evaluate(argv) == 2
    err = last_error(capsys)
    run = root / "evals" / "full"
    assert "the disk is full" in err and str(run) in err and "run the same command again" in err
    assert evaluate(argv) == 0
    assert evaluate(eval_argv(tiny_model_dir, synthetic_dir, "--run_name", "clean")) == 0
    recs = [json.loads(x) for x in (run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    clean = [json.loads(x) for x in (root / "evals" / "clean" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert recs == clean
    m, c = (json.loads((root / "evals" / n / "metrics.json").read_text(encoding="utf-8")) for n in ("full", "clean"))
    m.pop("run_name"), c.pop("run_name")
    assert m == c


def test_a_full_disk_anywhere_is_one_line_and_keeps_what_was_there(root, synthetic_dir, tmp_path, monkeypatch,
                                                                    capsys):
    import vlm_datasets.gallery
    from scripts.sample_gallery import main as gallery
    from utils.io import atomic_write_text

    target = tmp_path / "kept.json"
    target.write_text("old", encoding="utf-8")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", no_space)
        with pytest.raises(OSError):
            atomic_write_text(target, "new")
    assert target.read_text(encoding="utf-8") == "old" and not list(tmp_path.glob("*.tmp"))

    def full(sample, folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "x.png"))

    monkeypatch.setattr(vlm_datasets.gallery, "write_entry", full)
    out = tmp_path / "g"
    assert main_guard(gallery, ["--random", "2", "--source", str(synthetic_dir), "--out", str(out)]) == 2
    assert "the disk is full" in last_error(capsys) and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("g")]  # no half gallery aside


# ----------------------------------------------------------------------------- 11: pickle adapters

def test_a_pickle_adapter_is_refused(root, tiny_model_dir, synthetic_dir, tmp_path, capsys):
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    from utils.models import write_base_model_record

    model = get_peft_model(AutoModelForImageTextToText.from_pretrained(tiny_model_dir),
                           LoraConfig(r=2, target_modules=["q_proj"]))
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    write_base_model_record(adapter, str(tiny_model_dir), model)
    weights = adapter / "adapter_model.safetensors"
    torch.save(load_file(str(weights)), adapter / "adapter_model.bin")  # the same weights, as a pickle
    weights.unlink()
    assert evaluate(eval_argv(tiny_model_dir, synthetic_dir, "--adapter", str(adapter), "--run_name", "pk")) == 2
    err = last_error(capsys)
    assert "adapter_model.bin" in err and "pickle" in err and "safetensors" in err
    assert not (root / "evals" / "pk").exists()


# ----------------------------------------------------------------------------- 12: why a task found nothing

def test_no_examples_names_the_filter_that_removed_them(root, tiny_model_dir, synthetic_dir, tmp_path, capsys):
    def no_family_one_bad_image(rows):
        for r in rows:
            r.pop("family"), r.pop("template")
        rows[0]["image0"] = {"bytes": b"not an image", "path": rows[0]["image0"]["path"]}
        return rows

    data = rewrite_parquet(synthetic_dir, tmp_path / "plain", "validation", no_family_one_bad_image)
    argv = eval_argv(tiny_model_dir, data, "--task", "nlvr2_synth_grounding", "--run_name", "none")
    assert evaluate(argv) == 2
    err = last_error(capsys)
    # the filter runs before decoding (evals.feed): the row with the bad image is removed, never decoded
    assert "family is grounding_left or grounding_right, which removed all 32 rows read" in err, err
    assert "were bad" not in err and "no family column" in err and "all rows were bad" not in err
    assert not (root / "evals" / "none").exists()


# ----------------------------------------------------------------------------- 14: the Hub cannot be reached

def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class _SilentServer:
    """Accepts connections and never answers (a firewall that drops, a captive network)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def _offline_run(script, argv, endpoint, root, tmp_path):
    unset = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_DATASETS_CACHE")
    env = {k: v for k, v in os.environ.items() if k not in unset}  # as a user without the offline switch
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf-home"), VLM_STUDIES_ROOT=str(root),
               OMP_NUM_THREADS="1")
    t0 = time.time()
    p = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / script), *argv], env=env, capture_output=True,
                       text=True, encoding="utf-8", timeout=300)
    return p, time.time() - t0


def test_unreachable_hub_fails_in_seconds_with_the_right_command(root, tiny_model_dir, synthetic_dir, tmp_path):
    # the model, from a port nothing listens on
    p, seconds = _offline_run("train.py", ["--model", "Qwen/Qwen2-VL-2B-Instruct", "--source", str(synthetic_dir),
                                           "--run_name", "hub"], f"http://127.0.0.1:{_closed_port()}", root, tmp_path)
    err = p.stderr.strip().splitlines()
    print(f"train, closed port: {seconds:.1f}s")
    assert p.returncode == 2 and err[-1].startswith("error: could not load"), err[-5:]
    assert "cannot be reached" in err[-1] and "`hf download Qwen/Qwen2-VL-2B-Instruct`" in err[-1]
    assert "huggingface-cli" not in p.stderr and "Retrying" not in p.stderr
    assert seconds < 60  # a hang guard: the point is no minutes of retries (it was 148 s)
    assert not (root / "checkpoints" / "hub").exists()

    # the dataset, from a server that accepts and never answers
    server = _SilentServer()
    try:
        p, seconds = _offline_run("evaluate.py", ["--model", str(tiny_model_dir), "--source", "pingzhili/nlvr2",
                                                  "--task", "nlvr2", "--run_name", "hubdata", "--progress", "false"],
                                  f"http://127.0.0.1:{server.port}", root, tmp_path)
    finally:
        server.close()
    err = p.stderr.strip().splitlines()
    print(f"eval, silent server: {seconds:.1f}s")
    assert p.returncode == 2 and err[-1].startswith("error: could not load dataset 'pingzhili/nlvr2'"), err[-5:]
    assert "cannot be reached" in err[-1] and "prepare_data.py" in err[-1]
    assert seconds < 60
    assert not (root / "evals" / "hubdata").exists()
