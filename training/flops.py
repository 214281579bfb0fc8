"""Model FLOPs of a Qwen2-VL LoRA training step, per part, from the model's configuration; and MFU.

    f = step_flops(model.config, patches_per_image=[1976] * 8, tokens_per_example=[1032] * 4,
                   scored_positions=8, lora=lora_opts)
    f["total"], f["vision"], f["language"], f["parts"]["vision_blocks"]
    mfu(f["total"], step_seconds, peak_tflops("NVIDIA H100 80GB HBM3"))
    c = step_cost(model.config, [1976] * 8, [1032] * 4, 8, lora_opts, vision_in_graph=True, checkpointing=True)
    c["model"]["total"], c["executed"]      # what the gradients need; what such a step runs

The convention (README, "FLOPs and MFU"):
- A multiply-add is 2 FLOPs. Only matrix products are counted: linear layers, the patch-embedding
  convolution (a linear map of each 2x14x14x3 patch), attention scores and their weighted sum, and the LM
  head. Norms, activations, rotary embeddings and softmax are left out (about 1% here).
- Forward of a linear layer (in x out) over n rows: 2*n*in*out. Attention over a sequence of s: 4*s*s*d per
  layer (QK^T and AV, d = query heads x head dim). The vision tower attends within each image (s = that
  image's patches). The language model is counted as a full square too, although its mask is causal (the
  PaLM / Megatron convention; a flash kernel skips about half of it).
- Backward: the gradient with respect to a layer's input costs one forward again, the gradient with respect
  to its weight another. So a linear layer costs 1x its forward when it runs without autograd (the frozen
  vision tower), 2x when its weight is frozen but gradients pass through it to LoRA weights upstream (the
  language model, and the merger's second layer under a merger LoRA), and 3x when its weight trains (LoRA's
  A and B). The familiar 6*N*tokens is the all-trained case; a frozen part without autograd is 2*N.
  Attention's two products multiply activations by activations: with gradients passing through, both
  operands get one (3x its forward); without autograd, 1x. The language model's first layer is counted with
  its input gradient, which autograd skips when nothing before it trains and the input-grad hook is off
  (no activation checkpointing): at most 1/layers of the language model's backward too much then.
  tests/test_flops.py checks all of this against torch's own FlopCounterMode on the tiny model.
- Model FLOPs are what the gradients need. Work a step runs beyond that is reported apart as executed FLOPs
  (and HFU), never in MFU: activation checkpointing's recomputed forwards (`recomputed`), and the backward
  through a frozen vision tower that autograd recorded for nothing (`vision_grad=True` without LoRA on the
  blocks: the path before training.model.vision_without_autograd). `step_cost` gives both.
- Padding is not work: language-model tokens are the attention mask's ones, and the LM head counts the
  positions whose loss is needed (labelled), even where a kernel scores every position (TRL on CPU).
"""

from __future__ import annotations

# Dense 16-bit tensor-core peak of the cards we may be lent, TFLOP/s (vendor spec sheets, SXM parts; the
# T4 has no bf16: its figure is fp16, which this lab never trains in). MFU is only reported for bf16 compute.
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "T4": 65.0}


def peak_tflops(device_name: str | None) -> float | None:
    """The bf16 peak of a card named like torch.cuda.get_device_name() says, or None if unknown."""
    for key, value in PEAK_BF16_TFLOPS.items():
        if device_name and key in device_name:
            return value
    return None


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the card's peak (None without a peak)."""
    if not peak or not seconds:
        return None
    return flops / seconds / (peak * 1e12)


def _get(cfg, key, default=None):
    value = cfg.get(key, default) if isinstance(cfg, dict) else getattr(cfg, key, default)
    return default if value is None else value


def shape(config) -> dict:
    """The widths the count needs, from a Qwen2VLConfig (`model.config`) or training.planner.QWEN2VL_2B."""
    text = _get(config, "text_config") or _get(config, "text")
    vision = _get(config, "vision_config") or _get(config, "vision")
    h, heads = int(_get(text, "hidden_size")), int(_get(text, "num_attention_heads"))
    head_dim = int(_get(text, "head_dim", h // heads))
    e = int(_get(vision, "embed_dim"))
    return {"hidden": h, "intermediate": int(_get(text, "intermediate_size")), "layers": int(_get(text, "num_hidden_layers")),
            "q_width": heads * head_dim, "kv_width": int(_get(text, "num_key_value_heads")) * head_dim,
            "vocab": int(_get(text, "vocab_size")), "embed": e, "mlp": int(e * _get(vision, "mlp_ratio")),
            "depth": int(_get(vision, "depth")), "merge": int(_get(vision, "spatial_merge_size")),
            "patch_in": int(_get(vision, "in_channels", 3)) * int(_get(vision, "temporal_patch_size"))
            * int(_get(vision, "patch_size")) ** 2, "out": int(_get(vision, "hidden_size"))}


def lm_linear_dims(s: dict) -> dict[str, tuple[int, int]]:
    """(in, out) of each language-model projection (Qwen2-VL names)."""
    h, i = s["hidden"], s["intermediate"]
    return {"q_proj": (h, s["q_width"]), "k_proj": (h, s["kv_width"]), "v_proj": (h, s["kv_width"]),
            "o_proj": (s["q_width"], h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def step_flops(config, patches_per_image, tokens_per_example, scored_positions: int, lora=None,
               vision_grad: bool = False, checkpointing: bool = False) -> dict:
    """FLOPs of one training step (forward + backward) of a LoRA fine-tune of Qwen2-VL, per part, as it runs
    with the vision blocks in the autograd graph (`vision_grad`) or not; `step_cost` separates the model FLOPs
    (what the gradients need) from the executed ones.

    `patches_per_image`: 14x14 patches of each image in the batch (t*h*w of `image_grid_thw`);
    `tokens_per_example`: language-model tokens of each example (attention-mask ones); `scored_positions`:
    positions whose next token carries a label; `lora`: LoraOptions-like (lora_r, lora_target_modules,
    lora_vision_merger, lora_vision_blocks), None for no adapters; `vision_grad`: gradients flow through the
    vision blocks (LoRA on them, or the pre-fix path where the input-grad hook put them in the graph);
    `checkpointing`: activation checkpointing on (the recomputed forwards are reported apart).
    """
    s = shape(config)
    patches = [int(n) for n in patches_per_image]
    tokens = [int(n) for n in tokens_per_example]
    n_patch, n_tok = sum(patches), sum(tokens)
    visual = n_patch // s["merge"] ** 2
    e, m, merged = s["embed"], s["mlp"], s["embed"] * s["merge"] ** 2
    r = int(getattr(lora, "lora_r", 0) or 0) if lora is not None else 0
    lm_targets = list(getattr(lora, "lora_target_modules", []) or []) if lora is not None else []
    lora_merger = bool(getattr(lora, "lora_vision_merger", False)) if lora is not None else False
    lora_blocks = bool(getattr(lora, "lora_vision_blocks", False)) if lora is not None else False
    vision_grad = vision_grad or lora_blocks
    dims = lm_linear_dims(s)

    block_linear = 2 * n_patch * (e * 3 * e + e * e + e * m + m * e) * s["depth"]  # qkv, proj, fc1, fc2
    block_attention = sum(4 * n * n * e for n in patches) * s["depth"]
    merger_fc1, merger_fc2 = 2 * visual * merged * merged, 2 * visual * merged * s["out"]
    lm_linear = 2 * n_tok * sum(i * o for i, o in dims.values()) * s["layers"]
    lm_attention = sum(4 * t * t * s["q_width"] for t in tokens) * s["layers"]
    head = 2 * int(scored_positions) * s["hidden"] * s["vocab"]
    lora_lm = 2 * n_tok * r * sum(sum(dims[t]) for t in lm_targets if t in dims) * s["layers"]
    lora_merger_fwd = 2 * visual * r * ((merged + merged) + (merged + s["out"])) if lora_merger else 0
    # LoRA A of the merger's first layer reads the blocks' output: no input gradient unless they are in the graph
    lora_merger_a_saved = 0 if vision_grad or not lora_merger else 2 * visual * r * merged
    lora_blocks_fwd = 2 * n_patch * r * ((e + 3 * e) + (e + e) + (e + m) + (m + e)) * s["depth"] if lora_blocks else 0

    # The merger's first layer needs its input's gradient only when the blocks are in the graph; its second
    # layer's input gradient is needed whenever anything before it trains (a merger LoRA) or is in the graph.
    merger_mult = (2 if vision_grad else 1, 2 if (vision_grad or lora_merger) else 1)
    recompute = checkpointing  # checkpointed: the language-model layers, and the vision blocks when in the graph
    parts = {  # name: (forward, model FLOPs, recomputed forward)
        "patch_embed": (2 * n_patch * s["patch_in"] * e,) * 2 + (0,),  # its input is pixels: never a gradient
        "vision_blocks": (block_linear + block_attention,
                          block_linear * 2 + block_attention * 3 if vision_grad else block_linear + block_attention,
                          block_linear + block_attention if recompute and vision_grad else 0),
        "vision_merger": (merger_fc1 + merger_fc2, merger_fc1 * merger_mult[0] + merger_fc2 * merger_mult[1], 0),
        "language_layers": (lm_linear + lm_attention, 2 * lm_linear + 3 * lm_attention,
                            lm_linear + lm_attention if recompute else 0),
        "lm_head": (head, 2 * head, 0),  # gradient to the hidden states; the (tied) weight is frozen
        "lora": (lora_lm + lora_merger_fwd + lora_blocks_fwd,
                 3 * (lora_lm + lora_merger_fwd + lora_blocks_fwd) - lora_merger_a_saved,
                 (lora_lm + (lora_blocks_fwd if vision_grad else 0)) if recompute else 0),
    }
    out_parts = {name: {"forward": f, "flops": total, "recomputed": rec} for name, (f, total, rec) in parts.items()}
    vision = sum(out_parts[k]["flops"] for k in ("patch_embed", "vision_blocks", "vision_merger"))
    language = sum(out_parts[k]["flops"] for k in ("language_layers", "lm_head"))
    total = vision + language + out_parts["lora"]["flops"]
    return {"vision_patches": n_patch, "visual_tokens": visual, "images": len(patches), "lm_tokens": n_tok,
            "scored_positions": int(scored_positions), "parts": out_parts, "vision": vision, "language": language,
            "lora": out_parts["lora"]["flops"], "total": total,
            "recomputed": sum(p["recomputed"] for p in out_parts.values()),
            "vision_grad": vision_grad, "checkpointing": checkpointing}


def step_cost(config, patches_per_image, tokens_per_example, scored_positions: int, lora=None,
              vision_in_graph: bool = False, checkpointing: bool = False, head_positions: int | None = None) -> dict:
    """`model`: step_flops of what the gradients need (the vision blocks in the graph only when LoRA adapts
    them); `executed`: the FLOPs the step runs with the vision blocks in the graph or not (`vision_in_graph`),
    checkpointing's recomputed forwards, and the LM head over `head_positions` where a kernel projects more
    positions than are scored (TRL's fused head on CPU, or full logits)."""
    needed = step_flops(config, patches_per_image, tokens_per_example, scored_positions, lora)
    ran = step_flops(config, patches_per_image, tokens_per_example,
                     scored_positions if head_positions is None else head_positions, lora,
                     vision_grad=vision_in_graph, checkpointing=checkpointing)
    return {"model": needed, "executed": ran["total"] + ran["recomputed"]}


def batch_counts(inputs) -> tuple[list[int], list[int], int]:
    """(patches per image, tokens per example, scored positions) of a collated training batch."""
    grid = inputs.get("image_grid_thw")
    patches = grid.prod(-1).tolist() if grid is not None else []
    tokens = inputs["attention_mask"].sum(-1).tolist()
    scored = int((inputs["labels"][:, 1:] != -100).sum()) if inputs.get("labels") is not None else 0
    return patches, tokens, scored


COUNTS = ("images", "vision_patches", "visual_tokens", "lm_tokens", "scored_positions")
PARTS = ("vision", "language", "lora", "total")


class FlopCounter:
    """Adds up `step_cost` over the batches a run trains on (one call per micro-batch)."""

    def __init__(self, config, lora=None, vision_in_graph: bool = False, checkpointing: bool = False):
        self.config, self.lora = config, lora
        self.vision_in_graph, self.checkpointing = vision_in_graph, checkpointing
        self.totals: dict = {}
        self.batches = 0

    def add(self, inputs) -> None:
        c = step_cost(self.config, *batch_counts(inputs), lora=self.lora, vision_in_graph=self.vision_in_graph,
                      checkpointing=self.checkpointing)
        self.batches += 1
        for key in COUNTS + PARTS:
            self.totals[key] = self.totals.get(key, 0) + c["model"][key]
        self.totals["executed"] = self.totals.get("executed", 0) + c["executed"]

    def summary(self, seconds: float | None, peak: float | None) -> dict:
        """Totals (FLOPs), achieved model TFLOP/s over `seconds`, MFU per part and HFU against `peak` (None where
        unknown)."""
        t = self.totals
        out = {"batches": self.batches, **{k: t.get(k, 0) for k in COUNTS},
               "model_flops": {k: t.get(k, 0) for k in PARTS}, "executed_flops": t.get("executed", 0),
               "vision_in_graph": self.vision_in_graph, "activation_checkpointing": self.checkpointing,
               "seconds": seconds, "peak_bf16_tflops": peak,
               "model_tflop_per_s": _sig(t.get("total", 0) / seconds / 1e12) if seconds else None}
        for k in ("vision", "language", "total"):
            out[f"mfu_{k}"] = _sig_or_none(mfu(t.get(k, 0), seconds, peak))
        out["hfu"] = _sig_or_none(mfu(t.get("executed", 0), seconds, peak))
        return out


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def _sig_or_none(x: float | None) -> float | None:
    return None if x is None else _sig(x)
