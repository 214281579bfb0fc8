"""Fail fast when the Hugging Face Hub cannot be reached.

Without `HF_HUB_OFFLINE=1`, an unreachable Hub makes huggingface_hub retry every file request five
times with backoff (Setup/NOTES.md §1): loading Qwen2-VL's processor and weights took minutes
before the error. `go_offline_unless_reachable()` asks the Hub's endpoint once, with a short
timeout, before the first Hub call; when no answer comes it switches this process (and the
processes it starts) to offline mode, so a copy already in the HF cache still loads and a missing
one fails at once with the one-line error of `utils.errors.hub_error`.
"""

from __future__ import annotations

import os
import sys
import threading

PROBE_TIMEOUT_S = 5.0  # connect + first answer; the whole probe is bounded at twice this (DNS included)
_checked: dict[str, bool] = {}


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_reachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(True, "") when `endpoint` answers an HTTP request (any status), else (False, why)."""
    import urllib.error
    import urllib.request

    result: list = [False, f"no answer within {2 * timeout:.0f} s"]

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
            result[:] = [True, ""]
        except urllib.error.HTTPError:  # the Hub answered, if only with an error status: it is reachable
            result[:] = [True, ""]
        except Exception as exc:
            reason = getattr(exc, "reason", exc)
            result[:] = [False, f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__]

    # A thread, because urlopen's timeout does not cover name resolution.
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(2 * timeout)
    return result[0], result[1]


def set_offline() -> None:
    """HF_HUB_OFFLINE for this process (huggingface_hub, transformers, datasets read it per call) and its children."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:  # read from the environment when datasets is imported; set it if that happened
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
        datasets.config.HF_DATASETS_OFFLINE = True


def go_offline_unless_reachable(what: str) -> bool:
    """Before the first Hub call for `what`: probe the Hub once per process; unreachable -> offline mode.

    Returns True when this process now works offline. Does nothing when offline mode is already on.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    endpoint = _endpoint()
    if endpoint not in _checked:
        ok, why = hub_reachable(endpoint)
        _checked[endpoint] = ok
        if not ok:
            print(f"[hub] {endpoint} cannot be reached ({why}) while loading {what}; working offline: only copies "
                  f"already in the Hugging Face cache can be used", file=sys.stderr, flush=True)
            set_offline()
    return not _checked[endpoint]
