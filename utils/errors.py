"""One error type for everything a user can fix, and the translation of hub failures into it.

Scripts catch `VLMStudiesError` at the top and print its message as one line (see
`utils.cli.main_guard`), so every message must name the thing that is wrong and the fix.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager


class VLMStudiesError(Exception):
    """A problem the user can fix: bad input, missing files, no network. Message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def is_offline_error(exc: BaseException) -> bool:
    """True when `exc` (or its cause chain) says the hub could not be reached."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name = type(exc).__name__
        text = str(exc)
        if name in {"OfflineModeIsEnabled", "ConnectionError", "LocalEntryNotFoundError", "ConnectTimeout",
                    "ReadTimeout", "MaxRetryError", "NewConnectionError"}:
            return True
        if any(s in text for s in ("OfflineModeIsEnabled", "couldn't connect", "Couldn't reach", "offline mode",
                                   "Failed to resolve", "Name or service not known", "Max retries exceeded")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def hub_error(what: str, name: str, exc: BaseException, local_hint: str) -> VLMStudiesError:
    """Turn a failed hub fetch of `name` into one clear message.

    `what` is "dataset" or "model"; `local_hint` says how to use a cached copy or local path instead.
    """
    if is_offline_error(exc):
        reason = "the Hugging Face Hub cannot be reached (offline or HF_HUB_OFFLINE=1) and no cached copy was found"
    elif type(exc).__name__ in {"RepositoryNotFoundError", "DatasetNotFoundError", "FileNotFoundError"} or "not found" in str(exc).lower() \
            or "doesn't exist" in str(exc).lower():
        reason = "it does not exist on the Hub or locally (check the spelling)"
    else:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return VLMStudiesError(f"could not load {what} '{name}': {reason}. {local_hint}")


# Windows reports a full disk as these (ERROR_HANDLE_DISK_FULL, ERROR_DISK_FULL) beside errno ENOSPC.
_WINDOWS_DISK_FULL = {39, 112}


def is_disk_full(exc: BaseException) -> bool:
    """True when `exc` (or its cause chain) says a write failed for lack of disk space.

    Besides `OSError(ENOSPC)`, torch.save reports it as `RuntimeError: [enforce fail at inline_container.cc:...]
    ... file write failed / unexpected pos` and safetensors as `StorageFull`.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and (exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))
                                         or getattr(exc, "winerror", None) in _WINDOWS_DISK_FULL):
            return True
        text = str(exc)
        if "No space left on device" in text or "StorageFull" in text or "Disk quota exceeded" in text or (
                "inline_container.cc" in text and ("file write failed" in text or "unexpected pos" in text)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _free_space(path) -> str:
    import shutil

    probe = os.path.abspath(path)
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return "free space unknown"
    return f"{free / 2 ** 20:.0f} MiB free"


def disk_full_error(where, then) -> VLMStudiesError:
    """One line for a write that ran out of space under `where`, with what to do after freeing some (`then`,
    a string or a function giving it, for advice that depends on what was kept)."""
    then = then() if callable(then) else then
    return VLMStudiesError(f"the disk is full: a write under {where} failed ({_free_space(where)} there now); "
                           f"free some space, then {then}")


@contextmanager
def disk_full_guard(where, then):
    """Turn a full disk inside the block into `disk_full_error(where, then)`; other errors pass unchanged."""
    try:
        yield
    except VLMStudiesError:
        raise
    except Exception as exc:
        if is_disk_full(exc):
            raise disk_full_error(failed_path(exc) or where, then) from exc
        raise


def failed_path(exc: BaseException):
    """The file an OSError in `exc`'s cause chain names, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.filename:
            return exc.filename
        exc = exc.__cause__ or exc.__context__
    return None


def closest(name: str, choices, n: int = 3) -> str:
    """`; closest: a, b` naming the `choices` nearest to `name` (difflib), or `` when none is near; for the
    end of a not-found message, so it stays one line."""
    import difflib

    choices = sorted(set(choices))
    near = difflib.get_close_matches(str(name), choices, n=n, cutoff=0.5)
    return f"; closest: {', '.join(near)}" if near else ""
