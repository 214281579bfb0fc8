"""dev.py, the two commands on every platform: venv layout per platform, reinstall only when the requirements
change, the commands it runs, and the Makefile / CI / README all going through it. No venv is created here:
the commands are recorded instead of run."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from importlib import metadata
from pathlib import Path

import pytest

from utils.paths import REPO_ROOT


@pytest.fixture
def dev(monkeypatch):
    """dev.py as a module, with `run` recording commands instead of running them."""
    spec = importlib.util.spec_from_file_location("dev", REPO_ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ran = []

    def record(cmd, env=None):
        cmd = [str(c) for c in cmd]
        module.ran.append((cmd, env))
        if cmd[1:3] == ["-m", "venv"]:  # what `python -m venv DIR` would leave: the folder
            Path(cmd[3]).mkdir(parents=True)
        if "-c" in cmd:  # the constraints file lives only while pip runs
            module.pins = Path(cmd[cmd.index("-c") + 1]).read_text(encoding="utf-8")

    monkeypatch.setattr(module, "run", record)
    return module


def test_venv_interpreter_per_platform(dev):
    venv = Path("proj") / ".venv"
    assert dev.venv_python(venv, "win32") == venv / "Scripts" / "python.exe"
    assert dev.venv_python(venv, "linux") == venv / "bin" / "python"
    assert dev.venv_python(venv, "darwin") == venv / "bin" / "python"


def test_installs_once_and_again_only_when_requirements_change(dev, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in dev.REQUIREMENTS:
        shutil.copy(REPO_ROOT / name, repo / name)
    venv = tmp_path / ".venv"

    python = dev.setup(venv, repo)  # no venv yet: create it, install
    assert python == dev.venv_python(venv)
    assert [c[:3] for c, _ in dev.ran] == [[sys.executable, "-m", "venv"], [str(python), "-m", "pip"],
                                           [str(python), "-m", "pip"]]
    assert dev.ran[2][0][-2:] == ["-r", str(repo / "requirements-dev.txt")]
    assert (venv / dev.STAMP).read_text(encoding="utf-8").strip() == dev.requirements_hash(repo)

    python.parent.mkdir(parents=True)  # and its interpreter
    python.write_bytes(b"")
    dev.ran.clear()
    dev.setup(venv, repo)
    assert dev.ran == []  # nothing changed: nothing to do

    with open(repo / "requirements.txt", "a", encoding="utf-8") as fh:
        fh.write("rich>=13\n")
    assert dev.needs_install(venv, repo)
    dev.setup(venv, repo)
    assert [c[-2:] for c, _ in dev.ran] == [["--upgrade", "pip"], ["-r", str(repo / "requirements-dev.txt")]]
    assert not dev.needs_install(venv, repo)


def test_commands_run_in_the_venv_offline(dev, monkeypatch):
    monkeypatch.setattr(dev, "setup", lambda *a: Path("VENV-PYTHON"))
    dev.main(["demo"])
    dev.main(["test", "-k", "windows", "-x"])
    dev.main(["run", "-m", "bench.data_loading"])
    (demo, demo_env), (test, test_env), (bench, _) = dev.ran
    assert demo == ["VENV-PYTHON", "scripts/train.py", "--config", "training/configs/smoke_cpu.yaml"]
    assert test == ["VENV-PYTHON", "-m", "pytest", "-q", "-k", "windows", "-x"]
    assert bench == ["VENV-PYTHON", "-m", "bench.data_loading"]
    assert demo_env["HF_HUB_OFFLINE"] == test_env["HF_HUB_OFFLINE"] == "1"
    assert test_env["PYTHONWARNDEFAULTENCODING"] == "1" and "PYTHONWARNDEFAULTENCODING" not in dev.job_env(
        base={})
    assert test_env["PYTHONWARNINGS"].endswith("ignore::EncodingWarning")
    with pytest.raises(SystemExit) as exc:
        dev.main(["bogus"])
    assert exc.value.code == 2


def test_install_here_keeps_the_installed_torch(dev):
    """Colab's `python dev.py install`: requirements.txt with torch and torchvision pinned as installed."""
    dev.install_here()
    ((cmd, _),) = dev.ran
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert cmd[cmd.index("-r") + 1] == str(REPO_ROOT / "requirements.txt")
    assert dev.pins.splitlines() == [f"torch=={metadata.version('torch')}",
                                     f"torchvision=={metadata.version('torchvision')}"]


def test_make_ci_and_readme_use_the_same_two_commands():
    make = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert "$(PYTHON) dev.py demo" in make and "$(PYTHON) dev.py test" in make
    ci_lines = [ln for ln in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.startswith("#")]
    assert ci_lines[-1] == "python3 dev.py test"
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert ci_lines[-1] in readme
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    for shell, python in (("powershell", "python"), ("bash", "python3")):
        block = quick.split(f"```{shell}\n", 1)[1].split("```", 1)[0]
        assert [ln.split("#")[0].strip() for ln in block.strip().splitlines()] == [f"{python} dev.py demo",
                                                                                   f"{python} dev.py test"]


def test_every_package_is_installed_and_watched_for_default_encodings():
    """A top-level package missing from pyproject.toml's `packages.find` is not importable from an installed
    checkout (`pip install -e .` without PYTHONPATH: what every subprocess a test starts relies on), and one
    missing from the EncodingWarning filter escapes the encoding check (issue 14)."""
    import re

    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    include = set(re.findall(r'"(\w+)\*"', re.search(r"^include = \[(.*)\]$", text, re.M).group(1)))
    watched = set(re.search(r"error::EncodingWarning:\(([^)]*)\)", text).group(1).split("|"))
    packages = {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages and packages <= include, f"not installed: {sorted(packages - include)}"
    assert packages <= watched, f"not checked for default encodings: {sorted(packages - watched)}"
    for name in packages:  # and the installed distribution really finds each (not only via the current folder)
        spec = importlib.util.find_spec(name)
        assert spec is not None and Path(spec.origin).resolve().parent.parent == REPO_ROOT
