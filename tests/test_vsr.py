"""VSR: the loader (folder with images, embedded bytes, the Hub copy's row schema), the synthetic fixture's
labels read back from its pixels, clear errors for missing images, the eval task and a VSR fine-tune."""

from __future__ import annotations

import json
import shutil

import pytest

from utils.errors import VLMStudiesError

# A row exactly as cambridgeltl/vsr_random's train/dev/test.jsonl hold them (its data README's example).
HUB_ROW = {"image": "000000050403.jpg", "image_link": "http://images.cocodataset.org/train2017/000000050403.jpg",
           "caption": "The teddy bear is in front of the person.", "label": 1, "relation": "in front of",
           "annotator_id": 31, "vote_true_validator_id": [2, 6], "vote_false_validator_id": []}


@pytest.fixture(scope="module")
def vsr_dir(tmp_path_factory):
    from vlm_datasets.synthetic_vsr import write_synthetic_vsr

    return write_synthetic_vsr(tmp_path_factory.mktemp("vsr") / "vsr", {"train": 32, "validation": 16}, seed=0)


def _centroid(img, rgb):
    import numpy as np

    a = np.asarray(img).astype(int)
    mask = (abs(a - np.array(rgb)).sum(-1) < 30)
    ys, xs = mask.nonzero()
    return xs.mean(), ys.mean()


def test_fixture_has_vsr_schema_and_labels_read_back_from_pixels(vsr_dir):
    from vlm_datasets.synthetic import COLORS
    from vlm_datasets.vsr import load_vsr

    rows = [json.loads(line) for line in (vsr_dir / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    assert set(rows[0]) == set(HUB_ROW) | {"subj", "obj"}  # VSR's columns (+ subj/obj, as vsr_zeroshot has)
    assert all(isinstance(r["label"], int) and (vsr_dir / "images" / r["image"]).is_file() for r in rows)
    examples = list(load_vsr(str(vsr_dir), "validation"))  # validation is read from dev.jsonl, as VSR names it
    assert len(examples) == 16 and examples[0].uid.startswith("validation-00000-")
    assert sum(ex.label for ex in examples) == 8  # balanced
    for ex in examples:
        assert len(ex.images) == 1 and ex.image.size == (56, 56)
        subj, obj = ex.meta["subj"].split()[0], ex.meta["obj"].split()[0]
        (sx, sy), (ox, oy) = _centroid(ex.image, COLORS[subj]), _centroid(ex.image, COLORS[obj])
        truth = {"left of": sx < ox, "right of": sx > ox, "above": sy < oy, "below": sy > oy}[ex.meta["relation"]]
        assert truth == ex.label, ex.sentence


def test_embedded_images_and_hub_rows_load_the_same(vsr_dir, tmp_path):
    import numpy as np

    from vlm_datasets.synthetic_vsr import write_synthetic_vsr
    from vlm_datasets.vsr import load_vsr

    embedded = write_synthetic_vsr(tmp_path / "emb", {"train": 32, "validation": 16}, seed=0, embed=True)
    assert not (embedded / "images").exists() and (embedded / "dev.parquet").is_file()
    a, b = list(load_vsr(str(vsr_dir), "validation")), list(load_vsr(str(embedded), "validation"))
    assert [(x.uid, x.sentence, x.label) for x in a] == [(x.uid, x.sentence, x.label) for x in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))

    # The Hub copy's rows: images named by COCO file name, looked up in $VSR_IMAGE_DIR.
    folder = tmp_path / "hubcopy"
    folder.mkdir()
    (folder / "test.jsonl").write_text(json.dumps(HUB_ROW) + "\n", encoding="utf-8")
    coco = tmp_path / "coco"
    coco.mkdir()
    shutil.copy(vsr_dir / "images" / json.loads((vsr_dir / "dev.jsonl").read_text(encoding="utf-8").splitlines()[0])["image"],
                coco / HUB_ROW["image"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VSR_IMAGE_DIR", str(coco))
        (ex,) = list(load_vsr(str(folder), "test"))
    assert ex.label is True and ex.sentence == HUB_ROW["caption"] and ex.meta["relation"] == "in front of"
    assert ex.uid == "test-00000-000000050403"


def test_missing_images_are_a_clear_error_and_one_missing_is_counted(vsr_dir, tmp_path, root, monkeypatch, capsys):
    from vlm_datasets.vsr import load_vsr

    monkeypatch.delenv("VSR_IMAGE_DIR", raising=False)
    folder = tmp_path / "noimages"
    folder.mkdir()
    shutil.copy(vsr_dir / "dev.jsonl", folder / "dev.jsonl")
    with pytest.raises(VLMStudiesError, match=r"VSR image \d+\.png .* in none of the image folders .*COCO 2017.*"
                                              r"VSR_IMAGE_DIR"):
        list(load_vsr(str(folder), "validation"))
    shutil.copytree(vsr_dir / "images", folder / "images")
    lines = (folder / "dev.jsonl").read_text(encoding="utf-8").splitlines()
    (folder / "images" / json.loads(lines[3])["image"]).unlink()
    split = load_vsr(str(folder), "validation")
    assert len(list(split)) == 15 and len(split.bad_rows) == 1 and "not found" in split.bad_rows[0][1]
    err = capsys.readouterr().err
    assert "skipped 1 bad row(s) of 16" in err and "(VSR)" in err
    with pytest.raises(VLMStudiesError, match="does not exist"):
        load_vsr(str(tmp_path / "nowhere"), "validation")
    with pytest.raises(VLMStudiesError, match="no VSR file for split 'train'"):
        load_vsr(str(folder), "train")


def test_vsr_task_evaluates_one_image_per_example(vsr_dir, tiny_model_dir, root):
    from evals.runner import EvalArgs, run_eval
    from scoring.tasks import get_task

    task = get_task("vsr")
    assert task.default_source == "cambridgeltl/vsr_random" and get_task("vsr_synth").default_source == "synthetic"
    out = run_eval(EvalArgs(model=str(tiny_model_dir), task="vsr", source=str(vsr_dir), batch_size=8,
                            progress=False, tensorboard=False, run_name="vsr-eval"), root=root)
    m = out["metrics"]
    assert m["n"] == 16 and m["task"] == "vsr@v1" and m["consistency"]["groups"] == 16
    recs = [json.loads(line) for line in (out["run_dir"] / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(r["visual_tokens"] == 4 for r in recs)  # one 56-px image: 2x2 tokens (NLVR2 pairs have 8)
    assert {s for r in recs for s in r["slices"]} <= {f"relation:{x}" for x in ("left of", "right of", "above",
                                                                                 "below")}
    with pytest.raises(VLMStudiesError, match="two pictures"):
        run_eval(EvalArgs(model=str(tiny_model_dir), task="vsr", source=str(vsr_dir), template="tf_picture_ids",
                          progress=False, tensorboard=False, run_name="vsr-ids"), root=root)


def test_vsr_fine_tune_runs_through_the_length_guard(vsr_dir, tiny_model_dir, root, tmp_path):
    from scripts.train import main
    from utils.models import load_model_and_processor

    cfg = tmp_path / "vsr.yaml"
    cfg.write_text(f"dataset: vsr\nsource: {vsr_dir}\nmodel: {tiny_model_dir}\nfamilies: []\n", encoding="utf-8")
    res = main(["--config", str(cfg), "--run_name", "vsr-ft", "--max_steps", "4", "--per_device_train_batch_size",
                "4", "--lora_r", "4", "--eval_limit", "8", "--report_to", "none", "--disable_tqdm", "true",
                "--torch_threads", "1", "--activation_checkpointing", "false", "--save_steps", "4"])
    run = root / "checkpoints" / "vsr-ft"
    meta = json.loads((run / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["dataset"]["dataset"] == "vsr" and meta["dataset"]["train_rows"] == 32
    assert meta["length_guard"]["visual_tokens_per_example"] == {"min": 4, "mean": 4.0, "max": 4}
    assert res["accuracy"]["after"]["all"]["n"] == 8  # counted once (no statement families in VSR)
    load_model_and_processor(str(tiny_model_dir), adapter=str(run))
