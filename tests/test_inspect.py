"""scripts/inspect_sample.py on the synthetic set: what it prints, the raw export, unknown uids, bookmarks."""

from __future__ import annotations

import glob
import hashlib
import json

import pyarrow.parquet as pq
import pytest

from scripts.inspect_sample import main
from utils.cli import main_guard
from vlm_datasets.prompts import LAB_MAX_PIXELS, LAB_MIN_PIXELS
from vlm_datasets.bookmarks import Bookmarks


def parquet_rows(folder, split="validation") -> dict:
    """The stored rows, read straight from the parquet files (independent of the code under test)."""
    rows = {}
    for f in sorted(glob.glob(str(folder / f"{split}-*.parquet"))):
        for r in pq.read_table(f).to_pylist():
            rows[r["identifier"]] = r
    return rows


def pair_key(uid):
    return uid.rsplit("-", 1)[0]


@pytest.fixture(scope="module")
def rows(synthetic_dir):
    return parquet_rows(synthetic_dir)


@pytest.fixture(scope="module")
def uid_with_sibling(rows):
    return next(u for u in rows if sum(pair_key(v) == pair_key(u) for v in rows) > 1)


def run_json(capsys, *argv):
    assert main_guard(main, [*argv, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_inspect_reports_everything_known(root, synthetic_dir, rows, uid_with_sibling, capsys):
    uid = uid_with_sibling
    assert main_guard(main, ["--uid", uid, "--source", str(synthetic_dir), "--split", "validation"]) == 0
    text = capsys.readouterr().out
    row = rows[uid]
    sibling = next(v for v in rows if pair_key(v) == pair_key(uid) and v != uid)
    for needle in (uid, row["sentence"], f"label      {row['label']}", "validation", "56x56", sibling,
                   rows[sibling]["sentence"], row["family"]):
        assert needle in text, needle

    d = run_json(capsys, "--uid", uid, "--source", str(synthetic_dir))[0]
    assert d["label"] == (row["label"] == "True") and d["sentence"] == row["sentence"]
    assert d["set_id"] == "-".join(uid.split("-")[:2]) and d["pair_id"] == uid.split("-")[2]
    assert [(s["uid"], s["label"]) for s in d["same_pair"]] == \
        [(v, rows[v]["label"] == "True") for v in rows if pair_key(v) == pair_key(uid) and v != uid]
    # the sentence's other image pairs: NLVR2's consistency group (the uid with its pair field blanked)
    blank = lambda u: "-".join(u.split("-")[:2]) + "--" + u.split("-")[3]  # noqa: E731
    same_sentence = [v for v in rows if blank(v) == blank(uid) and v != uid]
    assert d["consistency_group"] == blank(uid) and len(same_sentence) >= 1
    assert [s["uid"] for s in d["same_sentence"]] == same_sentence
    assert all(rows[v]["sentence"] == row["sentence"] for v in same_sentence)
    assert f"consistency group {blank(uid)}" in text and same_sentence[0] in text
    for im, col in zip(d["images"], ("image0", "image1")):
        assert (im["width"], im["height"]) == (56, 56) and im["url"] is None
        assert im["sha256"] == hashlib.sha256(row[col]["bytes"]).hexdigest()
        # 56x56 at the lab's budget (min 4*28*28 = 56*56 pixels): one token per 28x28 area -> 4
        assert im["visual_tokens"] == 4
    # no pixel flags: the lab's budget, recorded as such (never the processor's own 16384*28*28)
    assert (d["pixel_limits"]["min_pixels"], d["pixel_limits"]["max_pixels"]) == (LAB_MIN_PIXELS, LAB_MAX_PIXELS)
    assert d["pixel_limits"]["from"] == "lab default"


def test_pixel_limits_from_flags_and_from_a_processor(root, synthetic_dir, tiny_model_dir, rows, capsys):
    uid = next(iter(rows))
    d = run_json(capsys, "--uid", uid, "--source", str(synthetic_dir), "--min-pixels", str(16 * 28 * 28))[0]
    assert [im["visual_tokens"] for im in d["images"]] == [16, 16]  # enlarged to 112x112 -> 4x4 tokens
    d = run_json(capsys, "--uid", uid, "--source", str(synthetic_dir), "--model", str(tiny_model_dir))[0]
    assert "patches of" in d["pixel_limits"]["from"] and d["visual_tokens_total"] == 8


def test_export_writes_raw_bytes_and_hashes(root, synthetic_dir, rows, tmp_path, capsys):
    uid = list(rows)[3]
    out = tmp_path / "export"
    assert main_guard(main, ["--uid", uid, "--source", str(synthetic_dir), "--export", str(out)]) == 0
    printed = capsys.readouterr().out
    sums = dict(reversed(line.split("  ")) for line in (out / "SHA256SUMS").read_text(encoding="utf-8").splitlines())
    for side, col in (("left", "image0"), ("right", "image1")):
        f = out / f"{uid}-{side}.png"
        assert f.read_bytes() == rows[uid][col]["bytes"]  # exactly as stored, not re-encoded
        assert sums[f.name] == hashlib.sha256(f.read_bytes()).hexdigest()
        assert f"{f}  sha256 {sums[f.name]}" in printed
    # exporting again is fine; a different file under the same name is refused, never overwritten
    assert main_guard(main, ["--uid", uid, "--source", str(synthetic_dir), "--export", str(out)]) == 0
    (out / f"{uid}-left.png").write_bytes(b"other")
    assert main_guard(main, ["--uid", uid, "--source", str(synthetic_dir), "--export", str(out)]) == 2
    assert "exists with different content" in capsys.readouterr().err
    assert (out / f"{uid}-left.png").read_bytes() == b"other"


def test_unknown_uid_suggests_nearest(root, synthetic_dir, rows, capsys):
    uid = next(iter(rows))
    wrong = uid[:-1] + "9"  # same pair, a sentence id that does not exist
    assert main_guard(main, ["--uid", wrong, "--source", str(synthetic_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown uid") and f"'{wrong}'" in err and "closest:" in err
    assert uid in err.split("closest:")[1]
    assert len(err.strip().splitlines()) == 1


def test_bookmarks_select_uids(root, synthetic_dir, rows, capsys):
    a, b, c = list(rows)[:3]
    Bookmarks().add_many([a, c], tags="look")
    Bookmarks().add(b, tags="other")
    got = run_json(capsys, "--bookmarks", "look", "--source", str(synthetic_dir))
    assert [d["uid"] for d in got] == [a, c]
    assert main_guard(main, ["--bookmarks", "nothing", "--source", str(synthetic_dir)]) == 2
    assert "no bookmarks tagged 'nothing'" in capsys.readouterr().err


def test_column_scan_of_local_and_cached_splits_matches_a_full_read(root, synthetic_dir, rows, uid_with_sibling):
    """Local/cached splits find uids by scanning text columns only; the result equals reading every row."""
    from vlm_datasets import load_nlvr2
    from vlm_datasets.cache import prepare_split
    from vlm_datasets.inspect import _parquet_files, describe, find_samples

    uids = list(dict.fromkeys([uid_with_sibling, list(rows)[-1], list(rows)[5]]))
    full_read = load_nlvr2(str(synthetic_dir), "validation", "streaming", limit=10 ** 6)  # a limit: row by row
    local = load_nlvr2(str(synthetic_dir), "validation", "streaming")
    prepare_split(str(synthetic_dir), "validation", progress=False)
    cached = load_nlvr2(str(synthetic_dir), "validation", "cached")
    assert _parquet_files(full_read) is None and _parquet_files(local) and _parquet_files(cached)
    want = [describe(s) for s in find_samples(full_read, uids)]
    assert any(d["same_pair"] for d in want)
    for split in (local, cached):
        assert [describe(s) for s in find_samples(split, uids)] == want
        assert [s.uid for s in find_samples(split, uids[::-1], with_siblings=False)] == uids[::-1]
