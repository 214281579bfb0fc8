"""The eval end to end on the tiny model: outputs, both answer modes, adapters, resume after SIGKILL, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from utils.cli import main_guard
from utils.paths import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "evals" / "configs").glob("*.yaml"))


def evaluate(argv):
    from scripts.evaluate import main

    return main_guard(main, [*argv, "--progress", "false"])


def base_argv(model_dir, data_dir, *extra):
    return ["--model", str(model_dir), "--source", str(data_dir), "--task", "nlvr2", "--split", "validation",
            "--batch_size", "4", *extra]


def preds(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- a tiny model that answers

def _train_answering_adapter(model_dir: Path, data_dir: Path, out: Path) -> Path:
    """A LoRA adapter, trained for a few seconds, after which the tiny model answers "True"/"False".

    Random tiny models generate gibberish, so comparing score and generate mode needs a model whose
    answers parse. Supervised: the answer token and <|im_end|> (the prompt is the eval prompt).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from utils.models import write_base_model_record
    from vlm_datasets import load_nlvr2
    from vlm_datasets.prompts import build_inputs, render_prompt

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    examples = list(load_nlvr2(str(data_dir), "train", "streaming", limit=48))
    texts = [render_prompt(processor, build_inputs(ex, "tf", with_answer=False)) + ("True" if ex.label else "False")
             + "<|im_end|>" for ex in examples]
    processor.tokenizer.padding_side = "left"  # answers end every row: the last two tokens are supervised
    enc = processor(text=texts, images=[ex.images for ex in examples], return_tensors="pt", padding=True)
    labels = torch.full_like(enc["input_ids"], -100)
    labels[:, -2:] = enc["input_ids"][:, -2:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT warns about LoRA on the tied lm_head; harmless for a test model
        config = LoraConfig(r=8, lora_alpha=16, target_modules=r".*language_model.*\.(q_proj|v_proj|o_proj)|lm_head")
        model = get_peft_model(model, config)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(25):
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    adapter = out / "adapter"  # the layout of a training run dir
    model.save_pretrained(adapter)
    processor.save_pretrained(adapter)
    write_base_model_record(adapter, str(model_dir), model)
    return out


@pytest.fixture(scope="module")
def answering_run(tiny_model_dir, synthetic_dir, tmp_path_factory):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_torch_thread; module fixtures are set up before it
    try:
        return _train_answering_adapter(Path(tiny_model_dir), Path(synthetic_dir),
                                        tmp_path_factory.mktemp("ckpt") / "answers")
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- tests

def test_outputs_and_metadata(root, tiny_model_dir, synthetic_dir):
    from vlm_datasets.cache import prepare_split

    assert evaluate(base_argv(tiny_model_dir, synthetic_dir, "--run_name", "zs", "--limit", "12")) == 0
    run = root / "evals" / "zs"
    for name in ("predictions.jsonl", "metrics.json", "config.yaml", "run_meta.json", "eval_identity.json"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    records = preds(run)
    assert len(records) == 12 and len({r["uid"] for r in records}) == 12
    want = {"uid", "set_id", "consistency_group", "sentence", "label", "prediction", "p_true", "raw_output", "valid",
            "correct", "visual_tokens", "template", "template_version", "task", "task_version", "answer_mode", "slices"}
    assert want <= set(records[0])
    assert all(r["valid"] and 0 <= r["p_true"] <= 1 and r["visual_tokens"] == 8 for r in records)
    assert all(r["correct"] == (r["prediction"] == r["label"]) for r in records)
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert m["n"] == 12 and m["task"] == "nlvr2@v2" and m["template"] == "tf@v1"
    assert m["accuracy"] == sum(r["correct"] for r in records) / 12
    # NLVR2 consistency: a group is one sentence (the uid with its pair field blanked) over all its pairs
    groups = {}
    for r in records:
        split, set_no, _pair, sentence = r["uid"].split("-")
        assert r["consistency_group"] == f"{split}-{set_no}--{sentence}"
        groups.setdefault(r["consistency_group"], []).append(r["correct"])
    assert m["consistency"]["groups"] == len(groups) < 12 and m["consistency"]["ungrouped_rows"] == 0
    assert m["consistency"]["consistency"] == sum(all(v) for v in groups.values()) / len(groups)
    assert m["pair_consistency"]["groups"] == len({r["pair_key"] for r in records})
    assert m["dataset"]["fingerprint"] and m["calibration"]["ece"] is not None
    meta = json.loads((run / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["git_sha"] and meta["versions"]["transformers"] and meta["seed"] == 0
    assert "limit: 12" in (run / "config.yaml").read_text(encoding="utf-8")

    # a longer --limit in cached mode continues the same run: streaming and cached yield the same examples
    prepare_split(str(synthetic_dir), "validation", root, progress=False)
    assert evaluate(base_argv(tiny_model_dir, synthetic_dir, "--run_name", "zs", "--limit", "20", "--mode",
                              "cached")) == 0
    records2 = preds(run)
    assert len(records2) == 20 and records2[:12] == records
    m2 = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert m2["n"] == 20 and len(m2["dataset"]["manifest_sha256"]) == 64
    assert len(json.loads((run / "run_meta.json").read_text(encoding="utf-8"))["sessions"]) == 2


def test_score_and_generate_agree_where_generate_is_valid(root, tiny_model_dir, synthetic_dir, answering_run):
    import shutil

    # the adapter named by its training run (under <root>/checkpoints/) and by its folder: same weights
    shutil.copytree(answering_run, root / "checkpoints" / "answers")
    assert evaluate(base_argv(tiny_model_dir, synthetic_dir, "--adapter", "answers")) == 0
    assert evaluate(base_argv(tiny_model_dir, synthetic_dir, "--adapter", str(answering_run / "adapter"),
                              "--answer_mode", "generate", "--run_name", "generate", "--max_new_tokens", "6")) == 0
    score = preds(root / "evals" / "qwen2vl-tiny-answers-nlvr2-validation-score")  # the default run name
    gen = preds(root / "evals" / "generate")
    assert set(score[0]) == set(gen[0])  # one schema for both modes
    assert [r["uid"] for r in score] == [r["uid"] for r in gen] and len(score) == 32
    valid = [(s, g) for s, g in zip(score, gen) if g["valid"]]
    assert len(valid) >= 24, [g["raw_output"] for g in gen]  # not vacuous: most answers must parse
    assert {g["prediction"] for _, g in valid} == {True, False}  # and both answers occur
    for s, g in valid:
        assert s["prediction"] == g["prediction"], (s["uid"], g["raw_output"], s["p_true"])
        assert g["p_true"] == pytest.approx(s["p_true"], abs=1e-4)  # first generated step = the scored position
    assert all(s["raw_output"] is None and s["valid"] for s in score)
    m = json.loads((root / "evals" / "generate" / "metrics.json").read_text(encoding="utf-8"))
    assert m["invalid"] == 32 - len(valid)
    assert m["adapter"].endswith("adapter")
    # the faster merged adapter gives the same answers (logits equal to rounding)
    assert evaluate(base_argv(tiny_model_dir, synthetic_dir, "--adapter", "answers", "--merge_adapter", "true",
                              "--run_name", "merged")) == 0
    merged = preds(root / "evals" / "merged")
    assert [r["prediction"] for r in merged] == [r["prediction"] for r in score]
    assert [r["p_true"] for r in merged] == pytest.approx([r["p_true"] for r in score], abs=1e-5)


def test_kill_and_resume_gives_identical_metrics(root, tiny_model_dir, tmp_path, capsys):
    """SIGKILL a real eval mid-way, tear its last line, re-run the same command: same results as no kill."""
    from vlm_datasets.synthetic import write_synthetic_nlvr2

    data = write_synthetic_nlvr2(tmp_path / "synth", {"validation": 100}, seed=3)
    argv = base_argv(tiny_model_dir, data, "--batch_size", "2", "--progress", "false")
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "evaluate.py"), *argv, "--run_name", "killed"]
    env = dict(os.environ, VLM_STUDIES_ROOT=str(root), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    pred_file = root / "evals" / "killed" / "predictions.jsonl"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if pred_file.is_file() and pred_file.read_bytes().count(b"\n") >= 10:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the eval finished before it could be killed: " + proc.stderr.read().decode()[-500:]
        proc.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
    finally:
        proc.wait(timeout=60)
    lines = pred_file.read_bytes().count(b"\n")
    assert 10 <= lines < 100
    with open(pred_file, "ab") as fh:  # what a kill in the middle of a write leaves behind
        fh.write(b'{"uid": "dev-9')
    assert not (root / "evals" / "killed" / "metrics.json").exists()

    capsys.readouterr()
    assert evaluate([*argv, "--run_name", "killed"]) == 0  # the same command again (in-process: saves a start-up)
    out = capsys.readouterr().out
    assert f"{100 - lines} new" in out and f"{lines} reused" in out

    assert evaluate([*argv, "--run_name", "whole"]) == 0  # the same eval, never interrupted
    killed, whole = preds(root / "evals" / "killed"), preds(root / "evals" / "whole")
    assert len(killed) == 100 and len({r["uid"] for r in killed}) == 100  # no gaps, no duplicates
    assert sorted(killed, key=lambda r: r["uid"]) == sorted(whole, key=lambda r: r["uid"])
    mk = json.loads((root / "evals" / "killed" / "metrics.json").read_text(encoding="utf-8"))
    mw = json.loads((root / "evals" / "whole" / "metrics.json").read_text(encoding="utf-8"))
    mk.pop("run_name"), mw.pop("run_name")
    assert mk == mw


def test_a_run_dir_never_mixes_two_evals(root, tiny_model_dir, synthetic_dir, capsys):
    argv = base_argv(tiny_model_dir, synthetic_dir, "--run_name", "mix", "--limit", "4")
    assert evaluate(argv) == 0
    capsys.readouterr()
    assert evaluate([*argv, "--template", "terse"]) == 2
    err = capsys.readouterr().err
    assert "holds predictions of a different eval" in err and "template" in err and len(err.strip().splitlines()) == 1
    assert evaluate([*argv, "--batch_size", "2"]) == 0  # a smaller batch (e.g. after running out of memory) continues
    assert evaluate([*argv, "--template", "terse", "--overwrite", "true"]) == 0
    assert {r["template"] for r in preds(root / "evals" / "mix")} == {"terse"}


def test_clear_errors(root, tiny_model_dir, synthetic_dir, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model

    from utils.models import write_base_model_record
    from utils.tiny_model import build_tiny_qwen2vl

    def one_line_error(argv, *needles):
        capsys.readouterr()
        assert evaluate(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # library warnings may come before it
        assert err.startswith("error: "), err
        for n in needles:
            assert n in err, err

    # an adapter made for another base (the 'small' architecture) on the 'tiny' base
    small, _ = build_tiny_qwen2vl("small", 0)
    other = get_peft_model(small, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    other.save_pretrained(tmp_path / "other" / "adapter")
    write_base_model_record(tmp_path / "other" / "adapter", "local:small", other)
    one_line_error(base_argv(tiny_model_dir, synthetic_dir, "--adapter", str(tmp_path / "other")),
                   "trained on base 'local:small'")
    one_line_error(base_argv(tiny_model_dir, synthetic_dir, "--adapter", str(tmp_path / "missing")), "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(base_argv(tiny_model_dir, synthetic_dir, "--adapter", str(tmp_path / "empty")),
                   "no adapter_config.json")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: local:tiny\nbatch_sise: 4\n", encoding="utf-8")
    one_line_error(["--config", str(bad)], "unknown option 'batch_sise'", "batch_size")
    one_line_error(base_argv(tiny_model_dir, synthetic_dir, "--answer_mdoe", "score"), "answer_mode")
    one_line_error(base_argv(tiny_model_dir, synthetic_dir, "--answer_mode", "guess"), "score or generate")
    one_line_error(base_argv(tiny_model_dir, synthetic_dir, "--task", "nlvr3"), "unknown task", "nlvr2")
    one_line_error(["--config", str(REPO_ROOT / "evals/configs/qwen2vl_2b_nlvr2_adapter.yaml")], "--adapter")
    assert not (root / "evals").exists() or not list((root / "evals").rglob("predictions.jsonl"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_parses_and_says_how_to_run_it(path):
    from evals.runner import EvalArgs
    from scoring.tasks import get_task
    from utils.config import parse_config

    (args,), resolved, _ = parse_config((EvalArgs,), ["--config", str(path)])
    get_task(args.task)
    head = path.read_text(encoding="utf-8").split("\n\n")[0]
    assert f"python scripts/evaluate.py --config evals/configs/{path.name}" in head
    assert "Hardware" in head


def test_task_registry(root, synthetic_dir):
    from scoring.tasks import Task, get_task, list_tasks, register
    from utils.errors import VLMStudiesError

    assert list(list_tasks())[0] == "nlvr2" and get_task("nlvr2@v2").name == "nlvr2"
    with pytest.raises(VLMStudiesError, match="version 2, not 7"):
        get_task("nlvr2@v7")
    _, grounding = get_task("nlvr2_synth_grounding").load(str(synthetic_dir), "validation", "streaming", limit=5)
    got = list(grounding)
    assert len(got) == 5 and {ex.meta["family"] for ex in got} <= {"grounding_left", "grounding_right"}
    _, count = get_task("nlvr2_synth_count").load(str(synthetic_dir), "validation", "streaming")
    assert {ex.meta["family"] for ex in count} == {"count"}
    # a new task is one register() call: here, statements about the left image only
    task = register(Task(name="test_left_only", version=1, description="left image", default_source="synthetic",
                         keep=lambda ex: "left" in ex.sentence))
    assert get_task("test_left_only") is task


def test_progress_bar_stays_off_when_stderr_is_a_file(root, tiny_model_dir, synthetic_dir, tmp_path):
    """`--progress true` (the default) with stderr written to a file, as a log on a rented GPU or in CI: no bar
    redraws (carriage returns) end up in it; the summary still does."""
    log = tmp_path / "eval.log"
    argv = [sys.executable, str(REPO_ROOT / "scripts" / "evaluate.py"), *base_argv(tiny_model_dir, synthetic_dir),
            "--progress", "true", "--limit", "8", "--batch_size", "2", "--run_name", "to-a-file"]
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(argv, cwd=REPO_ROOT, env=dict(os.environ, VLM_STUDIES_ROOT=str(root)),
                              stdout=fh, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text(encoding="utf-8")
    assert proc.returncode == 0, text[-3000:]
    assert (root / "evals" / "to-a-file" / "metrics.json").is_file()
    assert "\r" not in text and "eval: " not in text  # tqdm draws "eval:  50%|#####     | 4/8 ..." with \r
