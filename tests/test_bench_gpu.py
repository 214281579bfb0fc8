"""The GPU benchmark script runs on CPU with the tiny model, so it cannot rot between GPU loans."""

import json

from bench.gpu_bench import PEAK_BF16_TFLOPS, build_2b_config, main, peak_tflops, planner_batch, planner_card


def test_gpu_bench_runs_on_cpu_with_tiny_model(tmp_path, capsys, one_torch_thread):
    out = main(["--model-config", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0", "--pixels", "4",
                "--qlora-pixels", "4", "--fp32-qlora-pixels", "4", "--liger-pixels", "4", "--full-pixels", "4",
                "--batch-size", "2",
                "--score-batch-size", "2", "--plan-card", "L4", "--workdir", str(tmp_path),
                "--json", str(tmp_path / "r.json")])
    saved = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert saved["results"] == out["results"]
    assert not any("error" in r for r in out["results"])
    plan = planner_batch("L4", 4)
    assert plan and plan != 2 and out["plan_card"] == "L4"
    runs = {(r["mode"], r.get("variant"), r.get("batch_size"), r.get("loss_impl"), r.get("compute"))
            for r in out["results"] if "skipped" not in r}
    # side by side in one run: the vision tower without and with autograd, the 2026-11-27 full-logits path, and
    # the planner's batch for the card; Q-LoRA (bf16 request, fp32 on CPU, and the T4 path); score
    assert runs == {("lora", "no_grad", 2, "fused", "fp32"), ("lora", "autograd", 2, "fused", "fp32"),
                    ("lora", "full", 2, "full", "fp32"), ("lora", "no_grad", plan, "fused", "fp32"),
                    ("qlora", "no_grad", 2, "fused", "fp32"), ("score", None, 2, None, "fp32")}
    assert sum(r["mode"] == "qlora" for r in out["results"]) == 2  # the bf16-requested and the fp32 (T4) job
    liger = [r for r in out["results"] if r["mode"] == "liger"]
    assert len(liger) == 1 and "needs a CUDA GPU" in liger[0]["skipped"]  # never silently absent
    for r in out["results"]:
        if r["mode"] == "score":
            assert r["examples_per_s"] > 0
        elif r["mode"] != "liger":
            assert r["samples_per_s"] > 0 and r["visual_tokens_per_example"] > 0 and r["loss"] == r["loss"]
            # FLOPs counted per part from the batch: vision patches (4 per visual token) and LM tokens
            assert r["vision_patches_per_step"] == 4 * r["visual_tokens_per_example"] * r["batch_size"]
            assert r["model_tflop_per_step"]["total"] > 0 and r["mfu_total"] is None  # no MFU on CPU
            # the same needed work; with the tower in the graph the step runs more
            if r["variant"] == "autograd":
                ng = next(x for x in out["results"] if x["mode"] == "lora" and x.get("variant") == "no_grad"
                          and x["batch_size"] == 2)
                assert r["model_tflop_per_step"] == ng["model_tflop_per_step"]
                assert r["executed_tflop_per_step"] > ng["executed_tflop_per_step"]
    # the fused LM head computes the same loss as the model's own (same weights, same batch)
    lora = next(r for r in out["results"] if r["mode"] == "lora")
    assert abs(lora["loss_fused"] - lora["loss_full"]) < 1e-4
    printed = capsys.readouterr().out
    assert "vis tok/ex" in printed and "MFU vis" in printed and "skipped: use_liger_kernel needs a CUDA GPU" in printed


def test_2b_config_matches_published_shape():
    from transformers import Qwen2VLForConditionalGeneration

    from utils.tiny_model import build_processor

    config = build_2b_config(build_processor())
    t, v = config.text_config, config.vision_config
    assert (t.vocab_size, t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads) == \
        (151936, 1536, 28, 12, 2)
    assert (v.depth, v.embed_dim, v.hidden_size) == (32, 1280, 1536) and config.tie_word_embeddings
    # parameter count without materialising weights: ~2.2B (1.5B language model + ~675M vision)
    import torch

    with torch.device("meta"):
        n = sum(p.numel() for p in Qwen2VLForConditionalGeneration(config).parameters())
    assert 2.1e9 < n < 2.35e9
    from training.planner import parameter_counts

    assert n == parameter_counts()["total"]  # the planner's arithmetic is the model class's count
    assert peak_tflops("NVIDIA H100 80GB HBM3") == PEAK_BF16_TFLOPS["H100"] and peak_tflops("cpu") is None
    reduced = build_2b_config(build_processor(), vision_depth=2, lm_layers=2)  # bench.frozen_vision's shape
    assert (reduced.vision_config.depth, reduced.text_config.num_hidden_layers) == (2, 2)
    assert reduced.vision_config.embed_dim == 1280 and reduced.text_config.hidden_size == 1536


def test_the_planner_batch_follows_the_card():
    assert planner_card("NVIDIA H100 80GB HBM3") == "H100" and planner_card("Tesla T4") == "T4"
    assert planner_card("NVIDIA A100-SXM4-80GB") == "A100-80" and planner_card("NVIDIA A100-SXM4-40GB") == "A100-40"
    assert planner_card("NVIDIA A10G") == "A10G" and planner_card("NVIDIA L4") == "L4"
    assert planner_card("NVIDIA H200") == "H100" and planner_card(None) is None  # the H100's 80 GB: cautious
    # the 2B LoRA config at its 512*28*28: the L4 batch it was sized with, more on the big cards
    assert planner_batch("L4", 512) == 4 and planner_batch("H100", 512) > 4


def test_recount_of_the_measured_h100_file(capsys):
    """The 2026-11-27 step times with vision patches and LM tokens both counted (what the README table shows)."""
    from pathlib import Path

    from bench.gpu_bench import recount

    rows = recount(Path(__file__).resolve().parent.parent / "bench/results/gpu_bench_h100_2026-11-27.json")
    assert [(r["mode"], r["max_pixels"]) for r in rows] == [("lora", "512*28*28"), ("qlora", "512*28*28"),
                                                             ("lora", "256*28*28"), ("lora", "1280*28*28")]
    r512 = rows[0]
    assert r512["vision_patches_per_step"] == 4 * 988 * 4 and r512["lm_tokens_per_step"] == 4 * 1032
    for r in rows:
        # the old figure counted 4 x all parameters per LM token; per part, the vision tower adds its patches
        assert r["mfu_total"] > r["old_mfu"] and r["hfu"] > r["mfu_total"]
        assert abs(r["mfu_vision"] + r["mfu_language"] - r["mfu_total"]) < 0.01  # + LoRA's small share
    assert "MFU recounted" in capsys.readouterr().out
