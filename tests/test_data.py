"""The NLVR2 data layer: one loader, two modes, schema variants, bad rows, caches and manifests."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from utils.errors import VLMStudiesError
from vlm_datasets import load_nlvr2
from vlm_datasets.cache import prepare_split, verify_split
from vlm_datasets.nlvr2 import normalise_label, normalise_row, parse_uid


def _png(color, size=(30, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _same(a, b) -> bool:
    return (a.uid, a.sentence, a.label, a.meta) == (b.uid, b.sentence, b.label, b.meta) and \
        np.array_equal(np.asarray(a.left), np.asarray(b.left)) and np.array_equal(np.asarray(a.right), np.asarray(b.right))


def test_streaming_and_cached_yield_identical_examples(root, synthetic_dir):
    streamed = list(load_nlvr2(str(synthetic_dir), "validation", "streaming"))
    prepare_split(str(synthetic_dir), "validation", progress=False)
    split = load_nlvr2(str(synthetic_dir), "validation", "cached")
    cached = list(split)
    assert len(streamed) == len(cached) == 32
    assert all(_same(a, b) for a, b in zip(streamed, cached))
    assert split.info["manifest_sha256"] and split.info["num_rows"] == 32
    ex = streamed[0]
    assert ex.left.mode == "RGB" and ex.meta["left_size"] == ex.left.size
    assert ex.meta["pair_key"] == ex.uid.rsplit("-", 1)[0] and ex.meta["family"] in {
        "grounding_left", "grounding_right", "count", "compare", "quantifier"}
    split_, set_no, _pair, sentence = ex.uid.split("-")
    assert ex.meta["consistency_group"] == f"{split_}-{set_no}--{sentence}"


def test_parse_uid_and_labels():
    assert parse_uid("dev-850-0-1") == {"uid_split": "dev", "set_id": "dev-850", "pair_id": "0", "sentence_id": "1",
                                        "pair_key": "dev-850-0", "consistency_group": "dev-850--1"}
    # every split name of the release and of the hub copy; the group blanks the pair field
    for uid, group in [("train-10171-3-0", "train-10171--0"), ("test1-0-1-0", "test1-0--0"),
                       ("test2-189-2-1", "test2-189--1"), ("validation-7-0-2", "validation-7--2"),
                       ("test-3-3-3", "test-3--3")]:
        assert parse_uid(uid)["consistency_group"] == group
    # not NLVR2's split-set-pair-sentence: no parts at all (such a row is its own consistency group)
    for uid in ("odd-uid", "dev-850-0", "dev-850-0-1-2", "my-split-850-0-1", "dev-x-0-1", "DEV-850-0-1", "",
                "validation-00012-000000085637"):
        assert set(parse_uid(uid).values()) == {None}, uid
    for v in (True, "True", "true", " TRUE ", 1, "1"):
        assert normalise_label(v) is True
    for v in (False, "False", "false", "FALSE", 0, "0"):
        assert normalise_label(v) is False
    for v in ("yes", 2, None, "maybe"):
        with pytest.raises(ValueError):
            normalise_label(v)


@pytest.mark.parametrize("label_kind", ["bool", "str", "int"])
@pytest.mark.parametrize("image_kind", ["struct", "raw_bytes"])
def test_schema_variants_from_parquet(tmp_path, root, label_kind, image_kind):
    labels = [True, False, True]
    conv = {"bool": lambda b: b, "str": lambda b: ["false", "TRUE"][b] if b else "False", "int": int}[label_kind]
    rows = []
    for i, lab in enumerate(labels):
        left, right = _png((255, 0, 0)), _png((0, 0, 255), (40, 30))
        if image_kind == "struct":
            left, right = {"bytes": left, "path": f"x-{i}-img0.png"}, {"bytes": right, "path": None}
        rows.append({"identifier": f"dev-{i}-0-0", "sentence": f"Statement {i}.", "label": conv(lab),
                     "image0": left, "image1": right, "left_url": f"http://example.org/{i}.jpg"})
    folder = tmp_path / "variant"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), folder / "validation-00000.parquet")
    out = list(load_nlvr2(str(folder), "validation"))
    assert [e.label for e in out] == labels
    assert out[0].left.getpixel((0, 0)) == (255, 0, 0) and out[0].right.size == (40, 30)
    assert out[1].meta["left_url"] == "http://example.org/1.jpg"


def test_decoded_images_and_aliases():
    img = Image.new("RGB", (8, 8), (0, 255, 0))
    ex = normalise_row({"uid": "test1-3-1-0", "text": "A statement.", "label": "true", "left_image": img,
                        "right_image": img.convert("L")})
    assert ex.label is True and ex.right.mode == "RGB" and ex.meta["set_id"] == "test1-3"


def test_hub_path_decoded_image_features(monkeypatch, root, synthetic_dir):
    """The Hub branch (datasets streaming, Image features) normalises like the local one."""
    import datasets

    import vlm_datasets.nlvr2 as nlvr2

    files = sorted(str(p) for p in synthetic_dir.glob("validation-*.parquet"))
    real = datasets.load_dataset

    def fake_load(name, split=None, streaming=False, revision=None, **kw):
        assert name == "someone/nlvr2-copy" and streaming
        return real("parquet", data_files={split: files}, split=split, streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    hub = list(nlvr2.load_nlvr2("someone/nlvr2-copy", "validation"))
    local = list(nlvr2.load_nlvr2(str(synthetic_dir), "validation"))
    assert len(hub) == 32 and all(_same(a, b) for a, b in zip(hub, local))


def _write_with_bad_row(folder, bad):
    rows = []
    for i in range(4):
        rows.append({"identifier": f"dev-{i}-0-0", "sentence": "S.", "label": "True",
                     "image0": {"bytes": _png((9, 9, 9)), "path": None}, "image1": {"bytes": _png((1, 1, 1)), "path": None}})
    rows[2].update(bad)
    folder.mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "validation-00000.parquet")


@pytest.mark.parametrize("bad,reason", [
    ({"image1": {"bytes": _png((1, 1, 1))[:40], "path": None}}, "corrupt image"),
    ({"image0": {"bytes": b"not an image at all", "path": None}}, "corrupt image"),
    ({"image0": {"bytes": None, "path": None}}, "missing image"),
    ({"label": "maybe"}, "unparseable label"),
])
def test_bad_rows_skip_and_raise(tmp_path, root, capsys, bad, reason):
    _write_with_bad_row(tmp_path / "d", bad)
    split = load_nlvr2(str(tmp_path / "d"), "validation", on_error="skip")
    got = [e.uid for e in split]
    assert got == ["dev-0-0-0", "dev-1-0-0", "dev-3-0-0"]
    assert split.bad_rows and split.bad_rows[0][0] == "dev-2-0-0" and reason in split.bad_rows[0][1]
    assert "skipped 1 bad row(s) of 4" in capsys.readouterr().err
    with pytest.raises(VLMStudiesError, match=r"bad row .* dev-2-0-0: .*" + reason):
        list(load_nlvr2(str(tmp_path / "d"), "validation", on_error="raise"))


def test_manifest_detects_changed_byte_and_missing_shard(root, synthetic_dir):
    path = prepare_split(str(synthetic_dir), "train", rows_per_shard=20, progress=False)
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["num_rows"] == 64 and [s["rows"] for s in manifest["shards"]] == [20, 20, 20, 4]
    assert verify_split(str(synthetic_dir), "train") == []
    shard = path / manifest["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the column data
    shard.write_bytes(bytes(data))
    problems = verify_split(str(synthetic_dir), "train")
    assert any("SHA-256 differs" in p for p in problems)
    with pytest.raises(VLMStudiesError, match="does not match its manifest"):
        load_nlvr2(str(synthetic_dir), "train", "cached", verify_hashes=True)
    (path / manifest["shards"][3]["file"]).unlink()
    with pytest.raises(VLMStudiesError, match="missing shard shard-00003"):
        load_nlvr2(str(synthetic_dir), "train", "cached")


def test_interrupted_prepare_never_looks_complete(root, synthetic_dir, monkeypatch):
    import vlm_datasets.cache as cache  # the prepare reads the rows through the name it imported

    real = cache.iter_raw_rows

    def dying(info):
        for i, row in enumerate(real(info)):
            if i == 30:
                raise KeyboardInterrupt  # like Ctrl-C or a dropped Colab session
            yield row

    monkeypatch.setattr(cache, "iter_raw_rows", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare_split(str(synthetic_dir), "train", rows_per_shard=10, progress=False)
    with pytest.raises(VLMStudiesError, match="interrupted prepare left only a partial copy"):
        load_nlvr2(str(synthetic_dir), "train", "cached")
    monkeypatch.setattr(cache, "iter_raw_rows", real)
    prepare_split(str(synthetic_dir), "train", rows_per_shard=10, progress=False)
    assert len(list(load_nlvr2(str(synthetic_dir), "train", "cached"))) == 64


def test_limit_and_unknown_uid(root, synthetic_dir):
    split = load_nlvr2(str(synthetic_dir), "validation", limit=5)
    assert len(list(split)) == 5 and split.num_rows() == 5
    first = next(iter(split))
    assert split.find(first.uid).sentence == first.sentence
    with pytest.raises(VLMStudiesError, match=r"unknown uid 'dev-0-0-9'.*closest: dev-0-0-"):
        split.find("dev-0-0-9")


def test_offline_hub_and_bad_sources_are_clear(root, tmp_path):
    with pytest.raises(VLMStudiesError) as exc:
        list(load_nlvr2("pingzhili/nlvr2", "validation"))
    msg = str(exc.value)
    assert "pingzhili/nlvr2" in msg and "cannot be reached" in msg and "--mode cached" in msg and "\n" not in msg
    with pytest.raises(VLMStudiesError, match="no cached copy of pingzhili/nlvr2"):
        load_nlvr2("pingzhili/nlvr2", "validation", "cached")
    with pytest.raises(VLMStudiesError, match="does not exist"):
        load_nlvr2(str(tmp_path / "nope"), "validation")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VLMStudiesError, match="no parquet files for split 'validation'"):
        load_nlvr2(str(tmp_path / "empty"), "validation")
    with pytest.raises(VLMStudiesError, match="unknown mode"):
        load_nlvr2(str(tmp_path / "empty"), "validation", "fast")


def test_concurrent_first_use_builds_once_and_nobody_fails(tmp_path):
    """`accelerate launch` starts several processes on a fresh root: each asks for the default
    synthetic set, the local model and a cached split at the same moment."""
    import os
    import subprocess
    import sys

    code = ("from vlm_datasets import load_nlvr2; from vlm_datasets.cache import prepare_split;"
            "from utils.models import resolve_model_path;"
            "resolve_model_path('local:tiny'); prepare_split('synthetic', 'validation', progress=False);"
            "print(len(list(load_nlvr2('synthetic', 'validation', 'cached'))))")
    env = dict(os.environ, VLM_STUDIES_ROOT=str(tmp_path / "fresh"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, encoding="utf-8") for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-600:] for _, err in outs]
    assert [out.strip().splitlines()[-1] for out, _ in outs] == ["400"] * 3
    leftovers = [p.name for p in (tmp_path / "fresh").rglob("*partial*")]
    assert leftovers == []
