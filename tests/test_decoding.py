"""Decoding is the lab's: generate mode and the playground ignore a checkpoint's generation_config.json.

Qwen2-VL ships `do_sample: true, temperature 0.1, top_p 0.001, top_k 1, repetition_penalty 1.05`
(Setup/NOTES.md §2), and transformers merges a checkpoint's settings into every `generate()` call that
leaves them unset. Here a copy of the tiny model gets a generation_config.json that samples and sets
repetition_penalty 1.5: with the checkpoint's settings its answers change (checked, so the test can
fail), with the lab's they are exactly the clean folder's.
"""

from __future__ import annotations

import json
import shutil

import pytest

from utils.cli import main_guard

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIRTY = {"do_sample": True, "temperature": 0.1, "top_p": 0.001, "top_k": 1, "repetition_penalty": 1.5}


@pytest.fixture(scope="module")
def dirty_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with a generation_config.json that samples and penalises repetition (as Qwen2-VL's does)."""
    out = tmp_path_factory.mktemp("dirty") / "qwen2vl-tiny-dirty"
    shutil.copytree(tiny_model_dir, out)
    path = out / "generation_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg.update(DIRTY)
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return out


def _load(folder):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoModelForImageTextToText.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


def _examples(synthetic_dir, n=6):
    from vlm_datasets import load_nlvr2

    return list(load_nlvr2(str(synthetic_dir), "validation", limit=n))


def test_generate_mode_ignores_the_checkpoints_sampling_and_repetition_penalty(tiny_model_dir, dirty_model_dir,
                                                                               synthetic_dir):
    import torch

    from scoring.modes import encode_prompts, generate_batch, generation_config

    examples = _examples(synthetic_dir)
    clean_model, clean_proc = _load(tiny_model_dir)
    dirty_model, dirty_proc = _load(dirty_model_dir)
    assert dirty_model.generation_config.repetition_penalty == 1.5 and dirty_model.generation_config.do_sample
    clean = generate_batch(clean_model, clean_proc, examples, "tf", max_new_tokens=16)
    dirty = generate_batch(dirty_model, dirty_proc, examples, "tf", max_new_tokens=16)
    assert [r["raw_output"] for r in dirty] == [r["raw_output"] for r in clean]
    assert [r["p_true"] for r in dirty] == [r["p_true"] for r in clean]

    # The control: decoding as transformers would by default (the checkpoint's settings merged in) changes the
    # answers of this model, so the equality above is the lab's doing, not a model that never repeats itself.
    enc = encode_prompts(dirty_proc, examples, "tf")
    with torch.no_grad():
        inherited = dirty_model.generate(**enc, max_new_tokens=16, pad_token_id=dirty_proc.tokenizer.pad_token_id)
    texts = dirty_proc.tokenizer.batch_decode(inherited[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert texts != [r["raw_output"] for r in clean]

    # The lab's settings: greedy, no penalty, eos = <|im_end|> and <|endoftext|> read from the tokenizer; valid
    # with no warning-worthy flag (strict validation raises on any)
    cfg = generation_config(clean_proc, 16)
    tok = clean_proc.tokenizer
    assert (cfg.do_sample, cfg.num_beams, cfg.repetition_penalty, cfg.max_new_tokens) == (False, 1, 1.0, 16)
    assert list(cfg.eos_token_id) == [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    cfg.validate(strict=True)


def test_an_eval_run_records_the_decoding_it_used(root, tiny_model_dir, dirty_model_dir, synthetic_dir, capsys):
    from scripts.evaluate import main

    def run(model, name):
        argv = ["--model", str(model), "--task", "nlvr2", "--source", str(synthetic_dir), "--answer_mode", "generate",
                "--limit", "6", "--batch_size", "3", "--max_new_tokens", "8", "--progress", "false",
                "--tensorboard", "false", "--run_name", name]
        assert main_guard(main, argv) == 0
        run_dir = root / "evals" / name
        preds = [json.loads(x) for x in (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
        return preds, json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")), run_dir

    clean_preds, clean_m, _ = run(tiny_model_dir, "clean")
    dirty_preds, dirty_m, dirty_dir = run(dirty_model_dir, "dirty")
    assert [p["raw_output"] for p in dirty_preds] == [p["raw_output"] for p in clean_preds]
    d = dirty_m["decoding"]
    assert d["source"] == "lab" and d["do_sample"] is False and d["repetition_penalty"] == 1.0
    assert d["max_new_tokens"] == 8 and len(d["eos_token_id"]) == 2 and "temperature" not in d
    # what the checkpoint asked for and did not get, named in the record
    assert d["checkpoint_settings_not_used"] == DIRTY
    assert clean_m["decoding"]["checkpoint_settings_not_used"] == {}
    meta = json.loads((dirty_dir / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["sessions"][-1]["decoding"] == d
    ident = json.loads((dirty_dir / "eval_identity.json").read_text(encoding="utf-8"))
    assert ident["decoding"] == "lab-greedy-v1"
    # score mode decodes nothing, and says so
    assert main_guard(main, ["--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--limit", "3",
                             "--progress", "false", "--tensorboard", "false", "--run_name", "score"]) == 0
    assert json.loads((root / "evals" / "score" / "metrics.json").read_text(encoding="utf-8"))["decoding"] is None


def test_playground_uses_the_checkpoints_settings_only_when_asked(root, tiny_model_dir, dirty_model_dir,
                                                                  synthetic_dir, capsys):
    from scripts.model_playground import main
    from evals.playground import read_log

    base = ["--uid", "dev-0-0-0", "--source", str(synthetic_dir), "--max-new-tokens", "12"]
    assert main_guard(main, ["--model", str(tiny_model_dir), *base]) == 0
    assert main_guard(main, ["--model", str(dirty_model_dir), *base]) == 0
    lab_out = capsys.readouterr().out
    assert main_guard(main, ["--model", str(dirty_model_dir), *base, "--checkpoint-defaults"]) == 0
    ckpt_out = capsys.readouterr().out
    clean, lab, ckpt = read_log(root / "playground" / "log.jsonl")
    assert lab["response"] == clean["response"]  # the checkpoint's settings did not leak in
    assert lab["decoding"]["source"] == "lab" and lab["decoding"]["repetition_penalty"] == 1.0
    assert ckpt["decoding"]["source"] == "checkpoint" and ckpt["knobs"]["checkpoint_defaults"] is True
    assert {k: ckpt["decoding"][k] for k in DIRTY} == DIRTY
    assert ckpt["response"] != clean["response"]  # the penalty changes this model's answer
    assert "decoding: lab settings (greedy, repetition_penalty 1.0)" in lab_out
    assert "decoding: the checkpoint's generation_config.json (sampling, temperature 0.1, top_p 0.001, top_k 1, " \
           "repetition_penalty 1.5)" in ckpt_out
    # a knob the checkpoint's settings would silently override is refused before the model loads
    assert main_guard(main, ["--model", str(dirty_model_dir), *base, "--checkpoint-defaults", "--top-k", "5"]) == 2
    assert "top_k would be ignored" in capsys.readouterr().err
