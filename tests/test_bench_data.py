"""The data-loading benchmark runs end to end (so it cannot rot) and reports every path it claims."""

from bench.data_loading import print_table, run


def test_data_loading_benchmark_runs(tmp_path, capsys):
    res = run(rows=24, image_size=56, workdir=str(tmp_path))
    assert set(res["results"]) == {"streaming (local parquet)", "streaming (datasets/Hub path)", "cached"}
    assert all(r["examples"] == 24 and r["examples_per_s"] > 0 for r in res["results"].values())
    print_table(res)
    assert "examples/s" in capsys.readouterr().out
