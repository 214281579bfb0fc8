"""Run metadata: enough to trace any output back to the command, commit and libraries that made it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

from utils.paths import REPO_ROOT

LIBRARIES = ("torch", "torchvision", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes",
             "tokenizers", "pillow", "qwen-vl-utils", "tensorboard")


def git_info() -> dict:
    """Commit SHA and whether the working tree has uncommitted changes (None outside a git checkout)."""
    def run(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, encoding="utf-8",
                              errors="replace", timeout=10)

    try:
        sha = run("rev-parse", "HEAD")
        if sha.returncode != 0:
            return {"git_sha": None, "git_dirty": None}
        dirty = run("status", "--porcelain", "--untracked-files=no")
        return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


def library_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict:
    info = {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor()}
    try:
        import torch

        info["cpu_count"] = os.cpu_count()
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda"] = torch.version.cuda
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
            info["bf16_supported"] = torch.cuda.is_bf16_supported()
        else:
            info["gpu"] = None
    except ImportError:
        pass
    return info


def run_metadata(seed: int | None = None, **extra) -> dict:
    """Everything every run dir records: git, command line, date, versions, device, seed, plus `extra`."""
    return {
        **git_info(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "argv": list(sys.argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": library_versions(),
        "device": device_info(),
        "seed": seed,
        **extra,
    }


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process in MiB, on Linux, macOS and Windows (None if unknown)."""
    try:
        if sys.platform == "win32":  # no `resource` module there: psutil's peak working set
            import psutil

            info = psutil.Process().memory_info()
            return round(getattr(info, "peak_wset", info.rss) / 2**20, 1)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KiB on Linux
    except Exception:
        return None


def peak_memory() -> dict:
    """What a run records of its memory: peak RSS (every platform) and, with CUDA, torch's peak allocated."""
    import torch

    out = {"peak_rss_mib": peak_rss_mib()}
    if torch.cuda.is_available():
        out["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return out


def current_rss_mib() -> float | None:
    """Resident memory of this process now, in MiB, on every platform (psutil; None if unknown)."""
    try:
        import psutil

        return round(psutil.Process().memory_info().rss / 2**20, 1)
    except Exception:
        return None


def load_average_1m() -> float | None:
    """The 1-minute load average (the machine may be shared: timings mean little without it); None on Windows.

    Windows has no load average: psutil emulates one there, but it reads 0.0 for the first 5 seconds of a
    process, which would look like an idle machine; no figure is better than a wrong one.
    """
    getloadavg = getattr(os, "getloadavg", None)
    if getloadavg is None:
        return None
    try:
        return round(getloadavg()[0], 2)
    except OSError:  # "load average unobtainable"
        return None


def format_load(value: float | None) -> str:
    """A load average for a log line: `1.23`, or `n/a` where the platform has none."""
    return "n/a" if value is None else f"{value:.2f}"
