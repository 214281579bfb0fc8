"""Bad inputs on the way in (issue 11, input side): damaged caches and manifests, every image mode, images the
processor refuses, cut parquet files, names and paths taken from data, very large images."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from utils.cli import main_guard
from utils.errors import VLMStudiesError
from vlm_datasets import load_nlvr2
from vlm_datasets.cache import FORMAT_VERSION, prepare_split


def encode(img, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def source_rows(synthetic_dir, split="validation") -> list[dict]:
    """The synthetic split's stored rows, read straight from its parquet files."""
    return [r for f in sorted(Path(synthetic_dir).glob(f"{split}-*.parquet")) for r in pq.read_table(f).to_pylist()]


def write_source(folder: Path, rows: list[dict], split="validation") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}-00000.parquet")
    return folder


def flip_bytes_in_column(shard: Path, column: str, n: int = 8) -> None:
    """Flip `n` bytes inside the stored values of `column` (its dictionary page, where pyarrow keeps the image
    bytes), as a bad disk or a partial copy would: row counts and the footer stay as they were."""
    meta = pq.ParquetFile(shard).metadata.row_group(0)
    col = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == column)
    start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
    data = bytearray(shard.read_bytes())
    for k in range(n):
        data[start + 64 + k * (col.total_compressed_size - 128) // n] ^= 0xFF
    shard.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- 4, 8: caches and manifests

def test_a_changed_byte_in_a_cache_shard_is_caught_when_read_and_rebuild_repairs_it(root, synthetic_dir, capsys):
    from scripts.prepare_data import main as prepare

    streamed = [(e.uid, np.asarray(e.left).tobytes()) for e in load_nlvr2(str(synthetic_dir), "validation")]
    path = prepare_split(str(synthetic_dir), "validation", progress=False)
    shard = path / json.loads((path / "manifest.json").read_text(encoding="utf-8"))["shards"][0]["file"]
    flip_bytes_in_column(shard, "image0.bytes")
    # Read without checksums, the shard still opens and the images come out changed: nothing else would notice.
    changed = [r for r, s in zip(pq.read_table(shard).to_pylist(), source_rows(synthetic_dir))
               if r["image0"]["bytes"] != s["image0"]["bytes"]]
    assert changed

    with pytest.raises(VLMStudiesError, match=r"checksum.*--rebuild") as err:
        list(load_nlvr2(str(synthetic_dir), "validation", "cached"))
    assert str(shard) in str(err.value) and "\n" not in str(err.value)

    argv = ["--source", str(synthetic_dir), "--split", "validation"]
    assert main_guard(prepare, [*argv, "--verify"]) == 2
    assert "--rebuild" in capsys.readouterr().err
    assert main_guard(prepare, [*argv, "--rebuild"]) == 0  # the advice, followed, repairs it
    assert main_guard(prepare, [*argv, "--verify"]) == 0
    cached = [(e.uid, np.asarray(e.left).tobytes()) for e in load_nlvr2(str(synthetic_dir), "validation", "cached")]
    assert cached == streamed


def test_preparing_again_rebuilds_a_damaged_cache(root, synthetic_dir, capsys):
    from scripts.prepare_data import main as prepare

    path = prepare_split(str(synthetic_dir), "validation", progress=False)
    flip_bytes_in_column(path / "shard-00000.parquet", "image1.bytes")
    assert main_guard(prepare, ["--source", str(synthetic_dir), "--split", "validation"]) == 0
    assert "damaged" in capsys.readouterr().err
    assert len(list(load_nlvr2(str(synthetic_dir), "validation", "cached"))) == 32


def test_a_cache_without_page_checksums_is_hashed_whole_and_upgraded(root, synthetic_dir, capsys):
    """Format 1 (before page checksums) still opens, verified by SHA-256; a prepare rebuilds it."""
    path = prepare_split(str(synthetic_dir), "validation", progress=False)
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    old = {k: v for k, v in manifest.items() if k != "format_version"}
    (path / "manifest.json").write_text(json.dumps(old), encoding="utf-8")
    assert len(list(load_nlvr2(str(synthetic_dir), "validation", "cached"))) == 32
    assert "predates page checksums" in capsys.readouterr().err
    shard = path / "shard-00000.parquet"
    flip_bytes_in_column(shard, "image0.bytes")
    with pytest.raises(VLMStudiesError, match="SHA-256 differs.*--rebuild"):
        load_nlvr2(str(synthetic_dir), "validation", "cached")
    prepare_split(str(synthetic_dir), "validation", progress=False)
    assert json.loads((path / "manifest.json").read_text(encoding="utf-8"))["format_version"] == FORMAT_VERSION


@pytest.mark.parametrize("damage, message", [
    (lambda m: [m], "holds a JSON list"),
    (lambda m: dict(m, shards=[{k: v for k, v in s.items() if k != "file"} for s in m["shards"]]), 'no "file"'),
    (lambda m: dict(m, shards=[dict(s, file="../../../../etc/hostname") for s in m["shards"]]),
     "not a file inside the cache folder"),
    (lambda m: dict(m, shards="shard-00000.parquet"), "no list of shards"),
    (lambda m: dict(m, format_version=99), "newer version"),
])
def test_a_malformed_manifest_is_one_line_naming_the_rebuild(root, synthetic_dir, damage, message):
    path = prepare_split(str(synthetic_dir), "validation", progress=False)
    mpath = path / "manifest.json"
    mpath.write_text(json.dumps(damage(json.loads(mpath.read_text(encoding="utf-8")))), encoding="utf-8")
    with pytest.raises(VLMStudiesError, match=message) as err:
        load_nlvr2(str(synthetic_dir), "validation", "cached")
    assert str(mpath) in str(err.value) and f"--source {synthetic_dir} --split validation" in str(err.value)
    assert "--rebuild" in str(err.value)
    prepare_split(str(synthetic_dir), "validation", progress=False, rebuild=True)
    assert len(list(load_nlvr2(str(synthetic_dir), "validation", "cached"))) == 32


def test_prepare_data_refuses_numbers_that_cannot_be_meant(root, synthetic_dir, capsys):
    from scripts.prepare_data import main as prepare

    for flag, value, message in (("--limit", "0", "--limit must be a positive number of rows"),
                                 ("--rows-per-shard", "0", "--rows_per_shard must be at least 1")):
        assert main_guard(prepare, ["--source", str(synthetic_dir), flag, value]) == 2
        assert message in capsys.readouterr().err  # (a --limit of 0 used to say the split "is empty")
    assert not (root / "datasets" / "synth").exists()


# ----------------------------------------------------------------------------- 5: every image mode

def _grey16(values):
    img = Image.new("I;16", (len(values), 1))
    for x, v in enumerate(values):
        img.putpixel((x, 0), v)
    return img


def _palette_with_transparency():
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 1  # palette index 1 (blue) is transparent
    return img


def _cmyk_red():
    return Image.new("CMYK", (2, 1), (0, 255, 255, 0))


def _palette():
    img = Image.frombytes("P", (2, 1), bytes([0, 1]))
    img.putpalette([10, 20, 30, 40, 50, 60])
    return img


SIXTEEN = [0, 257, 32768, 65535]  # -> 0, 1, 128, 255 (clipping gave 0, 255, 255, 255)
GREYS = [(v,) * 3 for v in (0, 1, 128, 255)]
# (id, image, format it is stored in, the mode PIL opens it as, the RGB pixels of its first row)
MODES = [
    ("1", Image.frombytes("1", (8, 1), bytes([0b10100000])), "PNG", "1",
     [(255,) * 3, (0,) * 3, (255,) * 3] + [(0,) * 3] * 5),
    ("L", Image.frombytes("L", (3, 1), bytes([0, 100, 255])), "PNG", "L", [(0,) * 3, (100,) * 3, (255,) * 3]),
    ("LA", Image.frombytes("LA", (3, 1), bytes([0, 255, 0, 0, 100, 128])), "PNG", "LA",
     [(0,) * 3, (255,) * 3, (177,) * 3]),  # opaque black; transparent -> white; 100 at alpha 128 on white -> 177
    ("P", _palette(), "PNG", "P", [(10, 20, 30), (40, 50, 60)]),
    ("P+transparency", _palette_with_transparency(), "PNG", "P", [(255, 0, 0), (255, 255, 255)]),
    ("RGB", Image.frombytes("RGB", (2, 1), bytes([1, 2, 3, 250, 128, 7])), "PNG", "RGB", [(1, 2, 3), (250, 128, 7)]),
    ("RGBA", Image.frombytes("RGBA", (3, 1), bytes([255, 0, 0, 255, 0, 0, 255, 0, 0, 0, 0, 128])), "PNG", "RGBA",
     [(255, 0, 0), (255, 255, 255), (127, 127, 127)]),
    ("RGB+transparency", Image.frombytes("RGB", (2, 1), bytes([9, 9, 9, 200, 0, 0])), "PNG", "RGB",
     [(255, 255, 255), (200, 0, 0)]),  # a tRNS colour key: (9, 9, 9) is transparent
    ("PA", Image.frombytes("RGBA", (2, 1), bytes([0, 200, 0, 255, 0, 200, 0, 0])).convert("PA"), "TIFF", "PA",
     [(0, 200, 0), (255, 255, 255)]),
    ("CMYK", _cmyk_red(), "TIFF", "CMYK", [(255, 0, 0)] * 2),
    ("YCbCr", Image.new("RGB", (2, 1), (255, 0, 0)).convert("YCbCr"), "TIFF", "YCbCr", "like-rgb-red"),
    ("LAB", Image.new("LAB", (2, 1), (255, 128, 128)), "TIFF", "LAB", "near-white"),
    ("I;16", _grey16(SIXTEEN), "PNG", "I;16", GREYS),
    ("I;16B", Image.frombytes("I;16B", (4, 1), np.array(SIXTEEN, ">u2").tobytes()), "TIFF", "I;16B", GREYS),
    ("I", Image.fromarray(np.array([[0, 257, 32768, 65535, 70000, -5]], dtype=np.int32)), "TIFF", "I",
     GREYS + [(255,) * 3, (0,) * 3]),
    ("F 0..1", Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)), "TIFF", "F",
     [(v,) * 3 for v in (0, 128, 255)]),
    ("F 0..255", Image.fromarray(np.array([[0.0, 100.0, 300.0]], dtype=np.float32)), "TIFF", "F",
     [(v,) * 3 for v in (0, 100, 255)]),
]
MODES[7][1].info["transparency"] = (9, 9, 9)


@pytest.mark.parametrize("img, fmt, mode, want", [m[1:] for m in MODES], ids=[m[0] for m in MODES])
def test_every_mode_pil_opens_decodes_to_the_right_rgb(img, fmt, mode, want):
    from vlm_datasets.nlvr2 import decode_image  # the loaders' entry to the one decoder (utils.images)

    data = encode(img, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode  # the file really holds the mode under test
    rgb = decode_image(data)
    assert rgb.mode == "RGB" and rgb.size == img.size
    got = [rgb.getpixel((x, 0)) for x in range(rgb.size[0])]
    if want == "like-rgb-red":
        assert all(abs(a - b) <= 2 for p in got for a, b in zip(p, (255, 0, 0))), got
    elif want == "near-white":
        assert all(c >= 250 for p in got for c in p), got
    else:
        assert got == want


def test_exif_orientation_is_applied():
    """A phone photo stored sideways with the EXIF tag "rotate 90 clockwise" (6) is used upright."""
    from vlm_datasets.nlvr2 import decode_image

    sideways = Image.new("RGB", (64, 32), (0, 0, 255))
    sideways.paste((255, 0, 0), (0, 0, 16, 16))  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(sideways, "JPEG", exif=exif, quality=95)
    rgb = decode_image(data)
    assert rgb.size == (32, 64)
    r, g, b = rgb.getpixel((rgb.size[0] - 4, 4))  # rotated 90 clockwise: the red corner is now top-right
    assert r > 200 and b < 60
    r, g, b = rgb.getpixel((4, 4))
    assert b > 200 and r < 60
    from utils.images import decode_image_bytes, stored_size

    assert decode_image_bytes(data)[1] == stored_size(data) == (32, 64)  # sizes are reported upright too


def test_the_loader_decodes_through_the_same_rules(tmp_path, root, synthetic_dir):
    rows = source_rows(synthetic_dir)[:2]
    rows[0]["image0"] = {"bytes": encode(_grey16([65535, 32768] * 8)), "path": None}
    rows[1]["image1"] = {"bytes": encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0))), "path": None}
    exs = list(load_nlvr2(str(write_source(tmp_path / "d", rows)), "validation"))
    assert [exs[0].left.getpixel((x, 0)) for x in range(2)] == [(255,) * 3, (128,) * 3]
    assert exs[1].right.getpixel((3, 3)) == (255, 255, 255)


# ----------------------------------------------------------------------------- 6: images the processor refuses

def test_processor_size_rule_matches_transformers_smart_resize(tiny_model_dir):
    from transformers import AutoProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    from utils.images import processor_size_problem

    sizes = [(1, 1), (1, 199), (1, 200), (1, 201), (5, 1000), (5, 1001), (5, 2000), (2000, 5), (3, 3), (14, 14),
             (28, 5600), (28, 5601), (4032, 3024), (12000, 12000), (7, 1400), (7, 1401)]
    for w, h in sizes:
        try:
            smart_resize(h, w, factor=28, min_pixels=4 * 28 * 28, max_pixels=512 * 28 * 28)
            refused = False
        except ValueError:
            refused = True
        assert (processor_size_problem(w, h) is not None) == refused, (w, h)
    ip = AutoProcessor.from_pretrained(tiny_model_dir).image_processor
    with pytest.raises(ValueError, match="aspect ratio"):  # the real processor, on the picture
        ip(images=[Image.new("RGB", (2000, 5))], return_tensors="pt")
    assert processor_size_problem(2000, 5) and ip(images=[Image.new("RGB", (3, 3))], return_tensors="pt")


@pytest.fixture
def awkward_source(tmp_path, synthetic_dir):
    """The synthetic validation split with a 2000x5 strip in row 3 and a 3000x2000 JPEG in row 5."""
    rows = source_rows(synthetic_dir)
    rows[3]["image1"] = {"bytes": encode(Image.new("RGB", (2000, 5), (200, 0, 0))), "path": None}
    big = Image.new("RGB", (3000, 2000), (30, 160, 90))
    rows[5]["image0"] = {"bytes": encode(big, "JPEG", quality=90), "path": None}
    return write_source(tmp_path / "awkward", rows), rows[3]["identifier"], rows[5]["identifier"]


@pytest.mark.usefixtures("one_torch_thread")
def test_eval_skips_and_names_a_refused_image_and_saves_the_rest(root, tiny_model_dir, awkward_source):
    from evals.runner import EvalArgs, run_eval
    from vlm_datasets.prompts import count_visual_tokens

    src, bad_uid, big_uid = awkward_source
    budget = 256 * 28 * 28
    args = EvalArgs(model=str(tiny_model_dir), task="nlvr2", source=str(src), split="validation", batch_size=4,
                    run_name="awkward", progress=False, tensorboard=False, max_pixels=budget)
    out = run_eval(args)
    records = [json.loads(x) for x in (out["run_dir"] / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 31 and bad_uid not in {r["uid"] for r in records}  # its batch-mates were predicted
    assert out["metrics"]["skipped_bad_rows"] == 1 and out["metrics"]["bad_rows"][0][0] == bad_uid
    assert "aspect ratio 400" in out["metrics"]["bad_rows"][0][1]
    big = next(r for r in records if r["uid"] == big_uid)  # decoded small: the visual tokens of the full image
    right = count_visual_tokens(56, 56, 4 * 28 * 28, budget)  # its right image is a synthetic 56x56 one
    assert big["visual_tokens"] == count_visual_tokens(3000, 2000, 4 * 28 * 28, budget) + right

    with pytest.raises(VLMStudiesError, match=f"bad row .*{bad_uid}.*aspect ratio"):
        run_eval(EvalArgs(**{**args.__dict__, "run_name": "awkward-raise", "on_error": "raise"}))


def test_inspect_and_training_data_treat_a_refused_image_as_a_bad_row(root, tiny_model_dir, awkward_source, capsys):
    from transformers import AutoProcessor

    from scripts.inspect_sample import main as inspect_main
    from training.data import load_train_data
    from training.options import DataOptions

    src, bad_uid, big_uid = awkward_source
    assert main_guard(inspect_main, ["--source", str(src), "--uid", bad_uid]) == 2
    err = capsys.readouterr().err.strip()
    assert bad_uid in err and "aspect ratio 400" in err and "Traceback" not in err
    assert main_guard(inspect_main, ["--source", str(src), "--uid", big_uid, "--json"]) == 0
    described = json.loads(capsys.readouterr().out.splitlines()[0])
    assert (described["images"][0]["width"], described["images"][0]["height"]) == (3000, 2000)  # as stored

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    for mode in ("cached", "streaming"):
        opts = DataOptions(source=str(src), split="validation", mode=mode, eval_split=None)
        data = load_train_data(opts, processor, max_length=None, seed=0)
        if mode == "cached":
            assert data.rows == 31
            examples = [data.dataset[i] for i in range(len(data.dataset))]
        else:
            examples = [ex for _, ex in zip(range(31), data.dataset)]
        assert len(examples) == 31 and all(len(ex["images"]) == 2 for ex in examples)
        assert bad_uid in capsys.readouterr().err


def test_vsr_rows_get_the_same_checks(root, tmp_path):
    """VSR (one image named by file): a refused size is a bad row, a path in a row never leaves the image
    folders, and a line that is not a JSON object is one clear error."""
    from vlm_datasets.vsr import load_vsr

    folder = tmp_path / "vsr"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "strip.png").write_bytes(encode(Image.new("RGB", (2000, 5))))
    (folder / "images" / "ok.png").write_bytes(encode(Image.new("RGB", (40, 30), (5, 6, 7))))
    rows = [{"image": "strip.png", "caption": "The cat is left of the dog.", "label": 1},
            {"image": "ok.png", "caption": "The cat is left of the dog.", "label": 0},
            {"image": {"bytes": None, "path": "/etc/hostname"}, "caption": "The cat is on the mat.", "label": 1}]
    (folder / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    split = load_vsr(str(folder), "validation", image_dir=folder / "images")
    exs = list(split)
    assert len(exs) == 1 and exs[0].image.getpixel((0, 0)) == (5, 6, 7)
    reasons = dict(split.bad_rows)
    assert "aspect ratio 400" in reasons["validation-00000-strip"]
    assert "hostname" in reasons["validation-00002-hostname"]  # looked up by name in the image folders only
    (folder / "dev.jsonl").write_text('{"image": "ok.png", "caption": "x", "label": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(VLMStudiesError, match="line 2 holds a JSON list, not an object"):
        list(load_vsr(str(folder), "validation", image_dir=folder / "images"))


# ----------------------------------------------------------------------------- 7: a parquet file cut in half

@pytest.mark.usefixtures("one_torch_thread")
def test_a_cut_parquet_file_is_one_line_in_eval_and_inspect(root, tmp_path, tiny_model_dir, synthetic_dir, capsys):
    from scripts.evaluate import main as evaluate
    from scripts.inspect_sample import main as inspect_main

    folder = write_source(tmp_path / "cut", source_rows(synthetic_dir))
    f = folder / "validation-00000.parquet"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    for main, argv in ((evaluate, ["--model", str(tiny_model_dir), "--task", "nlvr2", "--progress", "false"]),
                       (inspect_main, ["--uid", "dev-0-0-0"])):
        assert main_guard(main, [*argv, "--source", str(folder), "--split", "validation"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"error: cannot read parquet file {f}") and "re-download" in err[-1]
        assert not any("Traceback" in line for line in err)


# ----------------------------------------------------------------------------- 15: names taken from data

def test_a_uid_never_leads_a_file_outside_its_folder(root, tmp_path, synthetic_dir, capsys):
    from scripts.inspect_sample import main as inspect_main
    from vlm_datasets.gallery import write_gallery
    from vlm_datasets.inspect import find_samples

    rows = source_rows(synthetic_dir)[:4]
    rows[0]["identifier"], rows[1]["identifier"] = "../../x", "..\\..\\y"
    src = write_source(tmp_path / "data", rows)
    out = tmp_path / "a" / "b" / "export"
    assert main_guard(inspect_main, ["--source", str(src), "--uid", "../../x", "..\\..\\y", "--export", str(out)]) == 0
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png"))
    assert len(written) == 4 and all(p.parent == Path("a/b/export") for p in written), written
    sums = (out / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    assert len(sums) == 4 and all("/" not in ln.split("  ", 1)[1] and ".." not in ln for ln in sums)

    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    argv = ["--source", str(src), "--uid", "../../x", "--export", str(tmp_path / "a-file")]
    assert main_guard(inspect_main, argv) == 2
    assert "cannot use" in capsys.readouterr().err  # (a FileExistsError traceback before)

    samples = find_samples(load_nlvr2(str(src), "validation"), ["../../x", "..\\..\\y"], with_siblings=False)
    gallery = write_gallery(samples, tmp_path / "g" / "gallery", "t", {"source": "s", "split": "v", "selection": "x"})
    assert {p.parent for p in tmp_path.rglob("*.png") if "g" in p.relative_to(tmp_path).parts} == {gallery}


def test_file_names_from_data_are_safe_and_distinct():
    from utils.paths import path_inside, safe_file_stem

    names = ["dev-1-0-0", "../../x", "..", "a/b", "a_b", "a\\b", "CON", "x;touch${IFS}y;#", "", "\u00e9t\u00e9"]
    stems = [safe_file_stem(n) for n in names]
    assert stems[0] == "dev-1-0-0"  # ordinary uids keep their name
    assert len(set(stems)) == len(stems)  # never two uids in one file
    assert all(s and "/" not in s and "\\" not in s and not s.startswith(".") and s.upper() != "CON" for s in stems)
    with pytest.raises(VLMStudiesError, match="points outside"):
        path_inside("/tmp/some/folder", "../x")
    with pytest.raises(VLMStudiesError, match="points outside"):
        path_inside("/tmp/some/folder", "/etc/hostname")


def test_a_revision_or_split_cannot_move_the_cache_outside_the_root(root, tmp_path, capsys):
    from scripts.prepare_data import main as prepare

    before = set(tmp_path.rglob("*"))
    # both would land in tmp_path/escaped (beside the root) if joined as given
    for flag, value in (("--revision", "../../../escaped"), ("--split", "../../../../escaped")):
        assert main_guard(prepare, ["--source", "pingzhili/nlvr2", flag, value]) == 2
        assert "points outside" in capsys.readouterr().err
    assert not [p for p in set(tmp_path.rglob("*")) - before if "escaped" in str(p)]


def test_bookmarks_refuse_uids_that_are_not_identifiers(root, capsys):
    from vlm_datasets.bookmarks import Bookmarks, main

    for uid in ("../../x", "a/b", "dev-1;rm", "..", ".hidden", "a..b"):
        assert main_guard(main, ["add", uid]) == 2
        assert "invalid uid" in capsys.readouterr().err
    assert Bookmarks().list() == []
    assert main_guard(main, ["add", "dev-850-0-0", "validation-00012-000000050403", "test1-3-1-0"]) == 0


# ----------------------------------------------------------------------------- 17: paths stored in a dataset

def test_image_paths_in_a_dataset_are_read_only_inside_its_folder(root, tmp_path, synthetic_dir, capsys):
    outside = tmp_path / "secret.png"
    outside.write_bytes(encode(Image.new("RGB", (8, 8), (1, 2, 3))))
    rows = source_rows(synthetic_dir)[:4]
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "ok.png").write_bytes(encode(Image.new("RGB", (8, 8), (9, 9, 9))))
    rows[0]["image0"] = {"bytes": None, "path": "/etc/hostname"}
    rows[1]["image0"] = {"bytes": None, "path": str(outside)}
    rows[2]["image0"] = {"bytes": None, "path": "images/../../secret.png"}
    rows[3]["image0"] = {"bytes": None, "path": "images/ok.png"}  # relative to the dataset's folder: fine
    write_source(folder, rows)

    split = load_nlvr2(str(folder), "validation")
    exs = list(split)
    assert [e.uid for e in exs] == [rows[3]["identifier"]] and exs[0].left.getpixel((0, 0)) == (9, 9, 9)
    assert len(split.bad_rows) == 3 and all("outside the dataset folder" in why for _, why in split.bad_rows)

    path = prepare_split(str(folder), "validation", progress=False)
    assert "could not be stored" in capsys.readouterr().err
    stored = [r["image0"]["bytes"] for f in sorted(path.glob("shard-*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert stored[:3] == [None, None, None] and stored[3] == (folder / "images" / "ok.png").read_bytes()
    assert not any(Path("/etc/hostname").read_bytes() == b for b in stored if b)
    cached = load_nlvr2(str(folder), "validation", "cached")
    assert [e.uid for e in cached] == [rows[3]["identifier"]] and len(cached.bad_rows) == 3


# ----------------------------------------------------------------------------- 18: very large images

def test_a_large_jpeg_is_decoded_small_to_exactly_the_processors_size(tiny_model_dir, monkeypatch):
    from PIL import JpegImagePlugin
    from transformers import AutoProcessor

    from utils.images import decode_image_bytes
    from vlm_datasets.prompts import count_visual_tokens, set_pixel_limits

    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        drafts.append((size, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    x, y = np.meshgrid(np.linspace(0, 255, 4000), np.linspace(0, 255, 3000))
    photo = Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8))
    data = encode(photo, "JPEG", quality=92)
    budget = 512 * 28 * 28
    small, size = decode_image_bytes(data, max_pixels=budget)
    assert size == (4000, 3000) and small.size == (728, 532)  # smart_resize's target for 4000x3000 at this budget
    assert drafts and drafts[0][1][0] <= 1000  # the JPEG was decoded at 1/4 scale, not at 4000x3000
    assert count_visual_tokens(*small.size, 4 * 28 * 28, budget) == count_visual_tokens(4000, 3000, 4 * 28 * 28, budget)

    # The real processor gets the same grid either way, and nearly the same pixels.
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    set_pixel_limits(processor, max_pixels=budget)
    full = processor.image_processor(images=[photo], return_tensors="pt")
    fast = processor.image_processor(images=[small], return_tensors="pt")
    assert full["image_grid_thw"].tolist() == fast["image_grid_thw"].tolist()
    assert float((full["pixel_values"] - fast["pixel_values"]).abs().mean()) < 0.02  # normalised units (~0.3 levels)

    unbudgeted, _ = decode_image_bytes(encode(photo.resize((400, 300)), "JPEG"), max_pixels=budget)
    assert unbudgeted.size == (400, 300)  # under the budget nothing changes
