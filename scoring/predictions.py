"""predictions.jsonl: an append-only log that survives being killed at any moment.

Each batch is appended with one `write` of whole lines, then flushed and fsynced, so a kill
(Colab disconnect, SIGKILL, power loss) can at worst leave the last line torn. `read_predictions`
repairs exactly that case, by cutting the file back to its last complete line, and refuses
anything else (a bad line in the middle, a uid twice) with a clear error instead of guessing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from utils.errors import VLMStudiesError

FILENAME = "predictions.jsonl"


def read_predictions(path: str | os.PathLike, repair: bool = False, key: str = "uid") -> list[dict]:
    """Records of a predictions file, in file order ([] if it does not exist).

    A torn last line (no trailing newline, or not valid JSON) is dropped; with `repair` it is also
    cut from the file, so the next append starts on a clean line. `key` is the field that must be
    unique (`uid`; a training run's dynamics.jsonl uses `step`).
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    keep = len(data)
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1  # a kill mid-write: the partial line goes, whole lines stay
    records, seen = [], set()
    lines = data[:keep].split(b"\n")[:-1] if keep else []
    for i, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):  # a torn last line that happened to end in a newline byte
                keep -= len(line) + 1
                break
            raise VLMStudiesError(f"{path} line {i} is not valid JSON, and it is not the last line (so not a torn "
                                  f"write); move the file aside and re-run the eval, or delete the bad line") from None
        if rec.get(key) in seen:
            raise VLMStudiesError(f"{path} holds {key} {rec.get(key)} twice (line {i}); it was not written by this "
                                  f"tool's resume logic: move the file aside and re-run")
        seen.add(rec.get(key))
        records.append(rec)
    if repair and keep != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
    return records


class PredictionWriter:
    """Appends batches of records durably (one write + flush + fsync per batch)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        blob = "".join(json.dumps(r, ensure_ascii=False, default=_plain) + "\n" for r in records).encode("utf-8")
        self._fh.write(blob)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _plain(v):
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, (set, tuple)):
        return list(v)
    return str(v)
