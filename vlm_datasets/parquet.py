"""Reading parquet files (a local source, a cache shard) with one translation of damage into a clear error.

Every reader of parquet in the loaders goes through here, so a file cut in half, a text file named
`.parquet` or a page whose checksum fails is always one line naming the file and the fix, never an
`ArrowInvalid` / `OSError` traceback. Page checksums (written by `prepare_data.py` into cache shards)
are verified on every read; files written without them read as before.
"""

from __future__ import annotations

import os
from typing import Iterator

from utils.errors import VLMStudiesError

DEFAULT_FIX = "regenerate or re-download it"


def damaged(path, what: str, exc: BaseException, fix: str = DEFAULT_FIX) -> VLMStudiesError:
    """The one-line error for a parquet file that cannot be read: which file, of what, why, and the fix."""
    msg = " ".join(str(exc).split())
    reason = "a page failed its checksum (the file changed after it was written)" if "checksum" in msg.lower() \
        else f"{type(exc).__name__}: {msg[:160]}"
    return VLMStudiesError(f"cannot read parquet file {path} of {what} ({reason}); {fix}")


def open_parquet(path: str | os.PathLike, what: str, fix: str = DEFAULT_FIX):
    """`pyarrow.parquet.ParquetFile` with page checksum verification; damage -> `damaged(...)`."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path, page_checksum_verification=True)
    except Exception as exc:
        raise damaged(path, what, exc, fix) from None


def iter_rows(files, what: str, fix: str = DEFAULT_FIX, columns: list[str] | None = None,
              batch_size: int = 256) -> Iterator[dict]:
    """Rows of `files` in order, read batch by batch (images stay encoded)."""
    for f in files:
        pf = open_parquet(f, what, fix)
        batches = pf.iter_batches(batch_size=batch_size, columns=columns)
        while True:
            try:
                batch = next(batches)
                rows = batch.to_pylist()
            except StopIteration:
                break
            except Exception as exc:  # checksum failures, cut pages, bytes that are not UTF-8 in a text column
                raise damaged(f, what, exc, fix) from None
            yield from rows


def num_rows(files, what: str, fix: str = DEFAULT_FIX) -> int:
    """Rows in `files` from their footers (nothing else is read)."""
    return sum(open_parquet(f, what, fix).metadata.num_rows for f in files)


def read_rows(path, what: str, fix: str = DEFAULT_FIX, filters=None) -> list[dict]:
    """Every row of one file that passes `filters` (pyarrow's filter syntax), checksums verified."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, filters=filters, page_checksum_verification=True).to_pylist()
    except Exception as exc:
        raise damaged(path, what, exc, fix) from None
