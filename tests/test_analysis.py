"""The HTML report: plots, slices, a gallery with both images, a comparison, and no dangling references."""

from __future__ import annotations

import json
import re

import pytest

from utils.cli import main_guard


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def two_runs(root, tiny_model_dir, synthetic_dir):
    from scripts.evaluate import main

    common = ["--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--task", "nlvr2", "--limit", "16",
              "--batch_size", "8", "--progress", "false", "--tensorboard", "false"]
    assert main_guard(main, [*common, "--run_name", "a"]) == 0
    assert main_guard(main, [*common, "--run_name", "b", "--template", "terse"]) == 0
    return root / "evals" / "a", root / "evals" / "b"


def analyze(argv):
    from scripts.analyze import main

    return main_guard(main, argv)


def test_report_references_only_existing_images(two_runs, synthetic_dir, capsys):
    from evals.report import check_report, referenced_files

    a, b = two_runs
    assert analyze([str(a), "--compare", str(b), "--max_mistakes", "4"]) == 0
    out = capsys.readouterr().out
    assert "McNemar exact p =" in out
    page_path = a / "report-vs-b" / "index.html"
    page = page_path.read_text(encoding="utf-8")
    refs = referenced_files(page)
    assert "img/confusion.png" in refs and "img/reliability.png" in refs
    gallery = [r for r in refs if r.endswith(("-left.png", "-right.png"))]
    mistakes = sum(not json.loads(line)["correct"]
                   for line in (a / "predictions.jsonl").read_text(encoding="utf-8").splitlines())
    assert len(gallery) == 2 * min(4, mistakes) > 0  # both images of every mistake shown
    assert check_report(page_path) == []
    for r in refs:  # every reference is a real PNG inside the report folder
        assert (page_path.parent / r).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"(src|href)=\"https?://", page)  # nothing from the network
    assert f"--source {synthetic_dir} --split validation</code>" in page  # the inspect command of each mistake
    comparison = json.loads((a / "report-vs-b" / "comparison.json").read_text(encoding="utf-8"))
    ra, rb = ({json.loads(l)["uid"]: json.loads(l)["correct"]
               for l in (d / "predictions.jsonl").read_text(encoding="utf-8").splitlines()} for d in (a, b))
    assert comparison["right_in_a_only"] == [u for u in ra if ra[u] and not rb[u]]
    assert comparison["right_in_b_only"] == [u for u in ra if rb[u] and not ra[u]]
    assert comparison["mcnemar"]["discordant"] == len(comparison["right_in_a_only"]) + len(comparison["right_in_b_only"])


def test_inline_report_is_one_file(two_runs):
    from evals.report import referenced_files

    a, _ = two_runs
    assert analyze([str(a), "--inline", "--out", str(a / "inline")]) == 0
    # one page, beside the marker that lets analyze.py replace this folder next time (utils.io.output_dir)
    assert sorted(p.name for p in (a / "inline").iterdir()) == [".vlm_studies_output.json", "index.html"]
    page = (a / "inline" / "index.html").read_text(encoding="utf-8")
    assert referenced_files(page) == [] and page.count("data:image/png;base64,") >= 3


def test_report_without_a_readable_source_still_whole(two_runs, tmp_path):
    """If the images cannot be read (source moved, offline), the gallery says so and links nothing."""
    from evals.report import check_report

    a, _ = two_runs
    cfg = (a / "config.yaml").read_text(encoding="utf-8")
    (a / "config.yaml").write_text(re.sub(r"(?m)^source: .*$", f"source: {tmp_path / 'gone'}", cfg), encoding="utf-8")
    assert analyze([str(a)]) == 0
    page = (a / "report" / "index.html").read_text(encoding="utf-8")
    assert "images unavailable" in page and check_report(a / "report" / "index.html") == []


def test_bookmark_mistakes(two_runs, root):
    from vlm_datasets.bookmarks import Bookmarks

    a, _ = two_runs
    assert analyze([str(a), "--max_mistakes", "3", "--bookmark", "eval_a", "--no_images"]) == 0
    wrong = [json.loads(l) for l in (a / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    wrong = [r["uid"] for r in wrong if not r["correct"]]
    got = Bookmarks(root=root).uids(tag="eval_a")
    assert len(got) == min(3, len(wrong)) and set(got) <= set(wrong)


def test_analyze_errors(root, tmp_path, capsys):
    assert analyze([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "predictions.jsonl").write_text("", encoding="utf-8")
    assert analyze([str(tmp_path / "half")]) == 2
    assert "run the same evaluate.py command again" in capsys.readouterr().err


def test_headline_gives_nlvr2_consistency_with_its_groups_even_for_an_older_metrics_file(two_runs):
    """The report states NLVR2's consistency and its group count; a metrics.json written when consistency
    grouped one image pair's statements (before 2026-12-02) is recomputed from the predictions."""
    import html

    from scoring.metrics import consistency
    from scoring.predictions import read_predictions

    a, _ = two_runs
    want = consistency(read_predictions(a / "predictions.jsonl"))
    m = json.loads((a / "metrics.json").read_text(encoding="utf-8"))
    assert m["consistency"] == want
    m["consistency"] = {"groups": 99, "consistent": 50, "consistency": 0.5, "mean_group_size": 2.0}  # old writer
    (a / "metrics.json").write_text(json.dumps(m), encoding="utf-8")
    assert analyze([str(a), "--max_mistakes", "1"]) == 0
    page = html.unescape((a / "report" / "index.html").read_text(encoding="utf-8"))
    pct = f"{100 * want['consistency']:.1f}%"
    assert f"{pct} of {want['groups']} sentence groups all correct" in page and "of 99" not in page
    assert "heuristic" in page and "ling:*" in page
