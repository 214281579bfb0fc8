"""bench.frozen_vision runs both variants side by side (on the tiny model's widths here; timings not asserted)."""

from bench.frozen_vision import format_table, run


def test_frozen_vision_bench_runs_both_variants_interleaved(one_torch_thread):
    res = run(vision_blocks=1, lm_layers=1, pixels=16, rounds=2, widths="tiny")
    assert set(res["results"]) == {"autograd", "no_grad"}
    for r in res["results"].values():
        assert all(len(x) == 2 for x in r["times"].values()) and r["backward_s"] > 0 and r["cpu_backward_s"] > 0
    a, n = res["results"]["autograd"], res["results"]["no_grad"]
    # the same work is needed; with the tower in the graph the step runs more (backward + recompute)
    assert a["model_tflop"] == n["model_tflop"] and a["executed_tflop"] > n["executed_tflop"]
    assert res["shape"]["vision_patches"] == 4 * res["shape"]["visual_tokens"] > 0 and res["shape"]["images"] == 2
    assert set(res["ratio_autograd_vs_no_grad"]) == {"forward", "backward", "step", "cpu_forward", "cpu_backward",
                                                     "cpu_step"}
    assert "autograd / no_grad by CPU time" in format_table(res)
