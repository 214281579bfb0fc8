"""Two commands on every platform (Windows PowerShell, macOS, Linux), Python's standard library only.

    python dev.py demo      # creates .venv, installs requirements-dev.txt, fine-tunes the small model on CPU
    python dev.py test      # the same setup, then the test suite (what CI runs); extra args go to pytest
    python dev.py setup     # only the .venv and its packages
    python dev.py run scripts/evaluate.py --config evals/configs/smoke_cpu.yaml   # any command in the .venv
    python dev.py install   # Colab / a GPU image: requirements.txt into THIS Python, its torch left alone

On Linux and macOS the command may be `python3`. The virtual environment is `.venv` beside this file
(`.venv\\Scripts\\python.exe` on Windows, `.venv/bin/python` elsewhere); packages are reinstalled only
when requirements.txt, requirements-dev.txt or pyproject.toml changed since the last install (their
hash is kept in `.venv/.installed`). Jobs run with HF_HUB_OFFLINE=1: the demo and the tests build a
local model and a synthetic dataset, and never need the Hugging Face Hub.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
STAMP = ".installed"
REQUIREMENTS = ("requirements.txt", "requirements-dev.txt", "pyproject.toml")
DEMO = ["scripts/train.py", "--config", "training/configs/smoke_cpu.yaml"]
# Colab and GPU images bring a CUDA build of these; pip must never replace it.
KEEP = ("torch", "torchvision")
MIN_PYTHON = (3, 10)


def venv_python(venv: Path = VENV, platform: str = sys.platform) -> Path:
    """The virtual environment's interpreter: Scripts\\python.exe on Windows, bin/python elsewhere."""
    return venv / "Scripts" / "python.exe" if platform == "win32" else venv / "bin" / "python"


def requirements_hash(repo: Path = REPO) -> str:
    """One hash of the files that decide what is installed (a missing file counts as empty)."""
    h = hashlib.sha256()
    for name in REQUIREMENTS:
        path = repo / name
        h.update(name.encode("utf-8") + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    return h.hexdigest()


def needs_install(venv: Path = VENV, repo: Path = REPO) -> bool:
    """True unless the venv's stamp holds the current requirements hash."""
    stamp = venv / STAMP
    return not stamp.is_file() or stamp.read_text(encoding="utf-8").strip() != requirements_hash(repo)


def run(cmd: list, env: dict | None = None) -> None:
    """Run `cmd` (printed first); a failure ends dev.py with the command's exit status."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    code = subprocess.call([str(c) for c in cmd], cwd=REPO, env=env)
    if code != 0:
        raise SystemExit(code)


def setup(venv: Path = VENV, repo: Path = REPO) -> Path:
    """Create the venv if missing and install requirements-dev.txt when the requirements changed."""
    python = venv_python(venv)
    if not python.is_file():
        run([sys.executable, "-m", "venv", venv])
        (venv / STAMP).unlink(missing_ok=True)
    if needs_install(venv, repo):
        run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
        run([python, "-m", "pip", "install", "-q", "-r", repo / "requirements-dev.txt"])
        (venv / STAMP).write_text(requirements_hash(repo) + "\n", encoding="utf-8")
    return python


def job_env(tests: bool = False, base: dict | None = None) -> dict:
    """The environment of the demo and the tests: offline Hub, no telemetry. For the tests also
    PYTHONWARNDEFAULTENCODING=1, so that a read or write of ours relying on the platform's default encoding
    (cp1252 on Windows) fails its test (pyproject.toml's filterwarnings); other libraries' warnings of
    that kind are silenced in the processes the tests start."""
    env = dict(os.environ if base is None else base)
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    if tests:
        env["PYTHONWARNDEFAULTENCODING"] = "1"
        env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), "ignore::EncodingWarning"]))
    return env


def constraints(installed: dict) -> str:
    """A pip constraints file pinning the already installed `KEEP` packages to their exact versions."""
    return "".join(f"{name}=={version}\n" for name, version in sorted(installed.items()))


def install_here() -> None:
    """requirements.txt into the running interpreter, torch and torchvision pinned to what is installed."""
    from importlib import metadata

    installed = {}
    for name in KEEP:
        try:
            installed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    with tempfile.TemporaryDirectory(prefix="vlm_studies_") as tmp:
        pins = Path(tmp) / "keep.txt"
        pins.write_text(constraints(installed), encoding="utf-8")
        print(f"keeping {', '.join(f'{k} {v}' for k, v in installed.items()) or 'nothing (no torch installed)'}")
        run([sys.executable, "-m", "pip", "install", "-q", "-r", REPO / "requirements.txt", "-c", pins])


def main(argv: list[str]) -> None:
    if sys.version_info < MIN_PYTHON:
        raise SystemExit(f"Python {'.'.join(map(str, MIN_PYTHON))} or newer is needed (this is "
                         f"{sys.version.split()[0]}); install it from python.org and run: python dev.py {' '.join(argv)}")
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command == "setup":
        setup()
    elif command == "demo":
        run([setup(), *DEMO, *rest], env=job_env())
    elif command == "test":
        run([setup(), "-m", "pytest", "-q", *rest], env=job_env(tests=True))
    elif command == "run":
        if not rest:
            raise SystemExit("usage: python dev.py run SCRIPT_OR_-m_MODULE [ARGS...]")
        run([setup(), *rest], env=job_env())
    elif command == "install":
        install_here()
    else:
        print(__doc__)
        raise SystemExit(0 if command in ("help", "-h", "--help") else 2)


if __name__ == "__main__":
    main(sys.argv[1:])
