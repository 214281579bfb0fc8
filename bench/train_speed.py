"""Training throughput: our training path vs a minimal bare TRL `SFTTrainer`, same model, data and settings.

    python -m bench.train_speed                                   # smoke_cpu.yaml settings, 40 interleaved steps
    python -m bench.train_speed --steps 100 --repeats 3           # steadier
    python -m bench.train_speed --steps 20 --rows 256             # quicker
    python -m bench.train_speed --profile /tmp/prof               # also a cProfile of each variant's steps
    python -m bench.train_speed --config training/configs/smoke_cpu.yaml --workers 1 --json out.json

Two variants:

  ours  what `scripts/train.py` runs: `training.model.load_for_training`, `training.data.load_train_data`
        (cached shards, length guard, lazy decode through `vlm_datasets.normalise_row` + `build_inputs`),
        `training.trainer.build_trainer` (VLMSFTTrainer, GuardedCollator, the throughput callback)
  trl   the TRL VLM example, bare: a `datasets.Dataset` of the same rows with `images` / `prompt` /
        `completion` columns (images as `datasets.Image`, decoded on access), `SFTTrainer(model, args,
        train_dataset, processing_class, peft_config)` with the same LoRA targets and `SFTConfig` values

Both use the options of `--config` (plus `--set` overrides) for model, LoRA, pixel limits, batch size,
precision, threads and seed; saving, logging integrations and evaluation are off in both, and
`dataloader_num_workers` is `--workers` (default 0: data work is on the clock instead of hidden on a
second core, which a shared machine may not have free).

Speed is measured interleaved: both trainers are built in one child process, pinned to one CPU (Linux), and
`trainer.train()` of each runs in its own thread, the two taking turns step by step (one runs while the
other waits), so load from other processes hits both alike. Each step is timed from getting the turn to its end (fetching
the batch, collating, forward, backward, optimizer, callbacks), by wall clock and by the thread's CPU time.
Figures: samples/s from the median step time, and ours/trl as the median of the step-by-step ratios.
Memory is measured separately: each variant alone in a fresh child process (peak RSS, and its growth after
the imports; peak GPU memory when on a GPU), which also gives a stand-alone samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from utils.cli import ArgumentParser, main_guard
from utils.run_meta import current_rss_mib, peak_rss_mib

VARIANTS = ("ours", "trl")
DEFAULT_CONFIG = "training/configs/smoke_cpu.yaml"


def _options(config: str, overrides: list[str], steps: int, workers: int, rows: int | None, root: str):
    """The training options of `config` for a benchmark run: saving, reporting and evaluation off."""
    from training.options import parse_train_options

    argv = ["--config", config, *overrides, "--max_steps", str(steps), "--report_to", "none",
            "--save_strategy", "no", "--eval_split", "none", "--accuracy_eval_steps", "0",
            "--dataloader_num_workers", str(workers), "--logging_steps", str(10 * steps), "--root", root]
    if rows:
        argv += ["--train_limit", str(rows)]
    (model_opts, lora_opts, data_opts, args), _, _ = parse_train_options(argv)
    return model_opts, lora_opts, data_opts, args


class _Turns:
    """Two threads take turns: `wait(i)` blocks until it is thread i's turn (or the other has finished)."""

    def __init__(self):
        import threading

        self.cond, self.turn, self.finished = threading.Condition(), 0, set()

    def wait(self, i: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i or (1 - i) in self.finished)

    def give(self, i: int) -> None:
        with self.cond:
            self.turn = 1 - i
            self.cond.notify_all()

    def finish(self, i: int) -> None:
        with self.cond:
            self.finished.add(i)
            self.turn = 1 - i
            self.cond.notify_all()


class _StepTimer:
    """Wall and CPU time of each step after `warmup`, from the start of the step's turn (its batch fetch
    included) to its end. With `turns`, the step hands the turn to the other trainer and waits for it back."""

    def __init__(self, warmup: int, turns: _Turns | None = None, index: int = 0):
        from transformers import TrainerCallback

        timer = self

        def now():
            return time.perf_counter(), time.thread_time()

        class CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                if timer.turns is not None:
                    timer.turns.wait(timer.index)
                timer.mark = now()

            def on_step_end(self, args, state, control, **kwargs):
                t = now()
                if state.global_step > timer.warmup:
                    timer.wall.append(t[0] - timer.mark[0])
                    timer.cpu.append(t[1] - timer.mark[1])
                if state.global_step == timer.warmup and timer.profiler is not None:
                    timer.profiler.enable()
                if timer.turns is not None:
                    timer.turns.give(timer.index)
                    timer.turns.wait(timer.index)
                timer.mark = now()

        self.warmup, self.turns, self.index = warmup, turns, index
        self.mark, self.wall, self.cpu, self.profiler = None, [], [], None
        self.callback = CB()


def _baseline_dataset(data_opts, processor, root):
    """The same rows as our cached dataset, in TRL's VLM example form (images decoded by `datasets`)."""
    import datasets

    from training.data import ensure_cached
    from vlm_datasets.nlvr2 import load_nlvr2
    from vlm_datasets.prompts import build_inputs

    ensure_cached(data_opts.source, data_opts.split, root)
    split = load_nlvr2(data_opts.source, data_opts.split, "cached", root=root, limit=data_opts.train_limit)
    ds = datasets.Dataset.from_parquet([str(f) for f in split.cache.files])
    if data_opts.train_limit:
        ds = ds.select(range(min(data_opts.train_limit, len(ds))))
    if data_opts.families:
        fams = set(data_opts.families)
        ds = ds.filter(lambda fam: fam in fams, input_columns="family")

    def to_trl(row):
        ex = build_inputs({"left": None, "right": None, "sentence": row["sentence"].strip(),
                           "label": bool(row["label"])}, data_opts.template)
        return {"images": [row["image0"], row["image1"]], "prompt": ex["prompt"], "completion": ex["completion"]}

    ds = ds.map(to_trl, remove_columns=ds.column_names)
    return ds.cast_column("images", datasets.List(datasets.Image()))


def _options_for(cfg: dict):
    import torch

    opts = _options(cfg["config"], cfg["overrides"], cfg["warmup"] + cfg["steps"], cfg["workers"], cfg["rows"],
                    cfg["root"])
    if opts[0].torch_threads:
        torch.set_num_threads(opts[0].torch_threads)
    return opts


def build(variant: str, cfg: dict, callbacks: list):
    """`(trainer, rows, args)` of one variant, from the options of `cfg` (a fresh copy of them)."""
    import copy

    from training.model import load_for_training, lora_config
    from utils.seed import seed_everything

    model_opts, lora_opts, data_opts, args = _options_for(cfg)
    args = copy.deepcopy(args)
    # never the Trainer's default `trainer_output/` in the caller's working directory
    args.output_dir = str(Path(tempfile.mkdtemp(prefix=f"train_speed_{variant}_")))
    seed_everything(args.seed)
    model, processor = load_for_training(model_opts, data_opts, args, cfg["root"])
    if variant == "ours":
        from training.data import load_train_data
        from training.trainer import _ThroughputStart, build_trainer

        data = load_train_data(data_opts, processor, args.max_length, args.seed, cfg["root"])
        ref: list = [None]
        trainer = build_trainer(model, processor, data, args, lora_opts, args.max_length, None,
                                [_ThroughputStart(ref), *callbacks])
        ref[0] = trainer
        return trainer, data.rows, args
    from trl import SFTConfig, SFTTrainer

    ds = _baseline_dataset(data_opts, processor, cfg["root"])
    plain = {f: getattr(args, f) for f in SFTConfig.__dataclass_fields__ if f in args.__dict__
             and SFTConfig.__dataclass_fields__[f].init}
    sft_args = SFTConfig(**{**plain, "max_length": None})  # no truncation, as in ours (it would cut images)
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=ds, processing_class=processor,
                         peft_config=lora_config(lora_opts, model), callbacks=list(callbacks))
    return trainer, len(ds), args


def _settings(args) -> dict:
    import torch

    return {"torch_threads": torch.get_num_threads(), "batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps, "bf16": bool(args.bf16),
            "activation_checkpointing": bool(args.activation_checkpointing or args.gradient_checkpointing)}


def child_alone(variant: str, cfg: dict) -> dict:
    """One variant alone in this process: its peak memory (and a stand-alone speed)."""
    import torch

    t_start = time.perf_counter()
    _options_for(cfg)
    rss_after_imports = current_rss_mib()
    timer = _StepTimer(cfg["warmup"])
    if cfg.get("profile"):
        import cProfile

        timer.profiler = cProfile.Profile()
    trainer, rows, args = build(variant, cfg, [timer.callback])
    setup_s = time.perf_counter() - t_start
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    if timer.profiler is not None:
        timer.profiler.disable()
        timer.profiler.dump_stats(cfg["profile"])
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    out = {"variant": variant, "rows": rows, "timed_steps": len(timer.wall),
           "samples_per_s": per_step / statistics.median(timer.wall), "setup_s": setup_s,
           "peak_rss_mib": peak_rss_mib(), "rss_after_imports_mib": rss_after_imports, **_settings(args)}
    if cuda:
        out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return out


def child_interleaved(cfg: dict) -> dict:
    """Both variants in this process, `trainer.train()` of each in a thread, taking turns step by step."""
    import threading

    pinned = hasattr(os, "sched_setaffinity")  # Linux only; recorded, as the figures depend on it
    if pinned:
        # One CPU for both threads: on a shared machine the two cores (often hyperthreads) are loaded unequally,
        # and a thread placed on the busier one ran ~10% slower for a whole round (seen here, CPU time too).
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    turns = _Turns()
    # odd rounds build and start trl first: allocation order and who goes first alternate between rounds
    order = VARIANTS if cfg.get("round", 0) % 2 == 0 else VARIANTS[::-1]
    timers = {v: _StepTimer(cfg["warmup"], turns, i) for i, v in enumerate(order)}
    built = {v: build(v, cfg, [timers[v].callback]) for v in order}
    errors = {}

    def train(i, v):
        try:
            built[v][0].train()
        except BaseException as exc:  # noqa: BLE001  (reported below; the other thread must not wait forever)
            errors[v] = f"{type(exc).__name__}: {exc}"
        finally:
            turns.finish(i)

    threads = [threading.Thread(target=train, args=(i, v), name=f"train-{v}") for i, v in enumerate(order)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"interleaved training failed: {errors}")
    args = built["ours"][2]
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    w, c = {v: timers[v].wall for v in VARIANTS}, {v: timers[v].cpu for v in VARIANTS}
    n = min(len(w["ours"]), len(w["trl"]))
    return {"rows": {v: built[v][1] for v in VARIANTS}, "timed_steps": n, **_settings(args),
            "pinned_to_one_cpu": pinned,
            "samples_per_s": {v: per_step / statistics.median(w[v]) for v in VARIANTS},
            "samples_per_cpu_s": {v: per_step / statistics.median(c[v]) for v in VARIANTS},
            # ours/trl speed = trl's step time / ours', step by step
            "ratio_median_of_steps": statistics.median(w["trl"][k] / w["ours"][k] for k in range(n)),
            "ratio_cpu_median_of_steps": statistics.median(c["trl"][k] / c["ours"][k] for k in range(n)),
            "ratio_of_totals": sum(w["trl"][:n]) / sum(w["ours"][:n]), "step_wall_s": w, "step_cpu_s": c}


def prepare(cfg: dict) -> None:
    """Build what both children read (local model, synthetic set, cache shards) once, before timing."""
    from training.data import ensure_cached
    from utils.models import resolve_model_path

    model_opts, _, data_opts, _ = _options(cfg["config"], cfg["overrides"], 1, 0, cfg["rows"], cfg["root"])
    resolve_model_path(model_opts.model, cfg["root"])
    ensure_cached(data_opts.source, data_opts.split, cfg["root"])


def _run_child(kind: str, cfg: dict) -> dict:
    # A folder, not a NamedTemporaryFile: Windows does not let the child open a file the parent holds open.
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "TRANSFORMERS_VERBOSITY": "error", "PYTHONIOENCODING": "utf-8"}
        cmd = [sys.executable, "-m", "bench.train_speed", "--child", kind, "--child-cfg", json.dumps(cfg),
               "--child-out", str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"train_speed child '{kind}' failed:\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text(encoding="utf-8"))


def run(config: str = DEFAULT_CONFIG, overrides: list[str] | None = None, steps: int = 40, warmup: int = 5,
        repeats: int = 1, workers: int = 0, rows: int | None = 512, root: str | None = None,
        profile: str | None = None) -> dict:
    """`repeats` interleaved runs (speed) and one run of each variant alone (memory), each in a child process."""
    from utils.run_meta import device_info, git_info, load_average_1m

    root = str(root or Path(tempfile.mkdtemp(prefix="bench_train_")) / "root")
    cfg = {"config": config, "overrides": list(overrides or []), "steps": steps, "warmup": warmup,
           "workers": workers, "rows": rows, "root": root}
    prepare(cfg)
    rounds = []
    for i in range(repeats):
        rounds.append(_run_child("interleaved", dict(cfg, round=i)))
        r = rounds[-1]
        print(f"[train_speed] interleaved round {i + 1}/{repeats}: ours {r['samples_per_s']['ours']:.1f}, trl "
              f"{r['samples_per_s']['trl']:.1f} samples/s, ours/trl {r['ratio_median_of_steps']:.3f}",
              file=sys.stderr, flush=True)
    alone = {}
    for v in VARIANTS:
        alone[v] = _run_child(v, dict(cfg, profile=f"{profile}.{v}.prof" if profile else None))
        print(f"[train_speed] {v} alone: peak RSS {alone[v]['peak_rss_mib']:.0f} MiB, "
              f"{alone[v]['samples_per_s']:.1f} samples/s", file=sys.stderr, flush=True)
    settings = {k: rounds[0][k] for k in ("batch_size", "gradient_accumulation_steps", "bf16",
                                          "activation_checkpointing", "torch_threads", "pinned_to_one_cpu")}
    results = {}
    for v in VARIANTS:
        results[v] = {"samples_per_s": max(r["samples_per_s"][v] for r in rounds),
                      "samples_per_cpu_s": max(r["samples_per_cpu_s"][v] for r in rounds),
                      "alone_samples_per_s": alone[v]["samples_per_s"], "setup_s": alone[v]["setup_s"],
                      "peak_rss_mib": alone[v]["peak_rss_mib"],
                      "rss_growth_mib": alone[v]["peak_rss_mib"] - alone[v]["rss_after_imports_mib"],
                      "rows": alone[v]["rows"]}
        if "peak_gpu_mem_gib" in alone[v]:
            results[v]["peak_gpu_mem_gib"] = alone[v]["peak_gpu_mem_gib"]
    round_ratios = [r["ratio_median_of_steps"] for r in rounds]
    return {
        "benchmark": "train_speed", "config": config, "overrides": cfg["overrides"],
        "what": "training steps (batch fetch, collation, forward, backward, optimizer, callbacks) after the first "
                f"{warmup} of {warmup + steps}; speed: both trainers in one process taking turns step by step "
                f"({repeats} round(s)), samples/s from the median step; ratio ours/trl: median of the step-by-step "
                "ratios; memory: each variant alone in a fresh process",
        "settings": settings | {"rows": results["ours"]["rows"], "dataloader_num_workers": workers,
                                "timed_steps": steps, "warmup_steps": warmup},
        "results": results,
        "ratio_ours_vs_trl": statistics.median(round_ratios),
        "ratio_ours_vs_trl_cpu": statistics.median(r["ratio_cpu_median_of_steps"] for r in rounds),
        "ratio_ours_vs_trl_of_totals": statistics.median(r["ratio_of_totals"] for r in rounds),
        "round_ratios": round_ratios, "rounds": rounds, "alone": alone, "device": device_info(), **git_info(),
        "load_average_1m": load_average_1m(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def format_table(res: dict) -> str:
    from utils.run_meta import format_load

    s, r = res["settings"], res["results"]
    d = res["device"]
    dev = d.get("gpu") or f"CPU ({d.get('cpu_count')} cores, {s['torch_threads']} torch thread(s))"
    lines = [f"training throughput, {res['config']} {' '.join(res['overrides'])}: batch {s['batch_size']} x accum "
             f"{s['gradient_accumulation_steps']}, {'bf16' if s['bf16'] else 'fp32'}, activation checkpointing "
             f"{'on' if s['activation_checkpointing'] else 'off'}, {s['dataloader_num_workers']} dataloader workers, "
             f"{s['rows']} rows, {s['timed_steps']} timed steps, on {dev}",
             f"{'variant':28s} {'samples/s':>10s} {'per CPU s':>10s} {'alone':>8s} {'setup s':>8s} "
             f"{'peak RSS MiB':>13s} {'RSS growth':>11s}"]
    names = {"ours": "ours (scripts/train.py path)", "trl": "bare TRL SFTTrainer"}
    for v in VARIANTS:
        x = r[v]
        gpu = f"  peak GPU {x['peak_gpu_mem_gib']:.2f} GiB" if "peak_gpu_mem_gib" in x else ""
        lines.append(f"{names[v]:28s} {x['samples_per_s']:10.1f} {x['samples_per_cpu_s']:10.1f} "
                     f"{x['alone_samples_per_s']:8.1f} {x['setup_s']:8.1f} {x['peak_rss_mib']:13.0f} "
                     f"{x['rss_growth_mib']:11.0f}{gpu}")
    lines.append(f"ours / bare TRL: {res['ratio_ours_vs_trl']:.3f} (median of step-by-step ratios, interleaved; "
                 f"by CPU time {res['ratio_ours_vs_trl_cpu']:.3f}, of totals {res['ratio_ours_vs_trl_of_totals']:.3f}"
                 f"{'; rounds ' + ', '.join(f'{x:.3f}' for x in res['round_ratios']) if len(res['round_ratios']) > 1 else ''}"
                 f"); 1-min load {format_load(res['load_average_1m'])}")
    return "\n".join(lines)


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="training config whose options both variants use")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                    help="training option overrides for both variants, e.g. --set per_device_train_batch_size=8")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per run (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed first steps (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="interleaved rounds; the median ratio counts (default %(default)s)")
    ap.add_argument("--workers", type=int, default=0, help="dataloader_num_workers for both (default %(default)s)")
    ap.add_argument("--rows", type=int, default=512, help="first N training rows (default %(default)s)")
    ap.add_argument("--root", default=None, help="artifact root for the model/data built (default: a temp dir)")
    ap.add_argument("--profile", default=None,
                    help="write cProfile stats of the timed steps (variant alone) to PREFIX.<variant>.prof")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--child", choices=(*VARIANTS, "interleaved"), help=argparse.SUPPRESS)
    ap.add_argument("--child_cfg", help=argparse.SUPPRESS)
    ap.add_argument("--child_out", help=argparse.SUPPRESS)
    return ap


def main(argv=None):
    args = make_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        cfg = json.loads(args.child_cfg)
        res = child_interleaved(cfg) if args.child == "interleaved" else child_alone(args.child, cfg)
        Path(args.child_out).write_text(json.dumps(res), encoding="utf-8")
        return res
    overrides = []
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=VALUE pairs, got '{item}'")
        overrides += [f"--{key.lstrip('-')}", value]
    res = run(args.config, overrides, args.steps, args.warmup, args.repeats, args.workers, args.rows,
              args.root, args.profile)
    from bench import emit

    return emit(res, format_table(res), args.json)


if __name__ == "__main__":
    sys.exit(main_guard(main))
