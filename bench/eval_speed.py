"""Eval throughput: score mode vs batched generate vs a one-example-at-a-time generate loop, one run.

    python -m bench.eval_speed                                     # local:small, 256 synthetic examples, CPU
    python -m bench.eval_speed --n 128 --batch_size 32 --max_new_tokens 8
    python -m bench.eval_speed --adapter RUN --task nlvr2_synth_grounding --merge_adapter   # a model that answers
    python -m bench.eval_speed --model Qwen/Qwen2-VL-2B-Instruct --source pingzhili/nlvr2 --max_pixels 401408  # GPU

Same model, same examples, same prompts, in one process:
  score (batched)         `scoring.modes.score_batch`: one forward pass per batch, logits of the answer
                          position only; what `scripts/evaluate.py` runs by default
  generate (batched)      `scoring.modes.generate_batch`: greedy, left-padded, parsed
  generate (one at a time) the same call with a batch of one, example after example: how common eval
                          harnesses run a VLM (processor + generate per example)
Each figure is examples/s over the whole set, best of --repeats passes (modes interleaved), after
one untimed warm-up batch per mode; prompt building, image processing and tokenisation are
included: they are part of every mode.
Agreement: score vs batched generate where the generated answer is valid; batched vs one-at-a-time
generate (identical text expected up to padding numerics). A random local model rarely stops early
and its answers rarely parse; a trained model ends after one or two tokens, which makes generate
faster and its answers valid. Prints a table and writes JSON (default <root>/bench/eval_speed.json).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from utils.cli import ArgumentParser, add_root_arg, main_guard


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(model: str = "local:small", source: str | None = "synthetic", split: str = "validation", n: int = 64,
        batch_size: int = 16, max_new_tokens: int = 8, template: str = "tf", adapter: str | None = None,
        task: str = "nlvr2", dtype: str = "auto", max_pixels: int | None = None, merge_adapter: bool = False,
        repeats: int = 3, root=None) -> dict:
    import torch

    from scoring.modes import batched, generate_batch, score_batch
    from scoring.tasks import get_task
    from utils.models import load_model_and_processor
    from utils.run_meta import device_info, git_info, library_versions

    the_task = get_task(task)
    _, examples = the_task.load(source, split, "streaming", root=root, limit=n)
    examples = list(examples)  # decoded up front: data loading is bench.data_loading's business
    if not examples:
        raise SystemExit(f"no examples in {source} [{split}]")
    from evals.runner import merge_adapter as merge, resolve_adapter
    from utils.paths import get_root

    adapter_dir = resolve_adapter(adapter, get_root(root))  # a run name, run dir or adapter folder
    m, processor = load_model_and_processor(model, adapter=str(adapter_dir) if adapter_dir else None, dtype=dtype,
                                            max_pixels=max_pixels, root=root)
    if adapter and merge_adapter:
        m = merge(m)

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def score_all():
        out = [r for b in batched(examples, batch_size) for r in score_batch(m, processor, b, template)]
        sync()
        return out

    def gen_batched():
        out = [r for b in batched(examples, batch_size)
               for r in generate_batch(m, processor, b, template, max_new_tokens)]
        sync()
        return out

    def gen_single():
        out = [generate_batch(m, processor, [ex], template, max_new_tokens)[0] for ex in examples]
        sync()
        return out

    # warm-up: first calls allocate, compile kernels and fill caches
    score_batch(m, processor, examples[:batch_size], template)
    generate_batch(m, processor, examples[:batch_size], template, max_new_tokens)
    generate_batch(m, processor, examples[:1], template, max_new_tokens)
    sync()

    # best of `repeats`, the modes interleaved, so a burst of load from another process hits all three alike
    times = {"score": [], "gen_b": [], "gen_1": []}
    for _ in range(repeats):
        score, sec = _timed(score_all)
        times["score"].append(sec)
        gen_b, sec = _timed(gen_batched)
        times["gen_b"].append(sec)
        gen_1, sec = _timed(gen_single)
        times["gen_1"].append(sec)
    t_score, t_gen_b, t_gen_1 = min(times["score"]), min(times["gen_b"]), min(times["gen_1"])
    k = len(examples)
    valid = [(s, g) for s, g in zip(score, gen_b) if g["valid"]]
    res = {
        "model": model, "adapter": adapter, "merged": bool(adapter and merge_adapter), "source": source, "split": split, "task": the_task.tag, "template": template,
        "examples": k, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
        "visual_tokens_mean": sum(r["visual_tokens"] for r in score) / k,
        "examples_per_s": {"score_batched": k / t_score, "generate_batched": k / t_gen_b,
                           "generate_one_at_a_time": k / t_gen_1},
        "seconds": {"score_batched": t_score, "generate_batched": t_gen_b, "generate_one_at_a_time": t_gen_1},
        "repeats": repeats, "all_seconds": times,
        "ratios": {"score_vs_one_at_a_time": t_gen_1 / t_score, "score_vs_generate_batched": t_gen_b / t_score,
                   "generate_batched_vs_one_at_a_time": t_gen_1 / t_gen_b},
        "agreement": {
            "generate_valid_rate": len(valid) / k,
            "generate_stopped_rate": sum(bool(g["stopped"]) for g in gen_b) / k,
            "score_vs_generate_on_valid": (sum(s["prediction"] == g["prediction"] for s, g in valid) / len(valid)
                                           if valid else None),
            "generate_batched_vs_one_at_a_time_text": sum(a["raw_output"] == b["raw_output"]
                                                          for a, b in zip(gen_b, gen_1)) / k,
            "score_vs_generate_first_token_p_true_max_abs_diff": max(abs(s["p_true"] - g["p_true"])
                                                                     for s, g in zip(score, gen_b)),
        },
        "device": device_info(), "versions": library_versions(), **git_info(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return res


def format_table(res: dict) -> str:
    eps, sec, r = res["examples_per_s"], res["seconds"], res["ratios"]
    a = res["agreement"]
    rows = [("score (batched)", "score_batched", r["score_vs_one_at_a_time"]),
            ("generate (batched)", "generate_batched", r["generate_batched_vs_one_at_a_time"]),
            ("generate (one at a time)", "generate_one_at_a_time", 1.0)]
    d = res["device"]
    dev = d.get("gpu") or f"CPU ({d.get('cpu_count')} cores, {d.get('torch_threads')} torch threads)"
    adapter = f" + {res['adapter']}{' (merged)' if res['merged'] else ''}" if res["adapter"] else ""
    lines = [f"{res['model']}{adapter} on {dev}: {res['examples']} examples "
             f"of {res['source']} [{res['split']}], batch {res['batch_size']}, max_new_tokens {res['max_new_tokens']}, "
             f"{res['visual_tokens_mean']:.0f} visual tokens/example, best of {res['repeats']}",
             f"{'mode':26s} {'examples/s':>11s} {'seconds':>9s} {'x one-at-a-time':>16s}"]
    for name, key, ratio in rows:
        lines.append(f"{name:26s} {eps[key]:11.1f} {sec[key]:9.2f} {ratio:16.1f}")
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    lines.append(f"score is {r['score_vs_one_at_a_time']:.1f}x the one-at-a-time loop (goal >= 5x) and "
                 f"{r['score_vs_generate_batched']:.1f}x batched generate")
    lines.append(f"agreement: score vs generate on valid answers {pct(a['score_vs_generate_on_valid'])} "
                 f"(valid {pct(a['generate_valid_rate'])}, stopped {pct(a['generate_stopped_rate'])}); batched vs "
                 f"one-at-a-time generate text {pct(a['generate_batched_vs_one_at_a_time_text'])}; "
                 f"max |p_true diff| {a['score_vs_generate_first_token_p_true_max_abs_diff']:.1e}")
    return "\n".join(lines)


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="local:small", help="any model evaluate.py takes (default %(default)s)")
    ap.add_argument("--adapter", default=None, help="LoRA adapter (run dir or adapter folder)")
    ap.add_argument("--merge_adapter", action="store_true", help="merge the adapter into the base first (faster)")
    ap.add_argument("--source", default="synthetic", help="dataset (default %(default)s)")
    ap.add_argument("--split", default="validation", help="split (default %(default)s)")
    ap.add_argument("--task", default="nlvr2", help="registered task (default %(default)s)")
    ap.add_argument("--n", type=int, default=256, help="examples (default %(default)s)")
    ap.add_argument("--batch_size", type=int, default=16, help="examples per forward pass (default %(default)s)")
    ap.add_argument("--max_new_tokens", type=int, default=8,
                    help="generate modes; a trained model stops after ~2 tokens (default %(default)s)")
    ap.add_argument("--template", default="tf", help="prompt template (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed passes per mode; the best counts (default %(default)s)")
    ap.add_argument("--dtype", default="auto", help="auto, bf16 or fp32 (default %(default)s)")
    ap.add_argument("--max_pixels", type=int, default=None,
                    help="image resize upper bound (default: the lab's 512*28*28)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice); 1 avoids spin-wait slowdowns when another "
                         "process shares the cores")
    ap.add_argument("--json", default=None, help="write the figures here (default <root>/bench/eval_speed.json)")
    add_root_arg(ap)
    return ap


def main(argv=None):
    from utils.io import atomic_write_json
    from utils.paths import subdir

    args = make_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    res = run(args.model, args.source, args.split, args.n, args.batch_size, args.max_new_tokens, args.template,
              args.adapter, args.task, args.dtype, args.max_pixels, args.merge_adapter, args.repeats, args.root)
    print(format_table(res))
    out = Path(args.json) if args.json else subdir("bench", args.root) / "eval_speed.json"
    atomic_write_json(out, res)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main_guard(main))
