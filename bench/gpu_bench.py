"""GPU benchmark on a Qwen2-VL-2B-shaped model, randomly initialised from its published configuration.

    python -m bench.gpu_bench --json gpu.json                       # GPU: LoRA bf16, Q-LoRA, score mode
    python -m bench.gpu_bench --model-config tiny --device cpu --steps 1 --warmup 0 --pixels 4   # CPU smoke (tests)

No download: the 2B architecture is built from its config (Setup/NOTES.md §2: hidden 1536, 28 layers,
12 heads / 2 KV heads, vocab 151,936, tied embeddings; vision 32 blocks of width 1280), with random
weights. Compute and memory depend on shapes, not on weight values, so step times and memory are
those of the real model; accuracy is meaningless and not measured.

For each max_pixels setting (in units of 28x28; one visual token per unit) it measures, on an
NLVR2-sized pair (two 1024x768 images):
  lora   LoRA (r=16, language-model projections) in bf16, gradient checkpointing: step time,
         samples/s, tokens/s, MFU, peak GPU memory; with TRL's fused LM head (`fused`: what SFTTrainer
         trains with, only labelled positions projected on CUDA) and with the model's own loss over the
         full logits (`full`: how the 2026-11-27 figures were taken)
  qlora  the same on a 4-bit NF4 base (double quant; vision tower and lm_head unquantised), and once in
         fp32 compute + fp32 unquantised weights (the T4 config's path: the T4 has no native bf16)
  score  eval examples/s in score mode (one forward, logits_to_keep=1)
training/planner.py is calibrated on these figures: update its CALIBRATION from a new results file.
It uses the same pieces as training: utils.models (loading, 4-bit), training.model.lora_config,
TRL's vision collator with completion-only labels, vlm_datasets.prompts.build_inputs.
Results are written to JSON after every measurement, so a run cut short still reports what it did.

Packages beyond a stock CUDA PyTorch image (carry as wheels, see the device README):
transformers==5.24.0 trl==1.16.0 peft==0.21.2 bitsandbytes==0.50.2 datasets==5.2.0 dill multiprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from training.planner import QWEN2VL_2B  # the published shape; the planner's arithmetic uses it too

# Dense bf16 peak of the cards we may be lent (vendor spec sheets, SXM parts).
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "T4": 65.0}


def build_2b_config(processor, vision_depth: int | None = None, lm_layers: int | None = None):
    """Qwen2-VL-2B's configuration (ids from `processor`); fewer vision blocks / LM layers if given, same widths."""
    from transformers import Qwen2VLConfig

    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids
    text, vision = dict(QWEN2VL_2B["text"]), dict(QWEN2VL_2B["vision"])
    if lm_layers is not None:
        text["num_hidden_layers"] = lm_layers
    if vision_depth is not None:
        vision["depth"] = vision_depth
    return Qwen2VLConfig(
        text_config=dict(text, bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
                         pad_token_id=tok.pad_token_id),
        vision_config=vision, image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True)


def make_model_dir(kind: str, out: Path) -> Path:
    """Write a random model + processor folder (`2b` shaped or the `tiny` one) so loading is the real path."""
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    from utils.tiny_model import build_processor, save_tiny_qwen2vl

    if kind == "tiny":
        return save_tiny_qwen2vl(out, "tiny")
    processor = build_processor()
    config = build_2b_config(processor)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    del model
    return out


def nlvr2_pair(n: int, seed: int = 0):
    """`n` examples with NLVR2-sized image pairs (1024x768) built from synthetic scenes."""
    import random

    from vlm_datasets.nlvr2 import Example
    from vlm_datasets.synthetic import render_scene, sample_scene

    rng = random.Random(seed)
    out = []
    for i in range(n):
        left = render_scene(sample_scene(rng), 768, rng).resize((1024, 768))
        right = render_scene(sample_scene(rng), 768, rng).resize((1024, 768))
        out.append(Example(uid=f"bench-{i}-0-0", sentence="The left image contains more shapes than the right image.",
                           label=bool(i % 2), left=left, right=right, meta={}))
    return out


def peak_tflops(device_name: str | None) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if device_name and key in device_name:
            return value
    return None


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_train(model_dir: Path, examples, pixels: int, batch_size: int, steps: int, warmup: int, four_bit: bool,
                attn: str | None, loss_impl: str = "full", compute: str = "bf16") -> dict:
    """One training configuration. `loss_impl`: `full` (the model's own loss over the full logits, as the
    2026-11-27 figures were taken) or `fused` (TRL's fused LM head, what SFTTrainer trains with: only the
    labelled positions are projected on CUDA). `compute`: bf16, or fp32 (the T4 path: no native bf16)."""
    import torch
    from peft import get_peft_model
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from training.model import lora_config
    from training.options import LoraOptions
    from utils.models import load_model, load_processor
    from vlm_datasets.prompts import build_inputs

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    processor = load_processor(str(model_dir), min_pixels=4 * 784, max_pixels=pixels * 784)
    bf16 = cuda and compute == "bf16"
    model = load_model(str(model_dir), dtype="bf16" if bf16 else "fp32", load_in_4bit=four_bit,
                       attn_implementation=attn)
    model.config.use_cache = False
    if loss_impl == "fused":
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer does, before PEFT
    model = get_peft_model(model, lora_config(LoraOptions(), model))
    if four_bit:  # as TRL does for quantised bases: LoRA weights in bf16
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(torch.bfloat16 if bf16 else torch.float32)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.train()
    collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    device = next(p.device for p in model.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    if four_bit:  # 4-bit layers store two weights per byte element: count logical weights
        n_params = sum(p.numel() * (2 if p.dtype == torch.uint8 else 1) for p in model.parameters())
    times, tokens = [], 0
    for step in range(warmup + steps):
        batch_ex = [examples[(step * batch_size + j) % len(examples)] for j in range(batch_size)]
        batch = collator([build_inputs(e) for e in batch_ex])
        batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
        _sync()
        t0 = time.perf_counter()
        loss = model(**batch, fused_lm_head=True).loss if loss_impl == "fused" else model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
            tokens += int(batch["attention_mask"].sum())
    step_s = sum(times) / len(times)
    tok_s = tokens / sum(times)
    visual = int((batch["input_ids"] == model.config.image_token_id).sum()) // batch_size
    res = {"step_s": step_s, "samples_per_s": batch_size / step_s, "tokens_per_s": tok_s,
           "tokens_per_example": tokens / (len(times) * batch_size), "visual_tokens_per_example": visual,
           "batch_size": batch_size, "parameters": n_params, "loss": float(loss.detach()), "loss_impl": loss_impl,
           "compute": "bf16" if bf16 else "fp32"}
    if cuda:
        res["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        peak = peak_tflops(torch.cuda.get_device_name(0))
        # model FLOPs per token of a LoRA step on a frozen base: 2N forward + 2N backward through the
        # activations (no weight gradients for frozen weights); checkpoint recompute is not counted
        res["mfu"] = 4 * n_params * tok_s / (peak * 1e12) if peak else None
    del model, opt
    return res


def bench_score(model_dir: Path, examples, pixels: int, batch_size: int, repeats: int, attn: str | None) -> dict:
    import torch

    from evals.scoring import score_examples
    from utils.models import load_model_and_processor

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, processor = load_model_and_processor(str(model_dir), dtype="bf16" if cuda else "fp32", min_pixels=4 * 784,
                                                max_pixels=pixels * 784, attn_implementation=attn)
    score_examples(model, processor, examples[:batch_size], batch_size=batch_size)  # warm-up
    _sync()
    t0 = time.perf_counter()
    n = 0
    for _ in range(repeats):
        n += len(score_examples(model, processor, examples, batch_size=batch_size))
    _sync()
    dt = time.perf_counter() - t0
    res = {"examples_per_s": n / dt, "batch_size": batch_size, "examples": n, "compute": "bf16" if cuda else "fp32"}
    if cuda:
        res["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del model
    return res


def jobs(args) -> list[tuple]:
    """(mode, pixels, loss, compute) in run order: per setting LoRA, score, Q-LoRA, then the fp32 Q-LoRA."""
    out = []
    for pixels in args.pixels:
        for mode in args.modes:
            if mode == "score":
                out.append(("score", pixels, None, "bf16"))
            elif mode == "lora" or pixels in args.qlora_pixels:
                out += [(mode, pixels, loss, "bf16") for loss in args.losses]
        if "qlora" in args.modes and pixels in (args.fp32_qlora_pixels or []):
            out.append(("qlora", pixels, args.losses[0], "fp32"))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-config", choices=["2b", "tiny"], default="2b")
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto")
    ap.add_argument("--pixels", type=int, nargs="+", default=[512, 256, 1280], help="max_pixels in units of 28x28")
    ap.add_argument("--modes", nargs="+", default=["lora", "score", "qlora"], choices=["lora", "qlora", "score"])
    ap.add_argument("--qlora-pixels", type=int, nargs="+", default=[512, 256, 1280],
                    help="Q-LoRA only at these settings")
    ap.add_argument("--losses", nargs="+", default=["fused", "full"], choices=["fused", "full"],
                    help="training loss: fused (TRL's fused LM head, what SFTTrainer uses) and/or full (the model's "
                         "own loss over the full logits, as the 2026-11-27 figures)")
    ap.add_argument("--fp32-qlora-pixels", type=int, nargs="*", default=[512],
                    help="also Q-LoRA with fp32 compute and weights (the T4 config's path) at these settings")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--score-batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--attn", default=None, help="sdpa (default) or flash_attention_2 where installed")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    import importlib.util
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_bench_"))
    t0 = time.time()
    model_dir = make_model_dir(args.model_config, work / f"qwen2vl-{args.model_config}-random")
    attn = args.attn or ("sdpa" if torch.cuda.is_available() else None)
    out = {"benchmark": "gpu_bench", "model": f"Qwen2-VL-{args.model_config} shape, random init",
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
           "torch": torch.__version__, "attn_implementation": attn or "default",
           "flash_attn_installed": importlib.util.find_spec("flash_attn") is not None,
           "date": time.strftime("%Y-%m-%d"), "build_s": time.time() - t0, "results": []}
    examples = nlvr2_pair(max(args.score_batch_size * 2, args.batch_size * (args.steps + args.warmup)))

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))

    save()
    for mode, pixels, loss_impl, compute in jobs(args):
        t = time.time()
        try:
            if mode == "score":
                r = bench_score(model_dir, examples, pixels, args.score_batch_size, 2, attn)
            else:
                r = bench_train(model_dir, examples, pixels, args.batch_size, args.steps, args.warmup,
                                mode == "qlora", attn, loss_impl, compute)
        except Exception as exc:  # an OOM at one setting should not lose the others
            r = {"error": f"{type(exc).__name__}: {str(exc)[:200]}", "loss_impl": loss_impl, "compute": compute}
        r.update(mode=mode, max_pixels=f"{pixels}*28*28", wall_s=time.time() - t)
        out["results"].append(r)
        print(json.dumps(r), flush=True)
        save()
    print_table(out)
    return out


def print_table(out: dict) -> None:
    print(f"\n{out['model']} on {out['device']} ({out['attn_implementation']}, {out['date']})")
    print(f"{'mode':6s} {'loss':5s} {'comp':4s} {'max_pixels':>11s} {'vis tok/ex':>10s} {'step s':>7s} {'samples/s':>9s} "
          f"{'tokens/s':>9s} {'MFU':>6s} {'peak GiB':>8s} {'eval ex/s':>9s}")
    for r in out["results"]:
        # results saved before the loss/compute options existed were full-logits bf16 runs
        loss = r.get("loss_impl") or ("-" if r["mode"] == "score" else "full")
        comp = r.get("compute") or "bf16"
        if "error" in r:
            print(f"{r['mode']:6s} {loss:5s} {comp:4s} {r['max_pixels']:>11s} error: {r['error']}")
            continue
        f = lambda k, fmt: (fmt % r[k]) if r.get(k) is not None else "-"  # noqa: E731
        print(f"{r['mode']:6s} {loss:5s} {comp:4s} {r['max_pixels']:>11s} {f('visual_tokens_per_example', '%d'):>10s} "
              f"{f('step_s', '%.3f'):>7s} {f('samples_per_s', '%.2f'):>9s} {f('tokens_per_s', '%.0f'):>9s} "
              f"{f('mfu', '%.3f'):>6s} {f('peak_gpu_mem_gib', '%.2f'):>8s} {f('examples_per_s', '%.1f'):>9s}")


if __name__ == "__main__":
    main()
