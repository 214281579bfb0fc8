"""Python 3.10 and 3.11, the versions the lab targets (Colab, laptops): the suite runs on 3.11 here, and
`vermin` reads every .py file of the project for anything newer than 3.10 (modules, functions, syntax)."""

from __future__ import annotations

import subprocess
import sys

from encoding_check import notebook_source, project_files
from utils.paths import REPO_ROOT

TARGET = "3.10"


def vermin(*paths) -> subprocess.CompletedProcess:
    # vermin has no `python -m vermin`; its main() reads sys.argv
    cmd = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", f"-t={TARGET}-", "--no-tips",
           "--violations", "--eval-annotations", "--no-parse-comments", *map(str, paths)]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8", timeout=300)


def test_every_python_file_runs_on_3_10(tmp_path):
    files = [p for p in project_files() if p.suffix == ".py"]
    assert len(files) > 80 and REPO_ROOT / "dev.py" in files
    for notebook in (p for p in project_files() if p.suffix == ".ipynb"):  # its code cells, as one module
        files.append(tmp_path / f"{notebook.stem}.py")
        files[-1].write_text("\n\n".join(code for _, code in notebook_source(notebook)), encoding="utf-8")
    proc = vermin(*files)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_vermin_catches_what_3_10_lacks(tmp_path):
    newer = tmp_path / "newer.py"
    newer.write_text("import tomllib\nfrom typing import Self\n", encoding="utf-8")
    proc = vermin(newer)
    assert proc.returncode != 0 and "'tomllib' module requires !2, 3.11" in proc.stdout
