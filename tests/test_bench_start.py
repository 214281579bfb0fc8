"""The start-time benchmark runs end to end (so it cannot rot) and reports what it claims."""

from bench.start_time import VARIANTS, build_split, format_table, main, photo_pool, run
from utils.cli import main_guard


def test_start_time_benchmark_runs(tmp_path, capsys):
    res = run(sizes=(24, 40), workdir=str(tmp_path))
    assert [r["rows"] for r in res["results"]] == [24, 40]
    for r in res["results"]:
        assert set(r["variants"]) == set(VARIANTS)
        assert r["variants"]["cached, new"]["rows"] == r["variants"]["cached, old"]["rows"] == r["rows"]
        assert r["variants"]["cached, new"]["hf_datasets_cache_bytes"] == 0  # no third copy
        assert r["variants"]["cached, old"]["hf_datasets_cache_bytes"] > 0  # the old path's copy, measured
        assert all(v["total_s"] > 0 for v in r["variants"].values())
    assert res["extrapolated_to_nlvr2_train_s"] == {}  # sizes this small say nothing about 86k rows
    assert "not extrapolated" in format_table(res)
    # from sizes past the fixed costs, every variant gets a line (a flat one when the slope is noise)
    big = dict(res, results=[dict(r, rows=r["rows"] * 100) for r in res["results"]])
    from bench.start_time import NLVR2_TRAIN_ROWS, extrapolate

    line = extrapolate(big["results"])
    assert set(line) == set(VARIANTS) and all(t >= min(r["variants"][v]["total_s"] for r in big["results"]) - 1e-9
                                              for v, t in line.items())
    table = format_table(dict(big, extrapolated_to_nlvr2_train_s=line))
    assert "cached, new" in table and f"{NLVR2_TRAIN_ROWS} (extrapolated)" in table


def test_the_photo_split_is_photo_sized(tmp_path):
    from vlm_datasets.nlvr2 import load_nlvr2

    src = build_split(tmp_path / "s", 6, photo_pool(4))
    sizes = {e.left.size for e in load_nlvr2(str(src), "train", "streaming")} | \
        {e.right.size for e in load_nlvr2(str(src), "train", "streaming")}
    assert sizes <= {(500, 400), (640, 480), (800, 600), (1000, 800)}
    assert sum(f.stat().st_size for f in src.glob("*.parquet")) > 6 * 2 * 50_000  # not one dictionary of 4 images


def test_start_time_refuses_sizes_that_cannot_be_meant(capsys):
    assert main_guard(main, ["--sizes", "0"]) == 2
    assert "--sizes and --repeats take positive numbers" in capsys.readouterr().err


def test_the_suite_section_reports_every_variant(tmp_path):
    from bench.run import section_start

    res, rows = section_start({"start_sizes": (16, 24), "start_repeats": 1}, tmp_path)
    measures = [r["measure"] for r in rows]
    assert sum("to first step @ 24 rows" in m for m in measures) == len(VARIANTS)
    assert any("datasets-cache copy" in m for m in measures)
