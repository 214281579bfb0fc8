"""colab/Playground.ipynb runs top to bottom, headless, on CPU (small local model, synthetic data): once as on
a laptop, once as in Colab (a stand-in `google.colab` whose Drive is a temporary folder, pip recorded)."""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
from importlib import metadata
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from utils.paths import REPO_ROOT

NOTEBOOK = REPO_ROOT / "colab" / "Playground.ipynb"
COLAB_RUNTIME = Path(__file__).resolve().parent / "colab_runtime"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def execute() -> tuple[str, list]:
    """Run every cell in a fresh kernel (which inherits this environment); any cell error fails the test.
    Returns the printed text and every output."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    return text, outputs


def check_outputs(root: Path, text: str, outputs: list) -> None:
    """What every run must leave under `root` and show, wherever the root is."""
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # the gallery shown inline (4 composites), the playground pair and two image files
    assert len(images) >= 4 + 1 + 2
    galleries = list((root / "analysis" / "gallery").iterdir())
    assert [g.name for g in galleries] == ["notebook"] and (galleries[0] / "index.html").is_file()
    # bookmarks inspected, playground answers logged
    bookmarks = json.loads((root / "bookmarks.json").read_text(encoding="utf-8"))["bookmarks"]
    assert sum("notebook" in b["tags"] for b in bookmarks) == 2
    assert "same image pair" in text and "visual tokens" in text
    log = [json.loads(line) for line in (root / "playground" / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(log) == 3 and log[0]["template"] == "tf@v1" and log[2]["images"][0]["path"].endswith(".png")
    # the short fine-tune: a run dir with its adapter, TensorBoard events of its steps
    (run,) = (root / "checkpoints").glob("notebook-*")
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and "4 steps, loss" in text
    assert list((root / "logs" / "tb" / run.name).glob("events.out.tfevents.*"))
    # the synthetic set and the model were built under the root
    assert (root / "datasets").is_dir() and any((root / "datasets").iterdir()) and (root / "models").is_dir()
    # the eval report ran and is shown
    assert (root / "evals" / "notebook-eval" / "metrics.json").is_file()
    assert (root / "evals" / "notebook-eval" / "report" / "index.html").is_file()
    assert any("iframe" in o.get("data", {}).get("text/html", "") for o in outputs)
    # a bookmarked uid looked inside: its occlusion table printed, its offline page written
    from evals.report import check_report

    assert "left replaced" in text and "logit lens P(True)" in text
    (page,) = (root / "analysis" / "inside").glob("*/uid/*/index.html")
    tagged = [b["uid"] for b in bookmarks if "notebook" in b["tags"]]
    assert page.parent.name == tagged[0] and check_report(page) == []


def test_notebook_executes_headless(root, monkeypatch):
    monkeypatch.delenv("VLM_STUDIES_ROOT", raising=False)
    monkeypatch.setenv("VLM_STUDIES_ROOT", str(root))  # the kernel inherits this environment
    text, outputs = execute()
    assert "Colab: False" in text
    check_outputs(root, text, outputs)
    # no TensorBoard server outside Colab: the command is printed
    assert f"tensorboard --logdir_spec train:{root / 'logs' / 'tb'},eval:{root / 'evals'}" in text


def test_notebook_colab_branch_with_a_stand_in_runtime(tmp_path, monkeypatch):
    """In "Colab": Drive mounted where utils/paths.py looks, everything under MyDrive/VLM_Studies_Files, the
    install keeps the installed torch, and %tensorboard starts a real server shown Colab's way."""
    from tensorboard import manager

    mount = tmp_path / "content" / "drive"
    pip_record = tmp_path / "pip.jsonl"
    monkeypatch.delenv("VLM_STUDIES_ROOT", raising=False)  # the root must come from the mounted Drive
    monkeypatch.setenv("VLM_STUDIES_DRIVE_MOUNT", str(mount))
    monkeypatch.setenv("COLAB_STANDIN_PIP_RECORD", str(pip_record))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(COLAB_RUNTIME), os.environ.get("PYTHONPATH")])))
    # Colab has `tensorboard` on PATH; so has this venv's bin folder
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    before = {i.pid for i in manager.get_all()}
    try:
        text, outputs = execute()
    finally:  # stop the TensorBoard server the notebook started (its cache key holds its arguments)
        for info in manager.get_all():
            if info.pid not in before and str(tmp_path) in base64.b64decode(info.cache_key).decode("utf-8"):
                os.kill(info.pid, signal.SIGTERM)
    drive_root = mount / "MyDrive" / "VLM_Studies_Files"
    assert "Colab: True" in text and f"Mounted at {mount}" in text and f"root {drive_root}" in text
    check_outputs(drive_root, text, outputs)
    assert not (mount.parent / "artifacts").exists()

    # the install cell: requirements.txt, with the installed torch and torchvision pinned as they are
    (install,) = [json.loads(line) for line in pip_record.read_text(encoding="utf-8").splitlines()]
    argv = install["argv"]
    assert argv[:2] == ["install", "-q"] and argv[argv.index("-r") + 1].endswith("requirements.txt")
    (pins,) = install["constraints"].values()
    assert pins.splitlines() == [f"torch=={metadata.version('torch')}",
                                 f"torchvision=={metadata.version('torchvision')}"]

    # %tensorboard: a server on the two log folders, displayed through Colab's port proxy
    scripts = [o["data"]["application/javascript"] for o in outputs if "application/javascript" in o.get("data", {})]
    assert len(scripts) == 1 and "google.colab.kernel.proxyPort(" in scripts[0], text[-2000:]
