"""What looking inside costs: time against plain score mode on the same inputs, and the memory the attention
views keep against full attention maps.

    python -m bench.look_inside                                     # local:small, 64 synthetic examples, CPU
    python -m bench.look_inside --n 32 --batch_size 4 --adapter RUN
    python -m bench.look_inside --model Qwen/Qwen2-VL-2B-Instruct --source pingzhili/nlvr2 --max_pixels 401408 \\
        --n 16 --batch_size 2                                       # GPU

Same model and examples in one process, each figure the best of --repeats passes (variants interleaved),
after one untimed warm-up batch:
  score             `scoring.modes.score_batch` on the 5 inputs of each example (original, left / right /
                    both replaced, swapped), batches of 5 x batch_size: the floor
  occlusion         `scoring.look.look_batch(record=False)`: the same, plus building the neutral images
  look (recorded)   `look_batch(record=True)`: + the answer row of every attention layer and the logit lens
Memory: what the answer-row recorder keeps per example (layers x heads x sequence, float32) against the
full attention maps `output_attentions=True` would return (layers x heads x sequence^2), for this model and
inputs and for Qwen2-VL-2B on an NLVR2 pair at 512*28^2 (Setup/NOTES.md §2: 28 layers, 12 heads, about
990 visual tokens). Prints a table and writes JSON (default <root>/bench/look_inside.json).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from utils.cli import ArgumentParser, add_root_arg, main_guard

# Qwen2-VL-2B (Setup/NOTES.md §2) on an NLVR2 pair at 512*28^2: ~988 visual tokens + ~60 of prompt
REAL = {"layers": 28, "heads": 12, "sequence": 1050}


def run(model: str = "local:small", source: str | None = "synthetic", split: str = "validation", n: int = 64,
        batch_size: int = 8, adapter: str | None = None, dtype: str = "auto", max_pixels: int | None = None,
        repeats: int = 3, root=None) -> dict:
    import torch

    from scoring.look import look_batch, prepare
    from scoring.occlusion import variants
    from evals.runner import resolve_adapter
    from scoring.modes import batched, score_batch
    from utils.models import load_model_and_processor
    from utils.paths import get_root
    from utils.run_meta import device_info, git_info
    from vlm_datasets import load_nlvr2
    from vlm_datasets.prompts import pixel_budget

    lo, hi = pixel_budget(None, max_pixels)
    examples = [ex for _, ex in zip(range(n), load_nlvr2(source, split, "streaming", root=root, min_pixels=lo,
                                                         max_pixels=hi))]
    adapter_dir = resolve_adapter(adapter, get_root(root))
    m, processor = load_model_and_processor(model, adapter=str(adapter_dir) if adapter_dir else None, dtype=dtype,
                                            max_pixels=max_pixels, root=root)

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def score():
        flat = [v for ex in examples for v in variants(ex)]
        out = [r for b in batched(flat, 5 * batch_size) for r in score_batch(m, processor, b)]
        sync()
        return out

    def occlusion():
        out = [r for b in batched(examples, batch_size) for r in look_batch(m, processor, b, record=False)]
        sync()
        return out

    def look():
        out = [r for b in batched(examples, batch_size) for r in look_batch(m, processor, b)]
        sync()
        return out

    fns = {"score": score, "occlusion": occlusion, "look (recorded)": look}
    look_batch(m, processor, examples[:batch_size])  # warm-up
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    _, enc = prepare(processor, examples[:1])
    base = m.get_base_model() if hasattr(m, "get_base_model") else m
    cfg = base.config.text_config
    mine = {"layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
            "sequence": int(enc["input_ids"].shape[1])}

    def memory(shape):
        row = shape["layers"] * shape["heads"] * shape["sequence"] * 4
        return {**shape, "answer_rows_bytes": row, "full_maps_bytes": row * shape["sequence"]}

    return {"model": model, "adapter": adapter, "examples": len(examples), "batch_size": batch_size,
            "examples_per_s": {k: len(examples) / v for k, v in best.items()},
            "look_over_score": best["look (recorded)"] / best["score"],
            "memory": {"this model": memory(mine), "Qwen2-VL-2B, NLVR2 pair at 512*28^2 (computed)": memory(REAL)},
            "device": device_info(), **git_info(), "date": time.strftime("%Y-%m-%d")}


def _mib(b: int) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if b >= size:
            return f"{b / size:,.2f} {unit}"
    return f"{b} B"


def format_result(r: dict) -> str:
    lines = [f"look inside, {r['model']}{' + ' + r['adapter'] if r['adapter'] else ''}: {r['examples']} examples "
             f"x 5 inputs, batch {r['batch_size']}"]
    for name, v in r["examples_per_s"].items():
        lines.append(f"  {name:<18}{v:>9.1f} examples/s")
    lines.append(f"  look / score time: {r['look_over_score']:.2f}x")
    for what, mem in r["memory"].items():
        lines.append(f"  kept per example, {what} ({mem['layers']} layers x {mem['heads']} heads x "
                     f"{mem['sequence']} tokens): answer rows {_mib(mem['answer_rows_bytes'])} vs full maps "
                     f"{_mib(mem['full_maps_bytes'])}")
    return "\n".join(lines)


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="local:small", help="any model look_inside.py takes (default %(default)s)")
    ap.add_argument("--adapter", default=None, help="LoRA adapter: run name, run dir or adapter folder")
    ap.add_argument("--source", default="synthetic", help="dataset (default %(default)s)")
    ap.add_argument("--split", default="validation", help="split (default %(default)s)")
    ap.add_argument("--n", type=int, default=64, help="examples (default %(default)s)")
    ap.add_argument("--batch_size", type=int, default=8, help="examples per forward pass, x5 inputs each")
    ap.add_argument("--dtype", default="auto", help="auto, bf16 or fp32 (default %(default)s)")
    ap.add_argument("--max_pixels", type=int, default=None,
                    help="image resize upper bound (default: the lab's 512*28*28)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per variant; the best counts")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", default=None, help="write the figures here (default <root>/bench/look_inside.json)")
    add_root_arg(ap)
    return ap


def main(argv=None):
    from bench import emit
    from utils.paths import subdir

    args = make_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    res = run(args.model, args.source, args.split, args.n, args.batch_size, args.adapter, args.dtype, args.max_pixels,
              args.repeats, root=args.root)
    out = Path(args.json) if args.json else subdir("bench", args.root) / "look_inside.json"
    emit(res, format_result(res), out)
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    sys.exit(main_guard(main))
