"""The GPU benchmark script runs on CPU with the tiny model, so it cannot rot between GPU loans."""

import json

from bench.gpu_bench import PEAK_BF16_TFLOPS, build_2b_config, main, peak_tflops


def test_gpu_bench_runs_on_cpu_with_tiny_model(tmp_path, capsys):
    out = main(["--model-config", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0", "--pixels", "4",
                "--qlora-pixels", "4", "--fp32-qlora-pixels", "4", "--batch-size", "2", "--score-batch-size", "2", "--workdir", str(tmp_path),
                "--json", str(tmp_path / "r.json")])
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["results"] == out["results"]
    assert not any("error" in r for r in out["results"])
    runs = {(r["mode"], r.get("loss_impl"), r["compute"]) for r in out["results"]}
    # LoRA and Q-LoRA with both losses (fused: SFTTrainer's LM head; full: the model's own), score, and the
    # T4 config's fp32 Q-LoRA path (on CPU every run is fp32)
    assert runs == {("lora", "fused", "fp32"), ("lora", "full", "fp32"), ("qlora", "fused", "fp32"),
                    ("qlora", "full", "fp32"), ("score", None, "fp32")}
    assert sum(r["mode"] == "qlora" for r in out["results"]) == 3
    for r in out["results"]:
        if r["mode"] == "score":
            assert r["examples_per_s"] > 0
        else:
            assert r["samples_per_s"] > 0 and r["visual_tokens_per_example"] > 0
            assert r["loss"] == r["loss"]  # not NaN
    # the fused LM head computes the same loss as the model's own (same weights, same batch)
    by = {(r["mode"], r.get("loss_impl")): r["loss"] for r in out["results"] if r["mode"] == "lora"}
    assert abs(by["lora", "fused"] - by["lora", "full"]) < 1e-4
    assert "vis tok/ex" in capsys.readouterr().out


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
