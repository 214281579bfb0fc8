"""Cached copies of a split: local parquet shards plus a `manifest.json` that vouches for them.

Layout: `<root>/datasets/<name>/<revision-or-fingerprint>/<split>/shard-NNNNN.parquet` and
`manifest.json`. Rows are stored raw, exactly as the source gave them (images as `{bytes, path}`),
so cached and streaming modes feed the same normaliser and yield identical examples.

Writing is crash-safe: shards go to `<split>.partial/`, the manifest is written last, and the
folder is renamed into place only when complete. Opening a cache checks the manifest against the
shards (row counts always, SHA-256 when asked) and refuses a cache that is incomplete or altered.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from utils.errors import VLMStudiesError
from utils.io import sha256_file

TOOL_VERSION = "1"
MANIFEST = "manifest.json"


def cache_dir(info, root=None) -> Path:
    from utils.paths import subdir

    return subdir("datasets", root) / info.name / info.fingerprint() / info.split


def _resolve_revision(info) -> None:
    """Pin a Hub source to its commit sha when the Hub answers (offline: keep what was asked)."""
    if info.kind != "hub" or (info.revision and len(info.revision) == 40):
        return
    try:
        from huggingface_hub import HfApi

        info.revision = HfApi().dataset_info(info.source, revision=info.revision).sha
    except Exception:
        pass  # offline or no access: the load itself will report the problem clearly


def _schema_of(files: list[Path]) -> dict:
    import pyarrow.parquet as pq

    schema = pq.read_schema(files[0])
    return {f.name: str(f.type) for f in schema}


def prepare_split(source: str | None, split: str, root=None, limit: int | None = None, rows_per_shard: int = 1000,
                  revision: str | None = None, progress: bool = True) -> Path:
    """Materialise `split` of `source` into manifest-checked local shards; return the cache folder."""
    from vlm_datasets.nlvr2 import resolve_source

    from utils.locks import locked

    info = resolve_source(source, split, root, revision)
    final = cache_dir(info, root)  # named by the revision asked for, so cached loads find it offline
    if _up_to_date(final, limit):
        return final
    # Several processes (accelerate launch) may prepare the same split at once: one writes, the others
    # wait and then find it complete.
    with locked(final, timeout=6 * 3600):
        if _up_to_date(final, limit):
            return final
        return _materialise(info, final, limit, rows_per_shard, progress)


def _up_to_date(final: Path, limit: int | None) -> bool:
    if not (final / MANIFEST).is_file():
        return False
    try:
        return Cache(final, verify_hashes=False).manifest.get("limit") == limit
    except VLMStudiesError:
        return False  # altered or incomplete: rebuild


def _materialise(info, final: Path, limit: int | None, rows_per_shard: int, progress: bool) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlm_datasets.nlvr2 import COLUMN_ALIASES, image_bytes, iter_raw_rows

    requested = info.revision
    _resolve_revision(info)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    image_cols = {name for key in ("left", "right") for name in COLUMN_ALIASES[key]}
    shards, rows, total, t0 = [], [], 0, time.time()

    def flush():
        nonlocal rows
        name = f"shard-{len(shards):05d}.parquet"
        table = pa.Table.from_pylist(rows)
        pq.write_table(table, tmp / name)
        shards.append({"file": name, "rows": len(rows), "sha256": sha256_file(tmp / name)})
        rows = []

    for row in iter_raw_rows(info):
        if limit is not None and total >= limit:
            break
        row = dict(row)
        for col in image_cols & row.keys():  # store encoded bytes, never paths that may not travel
            value = row[col]
            data = image_bytes(value)
            path = value.get("path") if isinstance(value, dict) else None
            row[col] = {"bytes": data, "path": path}
        rows.append(row)
        total += 1
        if len(rows) >= rows_per_shard:
            flush()
            if progress:
                print(f"[prepare] {total} rows ({total / max(time.time() - t0, 1e-9):.0f}/s)", flush=True)
    if rows or not shards:
        if not rows and total == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise VLMStudiesError(f"split '{info.split}' of {info.source} is empty; nothing to cache")
        flush()
    manifest = {
        "tool": "vlm_studies.prepare_data", "tool_version": TOOL_VERSION, "source": info.source,
        "source_kind": info.kind, "revision": info.revision, "requested_revision": requested,
        "fingerprint": info.fingerprint(), "split": info.split,
        "num_rows": total, "limit": limit, "shards": shards, "schema": _schema_of([tmp / s["file"] for s in shards]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # The manifest is written last and the folder renamed into place only now: a crash before this
    # line leaves only `<split>.partial`, which no loader mistakes for a complete cache.
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


@dataclass
class Cache:
    path: Path
    verify_hashes: bool = False

    def __post_init__(self):
        self.path = Path(self.path)
        mpath = self.path / MANIFEST
        if not mpath.is_file():
            raise VLMStudiesError(f"cache {self.path} has no {MANIFEST} (incomplete or not a cache); run "
                                  f"`python scripts/prepare_data.py` for this source and split again")
        raw = mpath.read_bytes()
        try:
            self.manifest = json.loads(raw)
        except json.JSONDecodeError:
            raise VLMStudiesError(f"cache manifest {mpath} is not valid JSON; delete {self.path} and prepare again") \
                from None
        self.manifest_sha256 = hashlib.sha256(raw).hexdigest()
        problems = self.check(hashes=self.verify_hashes)
        if problems:
            raise VLMStudiesError(f"cache {self.path} does not match its manifest: {'; '.join(problems[:3])}; "
                                  f"delete it and run `python scripts/prepare_data.py` again")

    @property
    def num_rows(self) -> int:
        return int(self.manifest["num_rows"])

    @property
    def files(self) -> list[Path]:
        return [self.path / s["file"] for s in self.manifest["shards"]]

    def check(self, hashes: bool = True) -> list[str]:
        """Problems found: missing shards, wrong row counts, (optionally) changed bytes, extra files."""
        import pyarrow.parquet as pq

        problems = []
        listed = set()
        for s in self.manifest.get("shards", []):
            f = self.path / s["file"]
            listed.add(s["file"])
            if not f.is_file():
                problems.append(f"missing shard {s['file']}")
                continue
            try:
                n = pq.ParquetFile(f).metadata.num_rows
            except Exception:
                problems.append(f"unreadable shard {s['file']}")
                continue
            if n != s["rows"]:
                problems.append(f"{s['file']} has {n} rows, manifest says {s['rows']}")
            elif hashes and sha256_file(f) != s["sha256"]:
                problems.append(f"{s['file']} SHA-256 differs from the manifest")
        if sum(s["rows"] for s in self.manifest.get("shards", [])) != self.manifest.get("num_rows"):
            problems.append("shard row counts do not add up to num_rows")
        extra = sorted(p.name for p in self.path.glob("*.parquet") if p.name not in listed)
        if extra:
            problems.append(f"unlisted shard(s) {', '.join(extra)}")
        return problems

    def iter_rows(self) -> Iterator[dict]:
        from vlm_datasets.nlvr2 import _iter_parquet

        yield from _iter_parquet(self.files, str(self.path))


def open_cache(info, root=None, verify_hashes: bool = False) -> Cache:
    """Open the cache for `info` (a resolved source), refusing one that is missing, incomplete or altered."""
    path = cache_dir(info, root)
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        why = "an interrupted prepare left only a partial copy" if partial.exists() else "it has not been prepared"
        raise VLMStudiesError(f"no cached copy of {info.source} [{info.split}] at {path} ({why}); run "
                              f"`python scripts/prepare_data.py --source {info.source} --split {info.split}` "
                              f"or use --mode streaming")
    return Cache(path, verify_hashes=verify_hashes)


def verify_split(source: str | None, split: str, root=None, revision: str | None = None) -> list[str]:
    """Re-hash every shard of a prepared split; return the problems found (empty: intact)."""
    from vlm_datasets.nlvr2 import resolve_source

    info = resolve_source(source, split, root, revision)
    path = cache_dir(info, root)
    if not (path / MANIFEST).is_file():
        return [f"no manifest at {path}"]
    cache = Cache.__new__(Cache)
    cache.path, cache.verify_hashes = path, True
    cache.manifest = json.loads((path / MANIFEST).read_text())
    return cache.check(hashes=True)
