"""Shared fixtures: offline hub, a per-test artifact root, a tiny model and a small synthetic set.

Everything runs on CPU with no network. Session-scoped fixtures build the tiny model and the
synthetic set once; tests that write must use `root` (a fresh artifact root per test).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before any HF import: hub calls fail at once instead of hanging
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A fresh, empty artifact root for this test (VLM_STUDIES_ROOT points at it)."""
    r = tmp_path / "root"
    r.mkdir()
    monkeypatch.setenv("VLM_STUDIES_ROOT", str(r))
    return r


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved `tiny` Qwen2-VL + processor (seed 0)."""
    from utils.tiny_model import save_tiny_qwen2vl

    return save_tiny_qwen2vl(tmp_path_factory.mktemp("models") / "qwen2vl-tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A small synthetic NLVR2 with every family: train 64, validation 32, test 16 rows."""
    from vlm_datasets.synthetic import write_synthetic_nlvr2

    return write_synthetic_nlvr2(tmp_path_factory.mktemp("data") / "synth",
                                 {"train": 64, "validation": 32, "test": 16}, seed=0)


@pytest.fixture(scope="session")
def tiny_model_and_processor(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    return model, AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and when another process shares the two cores,
    two spin-waiting threads make every forward pass many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def qwen2_model_dir(tmp_path_factory):
    """A `tiny` Qwen2-VL with Qwen2's real vocabulary (`make_tiny_model.py --vocab qwen2`), built once per
    session: reading the 151,643 ranks and building the tokenizer takes seconds (README figure)."""
    from scripts.make_tiny_model import main

    out = tmp_path_factory.mktemp("models") / "qwen2vl-tiny-qwen2vocab"
    main(["--size", "tiny", "--vocab", "qwen2", "--out", str(out)])
    return out


@pytest.fixture(scope="session")
def qwen2_processor(qwen2_model_dir):
    """The processor of `qwen2_model_dir` as the lab loads any model's (pixel budget applied)."""
    from utils.models import load_processor

    return load_processor(str(qwen2_model_dir))
