"""The GPU benchmark script runs on CPU with the tiny model, so it cannot rot between GPU loans."""

import json

from bench.gpu_bench import PEAK_BF16_TFLOPS, build_2b_config, main, peak_tflops


def test_gpu_bench_runs_on_cpu_with_tiny_model(tmp_path, capsys):
    out = main(["--model-config", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0", "--pixels", "4",
                "--qlora-pixels", "4", "--batch-size", "2", "--score-batch-size", "2", "--workdir", str(tmp_path),
                "--json", str(tmp_path / "r.json")])
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["results"] == out["results"]
    modes = {r["mode"]: r for r in out["results"]}
    assert set(modes) == {"lora", "score", "qlora"} and not any("error" in r for r in out["results"])
    for m in ("lora", "qlora"):
        assert modes[m]["samples_per_s"] > 0 and modes[m]["visual_tokens_per_example"] > 0
        assert modes[m]["loss"] == modes[m]["loss"]  # not NaN
    assert modes["score"]["examples_per_s"] > 0
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
    assert peak_tflops("NVIDIA H100 80GB HBM3") == PEAK_BF16_TFLOPS["H100"] and peak_tflops("cpu") is None
