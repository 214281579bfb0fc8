"""scripts/model_playground.py with the tiny model: log records, eval-identical prompts, image files,
missing files, and interactive mode fed through stdin."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from scripts.model_playground import main
from utils.cli import main_guard
from utils.paths import REPO_ROOT
from evals.playground import LOG_FIELDS, Knobs, Playground, read_log
from vlm_datasets.bookmarks import Bookmarks

UID = "dev-0-0-0"  # the first row of every synthetic validation split


def log_of(root):
    return read_log(root / "playground" / "log.jsonl")


def test_uid_without_prompt_uses_the_eval_prompt(root, synthetic_dir, tiny_model_dir, capsys):
    argv = ["--model", str(tiny_model_dir), "--uid", UID, "--source", str(synthetic_dir), "--max-new-tokens", "3"]
    assert main_guard(main, argv) == 0
    out = capsys.readouterr().out
    (rec,) = log_of(root)
    assert set(LOG_FIELDS) <= set(rec) and rec["response"] in out
    assert rec["model"] == str(tiny_model_dir) and rec["adapter"] is None and rec["uid"] == UID
    assert rec["template"] == "tf@v1" and rec["prompt"].endswith("Answer True or False.")
    assert rec["knobs"] == {"max_new_tokens": 3, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 50,
                            "num_beams": 1, "repetition_penalty": 1.0, "seed": 0, "checkpoint_defaults": False}
    # the lab's decoding and pixel budget, recorded and printed
    assert rec["decoding"]["source"] == "lab" and rec["decoding"]["do_sample"] is False
    assert rec["decoding"]["repetition_penalty"] == 1.0 and "temperature" not in rec["decoding"]
    assert rec["pixel_budget"] == {"min_pixels": 4 * 28 * 28, "max_pixels": 512 * 28 * 28}
    assert "decoding: lab settings (greedy, repetition_penalty 1.0)" in out and "pixels 3136..401408" in out
    assert 1 <= rec["new_tokens"] <= 3 and rec["latency_s"] > 0 and rec["tokens_per_s"] > 0
    assert [(i["uid"], i["side"]) for i in rec["images"]] == [(UID, "left"), (UID, "right")]
    import pyarrow.parquet as pq

    row = pq.read_table(synthetic_dir / "validation-00000.parquet").to_pylist()[0]
    assert row["identifier"] == UID
    assert [i["sha256"] for i in rec["images"]] == [hashlib.sha256(row[c]["bytes"]).hexdigest()
                                                    for c in ("image0", "image1")]
    assert rec["example"] == {"label": row["label"] == "True", "sentence": row["sentence"]}

    # the very input evaluation builds for this example (scoring.modes, one row: no padding)
    from scoring.modes import encode_prompts

    pg = Playground(str(tiny_model_dir), root=root)
    subject = pg.images_from_uid(UID, str(synthetic_dir), "validation")
    enc = encode_prompts(pg.processor, [subject.example], "tf")
    inputs, _, _ = pg.build(subject, None)
    from vlm_datasets.prompts import render_prompt

    mine = pg.processor(text=[render_prompt(pg.processor, inputs)], images=inputs["images"], return_tensors="pt")
    assert mine["input_ids"].tolist() == enc["input_ids"].tolist()
    assert rec["prompt_tokens"] == enc["input_ids"].shape[1] and rec["visual_tokens"] == 8


def write_png(path, size, color, mode="RGB"):
    Image.new(mode, size, color).save(path)
    return path


def test_free_form_prompt_on_image_files_with_knobs(root, tiny_model_dir, tmp_path, capsys):
    a = write_png(tmp_path / "a.png", (60, 40), (200, 0, 0, 128), mode="RGBA")
    b = write_png(tmp_path / "b.png", (30, 30), (0, 0, 200))
    argv = ["--model", str(tiny_model_dir), "--image", str(a), "--image", str(b), "--prompt", "What {differs}?",
            "--do-sample", "--temperature", "0.7", "--top-p", "0.9", "--top-k", "5", "--repetition-penalty", "1.2",
            "--max-new-tokens", "4", "--seed", "3"]
    assert main_guard(main, argv) == 0
    assert main_guard(main, argv) == 0
    first, second = log_of(root)
    assert set(LOG_FIELDS) <= set(first) and first["uid"] is None and first["template"] == "freeform@v1"
    assert first["prompt"] == "What {differs}?"
    assert first["knobs"]["do_sample"] is True and first["knobs"]["top_k"] == 5 and first["knobs"]["seed"] == 3
    for rec_img, f, size in zip(first["images"], (a, b), ((60, 40), (30, 30))):
        assert rec_img["path"] == str(f) and rec_img["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        assert (rec_img["width"], rec_img["height"]) == size
        assert all(s % 28 == 0 for s in rec_img["fed_size"])  # sized by qwen_vl_utils for 28x28 tokens
    assert second["response"] == first["response"]  # same seed, same sample


def test_missing_image_is_a_clear_error_and_nothing_is_logged(root, tiny_model_dir, tmp_path, capsys):
    missing = tmp_path / "nope.png"
    assert main_guard(main, ["--model", str(tiny_model_dir), "--image", str(missing), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: image file") and str(missing) in err and "does not exist" in err
    not_image = tmp_path / "x.png"
    not_image.write_text("not an image", encoding="utf-8")
    assert main_guard(main, ["--model", str(tiny_model_dir), "--image", str(not_image), "--prompt", "hi"]) == 2
    assert "is not a readable image" in capsys.readouterr().err
    assert not (root / "playground" / "log.jsonl").exists()


def test_bad_knobs_and_unknown_uid(root, synthetic_dir, tiny_model_dir, capsys):
    assert main_guard(main, ["--model", str(tiny_model_dir), "--uid", UID, "--top-p", "1.5"]) == 2
    assert "top_p" in capsys.readouterr().err
    assert main_guard(main, ["--model", str(tiny_model_dir), "--uid", "dev-0-0-9", "--source",
                             str(synthetic_dir)]) == 2
    assert "unknown uid 'dev-0-0-9'" in capsys.readouterr().err
    k = Knobs()
    with pytest.raises(Exception, match="did you mean temperature"):
        k.set("temprature", "0.5")
    k.set("do_sample", "true")
    assert k.do_sample is True and k.temperature == 1.0
    k.set("temperature", "0.7")
    with pytest.raises(Exception, match="would be ignored: drop them or drop checkpoint_defaults"):
        k.set("checkpoint_defaults", "true")  # refused (and undone): the checkpoint's settings ignore them
    assert k.checkpoint_defaults is False


def test_interactive_keeps_the_model_loaded(root, synthetic_dir, tiny_model_dir, tmp_path):
    bm = Bookmarks()
    bm.add_many(["dev-0-0-0", "dev-0-0-1"], tags="look")
    img = write_png(tmp_path / "c.png", (56, 56), (0, 150, 0))
    stdin = "\n".join(["describe the pictures", ":set do_sample=true temperature=0.7", ":set bogus=1", ":next",
                       ":answer", f":image {img}", "and this one?", ":quit", "never asked"]) + "\n"
    env = dict(os.environ, VLM_STUDIES_ROOT=str(root))
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "model_playground.py"), "--interactive",
                           "--model", str(tiny_model_dir), "--bookmarks", "look", "--source", str(synthetic_dir),
                           "--max-new-tokens", "3"], input=stdin, capture_output=True, text=True, encoding="utf-8", env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("loaded ") == 1  # one model load for every prompt
    assert "unknown knob 'bogus'" in proc.stderr  # a bad command is reported and the session goes on
    recs = log_of(root)
    assert len(recs) == 3
    assert recs[0]["uid"] == "dev-0-0-0" and recs[0]["prompt"] == "describe the pictures"
    assert recs[0]["knobs"]["do_sample"] is False
    assert recs[1]["uid"] == "dev-0-0-1" and recs[1]["template"] == "tf@v1" and recs[1]["knobs"]["do_sample"] is True
    assert recs[2]["uid"] is None and recs[2]["images"][0]["path"] == str(img)
    assert [r["first_call"] for r in recs] == [True, False, False]
    assert json.loads(json.dumps(recs[2]))["knobs"]["temperature"] == 0.7


def test_adapter_on_bookmarked_uids(root, synthetic_dir, tiny_model_dir, tmp_path, capsys):
    """--adapter goes through the shared loader; --bookmarks answers each bookmarked uid in turn."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from utils.models import write_base_model_record

    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=r".*language_model.*\.q_proj"))
    with torch.no_grad():  # non-zero B, so the adapter changes the model
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    write_base_model_record(adapter, str(tiny_model_dir), base)
    Bookmarks().add_many(["dev-0-0-1", "dev-0-0-0"], tags="look")

    argv = ["--model", str(tiny_model_dir), "--bookmarks", "look", "--source", str(synthetic_dir), "--max-new-tokens",
            "2"]
    assert main_guard(main, [*argv, "--adapter", str(adapter)]) == 0
    recs = log_of(root)
    assert [r["uid"] for r in recs] == ["dev-0-0-1", "dev-0-0-0"] and all(r["adapter"] == str(adapter) for r in recs)
    assert f"+ {adapter}" in capsys.readouterr().out
    from peft import PeftModel

    assert isinstance(Playground(str(tiny_model_dir), adapter=str(adapter)).model, PeftModel)
