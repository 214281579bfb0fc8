"""Seconds to first step: a launch on a prepared split reads its length records, not the split.

What is checked: the records prepare_data writes are what a launch uses (the full scan and the full
source hash are never called, on a first launch or a resume); the length guard decides exactly as the
full scan does (bad rows, over-long rows, families, --train_limit); a changed source gets a fresh cache
and fresh records; a damaged or malformed records file is a one-line error naming the rebuild; nothing is
written to the datasets Arrow cache; and streaming mode neither scans nor re-hashes. The timings are in
`bench.start_time` (never asserted here).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from utils.errors import VLMStudiesError


def _opts(tiny_model_dir, source, *extra):
    from training.options import parse_train_options

    (mo, lo, do, args), _, _ = parse_train_options(
        ["--model", str(tiny_model_dir), "--source", str(source), "--report_to", "none", *extra])
    return do, args


def _load(tiny_model_and_processor, tiny_model_dir, source, *extra, full_scan=False):
    from training.data import load_train_data

    do, args = _opts(tiny_model_dir, source, *extra)
    return load_train_data(do, tiny_model_and_processor[1], args.max_length, args.seed, full_scan=full_scan)


def _jpeg(size, orientation=None) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, (200, 40, 40))
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(buf, format="JPEG", exif=exif)
    else:
        img.save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def mixed_source(synthetic_dir, tmp_path):
    """The synthetic train split with rows of every bad kind and an EXIF-rotated image."""
    rows = [r for f in sorted(Path(synthetic_dir).glob("train-*.parquet")) for r in pq.read_table(f).to_pylist()]
    rows[3]["image0"] = {"bytes": b"not an image", "path": None}
    rows[5]["label"] = "maybe"
    rows[7]["sentence"] = "  "
    rows[9]["image1"] = {"bytes": _jpeg((2000, 5)), "path": None}  # aspect ratio the processor refuses
    rows[11]["image0"] = {"bytes": _jpeg((120, 60), orientation=6), "path": None}  # stored sideways: 60x120 upright
    rows[13]["image1"] = {"bytes": None, "path": None}
    src = tmp_path / "mixed"
    src.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), src / "train-00000.parquet")
    return src


class _Calls:
    def __init__(self):
        self.n = 0


@pytest.fixture
def spies(monkeypatch):
    """Count full scans and full source hashes; forget this process's remembered fingerprints (a new launch)."""
    import training.data
    import vlm_datasets.cache as cache
    from vlm_datasets.nlvr2 import SourceInfo

    scans, hashes = _Calls(), _Calls()
    real_scan, real_hash = training.data._scanned_rows, SourceInfo.fingerprint

    def scan(split):
        scans.n += 1
        return real_scan(split)

    def fingerprint(self):
        if self.kind == "local":
            hashes.n += 1
        return real_hash(self)

    monkeypatch.setattr(training.data, "_scanned_rows", scan)
    monkeypatch.setattr(SourceInfo, "fingerprint", fingerprint)
    monkeypatch.setattr(cache, "RACY_SECONDS", 0.0)  # the fixture's files were written a moment ago

    def new_launch():
        cache._fingerprints.clear()
        scans.n = hashes.n = 0

    new_launch()  # earlier tests in this process may have hashed the same files
    return scans, hashes, new_launch


def test_a_launch_and_a_resume_on_a_prepared_split_read_the_records_not_the_split(
        root, synthetic_dir, tiny_model_dir, tiny_model_and_processor, spies):
    from vlm_datasets.cache import prepare_split

    scans, hashes, new_launch = spies
    prepare_split(str(synthetic_dir), "train", progress=False)  # what `scripts/prepare_data.py` does
    assert hashes.n == 1 and scans.n == 0  # preparing hashes the source once
    for _ in range(2):  # a launch, then a resume: each a new process
        new_launch()
        data = _load(tiny_model_and_processor, tiny_model_dir, synthetic_dir)
        assert scans.n == 0 and hashes.n == 0
        assert data.rows == 64 and len(data.dataset) == 64
        ex = data.dataset[0]
        assert len(ex["images"]) == 2 and ex["completion"][0]["content"][0]["text"] in ("True", "False")

    # The old behaviour, kept for caches without records and for the benchmark: one scan, no fewer rows.
    new_launch()
    old = _load(tiny_model_and_processor, tiny_model_dir, synthetic_dir, full_scan=True)
    assert scans.n == 1 and old.rows == data.rows


def test_a_first_launch_without_prepare_hashes_the_source_once(
        root, synthetic_dir, tiny_model_dir, tiny_model_and_processor, spies):
    scans, hashes, new_launch = spies
    new_launch()
    _load(tiny_model_and_processor, tiny_model_dir, synthetic_dir)  # prepares the cache itself (local source)
    assert hashes.n == 1 and scans.n == 0  # it was twice: once to prepare, once to open


@pytest.mark.parametrize("extra", [(), ("--max_length", "50"), ("--families", "count", "grounding_left"),
                                   ("--train_limit", "20")])
def test_the_records_decide_exactly_as_the_full_scan(root, mixed_source, tiny_model_dir, tiny_model_and_processor,
                                                     capsys, extra):
    new = _load(tiny_model_and_processor, tiny_model_dir, mixed_source, *extra)
    new_err = capsys.readouterr().err
    old = _load(tiny_model_and_processor, tiny_model_dir, mixed_source, *extra, full_scan=True)
    old_err = capsys.readouterr().err
    assert new.guard.summary() == old.guard.summary() and new.guard.skipped == old.guard.skipped
    assert new.rows == old.rows and new.families == old.families
    def said(err):
        return [line for line in err.splitlines() if line.startswith("[train]")]

    assert said(new_err) == said(old_err)  # the same bad rows and over-long rows reported, in the same words
    summary = new.guard.summary()
    if not extra:
        assert "skipped 5 bad row(s)" in new_err  # the five bad kinds; the rotated image is a good row
    if "--max_length" in extra:
        assert summary["examples_skipped_overlong"] > 0 and summary["examples_kept"] > 0
    assert [new.dataset[i] for i in range(min(6, new.rows))] == [old.dataset[i] for i in range(min(6, old.rows))]


def test_the_records_hold_upright_sizes_and_the_reasons(root, mixed_source):
    from vlm_datasets.cache import Cache, prepare_split

    records = Cache(prepare_split(str(mixed_source), "train", progress=False)).records()
    assert (records["left_w"][11], records["left_h"][11]) == (60, 120)  # EXIF orientation 6 applied
    assert "unreadable image header" in records["left_error"][3]
    assert "unparseable label" in records["label_error"][5]
    assert records["right_error"][13] == "missing image"
    assert (records["right_w"][9], records["right_h"][9]) == (2000, 5)  # refused at launch, by the processor rule


def test_a_changed_source_gets_a_fresh_cache_and_fresh_records(root, mixed_source, tiny_model_dir,
                                                               tiny_model_and_processor, spies, capsys):
    from vlm_datasets.cache import Cache, prepare_split

    scans, hashes, new_launch = spies
    first = prepare_split(str(mixed_source), "train", progress=False)
    f = mixed_source / "train-00000.parquet"
    table = pq.read_table(f)
    rows = table.to_pylist()
    rows[0]["sentence"] = "A changed sentence."
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), f)  # same path, new content
    new_launch()
    data = _load(tiny_model_and_processor, tiny_model_dir, mixed_source)
    assert hashes.n == 1 and scans.n == 0  # the change was seen (file state), hashed once, prepared afresh
    second = Path(data.info["cache_dir"])
    assert second != first and Cache(second).records()["sentence"][0] == "A changed sentence."
    assert Cache(first).records()["sentence"][0] != "A changed sentence."
    assert f"the cache of its old content is {first.parent}" in capsys.readouterr().err


def test_a_rewrite_with_the_same_size_and_mtime_is_still_seen(root, synthetic_dir, tmp_path, spies):
    """The ctime changes on every write and cannot be set back: the remembered hash is not trusted."""
    import shutil

    from vlm_datasets.cache import source_fingerprint
    from vlm_datasets.nlvr2 import resolve_source

    scans, hashes, new_launch = spies
    src = tmp_path / "copy"
    shutil.copytree(synthetic_dir, src)
    info = resolve_source(str(src), "train")
    before = source_fingerprint(info)
    new_launch()
    assert source_fingerprint(info) == before and hashes.n == 0
    f = Path(info.files[0])
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as they were
    new_launch()
    assert source_fingerprint(info) != before and hashes.n == 1


def test_an_unreadable_fingerprint_record_is_replaced(root, synthetic_dir, spies, capsys):
    from utils.paths import subdir
    from vlm_datasets.cache import source_fingerprint
    from vlm_datasets.nlvr2 import resolve_source

    scans, hashes, new_launch = spies
    info = resolve_source(str(synthetic_dir), "train")
    want = source_fingerprint(info)
    (memo,) = (subdir("datasets") / "fingerprints").glob("*.json")
    memo.write_text("{not json", encoding="utf-8")
    new_launch()
    assert source_fingerprint(info) == want and hashes.n == 1
    assert "ignoring the unreadable fingerprint record" in capsys.readouterr().err
    new_launch()
    assert source_fingerprint(info) == want and hashes.n == 0  # rewritten


def _damage_records(path: Path, how: str) -> None:
    rpath = path / "records.parquet"
    mpath = path / "manifest.json"
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    if how == "deleted":
        rpath.unlink()
    elif how == "flipped":  # same size, one byte changed
        data = bytearray(rpath.read_bytes())
        data[len(data) // 2] ^= 0xFF
        rpath.write_bytes(bytes(data))
    elif how == "wrong columns":  # a parquet file in another layout, the manifest made to match it
        pq.write_table(pa.table({"uid": ["a"] * manifest["num_rows"]}), rpath)
        from utils.io import sha256_file

        manifest["records"].update(bytes=rpath.stat().st_size, sha256=sha256_file(rpath))
        mpath.write_text(json.dumps(manifest), encoding="utf-8")
    elif how == "entry":
        manifest["records"] = {"file": "records.parquet", "version": 1}
        mpath.write_text(json.dumps(manifest), encoding="utf-8")
    elif how == "version":
        manifest["records"]["version"] = 99
        mpath.write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.parametrize("how, message", [
    ("deleted", "missing length records"),
    ("flipped", "differ from the manifest"),
    ("wrong columns", "not in the layout this checkout reads"),
    ("entry", "no matching row count, size and SHA-256"),
    ("version", "length records are version 99"),
])
def test_damaged_or_malformed_records_are_one_line_naming_the_rebuild(
        root, synthetic_dir, tiny_model_dir, tiny_model_and_processor, how, message):
    from vlm_datasets.cache import prepare_split
    from vlm_datasets.nlvr2 import load_nlvr2

    path = prepare_split(str(synthetic_dir), "train", progress=False)
    _damage_records(path, how)
    with pytest.raises(VLMStudiesError, match=message) as err:
        split = load_nlvr2(str(synthetic_dir), "train", "cached")
        split.cache.records()
    assert "\n" not in str(err.value) and "--rebuild" in str(err.value)
    assert f"--source {synthetic_dir} --split train" in str(err.value)
    # A launch on a local source rebuilds a cache whose records changed; records in another layout that the
    # manifest vouches for are refused in one line (nothing is ever trained on records that cannot be read).
    if how == "wrong columns":
        with pytest.raises(VLMStudiesError, match=message) as err:
            _load(tiny_model_and_processor, tiny_model_dir, synthetic_dir)
        assert "\n" not in str(err.value)
    else:
        assert _load(tiny_model_and_processor, tiny_model_dir, synthetic_dir).rows == 64


def test_a_changed_shard_is_caught_when_its_row_is_read(root, synthetic_dir, tiny_model_dir, tiny_model_and_processor):
    from vlm_datasets.cache import prepare_split

    from tests.test_inputs import flip_bytes_in_column

    path = prepare_split(str(synthetic_dir), "train", progress=False)
    flip_bytes_in_column(path / "shard-00000.parquet", "image0.bytes")  # same size: opening does not notice
    data = _load(tiny_model_and_processor, tiny_model_dir, synthetic_dir)
    with pytest.raises(VLMStudiesError, match=r"checksum.*--rebuild") as err:
        data.dataset[0]
    assert "\n" not in str(err.value)


def test_a_shard_of_another_size_is_refused_on_open(root, synthetic_dir):
    from vlm_datasets.cache import prepare_split
    from vlm_datasets.nlvr2 import load_nlvr2

    path = prepare_split(str(synthetic_dir), "train", progress=False)
    with open(path / "shard-00000.parquet", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(VLMStudiesError, match=r"bytes, manifest says .*--rebuild"):
        load_nlvr2(str(synthetic_dir), "train", "cached")


def _bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def test_training_writes_nothing_to_the_datasets_cache(root, synthetic_dir, tiny_model_dir, tiny_model_and_processor,
                                                       tmp_path, monkeypatch):
    """No third copy: the rows are read from the shards. The old path, with its size threshold lowered to this
    small split, shows the measurement sees a copy when there is one."""
    import datasets

    import training.data

    hf_cache = tmp_path / "hf_datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(hf_cache))
    monkeypatch.setattr(training.data, "_IN_MEMORY_BYTES", 0)  # every split counts as large
    new = _load(tiny_model_and_processor, tiny_model_dir, synthetic_dir)
    [new.dataset[i] for i in range(len(new.dataset))]
    assert _bytes_under(hf_cache) == 0
    old = _load(tiny_model_and_processor, tiny_model_dir, synthetic_dir, full_scan=True)
    [old.dataset[i] for i in range(4)]
    assert _bytes_under(hf_cache) > 0


def test_a_cache_from_before_the_records_still_trains_and_says_how_to_skip_the_scan(
        root, synthetic_dir, tiny_model_dir, tiny_model_and_processor, capsys, spies):
    from vlm_datasets.cache import Cache, prepare_split
    from vlm_datasets.nlvr2 import load_nlvr2

    scans, hashes, new_launch = spies
    path = prepare_split(str(synthetic_dir), "train", progress=False)
    mpath = path / "manifest.json"
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    manifest.pop("records")
    manifest["format_version"] = 2
    for s in manifest["shards"]:
        s.pop("bytes")
    mpath.write_text(json.dumps(manifest), encoding="utf-8")
    (path / "records.parquet").unlink()
    from training.data import LengthGuard, cached_dataset

    split = load_nlvr2(str(synthetic_dir), "train", "cached")
    guard = LengthGuard(tiny_model_and_processor[1], "tf", None)
    data = cached_dataset(split, guard, "tf", [])
    assert data.rows == 64 and scans.n == 1
    assert "predates length records" in capsys.readouterr().err
    # a launch on a local source upgrades it (a prepare rebuilds format 2)
    _load(tiny_model_and_processor, tiny_model_dir, synthetic_dir)
    assert "rebuilding it in format 3" in capsys.readouterr().err
    assert Cache(path).records() is not None


def test_streaming_neither_scans_nor_rehashes(root, synthetic_dir, tiny_model_dir, tiny_model_and_processor, spies):
    scans, hashes, new_launch = spies
    new_launch()
    _load(tiny_model_and_processor, tiny_model_dir, synthetic_dir, "--mode", "streaming", "--max_steps", "2")
    assert hashes.n == 1 and scans.n == 0  # the run's record names the source by its hash: computed once
    new_launch()
    data = _load(tiny_model_and_processor, tiny_model_dir, synthetic_dir, "--mode", "streaming", "--max_steps", "2")
    assert hashes.n == 0 and scans.n == 0 and data.info["fingerprint"]


def test_scripts_train_on_a_prepared_split_neither_scans_nor_hashes(root, synthetic_dir, tiny_model_dir, spies):
    """The whole launch (scripts/train.py), not only the data loader: records used, source not re-hashed."""
    from scripts.prepare_data import main as prepare
    from scripts.train import main as train

    scans, hashes, new_launch = spies
    prepare(["--source", str(synthetic_dir), "--split", "train"])
    new_launch()
    train(["--model", str(tiny_model_dir), "--source", str(synthetic_dir), "--run_name", "quick", "--max_steps", "2",
           "--per_device_train_batch_size", "4", "--lora_r", "4", "--activation_checkpointing", "false",
           "--eval_split", "none", "--disable_tqdm", "true", "--torch_threads", "1", "--report_to", "none"])
    assert scans.n == 0 and hashes.n == 0
    meta = json.loads((root / "checkpoints" / "quick" / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["dataset"]["train_rows"] == 64 and meta["length_guard"]["examples_kept"] == 64
