"""Training speed: the benchmark of ours vs bare TRL runs end to end; the length guard counts what the
collator builds."""

import copy

import pytest


def test_guard_length_is_the_collated_length(tiny_model_dir, synthetic_dir, root):
    """The length guard's count (TRL's chat rendering, visual tokens by the resize rule) is what the run's
    collator builds, row by row."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from training.data import GuardedCollator, load_train_data
    from training.options import DataOptions
    from utils.models import load_processor

    processor = load_processor(str(tiny_model_dir))
    data = load_train_data(DataOptions(source=str(synthetic_dir), eval_split=None), processor, 512, 0)
    collate = GuardedCollator(DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True),
                              processor, 512)
    rows = [data.dataset[i] for i in range(16)]
    batch = collate(copy.deepcopy(rows))
    for i, r in enumerate(rows):
        sentence = r["prompt"][0]["content"][-1]["text"].split("\n")[0]
        label = r["completion"][0]["content"][0]["text"] == "True"
        assert data.guard.length(sentence, label, [im.size for im in r["images"]])[0] == \
            int(batch["attention_mask"][i].sum())


def test_train_speed_benchmark_runs_both_variants(tmp_path, capsys):
    from bench.train_speed import format_table, run

    res = run(steps=3, warmup=1, repeats=1, rows=48, root=str(tmp_path / "root"),
              overrides=["--per_device_train_batch_size", "4"])
    inter = res["rounds"][0]
    assert inter["timed_steps"] == 3 and len(inter["step_wall_s"]["ours"]) == len(inter["step_wall_s"]["trl"]) == 3
    assert inter["batch_size"] == 4
    # same rows for both: the family filter and the row limit applied alike
    assert inter["rows"]["ours"] == inter["rows"]["trl"] == res["alone"]["trl"]["rows"] > 0
    for v in ("ours", "trl"):
        r = res["results"][v]
        assert r["samples_per_s"] > 0 and r["alone_samples_per_s"] > 0
        assert r["peak_rss_mib"] > r["rss_growth_mib"] > 0
    w = inter["step_wall_s"]
    assert res["ratio_ours_vs_trl"] == pytest.approx(sorted(t / o for o, t in zip(w["ours"], w["trl"]))[1])
    print(format_table(res))
    assert "bare TRL SFTTrainer" in capsys.readouterr().out


def test_suite_prints_one_table_and_writes_json(tmp_path, capsys):
    import json

    from bench.run import main

    out = main(["--quick", "--only", "visual", "gpu", "--root", str(tmp_path), "--json", str(tmp_path / "s.json")])
    saved = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert saved["rows"] == out["rows"] and not saved["errors"]
    visual = {r["measure"]: r["value"] for r in out["rows"] if r["section"] == "visual"}
    assert visual["visual tokens @ max_pixels 512*28*28"] == 988  # the H100 run's 988 per pair
    assert any(r["section"] == "gpu" and "NOT measured in this run" in r["on"] for r in out["rows"])
    printed = capsys.readouterr().out
    assert "section measure" in printed and "visual tokens @ max_pixels 1280*28*28" in printed
