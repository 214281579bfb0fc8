"""Inter-process locking for small shared files under the root (bookmarks, the playground log).

Several processes (a notebook, a script, an eval writing bookmarks of its mistakes) may touch the
same file at once. `locked(path)` serialises them with `filelock`: an OS lock (`msvcrt` on Windows,
`fcntl` on POSIX) that the OS releases when a process dies, so a crash leaves no stale lock, and a
plain lock file on filesystems without OS locks. `filelock` already comes with huggingface_hub and
datasets.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from utils.errors import VLMStudiesError

DEFAULT_TIMEOUT_S = 60.0


def lock_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextmanager
def locked(path: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT_S):
    """Hold the lock for `path` (the lock file is `<path>.lock`) for the duration of the block."""
    from filelock import FileLock, Timeout

    lp = lock_path(path)
    lp.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lp), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise VLMStudiesError(f"{path} has been locked by another process for over {timeout:.0f}s (lock file {lp}); "
                              f"wait for it to finish, or delete the lock file if no other process is running") from None
    try:
        yield
    finally:
        lock.release()


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line under the lock, so concurrent writers never interleave or lose lines."""
    path = Path(path)
    line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
    with locked(path):
        with open(path, "a", encoding="utf-8", newline="\n") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
