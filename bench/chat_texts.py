"""What `training.data.ChatTexts` saves: the collator with and without it, and a smoke run with and without it.

    python -m bench.chat_texts                         # 40 batches of 16, then 2 x 2 runs of 120 smoke steps
    python -m bench.chat_texts --steps 0 --json out.json   # the collator alone

ChatTexts renders the chat template once per message shape and splices each example's texts in; without
it, TRL renders every example through Jinja (twice). Three figures, both variants in one run:
  collator     ms per batch of the smoke config's rows (synthetic grounding statements, batch 16), the
               two variants alternating on the same batches
  length guard s to count 3000 distinct statements (`LengthGuard.prime`: a launch on a prepared split
               counts every distinct statement of the split this way)
  training     s per step of scripts/train.py's smoke config for `--steps` steps, ChatTexts on and off
               (the collator runs in the data-loader worker there, beside the training step)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from utils.cli import ArgumentParser, main_guard

SMOKE = Path(__file__).resolve().parent.parent / "training" / "configs" / "smoke_cpu.yaml"


def collator_ms(root: str, batches: int, batch_size: int) -> dict:
    """Median ms per batch of the run's collator with ChatTexts (`ours`) and rendering per example (`trl`)."""
    import copy

    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from training.data import GuardedCollator, load_train_data
    from training.options import DataOptions
    from utils.models import load_processor

    processor = load_processor("local:small", root=root)
    opts = DataOptions(source="synthetic", eval_split=None, families=["grounding_left", "grounding_right"])
    data = load_train_data(opts, processor, 512, 0, root)
    inner = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    ours, trl = GuardedCollator(inner, processor, 512), GuardedCollator(inner, processor, 512)
    trl.texts = None
    rows = [data.dataset[i % len(data.dataset)] for i in range(batch_size * batches)]
    times: dict = {"ours": [], "trl": []}
    for b in range(batches):
        batch = rows[b * batch_size:(b + 1) * batch_size]
        for name, coll in (("ours", ours), ("trl", trl)) if b % 2 else (("trl", trl), ("ours", ours)):
            x = copy.deepcopy(batch)
            t0 = time.perf_counter()
            coll(x)
            times[name].append((time.perf_counter() - t0) * 1000)
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def prime_s(root: str, sentences: int = 3000, repeats: int = 3) -> dict:
    """Seconds for the length guard to count `sentences` distinct statements (`LengthGuard.prime`, what a launch
    on a prepared split does), with ChatTexts (`ours`) and with every shape rendered by TRL (`trl`)."""
    from training.data import ChatTexts, LengthGuard
    from utils.models import load_processor

    processor = load_processor("local:small", root=root)
    texts = [f"There are {i % 7} dogs and {i} cats in the left image number {i}." for i in range(sentences)]
    out: dict = {"ours": [], "trl": []}
    for rep in range(repeats):
        for name in ("ours", "trl") if rep % 2 == 0 else ("trl", "ours"):
            guard = LengthGuard(processor, "tf", 512)
            if name == "trl":
                guard.texts = ChatTexts(processor)
                guard.texts._compile = lambda prompt, completion: None  # no shape compiled: TRL renders each
            t0 = time.perf_counter()
            guard.prime(texts)
            out[name].append(time.perf_counter() - t0)
    return {k: round(statistics.median(v), 3) for k, v in out.items()}


def training_s_per_step(root: str, steps: int, repeats: int = 2) -> dict:
    """Seconds per step of the smoke config for `steps` steps, ChatTexts on (`ours`) and off (`trl`): the median
    of `repeats` runs each, the variants alternating (ours, trl, trl, ours, ...) so load drifts hit both."""
    import training.data as data_mod
    from training.options import train_options
    from training.trainer import train

    out: dict = {"ours": [], "trl": []}
    original = data_mod.GuardedCollator.__init__
    order = [v for i in range(repeats) for v in (("ours", "trl") if i % 2 == 0 else ("trl", "ours"))]
    for i, name in enumerate(order):
        def init(self, *a, _orig=original, _off=(name == "trl"), **k):
            _orig(self, *a, **k)
            if _off:
                self.texts = None

        data_mod.GuardedCollator.__init__ = init
        try:
            opts = train_options(config=SMOKE, overrides={"run_name": f"bench-{name}-{i}", "max_steps": steps,
                                                          "eval_split": "none", "report_to": "none",
                                                          "disable_tqdm": True, "save_steps": 10 ** 6},
                                 root=root)
            results = train(opts)
        finally:
            data_mod.GuardedCollator.__init__ = original
        out[name].append(results["train_runtime"] / steps)
    return {k: round(statistics.median(v), 4) for k, v in out.items()}


def run(batches: int = 40, batch_size: int = 16, steps: int = 120, root: str | None = None, repeats: int = 2) -> dict:
    from utils.run_meta import load_average_1m

    with tempfile.TemporaryDirectory() as tmp:
        root = root or tmp
        res = {"load_average_1m_before": load_average_1m(), "collator_ms_per_batch": collator_ms(root, batches,
                                                                                                  batch_size),
               "guard_prime_s_3000_sentences": prime_s(root)}
        if steps:
            res["training_s_per_step"] = training_s_per_step(root, steps, repeats)
        res["load_average_1m_after"] = load_average_1m()
    return res


def format_table(res: dict) -> str:
    c = res["collator_ms_per_batch"]
    lines = [f"collator, ms per batch:   with ChatTexts {c['ours']:8.2f}   TRL rendering {c['trl']:8.2f}   "
             f"saved {c['trl'] - c['ours']:.2f}"]
    g = res["guard_prime_s_3000_sentences"]
    lines.append(f"length guard, 3000 prompts: with ChatTexts {g['ours']:8.3f} s TRL rendering {g['trl']:8.3f} s")
    t = res.get("training_s_per_step")
    if t:
        lines.append(f"smoke training, s/step:   with ChatTexts {t['ours']:8.4f}   TRL rendering {t['trl']:8.4f}   "
                     f"ratio {t['trl'] / t['ours']:.3f}")
    lines.append(f"1-min load average: {res['load_average_1m_before']} -> {res['load_average_1m_after']}")
    return "\n".join(lines)


def make_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--batches", type=int, default=40, help="collator batches per variant (default %(default)s)")
    p.add_argument("--batch_size", type=int, default=16, help="rows per batch (default %(default)s)")
    p.add_argument("--steps", type=int, default=120, help="smoke training steps per variant (0: collator only)")
    p.add_argument("--repeats", type=int, default=2, help="smoke runs per variant (median reported)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    return p


def main(argv=None) -> dict:
    args = make_parser().parse_args(argv)
    res = run(args.batches, args.batch_size, args.steps, repeats=args.repeats)
    print(format_table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1), encoding="utf-8")
    return res


if __name__ == "__main__":
    sys.exit(main_guard(main))
