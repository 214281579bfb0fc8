"""colab/Playground.ipynb runs top to bottom, headless, on CPU (small local model, synthetic data)."""

from __future__ import annotations

import json

import nbformat
from nbclient import NotebookClient

from utils.paths import REPO_ROOT

NOTEBOOK = REPO_ROOT / "colab" / "Playground.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_notebook_executes_headless(root, monkeypatch):
    monkeypatch.delenv("VLM_STUDIES_ROOT", raising=False)
    monkeypatch.setenv("VLM_STUDIES_ROOT", str(root))  # the kernel inherits this environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # any cell error raises CellExecutionError and fails the test
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = {i: c.outputs for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    text = "\n".join(o.get("text", "") for outs in outputs.values() for o in outs if o.output_type == "stream")
    images = [o for outs in outputs.values() for o in outs if "image/png" in o.get("data", {})]
    assert "Colab: False" in text
    # the gallery shown inline (4 composites), the playground pair and two image files
    assert len(images) >= 4 + 1 + 2
    galleries = list((root / "analysis" / "gallery").iterdir())
    assert [g.name for g in galleries] == ["notebook"] and (galleries[0] / "index.html").is_file()
    # bookmarks inspected, playground answers logged, TensorBoard command printed (no server started)
    bookmarks = json.loads((root / "bookmarks.json").read_text(encoding="utf-8"))["bookmarks"]
    assert sum("notebook" in b["tags"] for b in bookmarks) == 2
    assert "same image pair" in text and "visual tokens" in text
    log = [json.loads(line) for line in (root / "playground" / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(log) == 3 and log[0]["template"] == "tf@v1" and log[2]["images"][0]["path"].endswith(".png")
    assert f"tensorboard --logdir_spec train:{root / 'logs' / 'tb'},eval:{root / 'evals'}" in text
    # the eval report ran and is shown
    assert (root / "evals" / "notebook-eval" / "metrics.json").is_file()
    assert (root / "evals" / "notebook-eval" / "report" / "index.html").is_file()
    assert any("iframe" in o.get("data", {}).get("text/html", "") for outs in outputs.values() for o in outs)
