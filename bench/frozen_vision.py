"""A frozen vision tower with and without autograd: step time at Qwen2-VL-2B widths, interleaved in one run.

    python -m bench.frozen_vision                          # 2 vision blocks + 2 LM layers, 512*28*28, 3 rounds
    python -m bench.frozen_vision --rounds 5 --threads 2   # steadier, both cores (an idle machine only)
    python -m bench.frozen_vision --rounds 1 --json fv.json

The model is Qwen2-VL-2B's architecture at its real widths (vision 1280 wide, MLP 5120, 16 heads; language
model 1536 wide, MLP 8960, 12/2 heads, vocabulary 151,936) with fewer blocks and layers, random weights,
fp32 on CPU. One example per step: two 1024x768 photos (NLVR2-sized) and a statement, collated by TRL's
vision collator with completion-only labels. The step is what our trainer runs: LoRA r=16 on the language
model's projections (PEFT, `training.model.lora_config`), TRL's fused LM head (on CPU it scores every
position), activation checkpointing with the input-grad hooks TRL and the Trainer install.

Two variants of the same model, taking turns step by step (ABBA order per round, after one warm-up step
each), so load from other processes on a shared machine hits both alike:
  autograd   the vision tower as TRL leaves it: the input-grad hook on the patch embedding puts the frozen
             blocks in the graph, so they are checkpointed, recomputed and backpropagated through
  no_grad    training.model.vision_without_autograd: patch embedding and blocks under no_grad (our trainer)
Forward (to the loss) and backward are timed apart, by wall clock and by this process's CPU time (steadier
when other processes share the cores); the ratios are the medians of the per-round ratios.
FLOPs per step come from training/flops.py: model FLOPs (what the gradients need: the same for both) and
executed FLOPs (what each variant runs, recomputation included). Nothing is saved to disk.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from utils.cli import ArgumentParser, main_guard
from utils.run_meta import load_average_1m

VARIANTS = ("autograd", "no_grad")


def build(vision_blocks: int, lm_layers: int, pixels: int, seed: int = 0, widths: str = "2b"):
    """(peft model, batch, no-grad handle, config) at 2B widths with the given depths (or the `tiny` test
    model's widths), hooks as in training."""
    import torch
    from peft import get_peft_model
    from transformers import Qwen2VLForConditionalGeneration
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling
    from trl.trainer.utils import add_fused_lm_head

    from bench.gpu_bench import build_2b_config, nlvr2_pair
    from training.model import lora_config, vision_without_autograd
    from training.options import LoraOptions
    from utils.tiny_model import build_processor
    from vlm_datasets.prompts import build_inputs, set_pixel_limits

    processor = build_processor()
    set_pixel_limits(processor, 4 * 784, pixels * 784)
    if widths == "tiny":
        import dataclasses

        from utils.tiny_model import SIZES, build_config

        spec = dataclasses.replace(SIZES["tiny"], vision_depth=vision_blocks, num_layers=lm_layers)
        config = build_config(spec, processor.tokenizer)
    else:
        config = build_2b_config(processor, vision_depth=vision_blocks, lm_layers=lm_layers)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration._from_config(config, dtype=torch.float32)
    model.config.use_cache = False
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer, before PEFT
    model = get_peft_model(model, lora_config(LoraOptions(lora_dropout=0.0), model))
    model.enable_input_require_grads()  # what TRL's SFTTrainer does with checkpointing on
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})  # Trainer.train
    model.train()
    collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    batch = collator([build_inputs(e) for e in nlvr2_pair(1)])
    handle = vision_without_autograd(model)
    return model, batch, handle, config


def step(model, batch) -> dict:
    """Wall and CPU seconds (this process, all threads) of one step's forward and backward; gradients cleared
    after (no optimizer: the weights stay the same)."""
    w0, c0 = time.perf_counter(), time.process_time()
    loss = model(**batch, fused_lm_head=True).loss
    w1, c1 = time.perf_counter(), time.process_time()
    loss.backward()
    w2, c2 = time.perf_counter(), time.process_time()
    model.zero_grad(set_to_none=True)
    return {"forward": w1 - w0, "backward": w2 - w1, "cpu_forward": c1 - c0, "cpu_backward": c2 - c1}


def run(vision_blocks: int = 2, lm_layers: int = 2, pixels: int = 512, rounds: int = 3,
        threads: int | None = 1, widths: str = "2b") -> dict:
    """Both variants side by side; `widths` tiny: the test model's widths (tests/test_bench_frozen_vision.py)."""
    import torch

    from training.flops import batch_counts, step_cost
    from training.model import vision_without_autograd
    from training.options import LoraOptions

    if threads:
        torch.set_num_threads(threads)
    load_start = load_average_1m()
    t_build = time.perf_counter()
    model, batch, handle, config = build(vision_blocks, lm_layers, pixels, widths=widths)
    build_s = time.perf_counter() - t_build
    patches, tokens, scored = batch_counts(batch)
    positions = sum(tokens) - len(tokens)  # TRL's fused head on CPU scores every position (no padding: 1 example)

    def use(variant):
        nonlocal handle
        if variant == "no_grad" and handle is None:
            handle = vision_without_autograd(model)
        elif variant == "autograd" and handle is not None:
            handle.remove()
            handle = None

    keys = ("forward", "backward", "cpu_forward", "cpu_backward")
    times = {v: {k: [] for k in keys} for v in VARIANTS}
    for v in VARIANTS:  # warm-up: first-call allocations and kernel choices
        use(v)
        step(model, batch)
    for r in range(rounds):
        for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            use(v)
            for k, x in step(model, batch).items():
                times[v][k].append(x)
    a, n = times["autograd"], times["no_grad"]
    ratios = {k: [x / y for x, y in zip(a[k], n[k])] for k in keys}
    for prefix in ("", "cpu_"):
        ratios[prefix + "step"] = [(fa + ba) / (fb + bb) for fa, ba, fb, bb in zip(
            a[prefix + "forward"], a[prefix + "backward"], n[prefix + "forward"], n[prefix + "backward"])]
    lora = LoraOptions()
    cost = {v: step_cost(config, patches, tokens, scored, lora=lora, vision_in_graph=(v == "autograd"),
                         checkpointing=True, head_positions=positions) for v in VARIANTS}
    results = {}
    for v in VARIANTS:
        med = {k: statistics.median(times[v][k]) for k in keys}
        results[v] = {"forward_s": med["forward"], "backward_s": med["backward"],
                      "step_s": med["forward"] + med["backward"], "cpu_forward_s": med["cpu_forward"],
                      "cpu_backward_s": med["cpu_backward"], "times": times[v],
                      "model_tflop": cost[v]["model"]["total"] / 1e12, "executed_tflop": cost[v]["executed"] / 1e12}
    return {"benchmark": "frozen_vision", "widths": "Qwen2-VL-2B" if widths == "2b" else widths,
            "shape": {"vision_blocks": vision_blocks, "lm_layers": lm_layers, "vision_width": config.vision_config.embed_dim,
                      "lm_width": config.text_config.hidden_size, "vocab": config.text_config.vocab_size,
                      "max_pixels": f"{pixels}*28*28", "images": len(patches), "vision_patches": sum(patches),
                      "visual_tokens": sum(patches) // 4, "lm_tokens": sum(tokens)},
            "rounds": rounds, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "build_s": build_s, "load_average_1m": [load_start, load_average_1m()],
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results,
            "ratio_autograd_vs_no_grad": {k: statistics.median(v) for k, v in ratios.items()},
            "round_ratios": ratios}


def format_table(res: dict) -> str:
    s = res["shape"]
    load = res["load_average_1m"]
    lines = [f"frozen vision tower, autograd vs no_grad: {res['widths']} widths, {s['vision_blocks']} vision blocks + "
             f"{s['lm_layers']} LM layers, {s['images']} images at {s['max_pixels']} = {s['vision_patches']} patches "
             f"({s['visual_tokens']} visual tokens), {s['lm_tokens']} LM tokens, fp32 CPU, {res['torch_threads']} "
             f"thread(s), median of {res['rounds']} interleaved rounds (built in {res['build_s']:.0f} s), 1-min load "
             f"{'n/a' if load[0] is None else f'{load[0]:.2f} -> {load[1]:.2f}'}",
             f"{'variant':9s} {'forward s':>9s} {'backward s':>10s} {'step s':>7s} {'CPU fwd s':>9s} {'CPU bwd s':>9s} "
             f"{'model TFLOP':>11s} {'executed TFLOP':>14s}"]
    for v, r in res["results"].items():
        lines.append(f"{v:9s} {r['forward_s']:9.2f} {r['backward_s']:10.2f} {r['step_s']:7.2f} {r['cpu_forward_s']:9.2f} "
                     f"{r['cpu_backward_s']:9.2f} {r['model_tflop']:11.3f} {r['executed_tflop']:14.3f}")
    q = res["ratio_autograd_vs_no_grad"]
    per = res["round_ratios"]
    lines.append(f"autograd / no_grad by wall clock: forward {q['forward']:.2f}x, backward {q['backward']:.2f}x, step "
                 f"{q['step']:.2f}x (backward per round: {', '.join(f'{x:.2f}' for x in per['backward'])})")
    lines.append(f"autograd / no_grad by CPU time:   forward {q['cpu_forward']:.2f}x, backward {q['cpu_backward']:.2f}x, "
                 f"step {q['cpu_step']:.2f}x (backward per round: {', '.join(f'{x:.2f}' for x in per['cpu_backward'])}; "
                 f"CPU time is steadier on a shared machine)")
    return "\n".join(lines)


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--vision_blocks", type=int, default=2,
                    help="vision transformer blocks at Qwen2-VL-2B width (default %(default)s)")
    ap.add_argument("--lm_layers", type=int, default=2,
                    help="language-model layers at Qwen2-VL-2B width (default %(default)s)")
    ap.add_argument("--pixels", type=int, default=512, help="max_pixels in units of 28x28 (one visual token each)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds, each one step of both variants")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: a second spin-waiting thread on a shared machine stalls both)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    return ap


def main(argv=None):
    args = make_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = run(args.vision_blocks, args.lm_layers, args.pixels, args.rounds, args.threads)
    from bench import emit

    return emit(res, format_table(res), args.json)

if __name__ == "__main__":
    sys.exit(main_guard(main))
