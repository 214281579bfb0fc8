"""Looking inside (evals/inside, scripts/look_inside.py) on the tiny model: occlusion equals score mode on the
modified images, attention rows equal eager attention and sum to 1, visual tokens map to the right cells (vs
the processor's patches and the M-RoPE positions, images of different sizes), the logit lens ends on the
model's own P(True), a split run resumes without duplicates, errors are one line, pages open offline."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from PIL import Image

from utils.cli import main_guard
from utils.errors import VLMStudiesError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _examples(synthetic_dir, n=4, family=None):
    from vlm_datasets import load_nlvr2

    out = []
    for ex in load_nlvr2(str(synthetic_dir), "validation", "streaming"):
        if family is None or ex.meta.get("family") == family:
            out.append(ex)
        if len(out) == n:
            break
    return out


def _unequal_pair():
    """Left 84x56 (3x2 cells), right 56x112 (2x4 cells): multiples of 28, so the processor does not resize."""
    from vlm_datasets.nlvr2 import Example

    g = torch.Generator().manual_seed(0)
    left = Image.fromarray(torch.randint(0, 255, (56, 84, 3), generator=g, dtype=torch.uint8).numpy())
    right = Image.fromarray(torch.randint(0, 255, (112, 56, 3), generator=g, dtype=torch.uint8).numpy())
    return Example("pair-a", "The left image contains a red shape.", True, left, right, {})


def _opts(tiny_model_dir, synthetic_dir, **kw):
    from evals.inside.run import InsideOptions

    return InsideOptions(model=str(tiny_model_dir), source=str(synthetic_dir), **kw)


# ----------------------------------------------------------------------------- the numbers

def test_occlusion_equals_score_mode_on_the_modified_images(tiny_model_and_processor, synthetic_dir):
    from scoring.look import look_batch
    from scoring.occlusion import VARIANTS, neutral_image, variants
    from scoring.modes import score_batch

    model, processor = tiny_model_and_processor
    examples = _examples(synthetic_dir, 3) + [_unequal_pair()]  # unequal sizes: the swap changes the layout
    looks = look_batch(model, processor, examples, "tf", "mean")
    for ex, look in zip(examples, looks):
        for v, modified in zip(VARIANTS, variants(ex, "mean")):
            alone = score_batch(model, processor, [modified], "tf")[0]["p_true"]  # one row: no padding at all
            assert look["p_true"][v] == pytest.approx(alone, abs=1e-5), (ex.uid, v)
        # the occluders: same size, no content (flat mean colour), or a blur of it
        flat = neutral_image(ex.left, "mean")
        assert flat.size == ex.left.size and len(flat.getcolors()) == 1
        assert neutral_image(ex.right, "blur").size == ex.right.size
    assert looks[-1]["p_true"]["swap"] != looks[-1]["p_true"]["original"]  # the images really moved
    with pytest.raises(VLMStudiesError, match="unknown occluder 'gray'"):
        neutral_image(examples[0].left, "gray")


def test_attention_rows_equal_eager_attention_sum_to_one_and_shares_add_up(tiny_model_dir, synthetic_dir):
    """The recorded answer row against transformers' own eager attention weights, on a left-padded batch."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from scoring.capture import AnswerRowAttention, attention_shares, visual_layout
    from scoring.modes import encode_prompts

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    sdpa = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    eager = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()
    examples = _examples(synthetic_dir, 2) + [_unequal_pair()]  # different lengths: left padding in the batch
    enc = encode_prompts(processor, examples, "tf")
    assert (enc["attention_mask"] == 0).any()
    with torch.no_grad():
        plain = sdpa(**enc, logits_to_keep=1, use_cache=False).logits
        with AnswerRowAttention(sdpa) as rec:
            recorded = sdpa(**enc, logits_to_keep=1, use_cache=False).logits
        reference = eager(**enc, output_attentions=True, use_cache=False).attentions
    assert torch.equal(plain, recorded)  # the pass itself is untouched
    assert sdpa.config.text_config._attn_implementation == "sdpa"  # and the switch is undone
    rows = rec.stacked()  # (batch, layers, heads, keys)
    assert rows.shape == (3, len(reference), sdpa.config.text_config.num_attention_heads, enc["input_ids"].shape[1])
    for layer, weights in enumerate(reference):
        torch.testing.assert_close(rows[:, layer], weights[:, :, -1, :].float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(rows.sum(-1), torch.ones(rows.shape[:-1]), atol=1e-5, rtol=0)
    assert float(rows[enc["attention_mask"][:, None, None, :].expand_as(rows) == 0].abs().max()) == 0  # no pad
    layout = visual_layout(enc["input_ids"], enc["image_grid_thw"], sdpa.config.image_token_id, 2, 14)
    for b, images in enumerate(layout):
        for layer in range(rows.shape[1]):
            shares = attention_shares(rows[b, layer].mean(0), images)
            assert set(shares) == {"left", "right", "text"} and min(shares.values()) >= 0
            assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
            assert shares["left"] == pytest.approx(float(rows[b, layer].mean(0)[images[0].positions].sum()), abs=1e-6)


def test_visual_tokens_map_to_cells_by_grid_thw_rope_positions_and_pixels(tiny_model_and_processor):
    from scoring.capture import visual_layout
    from scoring.modes import encode_prompts

    model, processor = tiny_model_and_processor
    ex = _unequal_pair()
    odd = dataclasses.replace(ex, left=ex.left.resize((100, 70)), right=ex.right.resize((45, 130)))  # resized
    for pair in (ex, odd):
        enc = encode_prompts(processor, [pair], "tf")
        (images,) = visual_layout(enc["input_ids"], enc["image_grid_thw"], model.config.image_token_id, 2, 14)
        grids = enc["image_grid_thw"].tolist()
        assert [im.side for im in images] == ["left", "right"]
        for im, (t, h, w), img in zip(images, grids, pair.images):
            assert im.grid == (t, h // 2, w // 2) and len(im.positions) == t * (h // 2) * (w // 2)
            assert im.resized == (h * 14, w * 14) and im.cell == 28
        if pair is ex:  # no resize: 56x84 is 2 rows x 3 cols, 112x56 is 4 rows x 2 cols
            assert [im.grid for im in images] == [(1, 2, 3), (1, 4, 2)]
        # M-RoPE: the model's own (t, h, w) positions of each visual token, relative to the image's first
        pos, _ = model.model.get_rope_index(enc["input_ids"], enc["mm_token_type_ids"], enc["image_grid_thw"],
                                            enc["attention_mask"])
        for im in images:
            p = pos[:, 0, im.positions]
            rel = (p - p.min(dim=1, keepdim=True).values).T.tolist()
            assert [tuple(x) for x in rel] == [tuple(c) for c in im.cells]

    # The processor's pixels: paint one cell of each image and see which patch rows change.
    enc = encode_prompts(processor, [ex], "tf")
    (images,) = visual_layout(enc["input_ids"], enc["image_grid_thw"], model.config.image_token_id, 2, 14)
    offsets = [0, int(enc["image_grid_thw"][0].prod())]
    for side, im, offset in zip(("left", "right"), images, offsets):
        for target in (im.cells[1], im.cells[-1]):
            _, r, c = target
            painted = getattr(ex, side).copy()
            painted.paste((0, 255, 0), (c * 28, r * 28, (c + 1) * 28, (r + 1) * 28))
            enc2 = encode_prompts(processor, [dataclasses.replace(ex, **{side: painted})], "tf")
            changed = (enc2["pixel_values"] != enc["pixel_values"]).any(-1).nonzero().flatten().tolist()
            n = im.cells.index(target)  # token n covers the 2x2 patches 4n..4n+3 of its image
            assert changed == [offset + 4 * n + k for k in range(4)], (side, target)


def test_logit_lens_ends_on_the_models_own_p_true(tiny_model_and_processor, synthetic_dir):
    from scoring.look import look_batch, layer_count
    from scoring.modes import score_batch

    model, processor = tiny_model_and_processor
    examples = _examples(synthetic_dir, 3) + [_unequal_pair()]
    looks = look_batch(model, processor, examples, "tf")
    direct = score_batch(model, processor, examples, "tf")
    for look, d in zip(looks, direct):
        lens = look["lens"]["p_true"]
        assert len(lens) == layer_count(model) + 1  # embeddings, then every layer
        assert lens[-1] == pytest.approx(d["p_true"], abs=1e-5) == look["p_true"]["original"]
        assert all(0 <= m <= 1 for m in look["lens"]["answer_mass"])
        assert len(look["shares"]) == layer_count(model)


# ----------------------------------------------------------------------------- the tools

def test_uid_page_opens_offline_with_adapter_on_and_off(root, tiny_model_dir, synthetic_dir, tmp_path, capsys):
    from evals.inside.run import look_at_uids
    from evals.report import check_report, referenced_files
    from scripts.look_inside import main
    from utils.models import load_model, write_base_model_record

    # a LoRA adapter made here (random B so it changes the output), to see both states side by side
    from peft import LoraConfig, get_peft_model

    base = load_model(str(tiny_model_dir))
    peft = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft.save_pretrained(adapter)
    write_base_model_record(adapter, str(tiny_model_dir), peft)

    uid = _examples(synthetic_dir, 2)[1].uid
    argv = ["--uid", uid, "--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--adapter", str(adapter),
            "--per_head"]
    assert main_guard(main, argv) == 0
    out = capsys.readouterr().out
    assert f"{uid}  label" in out and "left replaced" in out and "base (adapter off)" in out
    page = next(root.glob(f"analysis/inside/*/uid/{uid}/index.html"))
    html = page.read_text(encoding="utf-8")
    assert check_report(page) == [] and not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)
    refs = referenced_files(html)
    assert {"img/occlusion.png", "img/lens.png", "img/shares.png", "img/overlay-adapter.png", "img/overlay-base.png",
            "img/heads-adapter.png", "inside.json"} <= set(refs)
    result = json.loads((page.parent / "inside.json").read_text(encoding="utf-8"))
    assert list(result["models"]) == ["adapter", "base"] and result["uid"] == uid
    a, b = result["models"]["adapter"], result["models"]["base"]
    assert a["p_true"]["original"] != b["p_true"]["original"]  # the adapter was on, then off
    assert len(a["head_shares"]) == len(a["shares"]) and len(a["head_shares"][0]) == a["heads"]

    # the base state equals the base model looked at on its own (no adapter given)
    (alone,) = look_at_uids(_opts(tiny_model_dir, synthetic_dir, uids=[uid]), root=root, quiet=True)
    assert alone["result"]["models"]["base"]["p_true"] == pytest.approx(b["p_true"], abs=1e-6)


def test_bad_uid_and_bad_flags_are_one_line_errors(root, tiny_model_dir, synthetic_dir, capsys):
    from scripts.look_inside import main

    real = _examples(synthetic_dir, 1)[0].uid
    wrong = real + "x"
    common = ["--model", str(tiny_model_dir), "--source", str(synthetic_dir)]
    assert main_guard(main, ["--uid", wrong, *common]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"unknown uid '{wrong}'" in err and "closest:" in err and real in err
    assert main_guard(main, ["--uid", real, "--occludr", "blur", *common]) == 2
    assert "unknown option '--occludr'; did you mean --occluder" in capsys.readouterr().err
    assert main_guard(main, ["--uid", real, "--template", "tff", *common]) == 2
    assert "unknown prompt template 'tff'" in capsys.readouterr().err
    assert not list(root.glob("analysis/inside/*/uid/*"))  # nothing written for a failed look


def test_split_run_resumes_without_duplicates_and_refuses_a_different_look(root, tiny_model_dir, synthetic_dir):
    from evals.inside.run import RESULTS, run_split
    from scoring.predictions import read_predictions
    from evals.report import check_report

    opts = _opts(tiny_model_dir, synthetic_dir, limit=10, batch_size=4)
    full = run_split(opts, root=root, progress=False)
    path = full["folder"] / RESULTS
    first = read_predictions(path)
    assert full["new"] == 10 and [r["uid"] for r in first] == [ex.uid for ex in _examples(synthetic_dir, 10)]
    assert check_report(full["html"]) == []
    s = full["summary"]["occlusion"]["base"]["all"]
    assert s["n"] == 10 and s["left"]["mean_abs_delta"] == pytest.approx(
        sum(abs(r["models"]["base"]["p_true"]["left"] - r["models"]["base"]["p_true"]["original"]) for r in first) / 10)

    # killed mid-way: three whole batches' worth gone and half a line written
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:5]) + b"\n" + lines[5][:30])
    again = run_split(opts, root=root, progress=False)
    resumed = read_predictions(path)
    assert again["new"] == 5 and again["reused"] == 5
    assert [r["uid"] for r in resumed] == [r["uid"] for r in first] and len({r["uid"] for r in resumed}) == 10
    assert [r["models"] for r in resumed] == [r["models"] for r in first]  # the same batches, the same numbers
    assert run_split(opts, root=root, progress=False)["new"] == 0

    with pytest.raises(VLMStudiesError, match="holds results of a different look .*occluder: 'mean' -> 'blur'"):
        run_split(dataclasses.replace(opts, occluder="blur"), root=root, progress=False)
    blurred = run_split(dataclasses.replace(opts, occluder="blur", overwrite=True), root=root, progress=False)
    assert blurred["new"] == 10


def test_eval_report_links_each_mistake_to_its_page(root, tiny_model_dir, synthetic_dir, capsys):
    from evals.report import check_report
    from scripts.analyze import main as analyze
    from scripts.evaluate import main as evaluate

    assert main_guard(evaluate, ["--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--task", "nlvr2",
                                 "--limit", "8", "--run_name", "ev", "--progress", "false",
                                 "--tensorboard", "false"]) == 0
    assert main_guard(analyze, ["ev", "--max_mistakes", "2"]) == 0
    page = root / "evals" / "ev" / "report" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert html.count("python scripts/look_inside.py --uid") == 2 and "look inside: occlusion" not in html

    assert main_guard(analyze, ["ev", "--max_mistakes", "2", "--look_inside"]) == 0
    html = page.read_text(encoding="utf-8")
    links = re.findall(r'href="([^"]*)">look inside', html)
    assert len(links) == 2 and all(link.startswith("../../../analysis/inside/") for link in links)
    assert check_report(page) == []  # every link leads to a page that exists
    assert all((page.parent / link).is_file() for link in links)


def test_training_run_keeps_and_draws_its_dynamics(root, tiny_model_dir, synthetic_dir, capsys):
    from evals.report import check_report
    from scripts.analyze import main as analyze
    from scripts.train import main as train
    from training.trainer import AccuracyCallback

    argv = ["--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--max_steps", "4",
            "--per_device_train_batch_size", "4", "--learning_rate", "1e-2", "--lora_r", "4",
            "--activation_checkpointing", "false", "--logging_steps", "2", "--save_steps", "2", "--eval_limit", "8",
            "--eval_batch_size", "8", "--disable_tqdm", "true", "--torch_threads", "1", "--report_to", "none",
            "--accuracy_eval_steps", "2", "--occlusion_eval_steps", "4", "--accuracy_eval_size", "10",
            "--run_name", "dyn"]
    train(argv)
    run = root / "checkpoints" / "dyn"
    steps = [json.loads(line) for line in (run / "dynamics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [s["step"] for s in steps] == [0, 2, 4]
    assert [("accuracy" in s, "occlusion" in s) for s in steps] == [(True, True), (True, False), (True, True)]
    assert steps[0]["accuracy"]["all"]["n"] == 10 and "family:grounding_left" in steps[0]["occlusion"]

    assert main_guard(analyze, ["dyn"]) == 0
    page = run / "report" / "index.html"
    assert "training dynamics (3 measured steps)" in capsys.readouterr().out and check_report(page) == []
    assert "img/dynamics.png" in page.read_text(encoding="utf-8")

    # resuming from step 2 drops what was measured after it (those steps are trained again)
    class State:
        global_step = 2

    AccuracyCallback([None], None, [], "tf", 8, 2, 4, run / "dynamics.jsonl").on_train_begin(None, State(), None)
    kept = (run / "dynamics.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["step"] for line in kept] == [0, 2]
    with pytest.raises(VLMStudiesError, match="occlusion_eval_steps must be 0"):
        train(argv[:-2] + ["--run_name", "neg", "--occlusion_eval_steps", "-1"])


def test_playground_looks_inside_with_its_loaded_model(root, tiny_model_dir, synthetic_dir, capsys):
    import argparse

    from scripts.model_playground import inside_command, main as playground
    from evals.playground import Knobs, Playground, Session

    uid = _examples(synthetic_dir, 1)[0].uid
    argv = ["--model", str(tiny_model_dir), "--uid", uid, "--source", str(synthetic_dir), "--max-new-tokens", "2",
            "--look_inside"]
    assert main_guard(playground, argv) == 0
    out = capsys.readouterr().out
    assert "left replaced" in out and out.count("loaded ") == 1
    page = next(root.glob(f"analysis/inside/*/uid/{uid}/index.html"))
    page.unlink()

    pg = Playground(str(tiny_model_dir), root=root)
    args = argparse.Namespace(source=str(synthetic_dir), split="validation", mode="streaming", template="tf",
                              root=None)
    printed = []
    session = Session(pg, Knobs(max_new_tokens=2), data=(str(synthetic_dir), "validation", "streaming"),
                      print_fn=printed.append, log=False, commands={"inside": inside_command(pg, args)})
    session.handle(":help")
    assert ":inside" in printed[-1] and "look inside the current uid" in printed[-1]
    with pytest.raises(VLMStudiesError, match=":inside needs an NLVR2 example"):
        session.handle(":inside")
    session.handle(f":uid {uid}")
    session.handle(":inside --per_head")
    assert page.is_file() and "heads-base.png" in page.read_text(encoding="utf-8")
    with pytest.raises(VLMStudiesError, match=":inside takes only --per_head"):
        session.handle(":inside --bogus")


def test_pages_replace_only_folders_this_tool_wrote(root, tiny_model_dir, synthetic_dir):
    from evals.inside.run import look_at_uids

    uid = _examples(synthetic_dir, 1)[0].uid
    opts = _opts(tiny_model_dir, synthetic_dir, uids=[uid])
    (first,) = look_at_uids(opts, root=root, quiet=True)
    (again,) = look_at_uids(opts, root=root, quiet=True)  # its own earlier page: replaced
    assert again["page"] == first["page"] and again["page"].is_file()
    mine = again["page"].parent / "notes.txt"
    mine.write_text("a user's file", encoding="utf-8")
    with pytest.raises(VLMStudiesError, match="holds files that scripts/look_inside.py did not write .*notes.txt"):
        look_at_uids(opts, root=root, quiet=True)
    assert mine.read_text(encoding="utf-8") == "a user's file" and again["page"].is_file()
