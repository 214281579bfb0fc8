"""Crash-safe file writing, and folders a tool may replace only when it wrote them (Windows and POSIX)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from utils.errors import VLMStudiesError


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` so that a crash leaves either the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file, read in 1 MiB chunks; None when the file does not exist."""
    import hashlib

    if not os.path.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- folders a tool owns

OUTPUT_MARKER = ".vlm_studies_output.json"


def _files_under(path: Path) -> list[str]:
    """Every file below `path` as a '/'-separated relative path (the marker itself left out)."""
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                  if not p.is_dir() and p.name != OUTPUT_MARKER)


def files_match(path: str | os.PathLike, patterns) -> bool:
    """True when every file below `path` matches one of the glob `patterns` (relative, '/'-separated)."""
    from fnmatch import fnmatchcase

    return all(any(fnmatchcase(f, pat) for pat in patterns) for f in _files_under(Path(path)))


def read_json_field(path: str | os.PathLike, key: str):
    """`json[key]` of the file at `path`, or None when it is missing, unreadable or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def foreign_files(path: str | os.PathLike, tool: str, recognise=None) -> list[str]:
    """Files in folder `path` that `tool` did not write ([] when it may replace the folder).

    A folder is the tool's when its marker (`OUTPUT_MARKER`, written by `output_dir`) names the tool;
    then only the files the marker lists are the tool's, so a file someone added later is foreign.
    `recognise(path) -> bool` accepts folders written before markers existed (or whose own metadata
    file already says who wrote them); it must be strict, as the whole folder is replaced when true.
    """
    path = Path(path)
    if not path.is_dir():
        return []
    files = _files_under(path)
    marker = path / OUTPUT_MARKER
    if marker.is_file() and read_json_field(marker, "tool") == tool:
        listed = set(read_json_field(marker, "files") or [])
        return [f for f in files if f not in listed]
    if files and recognise is not None and recognise(path):
        return []
    return files


def check_output_dir(path: str | os.PathLike, tool: str, recognise=None,
                     hint: str = "pick another output folder") -> None:
    """Refuse, with one line, to write folder `path` unless it is missing, empty, or entirely `tool`'s own."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise VLMStudiesError(f"{path} is a file, not a folder; {hint}")
    foreign = foreign_files(path, tool, recognise)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise VLMStudiesError(f"{path} holds files that {tool} did not write ({shown}); nothing was changed there: "
                              f"{hint}, or move those files away")


def install_dir(tmp: str | os.PathLike, final: str | os.PathLike, tool: str, recognise=None,
                hint: str = "pick another output folder") -> Path:
    """Put the finished folder `tmp` in the place of `final`, which may only be missing, empty or `tool`'s own
    (else `tmp` is removed and the refusal raised).

    The old folder is renamed aside first and removed only once the new one is in place, so a crash
    leaves one whole folder under `final` (or none), never a mix. Works on Windows (no rename onto an
    existing folder).
    """
    tmp, final = Path(tmp), Path(final)
    try:
        check_output_dir(final, tool, recognise, hint)  # (again) someone may have filled it while we wrote
    except VLMStudiesError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.is_dir() and not any(final.iterdir()):
        final.rmdir()  # an empty folder (made by the user, say): take its place
    if final.is_dir():
        old = final.with_name(f"{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(old, final)  # put the old one back; the new one stays in tmp
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    return final


@contextmanager
def output_dir(final: str | os.PathLike, tool: str, recognise=None, hint: str = "pick another output folder"):
    """Write a folder aside and swap it into `final` when the block ends without error.

        with output_dir(out, "scripts/analyze.py") as tmp:
            (tmp / "index.html").write_text(...)

    Refused at once (before any work) when `final` holds files that `tool` did not write (see
    `foreign_files`). The new folder gets a marker naming `tool` and listing its files, so a later
    run of the same tool may replace it, and nothing else is ever deleted. An error or interrupt
    inside the block removes the half-written folder and leaves `final` as it was.
    """
    final = Path(final).expanduser().resolve()  # a real name to put the sibling beside ('.' has none)
    check_output_dir(final, tool, recognise, hint)
    tmp = final.with_name(f"{final.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        atomic_write_json(tmp / OUTPUT_MARKER, {"tool": tool, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                "files": _files_under(tmp)})
        install_dir(tmp, final, tool, recognise, hint)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def removed_if_start_fails(folders, enabled: bool = True):
    """Remove the run folders this start creates when it fails before holding any result.

    `folders` is a list of `(path, only_setup)`: a path that did not exist when the block began and
    exists when the block raises an error is removed if `only_setup(path)` says it holds nothing but
    the run's own setup files (config, metadata, locks; no checkpoint, no prediction). So a run that
    fails to start (a model that cannot be loaded, a refused option) leaves no run dir behind that
    would make the next attempt say "already exists". An interrupt (Ctrl-C) keeps everything: the
    same command continues it.
    """
    folders = [(Path(p), check) for p, check in folders]
    existed = {p: p.exists() for p, _ in folders}
    try:
        yield
    except Exception:
        if enabled:
            for path, only_setup in folders:
                if not existed[path] and path.is_dir() and only_setup(path):
                    shutil.rmtree(path, ignore_errors=True)
        raise
