"""The eval fed by DataLoader workers (evals.feed): the same batches, predictions, bad rows and resume as in-process."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from utils.cli import main_guard

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def evaluate(*argv):
    from scripts.evaluate import main

    return main_guard(main, [*argv, "--progress", "false"])


def _png(size, colour=(200, 30, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def mixed_dir(synthetic_dir, tmp_path_factory):
    """The synthetic validation split (32 rows, every family) with images of several sizes and three bad rows:
    a corrupt image (row 3), a 2000x5 strip Qwen2-VL's processor refuses (row 10), and a corrupt image in a
    row of a family the grounding task does not keep."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(sorted(synthetic_dir.glob("validation-*.parquet"))[0]).to_pylist()
    for i in range(0, len(rows), 3):
        rows[i]["image1"] = {"bytes": _png((90 + 7 * i, 64)), "path": None}
    rows[3]["image0"] = {"bytes": b"not an image at all", "path": None}
    rows[10]["image1"] = {"bytes": _png((2000, 5)), "path": None}
    other = next(i for i, r in enumerate(rows) if i not in (3, 10) and not r["family"].startswith("grounding"))
    rows[other]["image0"] = {"bytes": _png((56, 56))[:30], "path": None}
    out = tmp_path_factory.mktemp("data") / "mixed"
    out.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), out / "validation-00000.parquet")
    return out


def _run(root, name, model_dir, data_dir, *extra):
    assert evaluate("--model", str(model_dir), "--source", str(data_dir), "--split", "validation", "--batch_size", "4",
                    "--run_name", name, *extra) == 0
    run = root / "evals" / name
    return (run / "predictions.jsonl").read_text(encoding="utf-8"), \
        json.loads((run / "metrics.json").read_text(encoding="utf-8")), run


def test_collated_single_prompts_equal_the_batched_processor(tiny_model_and_processor, mixed_dir):
    """Workers encode example by example; padded together, that is the batch the processor makes at once."""
    import torch

    from scoring.modes import collate_encoded, encode_prompts
    from vlm_datasets import load_nlvr2
    from vlm_datasets.prompts import get_template

    _, processor = tiny_model_and_processor
    examples = list(load_nlvr2(str(mixed_dir), "validation", quiet=True))[:8]
    assert len({ex.right.size for ex in examples}) > 2  # images of several sizes, prompts of several lengths
    t = get_template("tf")
    whole = encode_prompts(processor, examples, t)
    assert len(set(whole["attention_mask"].sum(-1).tolist())) > 1
    one_by_one = collate_encoded(processor, [dict(encode_prompts(processor, [ex], t)) for ex in examples])
    assert set(one_by_one) == set(whole)
    for k in whole:
        assert torch.equal(one_by_one[k], whole[k]), k


def test_workers_give_the_same_predictions_bad_rows_and_resume(root, tiny_model_dir, mixed_dir, capsys):
    from vlm_datasets import load_nlvr2

    in_process = load_nlvr2(str(mixed_dir), "validation", quiet=True)
    n_good = len(list(in_process))
    bad_uids = [u for u, _ in in_process.bad_rows]
    assert len(bad_uids) == 3

    p0, m0, run0 = _run(root, "w0", tiny_model_dir, mixed_dir, "--task", "nlvr2", "--num_workers", "0")
    err0 = capsys.readouterr().err
    p2, m2, run2 = _run(root, "w2", tiny_model_dir, mixed_dir, "--task", "nlvr2", "--num_workers", "2")
    err2 = capsys.readouterr().err
    assert p2 == p0 and len(p0.splitlines()) == n_good
    assert {k: v for k, v in m2.items() if k != "run_name"} == {k: v for k, v in m0.items() if k != "run_name"}
    # the bad rows are named, in row order, with their reasons: the corrupt images and the refused strip
    assert [b[0] for b in m2["bad_rows"]] == bad_uids and m2["skipped_bad_rows"] == 3
    assert any("aspect ratio" in b[1] for b in m2["bad_rows"]) and "skipped 3 bad row(s) of 32" in err2
    assert "skipped 3 bad row(s) of 32" in err0
    sessions = json.loads((run2 / "run_meta.json").read_text(encoding="utf-8"))["sessions"]
    assert sessions[0]["feed"]["num_workers"] == 2 and sessions[0]["feed"]["encoded_in_workers"]

    # killed after 5 predictions (batch 2 half done): the resumed run with workers equals the unbroken one
    lines = p2.splitlines(keepends=True)
    (run2 / "predictions.jsonl").write_text("".join(lines[:5]), encoding="utf-8")
    (run2 / "metrics.json").unlink()
    p2b, m2b, _ = _run(root, "w2", tiny_model_dir, mixed_dir, "--task", "nlvr2", "--num_workers", "2")
    assert p2b == p0 and m2b["n"] == m0["n"] and m2b["accuracy"] == m0["accuracy"]

    # on_error raise: the first bad row, one line, from a worker as in-process
    assert evaluate("--model", str(tiny_model_dir), "--source", str(mixed_dir), "--task", "nlvr2", "--run_name", "r",
                    "--on_error", "raise", "--num_workers", "2") == 2
    assert f"bad row in {mixed_dir} [validation] {bad_uids[0]}" in capsys.readouterr().err


def test_a_task_filter_runs_before_decoding(root, tiny_model_dir, mixed_dir, monkeypatch):
    """The grounding task decodes only grounding rows: a corrupt image elsewhere is never read; --limit counts kept
    examples; workers 0 and 2 agree."""
    from vlm_datasets.nlvr2 import NLVR2Split

    decoded = []
    real = NLVR2Split.normalise_item
    monkeypatch.setattr(NLVR2Split, "normalise_item", lambda self, row: decoded.append(row["family"]) or real(self, row))
    p0, m0, _ = _run(root, "g0", tiny_model_dir, mixed_dir, "--task", "nlvr2_synth_grounding", "--num_workers", "0")
    grounding = [json.loads(line)["family"] for line in p0.splitlines()]
    assert set(decoded) == set(grounding) == {"grounding_left", "grounding_right"}
    assert len(decoded) == len(grounding) + m0["skipped_bad_rows"] and m0["skipped_bad_rows"] < 3
    p2, m2, _ = _run(root, "g2", tiny_model_dir, mixed_dir, "--task", "nlvr2_synth_grounding", "--num_workers", "2")
    assert p2 == p0 and m2["bad_rows"] == m0["bad_rows"]
    p3, m3, _ = _run(root, "g3", tiny_model_dir, mixed_dir, "--task", "nlvr2_synth_grounding", "--num_workers", "2",
                     "--limit", "5")
    uids = lambda text: [json.loads(line)["uid"] for line in text.splitlines()]  # noqa: E731
    assert uids(p3) == uids(p0)[:5] and m3["n"] == 5  # (the last batch, of one, has other padding: not its numbers)


def test_num_workers_option():
    from evals.runner import EvalArgs, feed_workers

    assert feed_workers(EvalArgs(num_workers=0)) == 0 and feed_workers(EvalArgs(num_workers=3)) == 3
    assert feed_workers(EvalArgs()) in (0, 2)
    import utils.threads
    from evals.feed import default_num_workers

    cores = utils.threads.usable_cores()
    assert default_num_workers(load=0.0, accelerator=True) == (2 if cores >= 2 else 0)
    assert default_num_workers(load=float(cores), accelerator=True) == 0  # every core busy: in-process
    assert default_num_workers(load=0.0, accelerator=False) == 0  # the model on the CPU needs the cores itself
    with pytest.raises(ValueError, match="num_workers must be 0"):
        EvalArgs(num_workers=-1)


def test_feed_bench_compares_worker_counts_on_identical_batches(root, tiny_model_dir):
    from bench.eval_speed import format_feed, run_feed

    res = run_feed(rows=6, size=(120, 90), workers=(0, 2), batch_size=4, repeats=1, model=str(tiny_model_dir),
                   root=root, consumer_ms=5)
    assert res["identical_batches"] and set(res["examples_per_s"]) == {"0", "2"}
    assert res["speedup_vs_in_process"]["0"] == 1.0 and "x in-process" in format_feed(res)
    consumer = res["with_gpu_like_consumer"]
    assert consumer["consumer_ms_per_example"] == 5 and set(consumer["examples_per_s"]) == {"0", "2"}
    # the wait is part of every pass: no pass can beat 6 examples x 5 ms
    assert all(sec >= 0.030 for v in consumer["all_seconds"].values() for sec in v)
    assert "GPU-like consumer" in format_feed(res)
