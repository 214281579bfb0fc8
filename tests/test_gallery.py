"""scripts/sample_gallery.py on the synthetic set: files, composites holding both images, seeded draws,
no silent overwrites."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from scripts.sample_gallery import main
from utils.cli import main_guard
from vlm_datasets.bookmarks import Bookmarks


def parquet_rows(folder, split="validation") -> dict:
    """The stored rows, read straight from the parquet files (independent of the code under test)."""
    import glob

    import pyarrow.parquet as pq

    return {r["identifier"]: r for f in sorted(glob.glob(str(folder / f"{split}-*.parquet")))
            for r in pq.read_table(f).to_pylist()}


@pytest.fixture(scope="module")
def rows(synthetic_dir):
    return parquet_rows(synthetic_dir)


def only_gallery(root):
    return sorted((root / "analysis" / "gallery").iterdir())


def load_manifest(folder):
    return json.loads((folder / "gallery.json").read_text(encoding="utf-8"))


def check_gallery(folder, rows, uids):
    """Every entry: raw images byte-identical to the source, a composite that holds both, a card in index.html."""
    import io

    html = (folder / "index.html").read_text(encoding="utf-8")
    manifest = load_manifest(folder)
    assert [e["uid"] for e in manifest["entries"]] == list(uids)
    for e in manifest["entries"]:
        row = rows[e["uid"]]
        assert e["sentence"] == row["sentence"] and e["label"] == (row["label"] == "True")
        originals = {}
        for side, col in (("left", "image0"), ("right", "image1")):
            raw = (folder / e[side]["file"]).read_bytes()
            assert raw == row[col]["bytes"]
            originals[side] = Image.open(io.BytesIO(raw)).convert("RGB")
            assert f'href="{e[side]["file"]}"' in html
        composite = Image.open(folder / e["composite"])
        composite.load()  # decodes
        assert f'src="{e["composite"]}"' in html and row["sentence"] in html
        # each box of the composite is its original, enlarged 4x nearest-neighbour (56 -> 224 px)
        for side in ("left", "right"):
            box = tuple(e["layout"][side])
            region = np.asarray(composite.convert("RGB").crop(box))
            expected = np.asarray(originals[side].resize((box[2] - box[0], box[3] - box[1]), Image.NEAREST))
            assert region.shape == (224, 224, 3) and np.array_equal(region, expected)
        assert np.asarray(composite).shape[0] > e["layout"]["height"] + 30  # room for the caption under it
        # the caption is drawn: the strip under the images is not blank
        strip = np.asarray(composite.convert("L"))[e["layout"]["height"] + 12:]
        assert (strip < 128).sum() > 50


def test_random_gallery_same_seed_same_draw_never_overwrites(root, synthetic_dir, rows, capsys):
    argv = ["--random", "4", "--seed", "7", "--source", str(synthetic_dir), "--split", "validation"]
    assert main_guard(main, argv) == 0
    assert main_guard(main, argv) == 0
    first, second = only_gallery(root)
    assert (first.name, second.name) == ("random4-seed7-validation", "random4-seed7-validation-2")
    uids = load_manifest(first)["uids"]
    assert load_manifest(second)["uids"] == uids and len(set(uids)) == 4
    assert all(u in rows for u in uids)
    assert [u for u in rows if u in uids] == uids  # drawn in split order
    check_gallery(first, rows, uids)
    assert main_guard(main, ["--random", "4", "--seed", "8", "--source", str(synthetic_dir)]) == 0
    third = root / "analysis" / "gallery" / "random4-seed8-validation"
    assert load_manifest(third)["uids"] != uids
    manifest = load_manifest(first)
    assert manifest["seed"] == 7 and manifest["source"] == str(synthetic_dir) and manifest["run"]["seed"] == 7


def test_uid_and_bookmark_galleries_keep_order(root, synthetic_dir, rows, capsys):
    picked = [list(rows)[5], list(rows)[1]]
    assert main_guard(main, ["--uid", *picked, "--source", str(synthetic_dir)]) == 0
    (folder,) = only_gallery(root)
    check_gallery(folder, rows, picked)
    Bookmarks().add_many(picked[::-1], tags="look")
    assert main_guard(main, ["--bookmarks", "look", "--source", str(synthetic_dir), "--name", "mine"]) == 0
    check_gallery(root / "analysis" / "gallery" / "mine", rows, picked[::-1])


def test_explicit_out_is_not_overwritten_without_asking(root, synthetic_dir, rows, tmp_path, capsys):
    """--overwrite replaces an earlier gallery only; a folder holding anything else is never deleted."""
    out = tmp_path / "g"
    out.mkdir()
    (out / "keep.txt").write_text("someone else's", encoding="utf-8")
    argv = ["--random", "2", "--seed", "0", "--source", str(synthetic_dir), "--out", str(out)]
    for extra in ([], ["--overwrite"]):
        assert main_guard(main, [*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert "did not write (keep.txt)" in err and len(err.strip().splitlines()) == 1
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
        assert (out / "keep.txt").read_text(encoding="utf-8") == "someone else's"
    (out / "keep.txt").unlink()
    assert main_guard(main, argv) == 0  # an empty folder is fine
    check_gallery(out, rows, load_manifest(out)["uids"])
    assert main_guard(main, ["--random", "3", "--seed", "1", "--source", str(synthetic_dir), "--out", str(out)]) == 2
    assert "already holds a gallery" in capsys.readouterr().err and len(load_manifest(out)["uids"]) == 2
    assert main_guard(main, ["--random", "3", "--seed", "1", "--source", str(synthetic_dir), "--out", str(out),
                             "--overwrite"]) == 0
    check_gallery(out, rows, load_manifest(out)["uids"])
    assert len(load_manifest(out)["uids"]) == 3 and not list(tmp_path.glob("g.*"))  # nothing left aside
    (out / "notes.txt").write_text("mine", encoding="utf-8")  # added to a gallery by hand: not the gallery's to delete
    assert main_guard(main, [*argv, "--overwrite"]) == 2
    assert "did not write (notes.txt)" in capsys.readouterr().err and (out / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_unknown_uid_is_a_clear_error(root, synthetic_dir, rows, capsys):
    assert main_guard(main, ["--uid", list(rows)[0], "dev-999-0-0", "--source", str(synthetic_dir)]) == 2
    err = capsys.readouterr().err
    assert "unknown uid 'dev-999-0-0'" in err
    assert not (root / "analysis" / "gallery").exists() or not any((root / "analysis" / "gallery").iterdir())
