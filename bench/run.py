"""The benchmark suite, one command: every CPU figure in one table and one JSON file.

    python -m bench.run --quick                  # a few minutes on 2 CPU cores
    python -m bench.run                          # more rows, steps and rounds: steadier figures
    python -m bench.run --quick --only train visual --json /tmp/bench.json
    python -m bench.run --quick --with vision    # plus the frozen-vision-tower section (several minutes more)

Sections (each also runs on its own; see its module):
  data    bench.data_loading   examples/s reading the same synthetic split streaming vs cached
  train   bench.train_speed    samples/s and peak memory, our training path vs a bare TRL SFTTrainer,
                               same model, data and settings, ratio from alternating rounds in one run
  eval    bench.eval_speed     examples/s, score vs batched generate vs one-at-a-time generate
  visual  bench.visual_tokens  visual tokens per NLVR2-sized pair (1024x768 x2) per max_pixels, counted
                               by the image processor, and its CPU time per pair
  start   bench.start_time     seconds to first step (the data side of a launch) per photo-size split size,
                               before vs after the length records, cached and streaming
  gpu     bench/results/       the last GPU run of bench.gpu_bench (not measured here: card and date shown)
  vision  bench.frozen_vision  optional (--with vision; minutes, not seconds): a frozen vision tower with and
                               without autograd at Qwen2-VL-2B widths, forward and backward, interleaved
Every row says what it measured and on what. The machine may be shared: the load average is recorded,
and timed figures are best-of-N with the variants interleaved. Output: <root>/bench/suite.json unless --json.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from utils.cli import ArgumentParser, add_root_arg, main_guard

SECTIONS = ("data", "train", "eval", "visual", "start", "gpu")
OPTIONAL = ("vision",)  # run only when asked (--with): several minutes on 2 cores
RESULTS_DIR = Path(__file__).parent / "results"

# quick: a few minutes on 2 cores; full: steadier figures
SIZES = {
    True: dict(data_rows=300, data_image=224, train_steps=30, train_warmup=3, train_rounds=3, train_rows=256,
               eval_n=32, eval_repeats=2, eval_feed_rows=24, eval_train_steps=150,
               visual_pixels=(256, 512, 1280, 16384), visual_repeats=1, vision_rounds=1, start_sizes=(1000, 2000),
               start_repeats=1),
    False: dict(data_rows=2000, data_image=224, train_steps=60, train_warmup=5, train_rounds=5, train_rows=512,
                eval_n=128, eval_repeats=3, eval_feed_rows=64, eval_train_steps=150,
                visual_pixels=(256, 512, 768, 1024, 1280, 16384), visual_repeats=3, vision_rounds=3,
                start_sizes=(2000, 4000, 8000), start_repeats=2),
}


def _row(section, measure, value, unit, on):
    return {"section": section, "measure": measure, "value": value, "unit": unit, "on": on}


def _cpu(threads=None) -> str:
    import torch

    return f"CPU {os.cpu_count()} cores, {threads or torch.get_num_threads()} torch thread(s)"


def section_data(s, root) -> tuple[dict, list]:
    from bench.data_loading import run

    res = run(s["data_rows"], s["data_image"], workdir=str(Path(root) / "bench" / "data_loading"))
    on = (f"{res['rows']} synthetic rows, {res['image_size']}px PNG pairs, read + decode + normalise, one process, "
          f"CPU {os.cpu_count()} cores")
    rows = [_row("data", name, r["examples_per_s"], "examples/s", on) for name, r in res["results"].items()]
    return res, rows


def section_train(s, root) -> tuple[dict, list]:
    from bench.train_speed import run

    res = run(steps=s["train_steps"], warmup=s["train_warmup"], repeats=s["train_rounds"], rows=s["train_rows"],
              root=str(root))
    st = res["settings"]
    on = (f"local:small (smoke_cpu.yaml), {st['rows']} synthetic grounding rows, batch {st['batch_size']}, "
          f"{'bf16' if st['bf16'] else 'fp32'}, {st['dataloader_num_workers']} workers, median of {st['timed_steps']} "
          f"steps, both in one process taking turns, {_cpu(st['torch_threads'])}")
    names = {"ours": "training: ours (scripts/train.py path)", "trl": "training: bare TRL SFTTrainer"}
    rows = [_row("train", name, res["results"][v]["samples_per_s"], "samples/s", on) for v, name in names.items()]
    rounds = f"; rounds {', '.join(f'{x:.3f}' for x in res['round_ratios'])}" if len(res["round_ratios"]) > 1 else ""
    rows.append(_row("train", "training: ours / bare TRL", res["ratio_ours_vs_trl"], "ratio",
                     f"median of step-by-step ratios (by CPU time {res['ratio_ours_vs_trl_cpu']:.3f}){rounds}"))
    for v, name in names.items():
        r = res["results"][v]
        rows.append(_row("train", name.replace("training", "peak RSS"), r["peak_rss_mib"], "MiB",
                         f"variant alone in a fresh process (libraries included); +{r['rss_growth_mib']:.0f} MiB "
                         f"after imports; {r['alone_samples_per_s']:.1f} samples/s alone"))
    return res, rows


def section_eval(s, root) -> tuple[dict, list]:
    from bench.eval_speed import SMOKE_ADAPTER, run, run_feed

    # a model that answers and stops (the smoke recipe's adapter, trained once and kept under the root)
    res = run(n=s["eval_n"], repeats=s["eval_repeats"], root=str(root), adapter=SMOKE_ADAPTER,
              task="nlvr2_synth_grounding", train_steps=s["eval_train_steps"])
    on = (f"{res['model']} + smoke adapter, {res['examples']} synthetic grounding examples, batch {res['batch_size']}, "
          f"max_new_tokens {res['max_new_tokens']}, best of {res['repeats']}, {_cpu()}")
    names = {"score_batched": "eval: score (batched)", "score_fed": "eval: score, fed by 2 workers (evaluate.py)",
             "generate_batched": "eval: generate (batched)", "generate_one_at_a_time": "eval: generate (one at a time)"}
    rows = [_row("eval", name, res["examples_per_s"][k], "examples/s", on) for k, name in names.items()]
    rows.append(_row("eval", "eval: score / one-at-a-time", res["ratios"]["score_vs_one_at_a_time"], "ratio", on))
    feed = run_feed(rows=s["eval_feed_rows"], repeats=s["eval_repeats"], root=str(root))
    res["feed"] = feed
    on = (f"{feed['rows']} photo pairs 1024x768 JPEG, read + decode + process + pad, batches identical: "
          f"{'yes' if feed['identical_batches'] else 'NO'}, best of {feed['repeats']}, CPU {os.cpu_count()} cores")
    for w, eps in feed["examples_per_s"].items():
        rows.append(_row("eval", f"eval feed: {w} worker(s)", eps, "examples/s", on))
    rows.append(_row("eval", "eval feed: 2 workers / in-process", feed["speedup_vs_in_process"]["2"], "ratio", on))
    return res, rows


def section_visual(s, root) -> tuple[dict, list]:
    from bench.visual_tokens import run

    res = run(s["visual_pixels"], repeats=s["visual_repeats"])
    pair = "+".join(f"{w}x{h}" for w, h in res["pair"])
    rows = []
    for r in res["results"]:
        on = (f"pair {pair}, Qwen2-VL image processor (image_grid_thw); {r['processor_ms_per_pair']:.0f} ms/pair "
              f"to process; arithmetic {'agrees' if r['arithmetic_agrees'] else 'DISAGREES'}")
        rows.append(_row("visual", f"visual tokens @ max_pixels {r['max_pixels_units']}*28*28",
                         r["visual_tokens_per_pair"], "tokens/pair", on))
    return res, rows


def section_start(s, root) -> tuple[dict, list]:
    from bench.start_time import VARIANTS, run

    res = run(s["start_sizes"], repeats=s["start_repeats"])
    rows = []
    for r in res["results"]:
        on = (f"{r['rows']} photo-size rows ({r['source_bytes'] / 2 ** 30:.2f} GB), load_train_data + first batch of "
              f"{res['first_batch']}, best of {res['repeats']}, {res['vocab']} vocabulary, CPU {os.cpu_count()} cores")
        for v in VARIANTS:
            rows.append(_row("start", f"to first step @ {r['rows']} rows: {v}", r["variants"][v]["total_s"], "s", on))
        rows.append(_row("start", f"datasets-cache copy @ {r['rows']} rows: cached, old / new",
                         f"{r['variants']['cached, old']['hf_datasets_cache_bytes'] / 2 ** 20:.0f} / "
                         f"{r['variants']['cached, new']['hf_datasets_cache_bytes'] / 2 ** 20:.0f}", "MiB", on))
    for v, t in res["extrapolated_to_nlvr2_train_s"].items():
        rows.append(_row("start", f"to first step @ {res['nlvr2_train_rows']} rows: {v}", t, "s",
                         "extrapolated: least-squares line through the sizes above (not measured)"))
    return res, rows


def latest_gpu_results() -> Path | None:
    files = sorted(RESULTS_DIR.glob("gpu_bench_*.json"),
                   key=lambda p: json.loads(p.read_text(encoding="utf-8")).get("date", ""))
    return files[-1] if files else None


def section_gpu(s, root) -> tuple[dict, list]:
    path = latest_gpu_results()
    if path is None:
        return {"file": None}, [_row("gpu", "GPU benchmark", None, "", "not yet measured: run python -m bench.gpu_bench "
                                                                        "on a GPU machine")]
    res = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for r in res["results"]:
        if "error" in r or "skipped" in r:
            continue
        cond = (f"{res['device']}, {res['date']}, {res['attn_implementation']}, "
                f"{r.get('compute', 'bf16')}, NOT measured in this run ({path.name})")
        loss = r.get("loss_impl") or "full"
        if r["mode"] == "score":
            rows.append(_row("gpu", f"GPU score @ {r['max_pixels']} (batch {r['batch_size']})", r["examples_per_s"],
                             "examples/s", cond))
        else:
            variant = f", vision {'autograd' if r['vision_autograd'] else 'no_grad'}" if "vision_autograd" in r else ""
            name = f"GPU {r['mode']} ({loss} loss{variant}) @ {r['max_pixels']} (batch {r['batch_size']})"
            rows.append(_row("gpu", name, r["samples_per_s"], "samples/s", cond))
            rows.append(_row("gpu", name.replace("GPU", "GPU peak mem", 1), r.get("peak_gpu_mem_gib"), "GiB", cond))
    return {"file": str(path.relative_to(Path(__file__).parent.parent)), **res}, rows


def section_vision(s, root) -> tuple[dict, list]:
    from bench.frozen_vision import run

    res = run(rounds=s["vision_rounds"])
    sh = res["shape"]
    on = (f"Qwen2-VL-2B widths, {sh['vision_blocks']} vision blocks + {sh['lm_layers']} LM layers, {sh['images']} "
          f"images at {sh['max_pixels']} ({sh['vision_patches']} patches), checkpointing on, fp32, median of "
          f"{res['rounds']} interleaved rounds, {_cpu(res['torch_threads'])}")
    rows = []
    for v, r in res["results"].items():
        rows.append(_row("vision", f"frozen vision {v}: forward", r["forward_s"], "s/step", on))
        rows.append(_row("vision", f"frozen vision {v}: backward", r["backward_s"], "s/step", on))
    q = res["ratio_autograd_vs_no_grad"]
    rows.append(_row("vision", "frozen vision: backward autograd / no_grad", q["backward"], "ratio",
                     f"wall clock; by CPU time {q['cpu_backward']:.2f}"))
    rows.append(_row("vision", "frozen vision: step autograd / no_grad", q["step"], "ratio",
                     f"wall clock; by CPU time {q['cpu_step']:.2f}"))
    return res, rows


RUNNERS = {"data": section_data, "train": section_train, "eval": section_eval, "visual": section_visual,
           "start": section_start, "gpu": section_gpu, "vision": section_vision}


def run(quick: bool = True, only=SECTIONS, root=None) -> dict:
    from utils.paths import get_root
    from utils.run_meta import device_info, git_info, library_versions, load_average_1m

    root = get_root(root)
    s = SIZES[quick]
    out = {"benchmark": "suite", "quick": quick, "sizes": s, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "device": device_info(), "versions": library_versions(), **git_info(),
           "load_average_1m_start": load_average_1m(), "sections": {}, "rows": [], "errors": {}}
    for name in only:
        t0 = time.time()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            res, rows = RUNNERS[name](s, root)
        except Exception as exc:  # one broken section must not hide the others' figures
            out["errors"][name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            rows, res = [_row(name, f"{name} benchmark FAILED", None, "", f"{type(exc).__name__}: {str(exc)[:120]}")], None
        out["sections"][name] = {"seconds": round(time.time() - t0, 1), "result": res}
        out["rows"] += rows
    out["load_average_1m_end"] = load_average_1m()
    return out


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def format_table(out: dict) -> str:
    from utils.run_meta import format_load

    w = max(len(r["measure"]) for r in out["rows"]) if out["rows"] else 20
    lines = [f"bench suite ({'quick' if out['quick'] else 'full'}), {out['date']}, git {(out.get('git_sha') or 'unknown')[:10]}"
             f"{' (dirty)' if out.get('git_dirty') else ''}, 1-min load {format_load(out['load_average_1m_start'])} -> "
             f"{format_load(out['load_average_1m_end'])} (a shared machine: ratios within a section are the robust figures)",
             f"{'section':7s} {'measure':{w}s} {'value':>9s} {'unit':11s} on / conditions"]
    for r in out["rows"]:
        lines.append(f"{r['section']:7s} {r['measure']:{w}s} {_fmt(r['value']):>9s} {r['unit']:11s} {r['on']}")
    timing = ", ".join(f"{k} {v['seconds']:.0f}s" for k, v in out["sections"].items())
    lines.append(f"section wall times: {timing}")
    return "\n".join(lines)


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes: a few minutes on 2 CPU cores")
    ap.add_argument("--only", nargs="+", choices=SECTIONS + OPTIONAL, default=list(SECTIONS),
                    help="run these sections only")
    ap.add_argument("--with", dest="also", nargs="+", choices=OPTIONAL, default=[],
                    help="also run these optional sections (vision: several minutes)")
    ap.add_argument("--json", default=None, help="write the figures here (default <root>/bench/suite.json)")
    add_root_arg(ap)
    return ap


def main(argv=None):
    from utils.io import atomic_write_json
    from utils.paths import subdir

    args = make_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = run(args.quick, list(args.only) + [x for x in args.also if x not in args.only], args.root)
    path = Path(args.json) if args.json else subdir("bench", args.root) / "suite.json"
    atomic_write_json(path, out)  # first: the figures survive whatever happens to the printing
    print(format_table(out))
    print(f"wrote {path}")
    if out["errors"]:
        from utils.errors import VLMStudiesError

        raise VLMStudiesError(f"{len(out['errors'])} benchmark section(s) failed ({', '.join(out['errors'])}); the "
                              f"others' figures are in {path}")
    return out


if __name__ == "__main__":
    sys.exit(main_guard(main))
