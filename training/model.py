"""Model side of training: the base (full precision or 4-bit), its processor, and the LoRA config.

The base loads through `utils.models` like everywhere else, so `Qwen/Qwen2-VL-2B-Instruct` and the
local tiny/small models take the same path. LoRA targets are regular expressions over Qwen2-VL's
module names (Setup/NOTES.md §3): the language model's projections by default, the vision merger and the
vision blocks only when switched on. Everything else, the vision tower included, stays frozen, and a frozen
vision tower runs without autograd (`vision_without_autograd`).
"""

from __future__ import annotations

import re

from utils.errors import VLMStudiesError
from utils.models import load_model, load_processor

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


_NO_GRAD_MARK = "_vlm_studies_no_grad_previous"


class VisionNoGrad:
    """Handle of `vision_without_autograd`: what runs without autograd; `remove()` puts the tower back as it was."""

    def __init__(self, modules: list, names: list[str]):
        self.modules, self.names = modules, names

    def remove(self) -> None:
        for module in self.modules:
            marks = getattr(module.forward, "__dict__", {})
            if _NO_GRAD_MARK not in marks:
                continue  # already removed, or wrapped again on top by someone else: leave theirs alone
            if marks[_NO_GRAD_MARK] is None:
                del module.forward  # the class's forward again
            else:
                module.forward = marks[_NO_GRAD_MARK]  # an instance forward installed before ours (accelerate hooks)
        self.modules = []

    def describe(self) -> dict:
        return {"without_autograd": bool(self.modules), "modules": len(self.names),
                "first": self.names[0] if self.names else None, "last": self.names[-1] if self.names else None}


def vision_tower(model):
    """`(name, module)` of Qwen2-VL's vision tower inside `model` (a PEFT wrapper or the bare model), or None."""
    for name, module in model.named_modules():
        if all(hasattr(module, a) for a in ("patch_embed", "blocks", "merger")):
            return name, module
    return None


def vision_without_autograd(model) -> VisionNoGrad | None:
    """Run the frozen part of the vision tower (patch embedding and blocks) under `torch.no_grad()`.

    With activation checkpointing on, TRL and the Trainer call `enable_input_require_grads()`, which in
    transformers 5 also hooks the vision tower's patch embedding (Setup/NOTES.md §3): the tower's
    activations then require grad, so its blocks are checkpointed, recomputed and backpropagated through
    although no gradient can reach a trainable weight. Under no_grad nothing is recorded, and the blocks'
    checkpointing is skipped (transformers checkpoints a layer only while grad is enabled). The merger keeps
    autograd, so a merger LoRA trains on the (constant) output of the blocks exactly as before: gradients of
    every trainable weight are unchanged (tests/test_train_vision_grad.py).

    Returns None, changing nothing, when a weight of the patch embedding or the blocks is trainable (LoRA on
    the vision blocks) or the model has no Qwen2-VL vision tower. The patch embedding's output may still be
    flagged `requires_grad` by that hook; it is a leaf that nothing downstream records.
    """
    import torch

    found = vision_tower(model)
    if found is None:
        return None
    prefix, tower = found
    parts = [("patch_embed", tower.patch_embed)] + [(f"blocks.{i}", b) for i, b in enumerate(tower.blocks)]
    if any(p.requires_grad for _, m in parts for p in m.parameters()):
        return None
    for _, module in parts:
        if _NO_GRAD_MARK in getattr(module.forward, "__dict__", {}):
            continue  # already wrapped (a trainer rebuilt around the same model)
        wrapped = torch.no_grad()(module.forward)
        setattr(wrapped, _NO_GRAD_MARK, module.__dict__.get("forward"))  # what remove() restores
        module.forward = wrapped
    return VisionNoGrad([m for _, m in parts], [f"{prefix}.{n}" for n, _ in parts])


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
    processor = load_processor(model_opts.model, data_opts.min_pixels, data_opts.max_pixels, root=root)
    model = load_model(model_opts.model, dtype=weights_dtype(model_opts, args), load_in_4bit=model_opts.load_in_4bit,
                       attn_implementation=model_opts.attn_implementation, root=root)
    model.config.use_cache = False  # no KV cache while training (and none with activation checkpointing)
    return model, processor


def trainable_summary(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_parameters": trainable, "total_parameters": total}
