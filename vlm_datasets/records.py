"""Per-row records of a cached split: what the training length guard needs, so a launch reads no images.

`prepare_data.py` writes `records.parquet` next to a cache's shards (format 3, `vlm_datasets.cache`): one
row per cached row, in the same order, holding its identifier, sentence, label, family and both images'
sizes as stored (upright), or why an image or the label cannot be read. These are exactly the facts the
length guard derives from a full pass over the shards (`training.data.cached_dataset`), so with the
records a launch or a `--resume` reads one small file instead of every image header of the split
(Setup/NOTES.md §3, "Seconds to first step").

Trust: the manifest lists the records file with its row count and SHA-256, and opening the cache checks
both (the file is small: ~100 bytes a row) and its page checksums. The records describe the shards,
not the source: a changed source gets a new cache folder (its fingerprint changes), with new records.
A records file that is missing, altered, or not in this layout is a one-line error naming the rebuild.
"""

from __future__ import annotations

from pathlib import Path

from utils.errors import VLMStudiesError
from utils.images import stored_size
from vlm_datasets.nlvr2 import COLUMN_ALIASES, image_bytes, normalise_label
from vlm_datasets.parquet import damaged

RECORDS_FILE = "records.parquet"
RECORDS_VERSION = 1  # the meaning of the columns below; another number is refused (rebuild the cache)

# column -> pyarrow type name, as written
COLUMNS = {
    "uid": "string", "sentence": "string", "label": "bool", "label_error": "string", "family": "string",
    "left_w": "int32", "left_h": "int32", "left_error": "string",
    "right_w": "int32", "right_h": "int32", "right_error": "string",
}


def stored_image_size(value, dataset_dir=None) -> tuple[int, int]:
    """(width, height) of a stored image value from its header (EXIF orientation applied), pixels undecoded.

    ValueError when the image is missing or its header unreadable. Whether Qwen2-VL's processor takes
    that size is a separate question (`utils.images.processor_size_problem`), asked by the caller.
    """

    if hasattr(value, "size") and hasattr(value, "convert"):
        return value.size
    data = image_bytes(value, dataset_dir)
    if data is None:
        raise ValueError("missing image")
    try:
        return stored_size(data)
    except Exception as exc:  # PIL raises several types for bad data
        raise ValueError(f"unreadable image header ({type(exc).__name__})") from None


def record_of(row: dict) -> dict:
    """The record of one raw cached row (images as `{bytes, path}` with no folder to read paths from)."""

    def column(key):
        for name in COLUMN_ALIASES[key]:
            if name in row:
                return row[name]
        return None

    sentence = column("sentence")
    rec = {"uid": str(column("uid")), "sentence": sentence if isinstance(sentence, str) else None,
           "label": None, "label_error": None, "family": row.get("family") if isinstance(row.get("family"), str)
           else None}
    try:
        rec["label"] = normalise_label(column("label"))
    except ValueError as exc:
        rec["label_error"] = str(exc)
    for side in ("left", "right"):
        w = h = error = None
        try:
            w, h = stored_image_size(column(side))
        except ValueError as exc:
            error = str(exc)
        rec.update({f"{side}_w": w, f"{side}_h": h, f"{side}_error": error})
    return rec


def write_records(path: Path, records: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"string": pa.string(), "bool": pa.bool_(), "int32": pa.int32()}
    schema = pa.schema([(name, types[kind]) for name, kind in COLUMNS.items()])
    table = pa.Table.from_pylist(records, schema=schema)
    pq.write_table(table, path, write_page_checksum=True)


def read_records(path: Path, rows: int, fix: str) -> dict:
    """Columns of a records file as lists; a file that is not what the manifest promised -> one-line error."""
    import pyarrow.parquet as pq


    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except Exception as exc:
        raise damaged(path, "the cache's length records", exc, fix) from None
    have = {f.name: str(f.type) for f in table.schema}
    wrong = [f"{name} ({have.get(name, 'missing')}, expected {kind})" for name, kind in COLUMNS.items()
             if have.get(name) != kind]
    if wrong:
        raise VLMStudiesError(f"length records {path} are not in the layout this checkout reads (column "
                              f"{', '.join(wrong[:3])}); {fix}")
    if table.num_rows != rows:
        raise VLMStudiesError(f"length records {path} hold {table.num_rows} rows, the cache has {rows}; {fix}")
    return table.to_pydict()
