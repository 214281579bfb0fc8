"""GPU benchmark on a Qwen2-VL-2B-shaped model, randomly initialised from its published configuration.

    python -m bench.gpu_bench --json gpu.json            # GPU: every variant below (sized for ~8 minutes on an H100)
    python -m bench.gpu_bench --pixels 512 --json gpu.json   # the config's pixel budget only
    python -m bench.gpu_bench --model_config tiny --device cpu --steps 1 --warmup 0 --pixels 4 --plan_card L4   # CPU smoke (tests)
    python -m bench.gpu_bench --recount bench/results/gpu_bench_h100_2026-11-27.json   # MFU of an older file (CPU)

No download: the 2B architecture is built from its config (Setup/NOTES.md §2: hidden 1536, 28 layers,
12 heads / 2 KV heads, vocab 151,936, tied embeddings; vision 32 blocks of width 1280), with random
weights. Compute and memory depend on shapes, not on weight values, so step times and memory are
those of the real model; accuracy is meaningless and not measured.

For each max_pixels setting (in units of 28x28; one visual token per unit), on NLVR2-sized pairs (two
1024x768 images per example):
  lora   LoRA (r=16, language-model projections) in bf16 with activation checkpointing and the input-grad
         hooks TRL and the Trainer install. One model; its variants take turns step by step (so they are
         side by side in one run), each step timed and its peak memory taken alone:
           no_grad  b4    the frozen vision tower without autograd and TRL's fused LM head: our trainer now
           autograd b4    the vision tower in the graph (recomputed, backpropagated): our trainer before the fix
           full     b4    autograd + the model's own loss over the full logits: how the 2026-11-27 figures
                          were taken (at --full_pixels only)
           no_grad  bN    N = the planner's per-device batch for this card (training/planner.py, the 2B LoRA
                          config's effective batch of 16), when it is not 4
  liger  the no_grad variants on a model with Liger's kernels as `use_liger_kernel` applies them (RMSNorm,
         RoPE, SwiGLU; TRL switches Liger's fused cross-entropy off: its own fused LM head already never
         builds the logits); at --liger_pixels, skipped (the reason recorded) without a GPU or liger-kernel
  qlora  4-bit NF4 base (double quant; vision tower and lm_head unquantised), no_grad b4, and once in fp32
         compute + fp32 unquantised weights (the T4 config's path: the T4 has no native bf16)
  score  eval examples/s in score mode (one forward, logits_to_keep=1)
Each training variant reports step time, samples/s, tokens/s, vision patches and LM tokens per step, model
FLOPs per part (training/flops.py) and MFU for the vision tower, the language model and both, executed FLOPs
(recomputation and any backward through the frozen tower included) as HFU, and peak GPU memory.
training/planner.py is calibrated on these figures: update its CALIBRATION from a new results file.
It uses the same pieces as training: utils.models (loading, 4-bit), training.model (lora_config,
vision_without_autograd), TRL's vision collator with completion-only labels, vlm_datasets.prompts.build_inputs.
Results are written to JSON after every measurement, so a run cut short still reports what it did.

Packages beyond a stock CUDA PyTorch image (carry as wheels, see the device README):
transformers==5.24.0 trl==1.16.0 peft==0.21.2 bitsandbytes==0.50.2 datasets==5.2.0 dill multiprocess;
liger-kernel for the liger rows.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from training.flops import PEAK_BF16_TFLOPS, batch_counts, peak_tflops  # noqa: F401  (PEAK_BF16_TFLOPS: tests)
from training.planner import QWEN2VL_2B  # the published shape; the planner's arithmetic uses it too
from utils.cli import ArgumentParser, main_guard


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


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def planner_card(device_name: str | None) -> str | None:
    """The planner's card (training/planner.py GPUS) for a CUDA device name; an H200 gets the H100's 80 GB."""
    name = (device_name or "").upper()
    for key, card in (("H100", "H100"), ("H200", "H100"), ("A10G", "A10G"), ("L4", "L4"), ("T4", "T4")):
        if key in name:
            return card
    if "A100" in name:
        return "A100-80" if "80" in name else "A100-40"
    return None


def planner_batch(card: str, pixels: int) -> int | None:
    """The planner's per-device batch on `card` for the 2B LoRA config at max_pixels `pixels`*28*28."""
    from training.options import parse_train_options
    from training.planner import plan_config

    (mo, lo, do, args), _, extra = parse_train_options(
        ["--config", str(Path(__file__).parent.parent / "training/configs/qwen2vl_2b_lora.yaml"), "--max_pixels",
         str(pixels * 784)], for_this_machine=False)
    return plan_config(mo, lo, do, args, None, gpus=[card]).recommendations[0]["batch_size"]


def liger_unavailable(cuda: bool) -> str | None:
    """Why Liger's kernels cannot run here (the training option's own check), or None when they can."""
    from types import SimpleNamespace

    from training.options import check_liger
    from utils.errors import VLMStudiesError

    try:
        check_liger(SimpleNamespace(use_liger_kernel=True, use_cpu=not cuda))
    except VLMStudiesError as exc:
        return str(exc)
    return None


def bench_train(model_dir: Path, examples, pixels: int, variants: list[tuple], steps: int, warmup: int,
                four_bit: bool, attn: str | None, compute: str = "bf16", liger: bool = False) -> list[dict]:
    """Training steps of one model, its `variants` taking turns step by step (ABBA order per round).

    A variant is (name, batch size, loss, vision without autograd): loss `fused` (TRL's fused LM head, what
    SFTTrainer trains with: only labelled positions projected on CUDA) or `full` (the model's own loss over the
    full logits). Each step is timed alone, with its own peak GPU memory. `compute`: bf16, or fp32 (the T4
    path). `liger`: Liger's kernels applied as the Trainer does for use_liger_kernel."""
    import torch
    from peft import get_peft_model
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling
    from trl.trainer.utils import add_fused_lm_head

    from training.flops import batch_counts, mfu, step_cost
    from training.model import lora_config, vision_without_autograd
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
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer does, before PEFT
    lora = LoraOptions()
    model = get_peft_model(model, lora_config(lora, model))
    if four_bit:  # as TRL does for quantised bases: LoRA weights in bf16
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(torch.bfloat16 if bf16 else torch.float32)
    if liger:  # what Trainer.train does for use_liger_kernel, with TRL's config (its fused head stays)
        from transformers.integrations.liger import apply_liger_kernel

        apply_liger_kernel(model, {"fused_linear_cross_entropy": False})
    model.enable_input_require_grads()  # SFTTrainer, with checkpointing on
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})  # Trainer.train
    model.train()
    handle = vision_without_autograd(model)
    collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    device = next(p.device for p in model.parameters())
    peak = peak_tflops(torch.cuda.get_device_name(0)) if bf16 else None

    def collate(batch_size, step):
        batch = collator([build_inputs(examples[(step * batch_size + j) % len(examples)]) for j in range(batch_size)])
        return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}

    # the two losses agree on the same weights and batch (before any optimizer step)
    first = collate(variants[0][1], 0)
    with torch.no_grad():
        check = {"loss_fused": float(model(**first, fused_lm_head=True).loss),
                 "loss_full": float(model(**first).loss)}
    rec = {v: {"times": [], "peaks": [], "tokens": 0, "cost": None, "loss": None} for v in variants}
    for step in range(warmup + steps):
        for v in (variants if step % 2 == 0 else variants[::-1]):
            name, batch_size, loss_impl, no_grad = v
            if no_grad and handle is None:
                handle = vision_without_autograd(model)
            elif not no_grad and handle is not None:
                handle.remove()
                handle = None
            batch = collate(batch_size, step)
            _sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            loss = model(**batch, fused_lm_head=True).loss if loss_impl == "fused" else model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync()
            if step < warmup:
                continue
            r = rec[v]
            r["times"].append(time.perf_counter() - t0)
            r["peaks"].append(torch.cuda.max_memory_allocated() / 2**30 if cuda else None)
            r["tokens"] += int(batch["attention_mask"].sum())
            r["loss"] = float(loss.detach())
            if r["cost"] is None:
                patches, tokens, scored = batch_counts(batch)
                projected = scored if (loss_impl == "fused" and cuda) else int(batch["attention_mask"].numel())
                r["cost"] = step_cost(model.config, patches, tokens, scored, lora, vision_in_graph=not no_grad,
                                      checkpointing=True, head_positions=projected)
                r["visual"] = sum(patches) // (model.config.vision_config.spatial_merge_size ** 2) // batch_size
    out = []
    for (name, batch_size, loss_impl, no_grad), r in rec.items():
        step_s = sum(r["times"]) / len(r["times"])
        m, executed = r["cost"]["model"], r["cost"]["executed"]
        res = {"variant": name, "batch_size": batch_size, "loss_impl": loss_impl, "vision_autograd": not no_grad,
               "liger": liger, "compute": "bf16" if bf16 else "fp32", "step_s": step_s,
               "samples_per_s": batch_size / step_s, "tokens_per_s": r["tokens"] / sum(r["times"]),
               "tokens_per_example": r["tokens"] / (len(r["times"]) * batch_size),
               "visual_tokens_per_example": r["visual"], "vision_patches_per_step": m["vision_patches"],
               "lm_tokens_per_step": m["lm_tokens"], "model_tflop_per_step": {
                   k: m[k] / 1e12 for k in ("vision", "language", "lora", "total")},
               "executed_tflop_per_step": executed / 1e12, "loss": r["loss"], **check}
        for k in ("vision", "language", "total"):
            res[f"mfu_{k}"] = mfu(m[k], step_s, peak)
        res["hfu"] = mfu(executed, step_s, peak)
        if cuda:
            res["peak_gpu_mem_gib"] = max(r["peaks"])
        out.append(res)
    del model, opt
    return out


def bench_score(model_dir: Path, examples, pixels: int, batch_size: int, repeats: int, attn: str | None) -> dict:
    import torch

    from scoring.modes import score_examples
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


def recount(path: str | Path) -> list[dict]:
    """MFU of the training rows of a results file written before FLOPs were counted per part, from their measured
    step times and the batches they ran, rebuilt exactly as the bench builds them (same images, processor and
    collator; checked against the file's tokens per example). Those runs had the vision tower in the graph and
    built the full logits: executed FLOPs (HFU) include that, model FLOPs (MFU) do not."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from training.flops import mfu, step_cost
    from training.options import LoraOptions
    from utils.tiny_model import build_processor
    from vlm_datasets.prompts import build_inputs, set_pixel_limits

    res = json.loads(Path(path).read_text(encoding="utf-8"))
    if "2b" not in res.get("model", "").lower():
        raise ValueError(f"{path} is a run of {res.get('model')!r}; only Qwen2-VL-2B-shaped runs can be recounted")
    peak = peak_tflops(res["device"])
    processor = build_processor()
    out = []
    for r in res["results"]:
        if r["mode"] == "score" or "error" in r or "skipped" in r or "mfu_total" in r:
            continue
        set_pixel_limits(processor, 4 * 784, int(r["max_pixels"].split("*")[0]) * 784)
        batch = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)(
            [build_inputs(e) for e in nlvr2_pair(r["batch_size"])])
        patches, tokens, scored = batch_counts(batch)
        if sum(tokens) != round(r["tokens_per_example"] * r["batch_size"]):
            raise ValueError(f"{path}: rebuilt batch has {sum(tokens)} tokens, the run had "
                             f"{r['tokens_per_example'] * r['batch_size']:.0f}")
        c = step_cost(QWEN2VL_2B, patches, tokens, scored, LoraOptions(), vision_in_graph=True,
                      checkpointing=True, head_positions=int(batch["attention_mask"].numel()))
        m = c["model"]
        out.append({"mode": r["mode"], "max_pixels": r["max_pixels"], "batch_size": r["batch_size"],
                    "step_s": r["step_s"], "old_mfu": r.get("mfu"), "vision_patches_per_step": m["vision_patches"],
                    "lm_tokens_per_step": m["lm_tokens"],
                    "model_tflop_per_step": {k: m[k] / 1e12 for k in ("vision", "language", "lora", "total")},
                    "executed_tflop_per_step": c["executed"] / 1e12,
                    **{f"mfu_{k}": mfu(m[k], r["step_s"], peak) for k in ("vision", "language", "total")},
                    "hfu": mfu(c["executed"], r["step_s"], peak)})
    print(f"{path}: {res['device']}, {res['date']}; MFU recounted from the measured step times (training/flops.py)")
    print(f"{'mode':6s} {'max_pixels':>11s} {'batch':>5s} {'step s':>7s} {'patches':>8s} {'LM tok':>7s} {'model TF':>8s} "
          f"{'MFU vis':>7s} {'MFU LM':>7s} {'MFU':>6s} {'HFU':>6s} {'old MFU':>7s}")
    for x in out:
        print(f"{x['mode']:6s} {x['max_pixels']:>11s} {x['batch_size']:5d} {x['step_s']:7.3f} "
              f"{x['vision_patches_per_step']:8d} {x['lm_tokens_per_step']:7d} {x['model_tflop_per_step']['total']:8.1f} "
              f"{x['mfu_vision']:7.3f} {x['mfu_language']:7.3f} {x['mfu_total']:6.3f} {x['hfu']:6.3f} "
              f"{x['old_mfu'] or 0:7.3f}")
    return out


def jobs(args) -> list[tuple]:
    """(mode, pixels, compute) in run order: per setting LoRA, score, Liger, Q-LoRA; the fp32 Q-LoRA last."""
    out = []
    for pixels in args.pixels:
        for mode in args.modes:
            if mode in ("lora", "score") or (mode == "qlora" and pixels in args.qlora_pixels) or \
                    (mode == "liger" and pixels in args.liger_pixels):
                out.append((mode, pixels, "bf16" if mode != "score" else None))
        if "qlora" in args.modes and pixels in (args.fp32_qlora_pixels or []):
            out.append(("qlora", pixels, "fp32"))
    return out


def train_variants(args, mode: str, pixels: int, plan_batch: int | None) -> list[tuple]:
    """The (name, batch, loss, vision without autograd) variants one training job interleaves."""
    b = args.batch_size
    if mode == "qlora":
        return [("no_grad", b, "fused", True)]
    out = [("no_grad", b, "fused", True)]
    if mode == "lora":
        out.append(("autograd", b, "fused", False))
        if pixels in args.full_pixels:
            out.append(("full", b, "full", False))
    if plan_batch and plan_batch != b:
        out.append(("no_grad", plan_batch, "fused", True))
    return out


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--model_config", choices=["2b", "tiny"], default="2b",
                    help="2b: Qwen2-VL-2B's shapes (random weights); tiny: the test model (default %(default)s)")
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto",
                    help="auto: the GPU when there is one; cpu: force the CPU (default %(default)s)")
    ap.add_argument("--pixels", type=int, nargs="+", default=[512, 256, 1280], help="max_pixels in units of 28x28")
    ap.add_argument("--modes", nargs="+", default=["lora", "score", "liger", "qlora"],
                    choices=["lora", "score", "liger", "qlora"],
                    help="what to measure: LoRA training, score-mode eval, Liger kernels, Q-LoRA (default: all)")
    ap.add_argument("--qlora_pixels", type=int, nargs="+", default=[512, 256, 1280],
                    help="Q-LoRA only at these settings")
    ap.add_argument("--liger_pixels", type=int, nargs="*", default=[512], help="Liger's kernels at these settings")
    ap.add_argument("--full_pixels", type=int, nargs="*", default=[512],
                    help="also the full-logits loss with the vision tower in the graph (the 2026-11-27 path) here")
    ap.add_argument("--fp32_qlora_pixels", type=int, nargs="*", default=[512],
                    help="also Q-LoRA with fp32 compute and weights (the T4 config's path) at these settings")
    ap.add_argument("--batch_size", type=int, default=4, help="per-device training batch (default %(default)s)")
    ap.add_argument("--plan_card", default=None,
                    help="card whose planner batch to add (default: the GPU's own; none on CPU); e.g. L4, H100")
    ap.add_argument("--plan_batch", type=int, default=None, help="add this per-device batch instead of the planner's")
    ap.add_argument("--score_batch_size", type=int, default=16, help="score-mode eval batch (default %(default)s)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per setting (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps per setting (default %(default)s)")
    ap.add_argument("--attn", default=None, help="sdpa (default) or flash_attention_2 where installed")
    ap.add_argument("--workdir", default=None, help="where the model and data are built (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--recount", default=None, metavar="RESULTS_JSON",
                    help="only recount the MFU of an older results file from its measured step times (CPU is enough)")
    return ap


def main(argv=None):
    args = make_parser().parse_args(argv)
    if args.recount:
        return recount(args.recount)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    import importlib.util
    from training.planner import card

    cuda = torch.cuda.is_available()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_bench_"))
    t0 = time.time()
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    plan_card = card(args.plan_card).name if args.plan_card else planner_card(device if cuda else None)
    model_dir = make_model_dir(args.model_config, work / f"qwen2vl-{args.model_config}-random")
    attn = args.attn or ("sdpa" if cuda else None)
    out = {"benchmark": "gpu_bench", "model": f"Qwen2-VL-{args.model_config} shape, random init", "device": device,
           "torch": torch.__version__, "attn_implementation": attn or "default",
           "flash_attn_installed": importlib.util.find_spec("flash_attn") is not None,
           "liger_kernel_installed": importlib.util.find_spec("liger_kernel") is not None,
           "plan_card": plan_card, "date": time.strftime("%Y-%m-%d"), "build_s": time.time() - t0, "results": []}
    biggest = max([args.batch_size, args.plan_batch or 0] + [
        (planner_batch(plan_card, p) or 0) if plan_card else 0 for p in args.pixels])
    examples = nlvr2_pair(min(64, max(args.score_batch_size * 2, biggest * (args.steps + args.warmup))))

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2), encoding="utf-8")

    save()
    for mode, pixels, compute in jobs(args):
        t = time.time()
        base = {"mode": mode, "max_pixels": f"{pixels}*28*28"}
        if mode == "liger" and liger_unavailable(cuda):
            r = {**base, "skipped": liger_unavailable(cuda), "wall_s": 0.0}
            out["results"].append(r)
            print(json.dumps(r), flush=True)
            save()
            continue
        plan_batch = args.plan_batch or (planner_batch(plan_card, pixels) if plan_card else None)
        try:
            if mode == "score":
                rows = [bench_score(model_dir, examples, pixels, args.score_batch_size, 2, attn)]
            else:
                rows = bench_train(model_dir, examples, pixels, train_variants(args, mode, pixels, plan_batch),
                                   args.steps, args.warmup, mode == "qlora", attn, compute, liger=(mode == "liger"))
                for r in rows:
                    r["planner_batch"] = plan_batch
        except Exception as exc:  # an OOM at one setting should not lose the others
            rows = [{"error": f"{type(exc).__name__}: {str(exc)[:200]}", "compute": compute}]
        for r in rows:
            r.update(base, wall_s=time.time() - t)
            out["results"].append(r)
            print(json.dumps(r), flush=True)
        save()
    print_table(out)
    return out


def print_table(out: dict) -> None:
    print(f"\n{out['model']} on {out['device']} ({out['attn_implementation']}, {out['date']}; planner batch for "
          f"{out.get('plan_card') or '-'})")
    print(f"{'mode':6s} {'variant':8s} {'loss':5s} {'comp':4s} {'max_pixels':>11s} {'batch':>5s} {'vis tok/ex':>10s} "
          f"{'step s':>7s} {'samples/s':>9s} {'tokens/s':>9s} {'MFU vis':>7s} {'MFU LM':>7s} {'MFU':>6s} {'HFU':>6s} "
          f"{'peak GiB':>8s} {'eval ex/s':>9s}")
    for r in out["results"]:
        # results saved before the loss/compute/variant options existed were full-logits bf16 runs with the
        # vision tower in the graph, and their `mfu` counted language-model tokens only
        loss = r.get("loss_impl") or ("-" if r["mode"] == "score" else "full")
        comp = r.get("compute") or "bf16"
        variant = r.get("variant") or ("-" if r["mode"] == "score" else "old")
        if "error" in r or "skipped" in r:
            print(f"{r['mode']:6s} {r.get('variant') or '-':8s} {r.get('loss_impl') or '-':5s} "
                  f"{r.get('compute') or '-':4s} {r['max_pixels']:>11s} "
                  f"{'error: ' + r['error'] if 'error' in r else 'skipped: ' + r['skipped']}")
            continue
        f = lambda k, fmt: (fmt % r[k]) if r.get(k) is not None else "-"  # noqa: E731
        mfu_total = f("mfu_total", "%.3f") if "mfu_total" in r else (f("mfu", "%.3f") + "*" if r.get("mfu") else "-")
        print(f"{r['mode']:6s} {variant:8s} {loss:5s} {comp:4s} {r['max_pixels']:>11s} {f('batch_size', '%d'):>5s} "
              f"{f('visual_tokens_per_example', '%d'):>10s} {f('step_s', '%.3f'):>7s} {f('samples_per_s', '%.2f'):>9s} "
              f"{f('tokens_per_s', '%.0f'):>9s} {f('mfu_vision', '%.3f'):>7s} {f('mfu_language', '%.3f'):>7s} "
              f"{mfu_total:>6s} {f('hfu', '%.3f'):>6s} {f('peak_gpu_mem_gib', '%.2f'):>8s} "
              f"{f('examples_per_s', '%.1f'):>9s}")
    if any("mfu" in r and "mfu_total" not in r for r in out["results"]):
        print("* an old results file: its MFU counted language-model tokens only (4 x all parameters per token)")


if __name__ == "__main__":
    sys.exit(main_guard(main))
