"""Model side of training: the base (full precision or 4-bit), its processor, and the LoRA config.

The base loads through `utils.models` like everywhere else, so `Qwen/Qwen2-VL-2B-Instruct` and the
local tiny/small models take the same path. LoRA targets are regular expressions over Qwen2-VL's
module names (Setup/NOTES.md §3): the language model's projections by default, the vision merger and the
vision blocks only when switched on. Everything else, the vision tower included, stays frozen.
"""

from __future__ import annotations

import re

from utils.errors import VLMStudiesError

LM_PREFIX = r"model\.language_model\.layers\.\d+\.(?:self_attn|mlp)\."
VISION_MERGER = r"model\.visual\.merger\..+"
VISION_BLOCKS = r"model\.visual\.blocks\.\d+\..+"


def lora_target_patterns(lora) -> list[str]:
    """Regexes (matched against full module names) of the parts LoRA may adapt."""
    names = [n for n in lora.lora_target_modules if n]
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_]+", n)]
    if bad:
        raise VLMStudiesError(f"lora_target_modules must be plain projection names such as q_proj, got {bad}; "
                              f"use lora_vision_merger / lora_vision_blocks to adapt vision modules")
    parts = []
    if names:
        parts.append(LM_PREFIX + "(?:" + "|".join(map(re.escape, names)) + ")")
    if lora.lora_vision_merger:
        parts.append(VISION_MERGER)
    if lora.lora_vision_blocks:
        parts.append(VISION_BLOCKS)
    if not parts:
        raise VLMStudiesError("LoRA has nothing to adapt: give lora_target_modules or switch on lora_vision_merger "
                              "/ lora_vision_blocks")
    return parts


def lora_target_names(model, lora) -> list[str]:
    """Full names of the linear layers to adapt (PEFT would fail on the merger's GELU, so only Linears)."""
    patterns = [re.compile(p) for p in lora_target_patterns(lora)]
    out = []
    for name, module in model.named_modules():
        if "Linear" in type(module).__name__ and any(p.fullmatch(name) for p in patterns):
            out.append(name)
    if not out:
        raise VLMStudiesError(f"LoRA targets {lora.lora_target_modules} matched no linear layer of this model; "
                              f"Qwen2-VL's language-model projections are {', '.join(_lm_names())}")
    return out


def lora_config(lora, model):
    from peft import LoraConfig

    return LoraConfig(r=lora.lora_r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                      target_modules=lora_target_names(model, lora), bias="none", task_type="CAUSAL_LM")


def check_targets(model, lora) -> dict:
    """Count adapted modules per part; an LM target list that matched nothing is an error."""
    counts = {"language_model": 0, "vision_merger": 0, "vision_blocks": 0}
    for name, module in model.named_modules():
        if not hasattr(module, "lora_A"):
            continue
        if ".visual.merger." in name:
            counts["vision_merger"] += 1
        elif ".visual." in name:
            counts["vision_blocks"] += 1
        elif ".language_model." in name:
            counts["language_model"] += 1
    if lora.lora_target_modules and counts["language_model"] == 0:
        raise VLMStudiesError(f"lora_target_modules {lora.lora_target_modules} matched no language-model module; "
                              f"Qwen2-VL's are {', '.join(_lm_names())}")
    stray = (counts["vision_merger"] and not lora.lora_vision_merger) or \
        (counts["vision_blocks"] and not lora.lora_vision_blocks)
    if stray:
        raise VLMStudiesError(f"LoRA reached vision modules that were not switched on ({counts}); this is a bug")
    return counts


def _lm_names():
    from training.options import LM_PROJECTIONS

    return LM_PROJECTIONS


def weights_dtype(model_opts, args) -> str:
    """The dtype the frozen base is loaded in: bf16 when training in bf16, else fp32 (unless given)."""
    if model_opts.dtype != "auto":
        return model_opts.dtype
    return "bf16" if args.bf16 else "fp32"


def load_for_training(model_opts, data_opts, args, root=None):
    """`(model, processor)` for training: base weights (4-bit if asked), processor with the pixel limits."""
    from utils.models import load_model, load_processor

    processor = load_processor(model_opts.model, data_opts.min_pixels, data_opts.max_pixels, root=root)
    model = load_model(model_opts.model, dtype=weights_dtype(model_opts, args), load_in_4bit=model_opts.load_in_4bit,
                       attn_implementation=model_opts.attn_implementation, root=root)
    model.config.use_cache = False  # no KV cache while training (and none with activation checkpointing)
    return model, processor


def trainable_summary(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_parameters": trainable, "total_parameters": total}
