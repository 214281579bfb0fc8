"""Run planner: what a training config costs on a GPU, computed before any model or data is loaded.

    plan = plan_config(model_opts, lora_opts, data_opts, args, explicit_bf16=None)   # from parse_train_options
    print(format_plan(plan, gpus=["T4"]))

It answers, for Qwen2-VL-2B at the config's settings:
  visual tokens  per image and per example, at the configured pixel limits, for NLVR2-sized images
                 (1024x768 each by default; any sizes can be given), exactly as the image processor resizes
  sequence       visual + text tokens (text of the rendered chat template counted with Qwen2's real vocabulary
                 when dashscope is installed, `utils.qwen2_vocab`; else estimated, a few tokens either way)
  GPU memory     peak allocated memory of a LoRA (bf16) and a Q-LoRA step at the configured batch size, from a
                 linear model fitted to measurements (CALIBRATION), adjusted for precision, LoRA size and
                 the cards' usable memory; a warning for each named card it will not fit.

The memory model. Peak = fixed + per_token x tokens in the batch, fitted to the H100 figures of
`bench/gpu_bench.py` (CALIBRATION_SOURCE): three LoRA bf16 points give the per-token slope and LoRA's fixed
part; Q-LoRA has one point, so it shares LoRA's slope (the same activations flow through a bf16 compute path)
and gets its own fixed part. The fixed parts agree with the weights' own sizes (`weights_breakdown`) to
~0.15 GiB. Those steps computed the full logits (151,936 per token) for the loss, which is most of the
slope; TRL's SFTTrainer (our trainer) scores only the answer positions on CUDA (its fused LM head), so for
training the estimate is an upper bound, by how much is not measured yet.

Precision. A card without native bf16 (T4) trains in fp32 here (fp16 breaks Qwen2-VL): weights not stored in
4 bits take 4 bytes instead of 2, and the per-token part is doubled (an upper bound: the loss already ran in
fp32). Activation checkpointing was on in every measurement; a config with it off gets no memory estimate
for the activations (it needs several times more) and says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from utils import qwen2_vocab
from utils.config import load_yaml
from utils.errors import VLMStudiesError
from vlm_datasets.prompts import get_template, pixel_budget, user_content

GIB = 2 ** 30

# Qwen2-VL-2B-Instruct's published configuration (Setup/NOTES.md §2): the shapes the planner's arithmetic uses
# and that bench/gpu_bench.py builds its random model from.
QWEN2VL_2B = dict(
    text=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
              num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
              tie_word_embeddings=True),
    vision=dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2),
)
NLVR2_PAIR = ((1024, 768), (1024, 768))  # the NLVR2-sized pair bench/gpu_bench.py measured
# NLVR2 statements are ~15 words on average; this one (15 words) stands in when no sentence is given.
TYPICAL_SENTENCE = "One image shows exactly two dogs standing on the grass, and the other shows one dog."

# --------------------------------------------------------------------------- calibration (measured)

CALIBRATION_SOURCE = "bench/results/gpu_bench_h100_2026-11-27.json"
CALIBRATION_CONDITIONS = ("NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, sdpa attention, Qwen2-VL-2B-shaped random "
                          "model, batch 4, two 1024x768 images per example, bf16 compute, activation checkpointing "
                          "on, LoRA r=16 on the language model's projections, full-logits loss; peak = "
                          "torch.cuda.max_memory_allocated")


@dataclass(frozen=True)
class Point:
    method: str  # lora | qlora | score
    max_pixels_units: int  # max_pixels / 28^2
    batch_size: int
    tokens_per_example: int
    peak_gib: float


# Copied from CALIBRATION_SOURCE (tests check they still match the file).
CALIBRATION = (
    Point("lora", 256, 4, 512, 8.695635318756104),
    Point("lora", 512, 4, 1032, 13.137060642242432),
    Point("lora", 1280, 4, 2042, 21.73725938796997),
    Point("qlora", 512, 4, 1032, 11.231650829315186),
    Point("score", 256, 16, 512, 5.636697769165039),
    Point("score", 512, 16, 1032, 7.248546600341797),
    Point("score", 1280, 16, 2042, 10.378849983215332),
)
NOT_MEASURED = ("Q-LoRA at max_pixels 256*28*28 and 1280*28*28 (one Q-LoRA point: its slope is LoRA's)",
                "any card other than the H100 (T4, L4, A10G, A100 figures are predictions)",
                "fp32 compute (the T4 path): weights and activations scaled by byte width, not measured",
                "activation checkpointing off", "LoRA on the vision blocks (gradients through the vision tower)",
                "TRL's fused LM head (what SFTTrainer trains with on CUDA): measured steps built the full logits",
                "the vision tower without autograd (training.model.vision_without_autograd, added after the "
                "calibration): the measured steps kept the frozen vision blocks' checkpointed inputs and recomputed "
                "them, so every estimate here is too high for today's trainer, by an amount not measured yet")


@dataclass(frozen=True)
class Fit:
    """peak GiB = fixed_gib + per_token_gib * tokens in the batch."""
    fixed_gib: float
    per_token_gib: float
    points: tuple

    def __call__(self, tokens: float) -> float:
        return self.fixed_gib + self.per_token_gib * tokens


def fit_line(xy) -> tuple[float, float]:
    """Least-squares (intercept, slope) of points (x, y); at least two distinct x."""
    xy = list(xy)
    if len({x for x, _ in xy}) < 2:
        raise VLMStudiesError("a memory fit needs measurements at two or more sequence lengths")
    n = len(xy)
    mx, my = sum(x for x, _ in xy) / n, sum(y for _, y in xy) / n
    slope = sum((x - mx) * (y - my) for x, y in xy) / sum((x - mx) ** 2 for x, _ in xy)
    return my - slope * mx, slope


def fit_memory(points=CALIBRATION) -> dict[str, Fit]:
    """One fit per method: LoRA from its own points; Q-LoRA from its own if it has two lengths, else its
    points with LoRA's slope; score (eval) from its own."""
    by = {m: [p for p in points if p.method == m] for m in ("lora", "qlora", "score")}
    fits = {}
    for m in ("lora", "score"):
        if by[m]:
            a, b = fit_line((p.batch_size * p.tokens_per_example, p.peak_gib) for p in by[m])
            fits[m] = Fit(a, b, tuple(by[m]))
    q = by["qlora"]
    if q and len({p.tokens_per_example for p in q}) >= 2:
        a, b = fit_line((p.batch_size * p.tokens_per_example, p.peak_gib) for p in q)
        fits["qlora"] = Fit(a, b, tuple(q))
    elif q:
        b = fits["lora"].per_token_gib
        a = sum(p.peak_gib - b * p.batch_size * p.tokens_per_example for p in q) / len(q)
        fits["qlora"] = Fit(a, b, tuple(q))
    return fits


# --------------------------------------------------------------------------- parameters (arithmetic)

def parameter_counts(shape=QWEN2VL_2B) -> dict[str, int]:
    """Parameters of Qwen2-VL by part, from its configuration (checked against the model class in tests)."""
    t, v = shape["text"], shape["vision"]
    h, i = t["hidden_size"], t["intermediate_size"]
    kv = t["num_key_value_heads"] * (h // t["num_attention_heads"])  # k/v width: KV heads x head dim
    linear_w = h * h * 2 + h * kv * 2 + 3 * h * i  # q, o; k, v; gate, up, down
    per_layer = linear_w + (h + 2 * kv) + 2 * h  # + q/k/v biases + two RMSNorms
    embed = t["vocab_size"] * h * (1 if t["tie_word_embeddings"] else 2)
    e, m = v["embed_dim"], v["embed_dim"] * v["mlp_ratio"]
    patch = e * 3 * v["temporal_patch_size"] * v["patch_size"] ** 2
    block = 4 * e + (e * 3 * e + 3 * e) + (e * e + e) + (e * m + m) + (m * e + e)  # 2 LayerNorms, qkv, proj, fc1, fc2
    merged = e * v["spatial_merge_size"] ** 2
    merger = 2 * e + (merged * merged + merged) + (merged * v["hidden_size"] + v["hidden_size"])
    return {"embedding": embed, "language_linear": linear_w * t["num_hidden_layers"],
            "language_other": (per_layer - linear_w) * t["num_hidden_layers"] + h,
            "vision_blocks": patch + block * v["depth"], "vision_merger": merger,
            "total": embed + per_layer * t["num_hidden_layers"] + h + patch + block * v["depth"] + merger}


def lora_parameters(r: int, targets, vision_merger: bool = False, vision_blocks: bool = False,
                    shape=QWEN2VL_2B) -> int:
    """LoRA parameters (A and B) for rank r on the named language-model projections (+ vision parts)."""
    t, v = shape["text"], shape["vision"]
    h, i = t["hidden_size"], t["intermediate_size"]
    kv = t["num_key_value_heads"] * (h // t["num_attention_heads"])  # k/v width: KV heads x head dim
    dims = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h), "gate_proj": (h, i),
            "up_proj": (h, i), "down_proj": (i, h)}
    n = sum(r * sum(dims[name]) for name in targets if name in dims) * t["num_hidden_layers"]
    e, m = v["embed_dim"], v["embed_dim"] * v["mlp_ratio"]
    merged = e * v["spatial_merge_size"] ** 2
    if vision_merger:
        n += r * (merged + merged) + r * (merged + v["hidden_size"])
    if vision_blocks:
        n += r * ((e + 3 * e) + (e + e) + (e + m) + (m + e)) * v["depth"]
    return n


# Bytes per trainable LoRA parameter: fp32 weight + gradient + AdamW's two moments.
LORA_BYTES = 16
# NF4 with double quantisation: 4 bits per weight + ~0.127 bits of quantisation constants.
NF4_BYTES = 0.5 + 0.127 / 8
REFERENCE_LORA = lora_parameters(16, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def weights_breakdown(method: str, weight_bytes: int = 2) -> dict[str, float]:
    """GiB of the frozen base and of the reference LoRA (r=16, language model) with its optimizer state."""
    p = parameter_counts()
    if method == "qlora":
        base = p["language_linear"] * NF4_BYTES + (p["total"] - p["language_linear"]) * weight_bytes
    else:
        base = p["total"] * weight_bytes
    return {"base_gib": base / GIB, "lora_gib": REFERENCE_LORA * LORA_BYTES / GIB}


def unquantised_parameters(method: str) -> int:
    p = parameter_counts()
    return p["total"] - (p["language_linear"] if method == "qlora" else 0)


# --------------------------------------------------------------------------- cards

@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float  # total as nvidia-smi reports it
    native_bf16: bool
    note: str = ""


GPUS = {g.name: g for g in [
    GPU("T4", 15360 / 1024, False, "Colab's free card; 16 GB nominal, 15,360 MiB visible"),
    GPU("L4", 23034 / 1024, True, "24 GB nominal, 23,034 MiB visible"),
    GPU("A10G", 22.5, True, "AWS g5; 24 GB nominal, taken as 22.5 GiB usable (its visible figure not checked here)"),
    GPU("A100-40", 40960 / 1024, True),
    GPU("A100-80", 81920 / 1024, True),
    GPU("H100", 81559 / 1024, True, "80 GB HBM3 (the calibration card)"),
]}
# max_memory_allocated leaves out the CUDA context and the caching allocator's fragmentation: a run needs that
# much more than the estimate (assumed, not measured here: ~0.5 GiB of context, ~10% of fragmentation).
CONTEXT_GIB = 0.5
FRAGMENTATION = 0.10


def card(name: str) -> GPU:
    key = name.strip().upper().replace("_", "-")
    aliases = {"A100": "A100-40", "A100-40GB": "A100-40", "A100-80GB": "A100-80", "H100-80": "H100", "A10": "A10G"}
    key = aliases.get(key, key)
    if key not in GPUS:
        raise VLMStudiesError(f"unknown GPU '{name}'; choose one of {', '.join(GPUS)}")
    return GPUS[key]


def needed_gib(allocated_gib: float) -> float:
    """What a card must hold for a run whose peak allocated memory is `allocated_gib`."""
    return allocated_gib * (1 + FRAGMENTATION) + CONTEXT_GIB


# --------------------------------------------------------------------------- tokens

def visual_tokens(width: int, height: int, min_pixels: int, max_pixels: int, patch: int = 14, merge: int = 2):
    """(tokens, (resized width, resized height)) for one image, as Qwen2-VL's image processor resizes it."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    f = patch * merge
    h, w = smart_resize(height, width, factor=f, min_pixels=min_pixels, max_pixels=max_pixels)
    return (h // f) * (w // f), (w, h)


# Qwen2's pre-tokenizer split (letters, digits, punctuation runs, whitespace), in Python `re`: common English
# words are one token each after it, so counting pieces estimates tokens (rare words split further).
_PIECES = re.compile(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|(?:[^\r\n\w]|_)?[^\W\d_]+|\d| ?(?:[^\s\w]|_)+[\r\n]*"
                     r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPECIAL = re.compile(r"<\|[a-z_]+\|>")


def estimate_tokens(text: str) -> int:
    """Tokens of `text` for Qwen2's tokenizer: special tokens exactly, the rest by pre-tokenizer pieces."""
    return sum(len(_PIECES.findall(chunk)) for chunk in _SPECIAL.split(text)) + len(_SPECIAL.findall(text))


def rendered_example(template: str, sentence: str, n_images: int = 2) -> str:
    """The full training text (prompt + answer) in Qwen2-VL's chat format, one <|image_pad|> per image."""
    t = get_template(template)
    user = "".join("<|vision_start|><|image_pad|><|vision_end|>" if p["type"] == "image" else p["text"]
                   for p in user_content(sentence, n_images, t))
    # Qwen2-VL's template: a default system turn, then the user turn, then the assistant's answer.
    return (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n{t.answer_true}<|im_end|>\n")


def text_tokens(template: str, sentence: str, n_images: int = 2, tokenizer=None) -> int:
    """Text tokens of one training example (visual pads excluded): counted with `tokenizer` (Qwen2's real
    vocabulary, `utils.qwen2_vocab`) when given, else estimated from the pre-tokenizer split."""
    text = rendered_example(template, sentence, n_images)
    if tokenizer is None:
        return estimate_tokens(text) - n_images
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) - n_images


def counting_tokenizer(choice: str = "auto"):
    """`(tokenizer or None, how the text is counted)`: Qwen2's real vocabulary when installed ("auto") or asked
    for ("qwen2"); the pre-tokenizer estimate when not installed or asked for ("estimate")."""
    if choice not in ("auto", "qwen2", "estimate"):
        raise VLMStudiesError(f"unknown text counting '{choice}'; choose auto, qwen2 or estimate")
    if choice == "qwen2" or (choice == "auto" and qwen2_vocab.available()):
        return qwen2_vocab.shared_tokenizer(), "counted with Qwen2's vocabulary"
    why = "as asked" if choice == "estimate" else f"Qwen2's vocabulary is not installed: pip install {qwen2_vocab.PIN}"
    return None, f"estimated, a few tokens either way ({why})"


# --------------------------------------------------------------------------- the plan

@dataclass
class Plan:
    config: str | None
    model: str
    method: str  # lora | qlora
    image_sizes: tuple
    min_pixels: int
    max_pixels: int
    pixel_limits_from: str
    visual_per_image: list
    visual_tokens: int
    text_tokens: int
    sequence: int
    max_length: int | None
    batch_size: int
    grad_accum: int
    eval_batch_size: int
    activation_checkpointing: bool
    bf16: bool | None  # None: auto (native bf16 where the card has it)
    weights_dtype: str  # auto | bf16 | fp32
    lora_r: int
    lora_params: int
    lora_vision_blocks: bool
    text_tokens_from: str = "estimated"
    rows: list = field(default_factory=list)  # one per (card, method)
    recommendations: list = field(default_factory=list)  # one per card, for the config's method
    notes: list = field(default_factory=list)


def _precision(plan: Plan, gpu: GPU) -> tuple[str, str]:
    """(compute, weights) dtype a run of this config uses on `gpu` (TrainConfig and weights_dtype rules)."""
    compute = "bf16" if (plan.bf16 if plan.bf16 is not None else gpu.native_bf16) else "fp32"
    weights = plan.weights_dtype if plan.weights_dtype != "auto" else compute
    return compute, weights


def estimate(plan: Plan, method: str, gpu: GPU, fits: dict[str, Fit], batch_size: int | None = None) -> dict:
    """Peak allocated GiB of one training step (and of a score-mode eval batch) of `plan` on `gpu`, at the
    plan's per-device batch size or `batch_size`."""
    compute, weights = _precision(plan, gpu)
    fit = fits[method]
    tokens = (batch_size or plan.batch_size) * plan.sequence
    act_factor = 2 if compute == "fp32" else 1
    weight_extra = unquantised_parameters(method) * (2 if weights == "fp32" else 0) / GIB
    lora_extra = (plan.lora_params - REFERENCE_LORA) * LORA_BYTES / GIB
    fixed = fit.fixed_gib + weight_extra + lora_extra
    activations = None if not plan.activation_checkpointing else act_factor * fit.per_token_gib * tokens
    train = None if activations is None else fixed + activations
    # fp32's doubling of the per-token part is an upper bound: most of it is the logits, whose loss math (the
    # upcast copy, log-softmax and their gradients) ran in fp32 already
    train_low = None if activations is None or act_factor == 1 else fixed + activations / act_factor
    score = fits.get("score")
    eval_gib = None
    if score is not None:
        # A score-mode batch (accuracy before, during and after training) beside the training state: the weights,
        # LoRA and optimizer (the fixed part) plus score mode's own per-token memory.
        eval_gib = fixed + act_factor * score.per_token_gib * plan.eval_batch_size * plan.sequence
    peak = max(x for x in (train, eval_gib) if x is not None) if train is not None else None
    row = {"gpu": gpu.name, "method": method, "compute": compute, "weights": weights, "fixed_gib": fixed,
           "activations_gib": activations, "train_gib": train, "train_low_gib": train_low, "eval_gib": eval_gib,
           "peak_gib": peak,
           "card_gib": gpu.memory_gib}
    if peak is not None:
        row["needed_gib"] = needed_gib(peak)
        row["margin_gib"] = gpu.memory_gib - row["needed_gib"]
        row["fits"] = row["margin_gib"] >= 0
    else:
        row["needed_gib"] = row["margin_gib"] = row["fits"] = None
    return row


def recommend(plan: Plan, gpu: GPU, fits: dict[str, Fit]) -> dict:
    """The largest per-device batch of the config's method that fits `gpu` while keeping its effective batch
    (per-device batch x accumulation), and the accumulation that keeps it; batch None when none fits."""
    effective = plan.batch_size * plan.grad_accum
    out = {"gpu": gpu.name, "method": plan.method, "effective_batch": effective, "batch_size": None,
           "grad_accum": None, "needed_gib": None, "margin_gib": None, "card_gib": gpu.memory_gib}
    if not plan.activation_checkpointing:
        out["why"] = "no activation estimate with activation checkpointing off"
        return out
    for b in (b for b in range(effective, 0, -1) if effective % b == 0):
        row = estimate(plan, plan.method, gpu, fits, batch_size=b)
        if row["fits"]:
            out.update(batch_size=b, grad_accum=effective // b, needed_gib=row["needed_gib"],
                       margin_gib=row["margin_gib"], limited_by_eval=row["eval_gib"] == row["peak_gib"])
            return out
    row = estimate(plan, plan.method, gpu, fits, batch_size=1)
    if row["eval_gib"] is not None and needed_gib(row["eval_gib"]) > gpu.memory_gib:
        out["why"] = f"the score-mode eval batch {plan.eval_batch_size} alone does not fit: lower eval_batch_size"
    else:
        out["why"] = "batch 1 does not fit: lower max_pixels or use load_in_4bit"
    return out


def plan_config(model_opts, lora_opts, data_opts, args, explicit_bf16: bool | None = None,
                image_sizes=NLVR2_PAIR, sentence: str = TYPICAL_SENTENCE, config: str | None = None,
                gpus=tuple(GPUS), root=None, text_counting: str = "auto") -> Plan:
    """The plan of one parsed training config (no model, processor or data is loaded; the text is counted with
    Qwen2's real vocabulary when it is installed, see `counting_tokenizer`)."""
    min_p, max_p, where = pixel_limits(model_opts.model, data_opts.min_pixels, data_opts.max_pixels, root)
    if min_p > max_p:
        raise VLMStudiesError(f"min_pixels {min_p} exceeds max_pixels {max_p}; lower min_pixels or raise max_pixels")
    per_image = []
    for w, h in image_sizes:
        if w <= 0 or h <= 0:
            raise VLMStudiesError(f"image size {w}x{h} must be positive")
        per_image.append(visual_tokens(w, h, min_p, max_p))
    visual = sum(n for n, _ in per_image)
    tokenizer, counted = counting_tokenizer(text_counting)
    text = text_tokens(data_opts.template, sentence, len(image_sizes), tokenizer)
    ckpt = bool(getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", None))
    plan = Plan(config=config, model=model_opts.model, method="qlora" if model_opts.load_in_4bit else "lora",
                image_sizes=tuple(tuple(s) for s in image_sizes), min_pixels=min_p, max_pixels=max_p,
                pixel_limits_from=where, visual_per_image=per_image, visual_tokens=visual, text_tokens=text,
                sequence=visual + text, max_length=args.max_length, batch_size=args.per_device_train_batch_size,
                grad_accum=args.gradient_accumulation_steps, eval_batch_size=data_opts.eval_batch_size,
                activation_checkpointing=ckpt, bf16=explicit_bf16, weights_dtype=model_opts.dtype,
                lora_r=lora_opts.lora_r,
                lora_params=lora_parameters(lora_opts.lora_r, lora_opts.lora_target_modules,
                                            lora_opts.lora_vision_merger, lora_opts.lora_vision_blocks),
                lora_vision_blocks=lora_opts.lora_vision_blocks, text_tokens_from=counted)
    fits = fit_memory()
    for name in gpus:
        for method in ("lora", "qlora"):
            plan.rows.append(estimate(plan, method, card(name), fits))
    plan.recommendations = [recommend(plan, card(name), fits) for name in gpus]
    if not ckpt:
        plan.notes.append("activation checkpointing is off: every measurement had it on, so there is no estimate of "
                          "the activations (expect several times more); switch it on for GPU runs")
    if plan.lora_vision_blocks:
        plan.notes.append("LoRA on the vision blocks sends gradients through the vision tower: its activations are "
                          "not in the calibration, expect more than shown")
    if plan.max_length is not None and plan.sequence > plan.max_length:
        plan.notes.append(f"examples of this size (~{plan.sequence} tokens) exceed max_length {plan.max_length}: the "
                          f"length guard would skip them (overlong: {data_opts.overlong}); raise max_length or lower "
                          f"max_pixels")
    if getattr(args, "use_liger_kernel", False):
        plan.notes.append("use_liger_kernel is on: Liger's kernels are not in the calibration (they should lower memory; "
                          "not measured)")
    if not _is_2b(model_opts.model):
        plan.notes.append(f"the config trains {model_opts.model}, not Qwen2-VL-2B: the GPU figures say what "
                          f"Qwen2-VL-2B would need at these settings")
    if explicit_bf16:
        for name in gpus:
            if not card(name).native_bf16:
                plan.notes.append(f"bf16 is switched on but the {name} has no native bf16 (emulated: slow); the "
                                  f"estimate assumes bf16 memory")
    return plan


def _is_2b(model: str) -> bool:
    return "qwen2-vl-2b" in str(model).lower()


def pixel_limits(model: str, min_pixels: int | None, max_pixels: int | None, root=None) -> tuple[int, int, str]:
    """(min, max, where from): the config's bounds, the lab's default budget for any it leaves unset (what a run
    of this config uses: `vlm_datasets.prompts.pixel_budget`, never the processor's own 16384*28*28)."""
    lo, hi = pixel_budget(min_pixels, max_pixels)
    where = "config" if (min_pixels and max_pixels) else \
        "the lab default (vlm_datasets/prompts.py LAB_MIN_PIXELS / LAB_MAX_PIXELS)" if not (min_pixels or max_pixels) \
        else "config (the other bound: the lab default)"
    return lo, hi, where


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not m:
        raise VLMStudiesError(f"image size '{text}' must look like WIDTHxHEIGHT, e.g. 1024x768")
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------- printing

def _units(pixels: int) -> str:
    u = pixels / 784
    return f"{int(u)}*28*28" if u == int(u) else f"{pixels}"


def _gib(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def format_plan(plan: Plan, named=()) -> str:
    """The plan as text; a WARNING line for every card in `named` the configured method will not fit."""
    fits = fit_memory()
    sizes = " + ".join(f"{w}x{h}" for w, h in plan.image_sizes)
    vis = " + ".join(f"{n} ({w}x{h} after resize)" for n, (w, h) in plan.visual_per_image)
    method = {"lora": "LoRA", "qlora": "Q-LoRA (4-bit NF4 base)"}[plan.method]
    lines = [f"plan for {plan.config or '(command-line options)'}: {plan.model}, {method}, LoRA r={plan.lora_r} "
             f"({plan.lora_params:,} trainable parameters on Qwen2-VL-2B)",
             f"  images        {sizes} per example (NLVR2-sized unless --image_size was given)",
             f"  pixel budget  min {plan.min_pixels} ({_units(plan.min_pixels)}), max {plan.max_pixels} "
             f"({_units(plan.max_pixels)}: at most {plan.max_pixels // 784} visual tokens per image) from "
             f"{plan.pixel_limits_from}",
             f"  visual tokens {vis} = {plan.visual_tokens} per example",
             f"  text tokens   {'' if plan.text_tokens_from.startswith('counted') else '~'}{plan.text_tokens} "
             f"(chat template + prompt + answer for a ~15-word statement; {plan.text_tokens_from})",
             f"  sequence      {'' if plan.text_tokens_from.startswith('counted') else '~'}{plan.sequence} tokens per "
             f"example; "
             f"max_length {plan.max_length}"
             + (" (fits)" if plan.max_length is None or plan.sequence <= plan.max_length else " (EXCEEDS: skipped)"),
             f"  batch         {plan.batch_size} per device x {plan.grad_accum} accumulation = "
             f"{plan.batch_size * plan.grad_accum} per optimizer step; {plan.batch_size * plan.sequence:,} tokens per "
             f"forward; score-mode eval batch {plan.eval_batch_size}",
             "",
             f"GPU memory for Qwen2-VL-2B at batch {plan.batch_size} (peak allocated GiB; 'needs' adds "
             f"{CONTEXT_GIB} GiB CUDA context + {FRAGMENTATION:.0%} allocator slack; * = this config's method)",
             f"  {'card':8s} {'GiB':>5s}  {'method':7s} {'compute':7s} {'weights':7s} {'fixed':>6s} {'activ.':>6s} "
             f"{'train':>6s} {'eval':>6s} {'needs':>6s} {'margin':>7s}  verdict"]
    f = lambda x, w=6: f"{x:{w}.1f}" if x is not None else f"{'n/a':>{w}s}"  # noqa: E731
    for r in plan.rows:
        star = "*" if r["method"] == plan.method else " "
        verdict = "unknown (no activation estimate)" if r["fits"] is None else \
            ("fits" if r["fits"] else "DOES NOT FIT")
        lines.append(f"  {r['gpu']:8s} {r['card_gib']:5.1f} {star}{r['method']:6s} {r['compute']:7s} {r['weights']:7s} "
                     f"{f(r['fixed_gib'])} {f(r['activations_gib'])} {f(r['train_gib'])} {f(r['eval_gib'])} "
                     f"{f(r['needed_gib'])} {f(r['margin_gib'], 7)}  {verdict}")
    if plan.recommendations:
        eff = plan.recommendations[0]["effective_batch"]
        lines += ["", f"recommended per-device batch x accumulation per card ({method}, keeping {eff} per optimizer "
                      f"step: the largest divisor of {eff} that fits; * = this config's batch; cautious: see below)"]
        for rec in plan.recommendations:
            star = "*" if rec["batch_size"] == plan.batch_size else " "
            if rec["batch_size"] is None:
                lines.append(f"  {rec['gpu']:8s}  none: {rec['why']}")
            else:
                lines.append(f"  {rec['gpu']:8s} {star}per_device_train_batch_size {rec['batch_size']:<3d} "
                             f"gradient_accumulation_steps {rec['grad_accum']:<3d} needs {rec['needed_gib']:5.1f} GiB, "
                             f"margin {rec['margin_gib']:5.1f}" + ("  (the eval batch sets the peak)"
                                                                   if rec.get("limited_by_eval") else ""))
        lines.append("  these predate the frozen vision tower running without autograd and assume full logits: the "
                     "calibration over-estimates today's trainer, so a larger batch may fit (not measured yet)")
    lo, q, s = fits["lora"], fits["qlora"], fits["score"]
    wl, wq = weights_breakdown("lora"), weights_breakdown("qlora")
    lines += ["",
              f"calibration: {CALIBRATION_SOURCE} ({CALIBRATION_CONDITIONS})",
              "  points (method, max_pixels, batch, tokens/example -> peak GiB): "
              + "; ".join(f"{p.method} {p.max_pixels_units}*28*28 b{p.batch_size} {p.tokens_per_example} -> "
                          f"{p.peak_gib:.2f}" for p in CALIBRATION),
              f"  fit: LoRA bf16 {lo.fixed_gib:.2f} GiB + {lo.per_token_gib * 1024:.3f} MiB/token; Q-LoRA "
              f"{q.fixed_gib:.2f} GiB + the same slope; score mode {s.fixed_gib:.2f} GiB + "
              f"{s.per_token_gib * 1024:.3f} MiB/token (tokens = batch x sequence)",
              f"  cross-check: bf16 weights {wl['base_gib']:.2f} GiB + LoRA r16 with AdamW {wl['lora_gib']:.2f} = "
              f"{wl['base_gib'] + wl['lora_gib']:.2f} (fit {lo.fixed_gib:.2f}); NF4 base {wq['base_gib']:.2f} + "
              f"{wq['lora_gib']:.2f} = {wq['base_gib'] + wq['lora_gib']:.2f} (fit {q.fixed_gib:.2f})",
              "  upper bound for our trainer: the calibration steps built the full logits; TRL's SFTTrainer scores "
              "only the answer tokens on CUDA (fused LM head), which should need less per token (not measured)",
              "  not measured: " + "; ".join(NOT_MEASURED)]
    for note in plan.notes:
        lines.append(f"note: {note}")
    for name in named:
        g = card(name)
        for r in plan.rows:
            if r["gpu"] != g.name or r["method"] != plan.method:
                continue
            if r["compute"] == "fp32" and not g.native_bf16:
                why = "bf16 is off in the config" if plan.bf16 is False else "bf16 left to the hardware"
                extra = unquantised_parameters(plan.method) * 2 / GIB if r["weights"] == "fp32" else 0.0
                low = f"; {r['train_low_gib']:.1f} GiB if fp32 added nothing per token (most of it is the logits, " \
                      f"whose loss math ran in fp32 already): the truth lies between" \
                    if r["train_low_gib"] is not None else ""
                lines.append(f"note: the {g.name} has no native bf16, so this config computes in fp32 there ({why}; "
                             f"fp16 breaks Qwen2-VL): the {unquantised_parameters(plan.method) / 1e9:.2f}B weights "
                             f"not in 4 bits take 4 bytes (+{extra:.1f} GiB) and the per-token part is doubled: "
                             f"{_gib(r['train_gib'])} GiB allocated{low}")
            if r["fits"] is None:
                lines.append(f"note: cannot judge the fit on a {g.name}: no activation estimate for this config")
            if r["fits"] is False:
                lines.append(f"WARNING: this config will not fit a {g.name} ({g.memory_gib:.1f} GiB): it needs "
                             f"~{r['needed_gib']:.1f} GiB ({r['compute']} compute). Lower "
                             f"per_device_train_batch_size (raise gradient_accumulation_steps to keep the "
                             f"effective batch), lower max_pixels, or use load_in_4bit")
    return "\n".join(lines)


def warnings_for(plan: Plan, named) -> list[str]:
    """Names of the named cards the configured method will not fit (or cannot be judged for)."""
    out = []
    for name in named:
        g = card(name)
        for r in plan.rows:
            if r["gpu"] == g.name and r["method"] == plan.method and r["fits"] is not True:
                out.append(g.name)
    return out


def as_dict(plan: Plan) -> dict:
    import dataclasses

    d = dataclasses.asdict(plan)
    d["calibration"] = {"source": CALIBRATION_SOURCE, "conditions": CALIBRATION_CONDITIONS,
                        "fits": {m: {"fixed_gib": f.fixed_gib, "per_token_gib": f.per_token_gib}
                                 for m, f in fit_memory().items()},
                        "not_measured": list(NOT_MEASURED)}
    return d



def explicit_bf16(config_path: str | None, argv) -> bool | None:
    """bf16 as the config or the command line set it; None when left to the hardware (TrainConfig resolves an
    unset bf16 from the GPU it runs on, so the parsed value says nothing about other cards)."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--bf16", nargs="?", const="true", default=None)
    ns, _ = pre.parse_known_args(list(argv))
    raw = ns.bf16 if ns.bf16 is not None else (load_yaml(config_path).get("bf16") if config_path else None)
    if raw is None or str(raw).lower() in ("none", "null", ""):
        return None
    return str(raw).strip().lower() in ("true", "1", "yes")
