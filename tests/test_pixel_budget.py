"""Every run has an explicit, recorded pixel budget: the lab's default (4*28*28 .. 512*28*28) unless set.

Without one, Qwen2-VL's image processor allows 16384*28*28 pixels per image: a 12000x12000 photo became
16,388 visual tokens (Setup/NOTES.md §2). These tests run without pixel options and check what the run
records and what a large photo costs.
"""

from __future__ import annotations

import io
import json

import pytest
import yaml

from utils.cli import main_guard
from vlm_datasets.prompts import LAB_MAX_PIXELS, LAB_MIN_PIXELS, count_visual_tokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BIG = (3000, 2000)  # a 6-megapixel photo: 7,644 visual tokens at the processor's own limit


def _jpeg(size, color) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=70)
    return buf.getvalue()


@pytest.fixture(scope="module")
def big_photos(tmp_path_factory):
    """A local NLVR2-schema folder whose two rows carry a large photo beside a small one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("big") / "nlvr2-big"
    folder.mkdir()
    rows = [{"identifier": f"dev-{i}-0-0", "sentence": "The left image contains a red shape.", "label": bool(i),
             "image0": {"bytes": _jpeg(BIG, (200, 0, 0)), "path": None},
             "image1": {"bytes": _jpeg((640, 480), (0, 0, 200)), "path": None}} for i in range(2)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "validation-00000.parquet")
    return folder


def test_an_eval_without_pixel_options_records_the_lab_budget_and_caps_a_big_photo(root, tiny_model_dir, big_photos,
                                                                                   capsys):
    from scripts.evaluate import main

    # the saved processor still says the processor's own limit: the run must not use it
    saved = json.loads((tiny_model_dir / "processor_config.json").read_text(encoding="utf-8"))
    assert saved["image_processor"]["size"]["longest_edge"] == 16384 * 28 * 28
    at_processor_limit = count_visual_tokens(*BIG, LAB_MIN_PIXELS, 16384 * 28 * 28)
    assert at_processor_limit > 7000  # what the big photo would cost without a budget

    argv = ["--model", str(tiny_model_dir), "--task", "nlvr2", "--source", str(big_photos), "--batch_size", "2",
            "--progress", "false", "--tensorboard", "false", "--run_name", "big"]
    assert main_guard(main, argv) == 0
    out = capsys.readouterr().out
    run = root / "evals" / "big"
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert m["pixel_budget"] == {"min_pixels": LAB_MIN_PIXELS, "max_pixels": LAB_MAX_PIXELS,
                                 "max_visual_tokens_per_image": 512, "from": "task nlvr2's budget (the lab default)"}
    big, small = count_visual_tokens(*BIG, LAB_MIN_PIXELS, LAB_MAX_PIXELS), count_visual_tokens(640, 480, LAB_MIN_PIXELS,
                                                                                                 LAB_MAX_PIXELS)
    assert big <= 512 and small <= 512
    preds = [json.loads(x) for x in (run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [p["visual_tokens"] for p in preds] == [big + small] * 2  # what the model was actually fed
    assert m["visual_tokens_per_example"] == big + small
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert (cfg["min_pixels"], cfg["max_pixels"]) == (LAB_MIN_PIXELS, LAB_MAX_PIXELS)
    ident = json.loads((run / "eval_identity.json").read_text(encoding="utf-8"))
    assert (ident["min_pixels"], ident["max_pixels"]) == (LAB_MIN_PIXELS, LAB_MAX_PIXELS)
    meta = json.loads((run / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["sessions"][-1]["pixel_budget"] == m["pixel_budget"]
    assert "pixels: min 3136 max 401408 (512 visual tokens per image at most" in out

    # the report shows the budget and the visual tokens it gave
    from scripts.analyze import main as analyze

    assert main_guard(analyze, [str(run)]) == 0
    html = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert "pixel budget" in html and "512 visual tokens per image at most" in html
    assert f"{float(big + small)} visual tokens per example" in html

    # a budget given on the command line is used and said to be the config's
    assert main_guard(main, [*argv[:-1], "big-256", "--max_pixels", str(256 * 28 * 28)]) == 0
    m2 = json.loads((root / "evals" / "big-256" / "metrics.json").read_text(encoding="utf-8"))
    assert m2["pixel_budget"]["max_pixels"] == 256 * 28 * 28 and m2["pixel_budget"]["from"].startswith("config")
    assert m2["visual_tokens_per_example"] == count_visual_tokens(*BIG, LAB_MIN_PIXELS, 256 * 28 * 28) + \
        count_visual_tokens(640, 480, LAB_MIN_PIXELS, 256 * 28 * 28)


def test_processor_loading_planner_and_bad_budgets(root, tiny_model_dir, capsys):
    from scripts.evaluate import main
    from scripts.plan_run import main as plan
    from utils.errors import VLMStudiesError
    from utils.models import load_processor
    from vlm_datasets.prompts import pixel_budget, processor_pixel_limits

    assert processor_pixel_limits(load_processor(str(tiny_model_dir))) == (LAB_MIN_PIXELS, LAB_MAX_PIXELS)
    assert processor_pixel_limits(load_processor(str(tiny_model_dir), max_pixels=200704)) == (LAB_MIN_PIXELS, 200704)
    with pytest.raises(VLMStudiesError, match="min_pixels 500000 exceeds max_pixels 401408"):
        pixel_budget(500000, None)

    # the planner: no pixel options -> the lab's budget, named as such, and the tokens it gives an NLVR2 pair
    p = plan([])
    assert (p.min_pixels, p.max_pixels, p.visual_tokens) == (LAB_MIN_PIXELS, LAB_MAX_PIXELS, 988)
    out = capsys.readouterr().out
    assert "pixel budget  min 3136 (4*28*28), max 401408 (512*28*28: at most 512 visual tokens per image) from the " \
           "lab default" in out
    p = plan(["--max_pixels", str(256 * 28 * 28)])
    assert p.visual_tokens == 2 * 234 and "from config (the other bound: the lab default)" in capsys.readouterr().out

    # a bad budget is a one-line error before anything loads
    assert main_guard(main, ["--model", str(tiny_model_dir), "--min_pixels", "500000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: min_pixels 500000 exceeds max_pixels 401408")
