"""Inter-process locking: small shared files under the root (bookmarks, the playground log), and whole runs.

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


def in_use_error(what: str, lock_file: str | os.PathLike, holder: str | None) -> VLMStudiesError:
    return VLMStudiesError(f"{what} is in use by another process{f' ({holder})' if holder else ''}; wait for it to "
                           f"finish, or pick another --run_name (its lock {lock_file} frees itself when that process "
                           f"ends, even if it is killed)")


def _holder_path(lock_file: Path) -> Path:
    return lock_file.with_name(lock_file.name + ".holder.json")


def describe_holder(lock_file: str | os.PathLike) -> str:
    """Who holds the run lock at `lock_file`, as its holder wrote it down ("" when unknown)."""
    try:
        h = json.loads(_holder_path(Path(lock_file)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return f"pid {h.get('pid')} on {h.get('host')}, since {h.get('since')}: {h.get('command')}"


def lock_holder(lock_file: str | os.PathLike) -> str | None:
    """None when nobody holds the run lock at `lock_file`; else who does (as far as known). Takes nothing."""
    from filelock import FileLock, Timeout

    if not Path(lock_file).is_file():
        return None
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return describe_holder(lock_file) or "another process"
    lock.release()
    return None


@contextmanager
def run_lock(lock_file: str | os.PathLike, what: str):
    """Hold an exclusive lock on a run for the whole block; a second process gets a one-line error at once.

    `what` names the run in that error ("eval run <dir>"). The holder's pid, host, start time and command
    are written beside the lock file so the error can name them. The OS releases the lock when its
    process dies, even by kill -9 or a power cut, so a stale lock never blocks a later run; the holder
    file left behind is then just overwritten.
    """
    import socket
    import sys
    import time

    from filelock import FileLock, Timeout

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise in_use_error(what, lock_file, describe_holder(lock_file)) from None
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": " ".join(sys.argv)}
        try:
            _holder_path(lock_file).write_text(json.dumps(holder), encoding="utf-8")
        except OSError:
            pass  # only used to name the holder in an error
        yield
    finally:
        lock.release()
