"""What you typed is what you get: a task typed on the command line brings its own dataset.

`evaluate.py --config evals/configs/smoke_cpu.yaml --task nlvr2` used to evaluate the config's synthetic
rows and label the run nlvr2@v1. Now the data follows what was typed (`utils.config.parse_config`
reports which options came from the command line), a source other than the task's own is printed, and
metrics.json and the report name the data actually read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scoring.tasks import choose_data, get_task
from utils.cli import main_guard

REPO = Path(__file__).resolve().parent.parent
SMOKE = str(REPO / "evals" / "configs" / "smoke_cpu.yaml")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_parse_config_says_what_was_typed(tmp_path):
    from evals.runner import EvalArgs
    from utils.config import parse_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: nlvr2_synth_grounding\nsource: synthetic\nbatch_size: 4\n", encoding="utf-8")
    (args,), _, extra = parse_config((EvalArgs,), ["--config", str(cfg), "--task", "nlvr2", "--limit=5",
                                                   "--progress", "false"])
    assert args.task == "nlvr2" and args.source == "synthetic" and args.limit == 5
    assert extra.cli_keys == {"task", "limit", "progress"}
    assert extra.yaml_keys == {"task", "source", "batch_size"}


@pytest.mark.parametrize("source,split,typed,want_source,want_split,note", [
    # a task typed alone brings its own dataset; the config's source/split are named as not used
    ("synthetic", "validation", {"task"}, "pingzhili/nlvr2", "validation",
     "--task nlvr2 brings its own dataset pingzhili/nlvr2 [validation]; the config's source 'synthetic' is not used "
     "(add --source synthetic to evaluate nlvr2 on it)"),
    ("synthetic", "test", {"task"}, "pingzhili/nlvr2", "validation", "source 'synthetic' and split 'test' are not used"),
    # typed together: used as typed, and said
    ("synthetic", None, {"task", "source"}, "synthetic", "validation",
     "task nlvr2 reads source synthetic [validation] as the command line asks, not its own dataset pingzhili/nlvr2"),
    ("synthetic", "test", {"task", "split"}, "pingzhili/nlvr2", "test", "the config's source 'synthetic' is not used"),
    # nothing typed: the config's choice, said when it is not the task's own dataset
    ("synthetic", None, set(), "synthetic", "validation", "as the config asks"),
    ("pingzhili/nlvr2", None, {"task"}, "pingzhili/nlvr2", "validation", None),
    (None, None, set(), "pingzhili/nlvr2", "validation", None),
])
def test_choose_data(source, split, typed, want_source, want_split, note):
    choice = choose_data(get_task("nlvr2"), source, split, frozenset(typed))
    assert (choice.source, choice.split) == (want_source, want_split)
    if note is None:
        assert choice.note is None
    else:
        assert note in choice.note


def test_a_typed_task_is_never_run_on_the_configs_rows(root, tiny_model_dir, synthetic_dir, capsys):
    from scripts.evaluate import main

    # --task nlvr2 with the smoke config: NLVR2's own data (the hub, unreachable here) -- never the config's
    # synthetic rows under an nlvr2@v1 label
    assert main_guard(main, ["--config", SMOKE, "--model", str(tiny_model_dir), "--task", "nlvr2"]) == 2
    cap = capsys.readouterr()
    assert "--task nlvr2 brings its own dataset pingzhili/nlvr2 [validation]; the config's source 'synthetic' is " \
           "not used" in cap.out
    assert "pingzhili/nlvr2" in cap.err.strip().splitlines()[-1]
    assert all(p.stat().st_size == 0 for p in root.rglob("predictions.jsonl"))  # nothing was evaluated

    # --task and --source typed together: the task's prompt and scoring on that source, printed and recorded
    argv = ["--config", SMOKE, "--model", str(tiny_model_dir), "--task", "nlvr2", "--source", str(synthetic_dir),
            "--progress", "false", "--tensorboard", "false", "--run_name", "typed"]
    assert main_guard(main, argv) == 0
    out = capsys.readouterr().out
    assert f"task nlvr2 reads source {synthetic_dir} [validation] as the command line asks" in out
    run = root / "evals" / "typed"
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    from vlm_datasets import load_nlvr2

    fingerprint = load_nlvr2(str(synthetic_dir), "validation").info["fingerprint"]
    assert m["task"] == "nlvr2@v2" and m["dataset"]["source"] == str(synthetic_dir)
    assert m["dataset"]["split"] == "validation" and m["dataset"]["fingerprint"] == fingerprint
    assert m["dataset"]["rows_evaluated"] == m["dataset"]["num_rows"] == m["n"] == 32  # every row of the split
    assert f"data: {synthetic_dir} [validation], fingerprint {fingerprint[:12]}, 32 rows evaluated;" in out

    from scripts.analyze import main as analyze

    assert main_guard(analyze, [str(run)]) == 0
    html = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert "data read" in html and f"{synthetic_dir} [validation], fingerprint {fingerprint[:12]}, 32 rows" in html
