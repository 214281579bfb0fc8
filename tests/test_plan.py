"""The run planner: its arithmetic on known inputs, its calibration against the results file, every training
config planned, and the warning for a config that does not fit a named card."""

import json
from pathlib import Path

import pytest

from training import planner
from utils.errors import VLMStudiesError

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "training" / "configs").glob("*.yaml"))


def test_fit_line_and_memory_fits_on_known_points():
    assert planner.fit_line([(0, 2.0), (10, 3.0), (20, 4.0)]) == pytest.approx((2.0, 0.1))
    with pytest.raises(VLMStudiesError, match="two or more"):
        planner.fit_line([(5, 1.0), (5, 2.0)])
    P = planner.Point
    lora = [P("lora", 1, 1, 1000, 2.0 + 0.001 * 1000), P("lora", 2, 2, 1000, 2.0 + 0.001 * 2000)]
    fits = planner.fit_memory(lora + [P("qlora", 1, 1, 1000, 1.5)])
    assert fits["lora"].fixed_gib == pytest.approx(2.0) and fits["lora"].per_token_gib == pytest.approx(0.001)
    # one Q-LoRA point: LoRA's slope, its own fixed part
    assert fits["qlora"].per_token_gib == pytest.approx(0.001) and fits["qlora"].fixed_gib == pytest.approx(0.5)
    # two Q-LoRA lengths: its own line
    fits = planner.fit_memory(lora + [P("qlora", 1, 1, 1000, 1.5), P("qlora", 1, 1, 2000, 3.5)])
    assert fits["qlora"].per_token_gib == pytest.approx(0.002) and fits["qlora"].fixed_gib == pytest.approx(-0.5)


def test_calibration_points_are_the_results_file():
    res = json.loads((REPO / planner.CALIBRATION_SOURCE).read_text(encoding="utf-8"))["results"]
    tokens = {r["max_pixels"]: int(r["tokens_per_example"]) for r in res if r["mode"] == "lora"}
    from_file = sorted((r["mode"], int(r["max_pixels"].split("*")[0]), r["batch_size"], tokens[r["max_pixels"]],
                        r["peak_gpu_mem_gib"]) for r in res if "peak_gpu_mem_gib" in r)
    assert sorted((p.method, p.max_pixels_units, p.batch_size, p.tokens_per_example, p.peak_gib)
                  for p in planner.CALIBRATION) == from_file
    fits = planner.fit_memory()
    # the measured LoRA points lie on one line (residuals under 10 MiB), and its fixed part is the weights
    for p in planner.CALIBRATION:
        if p.method == "lora":
            assert abs(fits["lora"](p.batch_size * p.tokens_per_example) - p.peak_gib) < 0.01
    w = planner.weights_breakdown("lora")
    assert abs(w["base_gib"] + w["lora_gib"] - fits["lora"].fixed_gib) < 0.15


def test_visual_tokens_and_lora_parameters_on_known_inputs():
    assert planner.visual_tokens(1024, 768, 4 * 784, 512 * 784) == (494, (728, 532))
    assert planner.visual_tokens(1024, 768, 4 * 784, 256 * 784)[0] == 234
    assert planner.visual_tokens(1024, 768, 4 * 784, 16384 * 784)[0] == 999  # processor default: ~2,000 per pair
    # LoRA r=16 on the seven projections of 28 layers: what the H100 run reported beside the base (2,227,450,368)
    assert planner.REFERENCE_LORA == 18_464_768
    assert planner.parameter_counts()["total"] + planner.REFERENCE_LORA == 2_227_450_368
    assert planner.lora_parameters(32, ["q_proj"]) == 32 * (1536 + 1536) * 28


def test_text_token_estimate_is_qwen2s_pretokenizer_split():
    from utils.tiny_model import build_tokenizer

    pre = build_tokenizer().backend_tokenizer.pre_tokenizer  # Qwen2's split regex
    for text in ["The left image contains a red shape.\nAnswer True or False.",
                 "There're 12 dogs, isn't it?  Yes!!\n\n ok", "naïve café — 3.5 x_y  \t end   "]:
        assert planner.estimate_tokens(text) == len(pre.pre_tokenize_str(text))
    text = planner.rendered_example("tf", "The left image contains a red shape.")
    assert text.count("<|image_pad|>") == 2 and text.endswith("<|im_start|>assistant\nTrue<|im_end|>\n")
    # special tokens count one each; 29 pieces of text (checked by hand against the split above)
    assert planner.text_tokens("tf", "The left image contains a red shape.") == 39


def _plan(argv):
    from scripts.plan_run import main

    return main(argv)


def test_plan_arithmetic_per_card(capsys):
    plan = _plan(["--config", str(REPO / "training/configs/qwen2vl_2b_lora.yaml"), "--per_device_train_batch_size",
                  "4", "--image_size", "1024x768"])
    assert plan.visual_tokens == 988 and plan.sequence == 988 + plan.text_tokens and plan.bf16 is None
    fits = planner.fit_memory()
    rows = {(r["gpu"], r["method"]): r for r in plan.rows}
    tokens = 4 * plan.sequence
    h100 = rows["H100", "lora"]
    assert h100["compute"] == "bf16" and h100["train_gib"] == pytest.approx(fits["lora"](tokens))
    assert h100["needed_gib"] == pytest.approx(h100["peak_gib"] * 1.1 + 0.5)
    # T4: no native bf16, so an unset bf16 trains in fp32: every weight 2 bytes more, activations doubled
    t4 = rows["T4", "lora"]
    extra = planner.parameter_counts()["total"] * 2 / 2 ** 30
    assert (t4["compute"], t4["weights"]) == ("fp32", "fp32")
    assert t4["train_gib"] == pytest.approx(fits["lora"].fixed_gib + extra + 2 * fits["lora"].per_token_gib * tokens)
    q = rows["T4", "qlora"]  # Q-LoRA keeps the language model's linear weights in 4 bits
    unq = (planner.parameter_counts()["total"] - planner.parameter_counts()["language_linear"]) * 2 / 2 ** 30
    assert q["fixed_gib"] == pytest.approx(fits["qlora"].fixed_gib + unq)
    out = capsys.readouterr().out
    assert planner.CALIBRATION_SOURCE in out and "not measured" in out and "WARNING" not in out


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_training_config_plans(config, tmp_path, capsys):
    plan = _plan(["--config", str(config), "--gpu", *planner.GPUS, "--json", str(tmp_path / "plan.json")])
    out = capsys.readouterr().out
    assert plan.visual_tokens > 0 and plan.sequence > plan.visual_tokens and "visual tokens" in out
    assert len(plan.rows) == 2 * len(planner.GPUS)
    saved = json.loads((tmp_path / "plan.json").read_text(encoding="utf-8"))
    assert saved["named_gpus"] == list(planner.GPUS) and saved["calibration"]["source"] == planner.CALIBRATION_SOURCE


def test_t4_config_is_fp32_qlora_and_its_verdict_is_printed(capsys):
    plan = _plan(["--config", str(REPO / "training/configs/qwen2vl_2b_qlora_t4.yaml"), "--gpu", "T4"])
    t4 = next(r for r in plan.rows if r["gpu"] == "T4" and r["method"] == "qlora")
    assert plan.method == "qlora" and plan.bf16 is False and plan.batch_size >= 2
    assert (t4["compute"], t4["weights"]) == ("fp32", "fp32")
    out = capsys.readouterr().out
    assert ("WARNING" in out) == (not t4["fits"])


def test_warning_fires_for_an_oversized_config(tmp_path, capsys):
    cfg = str(REPO / "training/configs/qwen2vl_2b_lora.yaml")
    plan = _plan(["--config", cfg, "--per_device_train_batch_size", "16", "--gpu", "L4", "A100-80",
                  "--json", str(tmp_path / "p.json")])
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: this config will not fit a L4")
    assert json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))["does_not_fit"] == ["L4"]
    assert planner.warnings_for(plan, ["A100-80"]) == []


def test_bad_planner_input_is_one_clear_error():
    cfg = str(REPO / "training/configs/qwen2vl_2b_lora.yaml")
    with pytest.raises(VLMStudiesError, match="unknown GPU 'V100'"):
        _plan(["--config", cfg, "--gpu", "V100"])
    with pytest.raises(VLMStudiesError, match="WIDTHxHEIGHT"):
        _plan(["--config", cfg, "--image_size", "big"])
    with pytest.raises(VLMStudiesError, match="unknown option 'per_device_batch'"):
        _plan(["--config", cfg, "--per_device_batch", "2"])


def test_explicit_bf16_reads_config_and_command_line():
    lora = str(REPO / "training/configs/qwen2vl_2b_lora.yaml")
    t4 = str(REPO / "training/configs/qwen2vl_2b_qlora_t4.yaml")
    assert planner.explicit_bf16(lora, []) is None
    assert planner.explicit_bf16(t4, []) is False
    assert planner.explicit_bf16(t4, ["--bf16", "true"]) is True and planner.explicit_bf16(lora, ["--bf16"]) is True


def test_recommended_batch_is_the_largest_divisor_that_fits_per_card(capsys):
    plan = _plan(["--config", str(REPO / "training/configs/qwen2vl_2b_lora.yaml")])
    fits = planner.fit_memory()
    assert [r["gpu"] for r in plan.recommendations] == list(planner.GPUS)  # T4, L4, A10G, A100-40/80, H100
    for rec in plan.recommendations:
        g = planner.card(rec["gpu"])
        if rec["batch_size"] is None:
            assert rec["why"]
            continue
        assert rec["batch_size"] * rec["grad_accum"] == rec["effective_batch"] == 16  # the effective batch is kept
        assert planner.estimate(plan, "lora", g, fits, batch_size=rec["batch_size"])["fits"]
        larger = [b for b in range(rec["batch_size"] + 1, 17) if 16 % b == 0]
        assert not any(planner.estimate(plan, "lora", g, fits, batch_size=b)["fits"] for b in larger)
    by = {r["gpu"]: r for r in plan.recommendations}
    assert by["H100"]["batch_size"] > by["L4"]["batch_size"]  # a bigger card gets a bigger batch
    assert by["T4"]["batch_size"] is None and "eval_batch_size" in by["T4"]["why"]  # bf16 LoRA in fp32 on 15 GiB
    out = capsys.readouterr().out
    assert "recommended per-device batch" in out and "over-estimates" in out


TWO_B = [c for c in CONFIGS if "Qwen2-VL-2B" in c.read_text(encoding="utf-8")]


@pytest.mark.parametrize("config", TWO_B, ids=lambda p: p.name)
def test_2b_configs_name_the_card_they_were_sized_for(config):
    """The header's `Sized for: CARD` and its per-card batches are what the planner recommends."""
    import re

    header = "".join(line[1:] for line in config.read_text(encoding="utf-8").splitlines(keepends=True)
                     if line.startswith("#"))
    m = re.search(r"Sized for: ([A-Za-z0-9-]+)", header)
    assert m, f"{config.name} does not say which card it was sized for"
    plan = _plan(["--config", str(config)])
    by = {r["gpu"]: r for r in plan.recommendations}
    sized = by[planner.card(m.group(1)).name]
    assert (sized["batch_size"], sized["grad_accum"]) == (plan.batch_size, plan.grad_accum)
    for cards, b, a in re.findall(r"((?:[A-Z][A-Za-z0-9-]+(?: / )?)+): (\d+) x (\d+)", " ".join(header.split())):
        for name in cards.split(" / "):
            assert (by[planner.card(name).name]["batch_size"], by[planner.card(name).name]["grad_accum"]) == \
                (int(b), int(a)), f"{config.name}: {name} {b} x {a}"
