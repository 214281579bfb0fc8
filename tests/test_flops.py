"""FLOP accounting (training/flops.py): worked by hand on a small config, and checked against torch's own
FlopCounterMode (every matrix product autograd actually runs) on the tiny model, forward and backward."""

from __future__ import annotations

import pytest
import torch

from training.flops import FlopCounter, batch_counts, mfu, peak_tflops, shape, step_cost, step_flops
from training.options import LoraOptions

# text: hidden 8, 2 heads of 4 (q width 8), 1 KV head (kv width 4), MLP 16, one layer, vocab 10;
# vision: width 4, MLP 8 (ratio 2), one block, 2x2 patches of 1 channel and 1 frame (4 inputs), merge 2, out 8
SMALL = {"text": dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=10),
         "vision": dict(embed_dim=4, depth=1, mlp_ratio=2, patch_size=2, temporal_patch_size=1, in_channels=1,
                        spatial_merge_size=2, hidden_size=8)}
LM_Q = LoraOptions(lora_r=1, lora_target_modules=["q_proj"])


def test_counts_by_hand_on_a_small_config():
    # one image of 8 patches (2 visual tokens), one example of 5 tokens, 1 labelled position
    f = step_flops(SMALL, [8], [5], 1, lora=LM_Q)
    p = {k: v["flops"] for k, v in f["parts"].items()}
    assert (f["vision_patches"], f["visual_tokens"], f["lm_tokens"]) == (8, 2, 5)
    assert p["patch_embed"] == 2 * 8 * 4 * 4 == 256
    # block: qkv 4x12 + proj 4x4 + fc1 4x8 + fc2 8x4 = 128 MACs per patch -> 2*8*128 = 2048; attention
    # 4*8*8*4 = 1024; no autograd: forward only
    assert p["vision_blocks"] == 2048 + 1024 == 3072
    # merger over 2 tokens of 16: fc1 16x16 -> 2*2*256 = 1024, fc2 16x8 -> 512; forward only
    assert p["vision_merger"] == 1024 + 512
    # language model: q 8x8, k 8x4, v 8x4, o 8x8, gate/up 8x16, down 16x8 = 576 MACs per token -> 2*5*576 =
    # 5760, x2 (gradient through, frozen weights); attention 4*5*5*8 = 800, x3 (both operands get a gradient)
    assert p["language_layers"] == 2 * 5760 + 3 * 800 == 13920
    assert p["lm_head"] == 2 * (2 * 1 * 8 * 10) == 320  # one position, gradient to the hidden state only
    assert p["lora"] == 3 * (2 * 5 * 1 * (8 + 8)) == 480  # LoRA A and B train: 3x
    assert f["total"] == 256 + 3072 + 1536 + 13920 + 320 + 480 == 19584 == f["vision"] + f["language"] + f["lora"]
    assert f["recomputed"] == 0

    # the vision blocks in the graph (the pre-fix path, or LoRA on them): linear 2x, attention 3x, the merger
    # 2x; with checkpointing the blocks' and the language model's forwards (LoRA included) are recomputed
    g = step_flops(SMALL, [8], [5], 1, lora=LM_Q, vision_grad=True, checkpointing=True)
    assert g["parts"]["vision_blocks"]["flops"] == 2 * 2048 + 3 * 1024 == 7168
    assert g["parts"]["vision_merger"]["flops"] == 2 * 1536
    assert g["total"] == 19584 + (7168 - 3072) + 1536 == 25216
    assert g["recomputed"] == 3072 + (5760 + 800) + 160 == 9792
    assert step_flops(SMALL, [8], [5], 1, lora=LM_Q, checkpointing=True)["recomputed"] == 5760 + 800 + 160

    # merger LoRA (r=1): A 16->1 and B 1->16 on fc1, A 16->1 and B 1->8 on fc2 = 56 MACs per token -> 224;
    # 3x, less fc1's A input gradient (2*2*16 = 64: the blocks' output needs none); fc2's base now 2x
    m = step_flops(SMALL, [8], [5], 1, lora=LoraOptions(lora_r=1, lora_target_modules=["q_proj"],
                                                         lora_vision_merger=True))
    assert m["parts"]["lora"]["flops"] == 3 * (160 + 224) - 64 == 1088
    assert m["parts"]["vision_merger"]["flops"] == 1024 + 2 * 512


def test_2b_counts_come_from_the_models_config():
    """The same count from Qwen2-VL-2B's config object as from the planner's table; 4 patches per visual token."""
    from bench.gpu_bench import build_2b_config
    from training.planner import QWEN2VL_2B
    from utils.tiny_model import build_processor

    config = build_2b_config(build_processor())
    assert shape(config) == shape(QWEN2VL_2B)
    s = shape(config)
    assert (s["depth"], s["embed"], s["layers"], s["hidden"], s["vocab"]) == (32, 1280, 28, 1536, 151936)
    # an NLVR2 example at 512*28*28: two 1024x768 photos -> 2 x 1,976 patches = 988 visual tokens
    new = step_flops(config, [1976, 1976], [1032], 2, lora=LoraOptions(), checkpointing=True)
    old = step_flops(config, [1976, 1976], [1032], 2, lora=LoraOptions(), checkpointing=True, vision_grad=True)
    assert new["visual_tokens"] == 988 and new["vision_patches"] == 4 * 988
    # the fix halves the blocks' model FLOPs (the linear part; attention 3x -> 1x) and drops their recompute
    blocks = new["parts"]["vision_blocks"]["forward"]
    assert 2 * blocks < old["parts"]["vision_blocks"]["flops"] < 3 * blocks
    assert old["recomputed"] - new["recomputed"] == blocks  # no LoRA on the blocks: nothing else changes
    assert new["vision"] > new["language"]  # at 2B shape the vision tower is most of a step's work
    cost = step_cost(config, [1976, 1976], [1032], 2, lora=LoraOptions(), vision_in_graph=True, checkpointing=True)
    assert cost["model"]["total"] == new["total"]  # the backward through the frozen tower is not model work
    assert cost["executed"] == old["total"] + old["recomputed"]


@pytest.mark.parametrize("lora_kw,vision_grad", [({}, False), ({}, True), ({"lora_vision_merger": True}, False),
                                                 ({"lora_vision_merger": True}, True),
                                                 ({"lora_vision_blocks": True}, True)],
                         ids=["lm", "lm_vision_grad", "merger", "merger_vision_grad", "vision_blocks"])
def test_counts_equal_torchs_flop_counter_on_the_tiny_model(lora_kw, vision_grad, tiny_model_dir, synthetic_dir,
                                                            one_torch_thread):
    """Forward + backward of one example, every matrix product autograd runs, as torch counts them."""
    from peft import get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from training.model import lora_config, vision_without_autograd
    from vlm_datasets import build_inputs, load_nlvr2

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    example = next(iter(load_nlvr2(str(synthetic_dir), "validation", limit=1)))
    batch = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)([build_inputs(example)])
    lora = LoraOptions(lora_r=4, lora_dropout=0.0, **lora_kw)
    # eager attention: its products are plain bmm calls the counter sees (sdpa's CPU kernel has no formula)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="eager")
    model = get_peft_model(model, lora_config(lora, model))
    model.enable_input_require_grads()  # as TRL does with checkpointing: the pre-fix path when vision_grad
    if not vision_grad:
        assert vision_without_autograd(model) is not None
    model.train()
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    patches, tokens, scored = batch_counts(batch)
    assert len(patches) == 2 and scored > 0 and batch["input_ids"].shape[0] == 1  # one example: no padding
    # the model's own loss builds the full logits: every position goes through the LM head
    positions = batch["input_ids"].numel()
    ours = step_flops(model.config, patches, tokens, positions, lora=lora, vision_grad=vision_grad)
    assert ours["total"] == counter.get_total_flops()


def test_flop_counter_adds_batches_and_reports_mfu():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, 8, 9, -100]])
    batch = {"image_grid_thw": torch.tensor([[1, 2, 4], [1, 2, 4]]), "attention_mask": torch.tensor(
        [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]), "labels": labels}
    # patches t*h*w per image; tokens the mask's ones; scored: labels after the shift (next-token targets)
    assert batch_counts(batch) == ([8, 8], [5, 4], 5)
    # the pre-fix path: vision blocks in the graph, checkpointing on; model FLOPs are still only what the
    # gradients need, the rest is executed work (HFU)
    counter = FlopCounter(SMALL, lora=LM_Q, vision_in_graph=True, checkpointing=True)
    counter.add(batch)
    counter.add(batch)
    one = step_flops(SMALL, [8, 8], [5, 4], 5, lora=LM_Q)
    ran = step_flops(SMALL, [8, 8], [5, 4], 5, lora=LM_Q, vision_grad=True, checkpointing=True)
    out = counter.summary(seconds=2.0, peak=1e-9)  # a 1 kFLOP/s "card", so the MFU is a readable number
    assert counter.batches == 2 and out["vision_patches"] == 32 and out["lm_tokens"] == 18
    assert out["model_flops"]["total"] == 2 * one["total"]
    assert out["executed_flops"] == 2 * (ran["total"] + ran["recomputed"]) > out["model_flops"]["total"]
    assert out["mfu_total"] == pytest.approx(2 * one["total"] / 2.0 / 1e3, rel=1e-3)
    assert out["hfu"] == pytest.approx(out["executed_flops"] / 2.0 / 1e3, rel=1e-3)
    assert out["mfu_vision"] + out["mfu_language"] <= out["mfu_total"]
    assert counter.summary(seconds=2.0, peak=None)["mfu_total"] is None
    assert mfu(1e12, 1.0, 1.0) == 1.0 and mfu(1.0, 0, 1.0) is None
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.4 and peak_tflops("cpu") is None
