"""One error type for everything a user can fix, and the translation of hub failures into it.

Scripts catch `VLMStudiesError` at the top and print its message as one line (see
`utils.cli.main_guard`), so every message must name the thing that is wrong and the fix.
"""

from __future__ import annotations


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
