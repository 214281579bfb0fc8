"""Eval throughput: score mode vs batched generate vs a one-example-at-a-time generate loop, one run.

    python -m bench.eval_speed                                     # local:small, 256 synthetic examples, CPU
    python -m bench.eval_speed --n 128 --batch_size 32 --max_new_tokens 8
    python -m bench.eval_speed --adapter RUN --task nlvr2_synth_grounding --merge_adapter   # a model that answers
    python -m bench.eval_speed --model Qwen/Qwen2-VL-2B-Instruct --source pingzhili/nlvr2 --max_pixels 401408  # GPU

The default model answers and stops as a trained one does: local:small + the smoke recipe's adapter
(`--adapter smoke`: training/configs/smoke_cpu.yaml for --train_steps steps, trained on first use and kept
as <root>/checkpoints/bench-eval-speed-smoke-<steps>steps).

Same model, same examples, same prompts, in one process:
  score (batched)         `scoring.modes.score_batch`: one forward pass per batch, logits of the answer
                          position only; what `scripts/evaluate.py` runs by default
  score, fed              the same, fed as `scripts/evaluate.py` feeds it (`evals.feed`, --feed_workers
                          DataLoader workers reading, decoding and encoding the split; so it includes
                          reading and decoding, which the other modes are spared)
  generate (batched)      `scoring.modes.generate_batch`: greedy, left-padded, parsed
  generate (one at a time) the same call with a batch of one, example after example: how common eval
                          harnesses run a VLM (processor + generate per example)
Each figure is examples/s over the whole set, best of --repeats passes (modes interleaved), after
one untimed warm-up batch per mode; prompt building, image processing and tokenisation are
included: they are part of every mode.
Agreement: score vs batched generate where the generated answer is valid; batched vs one-at-a-time
generate (identical text expected up to padding numerics). A random local model rarely stops early
and its answers rarely parse; a trained model ends after one or two tokens, which makes generate
faster and its answers valid.
The feed comparison (`run_feed`, --feed_rows): photo-sized JPEG pairs through the eval's feed with 0 and 2
workers, no model; the batches must be identical. Torch threads: --torch_threads, else the rule of
utils/threads.py. Prints tables and writes JSON (default <root>/bench/eval_speed.json).
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

from utils.cli import ArgumentParser, add_root_arg, main_guard


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


SMOKE_ADAPTER = "smoke"  # --adapter smoke: the smoke recipe's adapter, trained once by the bench and kept


def smoke_adapter(root=None, steps: int = 150) -> Path:
    """A LoRA adapter after which local:small answers "True"/"False" and stops: training/configs/smoke_cpu.yaml,
    `steps` optimizer steps (the recipe reaches 100% on its watched subset by step 100-200), trained on first use
    and kept as the training run `<root>/checkpoints/bench-eval-speed-smoke-<steps>steps`."""
    from utils.models import ADAPTER_SUBDIR, ADAPTER_WEIGHTS
    from utils.paths import get_root

    run_dir = get_root(root) / "checkpoints" / f"bench-eval-speed-smoke-{steps}steps"
    if not (run_dir / ADAPTER_SUBDIR / ADAPTER_WEIGHTS).is_file():
        from training.options import train_options
        from training.trainer import train

        print(f"[bench] training the smoke adapter ({steps} steps, training/configs/smoke_cpu.yaml) into {run_dir}",
              file=sys.stderr, flush=True)
        train(train_options(["--config", "training/configs/smoke_cpu.yaml", "--run_name", run_dir.name, "--max_steps", str(steps),
               "--eval_split", "none", "--accuracy_eval_steps", "0", "--save_steps", str(steps),
               "--disable_tqdm", "true", "--root", str(run_dir.parent.parent)],
                            description="bench.eval_speed smoke adapter"))
    return run_dir


def run(model: str = "local:small", source: str | None = "synthetic", split: str = "validation", n: int = 64,
        batch_size: int = 16, max_new_tokens: int = 8, template: str = "tf", adapter: str | None = None,
        task: str = "nlvr2", dtype: str = "auto", max_pixels: int | None = None, merge_adapter: bool = False,
        repeats: int = 3, root=None, feed_workers: int = 2, train_steps: int = 150) -> dict:
    import torch

    from scoring.modes import batched, generate_batch, score_batch
    from scoring.tasks import get_task
    from utils.models import load_model_and_processor
    from utils.run_meta import device_info, git_info, library_versions

    if adapter == SMOKE_ADAPTER:
        adapter = str(smoke_adapter(root, train_steps))
    the_task = get_task(task)
    data, examples = the_task.load(source, split, "streaming", root=root, limit=n)
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

    def score_fed():
        """As scripts/evaluate.py runs it: the split read, decoded and encoded in `feed_workers` DataLoader workers
        (evals.feed), the model in this process. Includes reading and decoding, which the other modes do not."""
        from evals.feed import Feed, batch_inputs
        from scoring.modes import score_encoded
        from vlm_datasets.prompts import get_template

        t = get_template(template)
        feed = Feed(data, the_task, t, processor, num_workers=feed_workers, batch_size=batch_size,
                    limit=n if the_task.keep else None)
        out = [r for b in feed.batches()
               for r in score_encoded(m, processor, [ex for ex, _ in b], batch_inputs(processor, the_task, t, b), t)]
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
    times = {"score": [], "score_fed": [], "gen_b": [], "gen_1": []}
    for _ in range(repeats):
        score, sec = _timed(score_all)
        times["score"].append(sec)
        fed, sec = _timed(score_fed)
        times["score_fed"].append(sec)
        gen_b, sec = _timed(gen_batched)
        times["gen_b"].append(sec)
        gen_1, sec = _timed(gen_single)
        times["gen_1"].append(sec)
    t_score, t_gen_b, t_gen_1 = min(times["score"]), min(times["gen_b"]), min(times["gen_1"])
    t_fed = min(times["score_fed"])
    k = len(examples)
    assert [r["uid"] for r in fed] == [r["uid"] for r in score]
    valid = [(s, g) for s, g in zip(score, gen_b) if g["valid"]]
    res = {
        "model": model, "adapter": adapter, "merged": bool(adapter and merge_adapter), "source": source, "split": split, "task": the_task.tag, "template": template,
        "examples": k, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
        "visual_tokens_mean": sum(r["visual_tokens"] for r in score) / k,
        "feed_workers": feed_workers, "torch_threads": torch.get_num_threads(),
        "examples_per_s": {"score_batched": k / t_score, "score_fed": k / t_fed, "generate_batched": k / t_gen_b,
                           "generate_one_at_a_time": k / t_gen_1},
        "seconds": {"score_batched": t_score, "score_fed": t_fed, "generate_batched": t_gen_b,
                    "generate_one_at_a_time": t_gen_1},
        "repeats": repeats, "all_seconds": times,
        "ratios": {"score_vs_one_at_a_time": t_gen_1 / t_score, "score_vs_generate_batched": t_gen_b / t_score,
                   "score_fed_vs_one_at_a_time": t_gen_1 / t_fed, "score_fed_vs_generate_batched": t_gen_b / t_fed,
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
            "score_fed_vs_score_p_true_max_abs_diff": max(abs(s["p_true"] - f["p_true"]) for s, f in zip(score, fed)),
        },
        "device": device_info(), "versions": library_versions(), **git_info(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return res


def _photo_rows(folder: Path, rows: int, size: tuple[int, int]) -> Path:
    """`rows` NLVR2-schema rows of photo-sized JPEG pairs (a colour gradient plus noise: real JPEG sizes)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "validation-00000.parquet"
    if path.is_file() and pq.read_metadata(path).num_rows == rows:
        return folder
    rng = np.random.default_rng(0)
    w, h = size
    ramp = np.stack(np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h)), -1)

    def photo(i):
        base = np.concatenate([ramp, ramp[..., :1] * ((i % 7) / 7)], -1) * 200
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype("uint8")
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=88)
        return {"bytes": buf.getvalue(), "path": None}

    table = [{"identifier": f"dev-{i}-0-0", "sentence": "The left image contains more dogs than the right image.",
              "label": "True" if i % 2 else "False", "image0": photo(2 * i), "image1": photo(2 * i + 1)}
             for i in range(rows)]
    pq.write_table(pa.Table.from_pylist(table), path)
    return folder


# A consumer that holds no CPU, as a GPU step does from the feed's point of view: the H100 score-mode figure of
# the 2B model at the lab budget (17.6 examples/s, 57 ms per example; Setup/LOG.md, first GPU figures).
GPU_LIKE_MS_PER_EXAMPLE = 57.0


def run_feed(rows: int = 48, size: tuple[int, int] = (1024, 768), workers=(0, 2), batch_size: int = 8,
             repeats: int = 2, model: str = "local:small", max_pixels: int | None = None, root=None,
             consumer_ms: float = GPU_LIKE_MS_PER_EXAMPLE) -> dict:
    """Examples/s through the eval's feed (`evals.feed`: read, decode, process, pad) with 0 and 2 workers, one run.

    Photo-sized JPEG pairs (NLVR2's photos are ~1024x768), the lab's pixel budget, no model forward: what the
    workers take off the main process. Best of `repeats`, the variants interleaved; worker start-up included.
    Agreement: every batch's tensors identical across the variants (hashed).

    Second comparison, "with a GPU-like consumer": the main process also waits `consumer_ms` per example after
    each batch (a sleep: it holds no CPU, as a GPU step does), so the figure shows what the workers are for,
    the feed overlapping the model's step instead of stalling it. The sleep stands in for the GPU; the feed
    around it is real and measured. 0 skips it.
    """
    import hashlib

    from evals.feed import Feed, batch_inputs
    from scoring.tasks import get_task
    from utils.models import load_processor
    from utils.paths import subdir
    from utils.run_meta import load_average_1m
    from vlm_datasets.prompts import LAB_MAX_PIXELS, LAB_MIN_PIXELS, get_template, set_pixel_limits

    folder = _photo_rows(subdir("bench", root) / f"photo_pairs_{size[0]}x{size[1]}_{rows}", rows, size)
    pixels = (LAB_MIN_PIXELS, max_pixels or LAB_MAX_PIXELS)
    processor = load_processor(model, root=root)
    set_pixel_limits(processor, *pixels)
    task, template = get_task("nlvr2"), get_template("tf")
    data, _ = task.load(str(folder), "validation", "streaming", root=root, min_pixels=pixels[0], max_pixels=pixels[1])

    def one_pass(n_workers, digest=None, wait_ms=0.0):
        n = 0
        for batch in Feed(data, task, template, processor, num_workers=n_workers, batch_size=batch_size).batches():
            enc = batch_inputs(processor, task, template, batch)
            n += len(batch)
            if wait_ms:
                time.sleep(wait_ms * len(batch) / 1000)
            if digest is not None:  # the agreement pass only: hashing ~150 MB of pixels a batch is not the feed's cost
                for k in sorted(enc):
                    digest.update(enc[k].contiguous().numpy().tobytes())
        return n

    load_start = load_average_1m()
    digests = {}
    for w in workers:  # untimed: the agreement, and a warm-up (imports, file cache)
        digest = hashlib.sha256()
        one_pass(w, digest)
        digests[w] = digest.hexdigest()
    seconds = {w: [] for w in workers}
    for _ in range(repeats):
        for w in workers:
            n, sec = _timed(lambda: one_pass(w))
            assert n == rows
            seconds[w].append(sec)
    best = {w: min(v) for w, v in seconds.items()}
    consumer = {}
    if consumer_ms:
        c_seconds = {w: [] for w in workers}
        for _ in range(repeats):
            for w in workers:
                n, sec = _timed(lambda: one_pass(w, wait_ms=consumer_ms))
                c_seconds[w].append(sec)
        c_best = {w: min(v) for w, v in c_seconds.items()}
        consumer = {"consumer_ms_per_example": consumer_ms,
                    "examples_per_s": {str(w): rows / c_best[w] for w in workers},
                    "ms_per_pair": {str(w): 1000 * c_best[w] / rows for w in workers},
                    "all_seconds": {str(w): v for w, v in c_seconds.items()},
                    "speedup_vs_in_process": {str(w): c_best[workers[0]] / c_best[w] for w in workers}}
    return {"rows": rows, "image_size": list(size), "batch_size": batch_size, "max_pixels": pixels[1], "repeats": repeats,
            "examples_per_s": {str(w): rows / best[w] for w in workers},
            "ms_per_pair": {str(w): 1000 * best[w] / rows for w in workers},
            "all_seconds": {str(w): v for w, v in seconds.items()},
            "speedup_vs_in_process": {str(w): best[workers[0]] / best[w] for w in workers},
            "identical_batches": len(set(digests.values())) == 1, "with_gpu_like_consumer": consumer,
            "cpu_count": os.cpu_count(), "load_average_1m": [load_start, load_average_1m()]}


def format_feed(res: dict) -> str:
    from utils.run_meta import format_load

    lines = [f"eval feed: {res['rows']} photo pairs {res['image_size'][0]}x{res['image_size'][1]} JPEG, read + decode + "
             f"process + pad, max_pixels {res['max_pixels']}, batch {res['batch_size']}, best of {res['repeats']}, "
             f"CPU {res['cpu_count']} cores, 1-min load {format_load(res['load_average_1m'][0])} -> "
             f"{format_load(res['load_average_1m'][1])}",
             f"{'workers':8s} {'examples/s':>11s} {'ms/pair':>9s} {'x in-process':>13s}"]
    for w in res["examples_per_s"]:
        lines.append(f"{w:8s} {res['examples_per_s'][w]:11.1f} {res['ms_per_pair'][w]:9.1f} "
                     f"{res['speedup_vs_in_process'][w]:13.2f}")
    c = res.get("with_gpu_like_consumer") or {}
    if c:
        lines.append(f"with a GPU-like consumer (the main process waits {c['consumer_ms_per_example']:g} ms per example "
                     f"after each batch, holding no CPU):")
        for w in c["examples_per_s"]:
            lines.append(f"{w:8s} {c['examples_per_s'][w]:11.1f} {c['ms_per_pair'][w]:9.1f} "
                         f"{c['speedup_vs_in_process'][w]:13.2f}")
    lines.append(f"batches identical across worker counts: {'yes' if res['identical_batches'] else 'NO'} "
                 f"(goal: >= 1.7x with 2 workers)")
    return "\n".join(lines)


def format_table(res: dict) -> str:
    eps, sec, r = res["examples_per_s"], res["seconds"], res["ratios"]
    a = res["agreement"]
    rows = [("score (batched)", "score_batched", r["score_vs_one_at_a_time"]),
            (f"score, fed ({res['feed_workers']} workers)", "score_fed", r["score_fed_vs_one_at_a_time"]),
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
                 f"{r['score_vs_generate_batched']:.1f}x batched generate; fed as scripts/evaluate.py runs it (reading "
                 f"and decoding included): {r['score_fed_vs_one_at_a_time']:.1f}x and "
                 f"{r['score_fed_vs_generate_batched']:.1f}x")
    lines.append(f"agreement: score vs generate on valid answers {pct(a['score_vs_generate_on_valid'])} "
                 f"(valid {pct(a['generate_valid_rate'])}, stopped {pct(a['generate_stopped_rate'])}); batched vs "
                 f"one-at-a-time generate text {pct(a['generate_batched_vs_one_at_a_time_text'])}; "
                 f"max |p_true diff| {a['score_vs_generate_first_token_p_true_max_abs_diff']:.1e}")
    return "\n".join(lines)


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="local:small", help="any model evaluate.py takes (default %(default)s)")
    ap.add_argument("--adapter", default=SMOKE_ADAPTER,
                    help="LoRA adapter (run dir or adapter folder); 'smoke' (default): the smoke recipe's, trained on "
                         "first use (~1-2 min on 2 cores) and kept under <root>/checkpoints/, so the model answers and "
                         "stops as a trained model does; 'none': the bare model")
    ap.add_argument("--train_steps", type=int, default=150, help="steps of the smoke adapter (default %(default)s)")
    ap.add_argument("--feed_workers", type=int, default=2, help="workers of the fed score row (default %(default)s)")
    ap.add_argument("--merge_adapter", action="store_true", help="merge the adapter into the base first (faster)")
    ap.add_argument("--source", default="synthetic", help="dataset (default %(default)s)")
    ap.add_argument("--split", default="validation", help="split (default %(default)s)")
    ap.add_argument("--task", default="nlvr2_synth_grounding",
                    help="registered task (default %(default)s: the statements the smoke adapter learnt)")
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
    ap.add_argument("--torch_threads", "--threads", type=int, default=None,
                    help="torch CPU threads (default: the cores the 1-min load leaves free, at least 1; "
                         "utils/threads.py: torch's one-per-core default collapses when another process shares them)")
    ap.add_argument("--feed_rows", type=int, default=48,
                    help="photo pairs for the feed comparison, 0 and 2 DataLoader workers (0: skip it; default "
                         "%(default)s)")
    ap.add_argument("--only_feed", action="store_true", help="only the feed comparison")
    ap.add_argument("--feed_consumer_ms", type=float, default=GPU_LIKE_MS_PER_EXAMPLE,
                    help="the feed comparison's GPU-like consumer: ms the main process waits per example, holding no "
                         "CPU (default %(default)s: the 2B model's H100 score step; 0 skips that comparison)")
    ap.add_argument("--json", default=None, help="write the figures here (default <root>/bench/eval_speed.json)")
    add_root_arg(ap)
    return ap


def main(argv=None):
    from utils.io import atomic_write_json
    from utils.paths import subdir
    from utils.threads import apply_torch_threads

    args = make_parser().parse_args(argv)
    threads = apply_torch_threads(args.torch_threads)
    print(f"torch threads: {threads['threads']} ({threads['from']})")
    res = {}
    if not args.only_feed:
        adapter = None if args.adapter in (None, "", "none") else args.adapter
        res = run(args.model, args.source, args.split, args.n, args.batch_size, args.max_new_tokens, args.template,
                  adapter, args.task, args.dtype, args.max_pixels, args.merge_adapter, args.repeats, args.root,
                  args.feed_workers, args.train_steps)
        print(format_table(res))
    res["torch_threads"] = threads
    if args.feed_rows:
        res["feed"] = run_feed(args.feed_rows, repeats=args.repeats, max_pixels=args.max_pixels, root=args.root,
                               consumer_ms=args.feed_consumer_ms)
        print(format_feed(res["feed"]))
    out = Path(args.json) if args.json else subdir("bench", args.root) / "eval_speed.json"
    atomic_write_json(out, res)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main_guard(main))
