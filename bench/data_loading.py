"""Data-loading throughput: streaming vs cached (decode + normalise) of the same split, one run.

    python -m bench.data_loading                      # 2,000 synthetic rows at 224 px
    python -m bench.data_loading --rows 500 --image_size 56 --json out.json

Three paths over identical rows:
  streaming (local parquet)   what `--mode streaming` does for a local folder
  streaming (datasets/Hub)    the Hub code path (datasets IterableDataset, undecoded images),
                              run here over the same local files since no Hub is reachable
  cached                      manifest-checked shards written by prepare_data (one-off prepare
                              time reported separately)
Each figure is examples/s of full iteration: read + decode both images + normalise.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from utils.cli import ArgumentParser, main_guard


def _time_iter(make_iter) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = sum(1 for _ in make_iter())
    return time.perf_counter() - t0, n


def run(rows: int = 2000, image_size: int = 224, workdir: str | None = None) -> dict:
    import datasets

    import vlm_datasets.nlvr2 as nlvr2
    from vlm_datasets import load_nlvr2
    from vlm_datasets.cache import prepare_split
    from vlm_datasets.synthetic import write_synthetic_nlvr2

    work = Path(workdir or tempfile.mkdtemp(prefix="bench_data_"))
    root = work / "root"
    src = write_synthetic_nlvr2(work / "synth", {"validation": rows}, seed=0, image_size=image_size)
    files = sorted(str(p) for p in src.glob("validation-*.parquet"))

    results = {}
    t, n = _time_iter(lambda: load_nlvr2(str(src), "validation", "streaming", root=root))
    results["streaming (local parquet)"] = {"seconds": t, "examples": n}

    real = datasets.load_dataset

    def hub_like(name, split=None, streaming=False, revision=None, **kw):
        return real("parquet", data_files={split: files}, split=split, streaming=True)

    datasets.load_dataset = hub_like
    try:
        info = nlvr2.SourceInfo("bench/hub-like", "hub", "validation")
        t, n = _time_iter(lambda: (nlvr2.normalise_row(r, "validation") for r in nlvr2.iter_raw_rows(info)))
    finally:
        datasets.load_dataset = real
    results["streaming (datasets/Hub path)"] = {"seconds": t, "examples": n}

    t0 = time.perf_counter()
    prepare_split(str(src), "validation", root=root, progress=False)
    prepare_s = time.perf_counter() - t0
    t, n = _time_iter(lambda: load_nlvr2(str(src), "validation", "cached", root=root))
    results["cached"] = {"seconds": t, "examples": n, "one_off_prepare_seconds": prepare_s}
    for r in results.values():
        r["examples_per_s"] = r["examples"] / r["seconds"]
    base = results["streaming (local parquet)"]["examples_per_s"]
    for r in results.values():
        r["ratio_vs_local_streaming"] = r["examples_per_s"] / base
    return {"benchmark": "data_loading", "rows": rows, "image_size": image_size, "cpu_count": os.cpu_count(),
            "what": "examples/s of full iteration (read + decode two PNGs + normalise), same split, one process",
            "results": results}


def print_table(res: dict) -> None:
    print(f"data loading: {res['rows']} synthetic NLVR2 rows, {res['image_size']}px PNG pairs, "
          f"{res['cpu_count']} CPU(s)")
    print(f"{'path':32s} {'examples/s':>11s} {'ratio':>7s}")
    for name, r in res["results"].items():
        extra = f"  (prepare once: {r['one_off_prepare_seconds']:.1f}s)" if "one_off_prepare_seconds" in r else ""
        print(f"{name:32s} {r['examples_per_s']:11.0f} {r['ratio_vs_local_streaming']:7.2f}{extra}")


def make_parser() -> ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=2000, help="synthetic rows read by each path (default %(default)s)")
    ap.add_argument("--image_size", type=int, default=224,
                    help="side of each square image in pixels (default %(default)s)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    return ap


def main(argv=None):
    args = make_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = run(args.rows, args.image_size)
    print_table(res)
    if args.json:
        from utils.io import atomic_write_json

        atomic_write_json(args.json, res)
    return res


if __name__ == "__main__":
    sys.exit(main_guard(main))
