"""Stand-in for `google.colab.drive`: mounting makes `<mountpoint>/MyDrive`, as Colab's Drive shows it."""

from __future__ import annotations

from pathlib import Path


def mount(mountpoint: str, force_remount: bool = False, timeout_ms: int = 120000, readonly: bool = False) -> None:
    (Path(mountpoint) / "MyDrive").mkdir(parents=True, exist_ok=True)
    print(f"Mounted at {mountpoint}")
