"""Training speed: the benchmark of ours vs bare TRL runs end to end, and the collator speed-up (chat texts
rendered once per message shape) gives exactly the batches TRL's own rendering gives."""

import copy

import pytest

AWKWARD = ["The left image contains a red shape.", "  padded  ", "two\nlines\n", "braces {{ x }} and {% raw %}",
           "naïve café — 3.5", "ends with a newline.\n", "", "<|im_end|> inside"]


def _processor(tiny_model_dir):
    from utils.models import load_processor

    return load_processor(str(tiny_model_dir))


@pytest.mark.parametrize("template", ["tf", "tf_picture_ids", "terse"])
def test_chat_texts_equal_trls_rendering(tiny_model_dir, template):
    from PIL import Image
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    from training.data import ChatTexts
    from vlm_datasets.prompts import build_inputs

    processor = _processor(tiny_model_dir)
    texts = ChatTexts(processor)
    img = Image.new("RGB", (56, 56))
    for i, sentence in enumerate(AWKWARD):
        ex = build_inputs({"left": img, "right": img, "sentence": sentence, "label": bool(i % 2)}, template)
        want = apply_chat_template({"prompt": prepare_multimodal_messages(ex["prompt"], images=ex["images"]),
                                    "completion": prepare_multimodal_messages(ex["completion"])}, processor)
        assert texts(ex["prompt"], ex["completion"], ex["images"]) == (want["prompt"], want["completion"])
    assert all(v is not None for v in texts.shapes.values())  # Qwen2-VL's template: the fast path was taken


def test_a_template_that_trims_its_texts_falls_back_to_trl(tiny_model_dir):
    from PIL import Image
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    from training.data import ChatTexts
    from vlm_datasets.prompts import build_inputs

    processor = copy.deepcopy(_processor(tiny_model_dir))
    processor.chat_template = processor.chat_template.replace("{{ content['text'] }}", "{{ content['text'] | trim }}")
    texts = ChatTexts(processor)
    img = Image.new("RGB", (56, 56))
    ex = build_inputs({"left": img, "right": img, "sentence": "  spaced  ", "label": True})
    want = apply_chat_template({"prompt": prepare_multimodal_messages(ex["prompt"], images=ex["images"]),
                                "completion": prepare_multimodal_messages(ex["completion"])}, processor)
    assert texts(ex["prompt"], ex["completion"], ex["images"]) == (want["prompt"], want["completion"])
    assert list(texts.shapes.values()) == [None]  # the check caught it: rendered by TRL


def test_guarded_collator_batches_equal_trls_rendering(tiny_model_dir, synthetic_dir, root):
    """The run's collator with pre-rendered texts vs the same collator made to render per example (TRL's way)."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from training.data import GuardedCollator, load_train_data
    from training.options import DataOptions
    from utils.models import load_processor

    processor = load_processor(str(tiny_model_dir))
    data = load_train_data(DataOptions(source=str(synthetic_dir), eval_split=None), processor, 512, 0)
    inner = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    fast = GuardedCollator(inner, processor, 512)
    slow = GuardedCollator(inner, processor, 512)
    slow.texts = None
    rows = [data.dataset[i] for i in range(16)]
    a, b = fast(copy.deepcopy(rows)), slow(copy.deepcopy(rows))
    assert fast.texts is not None and set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for i, r in enumerate(rows):  # and the guard's length is still the collated length
        sentence = r["prompt"][0]["content"][-1]["text"].split("\n")[0]
        label = r["completion"][0]["content"][0]["text"] == "True"
        assert data.guard.length(sentence, label, [im.size for im in r["images"]])[0] == int(a["attention_mask"][i].sum())


def test_train_speed_benchmark_runs_both_variants(tmp_path, capsys):
    from bench.train_speed import format_table, run

    res = run(steps=3, warmup=1, repeats=1, rows=48, root=str(tmp_path / "root"),
              overrides=["--per_device_train_batch_size", "4"])
    inter = res["rounds"][0]
    assert inter["timed_steps"] == 3 and len(inter["step_wall_s"]["ours"]) == len(inter["step_wall_s"]["trl"]) == 3
    assert inter["batch_size"] == 4
    # same rows for both: the family filter and the row limit applied alike
    assert inter["rows"]["ours"] == inter["rows"]["trl"] == res["alone"]["trl"]["rows"] > 0
    for v in ("ours", "trl"):
        r = res["results"][v]
        assert r["samples_per_s"] > 0 and r["alone_samples_per_s"] > 0
        assert r["peak_rss_mib"] > r["rss_growth_mib"] > 0
    w = inter["step_wall_s"]
    assert res["ratio_ours_vs_trl"] == pytest.approx(sorted(t / o for o, t in zip(w["ours"], w["trl"]))[1])
    print(format_table(res))
    assert "bare TRL SFTTrainer" in capsys.readouterr().out


def test_suite_prints_one_table_and_writes_json(tmp_path, capsys):
    import json

    from bench.run import main

    out = main(["--quick", "--only", "visual", "gpu", "--root", str(tmp_path), "--json", str(tmp_path / "s.json")])
    saved = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert saved["rows"] == out["rows"] and not saved["errors"]
    visual = {r["measure"]: r["value"] for r in out["rows"] if r["section"] == "visual"}
    assert visual["visual tokens @ max_pixels 512*28*28"] == 988  # the H100 run's 988 per pair
    assert any(r["section"] == "gpu" and "NOT measured in this run" in r["on"] for r in out["rows"])
    printed = capsys.readouterr().out
    assert "section measure" in printed and "visual tokens @ max_pixels 1280*28*28" in printed


def test_chat_texts_benchmark_times_both_variants(tmp_path, capsys):
    from bench.chat_texts import format_table, run

    res = run(batches=2, batch_size=2, steps=0, root=str(tmp_path / "root"))
    assert set(res["collator_ms_per_batch"]) == set(res["guard_prime_s_3000_sentences"]) == {"ours", "trl"}
    assert all(v > 0 for v in [*res["collator_ms_per_batch"].values(), *res["guard_prime_s_3000_sentences"].values()])
    assert "training_s_per_step" not in res
    print(format_table(res))
    assert "length guard, 3000 prompts" in capsys.readouterr().out
