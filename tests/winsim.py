"""Windows, as far as this Linux machine can play it: the POSIX-only APIs gone and `sys.platform == "win32"`.

    simulate_windows(monkeypatch)                          # in a test: undone when the test ends
    python tests/winsim.py -m bench.train_speed --child …  # a child process started the same way

What Windows lacks and this project must never call unguarded: `os.getloadavg`, `os.sched_getaffinity`
/ `sched_setaffinity`, `signal.SIGKILL`, and the `resource` and `fcntl` modules. Libraries are imported
first, as they are on Windows where their own import-time checks choose their Windows code; only what
runs afterwards (our code) sees the simulated platform.

Not simulated here: processes starting with spawn (pickling in torch and multiprocessing reads
`sys.platform` and would take its Windows branch on Linux; spawned workers have their own test,
tests/test_spawn.py), path separators, file locking, the console code page (tests/test_encodings.py).
"""

from __future__ import annotations

import os
import signal
import sys

REAL_PLATFORM = sys.platform  # before any simulation
OS_FUNCTIONS = ("getloadavg", "sched_getaffinity", "sched_setaffinity")
SIGNALS = ("SIGKILL",)
MODULES = ("resource", "fcntl")
HEAVY_LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "PIL.Image", "psutil",
                   "filelock", "yaml", "tensorboard")


def import_libraries() -> None:
    """Import what our code imports lazily, before the platform changes (their import-time checks ran as Linux)."""
    import importlib

    for name in HEAVY_LIBRARIES:
        importlib.import_module(name)
    import torch.utils.tensorboard  # noqa: F401  (the Trainer's TensorBoard writer)


def simulate_windows(monkeypatch) -> None:
    """Remove the POSIX-only APIs, make `import resource` / `import fcntl` fail and set
    `sys.platform = "win32"`, through `monkeypatch` (a pytest MonkeyPatch: undone afterwards)."""
    import_libraries()
    for name in OS_FUNCTIONS:
        monkeypatch.delattr(os, name, raising=False)
    for name in SIGNALS:
        monkeypatch.delattr(signal, name, raising=False)
    for name in MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # `import resource` raises ImportError, as on Windows
    monkeypatch.setattr(sys, "platform", "win32")


def launcher(tmp_dir) -> str:
    """An executable that runs `python tests/winsim.py ARGS`: set as `sys.executable`, the children a job
    starts (`[sys.executable, "-m", module, ...]`) run on the simulated platform too (a POSIX shell script:
    on a real Windows machine the children need no simulation)."""
    from pathlib import Path

    path = Path(tmp_dir) / "python-winsim"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n', encoding="utf-8")
    path.chmod(0o755)
    return str(path)


if __name__ == "__main__":
    import runpy

    import pytest

    if len(sys.argv) < 3 or sys.argv[1] != "-m":
        raise SystemExit("usage: python tests/winsim.py -m MODULE [ARGS...]")
    simulate_windows(pytest.MonkeyPatch())
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
