"""Cached copies of a split: local parquet shards plus a `manifest.json` that vouches for them.

Layout: `<root>/datasets/<name>/<revision-or-fingerprint>/<split>/shard-NNNNN.parquet` and
`manifest.json`. Rows are stored raw, exactly as the source gave them (images as `{bytes, path}`),
so cached and streaming modes feed the same normaliser and yield identical examples.

Writing is crash-safe: shards go to `<split>.partial/`, the manifest is written last, and the
folder is renamed into place only when complete. Opening a cache checks the manifest against the
shards (row counts always, SHA-256 when asked) and refuses a cache that is incomplete or altered.

Damage inside a shard is caught when it is read, at little cost: shards are written with parquet
page checksums (CRC-32 of every page) and every read verifies them, so a flipped byte in an image or
a sentence stops the read with a one-line error instead of feeding a changed example. Every such
error names the repair: `python scripts/prepare_data.py ... --rebuild` (`rebuild_command`).

The manifest is a JSON object with a `format_version`. Readers ignore keys they do not know, so
adding information needs no new version; a change older readers would misread bumps `FORMAT_VERSION`.
Version 1 (no page checksums) is still read: its shards are re-hashed in full on every open.
Version 2 (one row group per shard, no records) is still read, at the old launch cost (a full pass over
the shards and a datasets Arrow copy of a large split). `prepare_data.py` and a launch on a local source
rebuild both in the current format.

Version 3, what a launch needs without reading the split (Setup/NOTES.md §3, "Seconds to first step"):
  * shards are written in row groups of `ROW_GROUP_ROWS` rows, so one row is read alone (`CachedRows`):
    training reads its rows straight from the shards, never from a datasets Arrow copy;
  * `records.parquet` (`vlm_datasets.records`) holds per row what the length guard needs (sizes of both
    images, sentence, label, family), listed in the manifest with its row count and SHA-256;
  * each shard entry carries its size in bytes, so opening checks sizes (a `stat`) instead of footers.
A local source's content hash (which names its cache folder) is remembered per file under
`<root>/datasets/fingerprints/` with the file's size, mtime and ctime, so it is not re-hashed per launch
(`source_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from utils.errors import VLMStudiesError
from utils.io import atomic_write_json, sha256_bytes, sha256_file
from utils.locks import locked
from utils.paths import get_root, path_inside, subdir
from vlm_datasets.nlvr2 import COLUMN_ALIASES, _iter_parquet, image_bytes, iter_raw_rows, resolve_source, row_uid
from vlm_datasets.parquet import damaged, open_parquet
from vlm_datasets.records import RECORDS_FILE, RECORDS_VERSION, read_records, record_of, write_records

TOOL_VERSION = "3"
MANIFEST = "manifest.json"
# 1: no page checksums; 2: shards written with page checksums, verified on every read; 3: small row groups,
# length records and shard sizes (module docstring)
FORMAT_VERSION = 3
ROW_GROUP_ROWS = 4  # rows per parquet row group: what reading one row costs (~4 photo pairs), vs footer size


def rebuild_command(source: str, split: str, revision: str | None = None, limit: int | None = None,
                    root=None) -> str:
    """The command that rebuilds one cached split from its source (quoted for a shell)."""
    import shlex

    parts = ["python", "scripts/prepare_data.py", "--source", str(source), "--split", str(split)]
    if revision:
        parts += ["--revision", str(revision)]
    if limit is not None:
        parts += ["--limit", str(limit)]
    if root is not None:

        try:
            default = get_root(None, create=False).resolve()
        except VLMStudiesError:
            default = None
        if Path(root).expanduser().resolve() != default:
            parts += ["--root", str(root)]
    return " ".join(shlex.quote(p) for p in parts + ["--rebuild"])


def cache_dir(info, root=None) -> Path:

    # the revision and split come from the command line: `--revision ../../x` must not leave datasets/
    return path_inside(subdir("datasets", root), f"{info.name}/{source_fingerprint(info, root)}/{info.split}")


# ----------------------------------------------------------------------------- the source fingerprint, remembered

FINGERPRINTS = "fingerprints"  # <root>/datasets/fingerprints/<hash of the source's paths>.json
RACY_SECONDS = 2.0  # a file changed this close to its hashing is not remembered (coarse file-system clocks)
_fingerprints: dict = {}  # this process's: file states -> fingerprint


def _file_states(files) -> list:
    states = []
    for f in files:
        st = os.stat(f)
        states.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return states


def source_fingerprint(info, root=None) -> str:
    """`info.fingerprint()` (a local source's SHA-256 over every byte), hashed once per content, not per launch.

    The hash is remembered with each file's path, size, mtime and ctime. Any write to a file changes its
    ctime, which no user can set back, so a file whose four values all match holds the bytes that were
    hashed; anything else is hashed again. A file written within `RACY_SECONDS` of its hashing is not
    remembered (a clock that ticks in seconds could hide a second write). A memo that cannot be read is
    ignored with a one-line note and replaced. Hub sources are named by revision: nothing to hash.
    """
    if info.kind != "local":
        return info.fingerprint()
    import hashlib


    states = _file_states(info.files)
    key = json.dumps(states)
    if key in _fingerprints:
        return _fingerprints[key]
    name = hashlib.sha256(json.dumps([s[0] for s in states]).encode("utf-8")).hexdigest()[:24]
    memo = subdir("datasets", root) / FINGERPRINTS / f"{name}.json"
    before = None
    if memo.is_file():
        try:
            saved = json.loads(memo.read_text(encoding="utf-8"))
            if not isinstance(saved, dict) or not isinstance(saved.get("fingerprint"), str):
                raise ValueError("not a fingerprint record")
            if saved.get("files") == states:
                _fingerprints[key] = saved["fingerprint"]
                return saved["fingerprint"]
            before = saved["fingerprint"]
        except (OSError, ValueError) as exc:
            print(f"[vlm_datasets] ignoring the unreadable fingerprint record {memo} ({type(exc).__name__}); "
                  f"hashing {info.source} again", file=sys.stderr)
    started = time.time_ns()
    fingerprint = info.fingerprint()
    old_caches = subdir("datasets", root, create=False) / info.name / str(before)
    if before and before != fingerprint and old_caches.is_dir():  # its copies would otherwise sit there unseen
        print(f"[vlm_datasets] {info.source} changed since it was cached: a changed source gets a new cache; the "
              f"cache of its old content is {old_caches} (delete it to free its space)", file=sys.stderr)
    if _file_states(info.files) == states:  # unchanged while hashed
        _fingerprints[key] = fingerprint
        if all(started - max(s[2], s[3]) > RACY_SECONDS * 1e9 for s in states):
            try:
                atomic_write_json(memo, {"source": info.source, "files": states, "fingerprint": fingerprint})
            except OSError:
                pass  # a read-only root: hashed again next time, nothing else lost
    return fingerprint


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
                  revision: str | None = None, progress: bool = True, rebuild: bool = False,
                  verify_existing: bool = False) -> Path:
    """Materialise `split` of `source` into manifest-checked local shards; return the cache folder.

    An existing complete cache is kept unless `rebuild`; with `verify_existing` its shards are first
    re-hashed against the manifest, and a damaged one is rebuilt. The old cache stays in place until
    the new one is complete (a failed rebuild, e.g. offline, loses nothing).
    """


    info = resolve_source(source, split, root, revision)
    final = cache_dir(info, root)  # named by the revision asked for, so cached loads find it offline
    if not rebuild and _up_to_date(final, limit, verify_existing):
        return final
    # Several processes (accelerate launch) may prepare the same split at once: one writes, the others
    # wait and then find it complete.
    with locked(final, timeout=6 * 3600):
        if not rebuild and _up_to_date(final, limit, verify_existing):
            return final
        return _materialise(info, final, limit, rows_per_shard, progress)


def _up_to_date(final: Path, limit: int | None, verify: bool = False) -> bool:
    if not (final / MANIFEST).is_file():
        return False
    try:
        cache = Cache(final, verify_hashes=False, fix="it is rebuilt now", quiet=True)
    except VLMStudiesError:
        return False  # altered or incomplete: rebuild
    if cache.manifest.get("limit") != limit:
        return False
    if cache.format_version < FORMAT_VERSION:
        print(f"[prepare] cache {final} is in format {cache.format_version} (before length records): rebuilding it "
              f"in format {FORMAT_VERSION}, so that launches read no images before training", file=sys.stderr)
        return False
    records = cache.manifest.get("records")
    if records is not None and sha256_file(final / records["file"]) != records["sha256"]:  # small: cheap to hash
        print(f"[prepare] cache {final} has altered length records: rebuilding it", file=sys.stderr)
        return False
    if verify:
        problems = cache.check(hashes=True)
        if problems:
            print(f"[prepare] cache {final} is damaged ({'; '.join(problems[:3])}): rebuilding it", file=sys.stderr)
            return False
    return True


def _materialise(info, final: Path, limit: int | None, rows_per_shard: int, progress: bool) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq


    requested = info.revision
    _resolve_revision(info)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    image_cols = {name for key in ("left", "right") for name in COLUMN_ALIASES[key]}
    shards, rows, total, t0 = [], [], 0, time.time()
    unstored: list[tuple[str, str]] = []
    records: list[dict] = []  # what the length guard needs, per row (vlm_datasets.records)

    def flush():
        nonlocal rows
        name = f"shard-{len(shards):05d}.parquet"
        table = pa.Table.from_pylist(rows)
        # page checksums: verified on every read (Setup/NOTES.md §3); small row groups: one row is read alone
        pq.write_table(table, tmp / name, write_page_checksum=True, row_group_size=ROW_GROUP_ROWS)
        shards.append({"file": name, "rows": len(rows), "bytes": (tmp / name).stat().st_size,
                       "sha256": sha256_file(tmp / name)})
        rows = []

    for row in iter_raw_rows(info):
        if limit is not None and total >= limit:
            break
        row = dict(row)
        for col in image_cols & row.keys():  # store encoded bytes, never paths that may not travel
            value = row[col]
            path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
            try:  # a path is read only inside the source's own folder (never /etc/... named by a row)
                data = image_bytes(value, info.folder)
            except ValueError as exc:  # kept without bytes: the loader reports the row as bad when it is read
                data = None
                unstored.append((row_uid(row), f"{col}: {exc}"))
            row[col] = {"bytes": data, "path": None if path is None else str(path)}
        records.append(record_of(row))  # from the row as stored: exactly what a pass over the shards would find
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
    write_records(tmp / RECORDS_FILE, records)
    if unstored:
        shown = "; ".join(f"{u} ({r})" for u, r in unstored[:3])
        print(f"[prepare] {len(unstored)} image(s) could not be stored, their rows will read as bad rows: {shown}"
              f"{' ...' if len(unstored) > 3 else ''}", file=sys.stderr)
    manifest = {
        "tool": "vlm_studies.prepare_data", "tool_version": TOOL_VERSION, "format_version": FORMAT_VERSION,
        "source": info.source,
        "source_kind": info.kind, "revision": info.revision, "requested_revision": requested,
        # a local source's fingerprint names the folder (hashed once, by cache_dir); a Hub one is its resolved revision
        "fingerprint": final.parent.name if info.kind == "local" else info.fingerprint(), "split": info.split,
        "num_rows": total, "limit": limit, "shards": shards, "schema": _schema_of([tmp / s["file"] for s in shards]),
        "records": {"file": RECORDS_FILE, "version": RECORDS_VERSION, "rows": total,
                    "bytes": (tmp / RECORDS_FILE).stat().st_size, "sha256": sha256_file(tmp / RECORDS_FILE)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # The manifest is written last and the folder renamed into place only now: a crash before this
    # line leaves only `<split>.partial`, which no loader mistakes for a complete cache.
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _manifest_problem(manifest) -> str | None:
    """What makes `manifest` unusable as a cache manifest (its structure, not the shards), or None."""
    if not isinstance(manifest, dict):
        return f"it holds a JSON {type(manifest).__name__}, not an object"
    version = manifest.get("format_version", 1)
    if not isinstance(version, int):
        return f"format_version {version!r} is not a number"
    if version > FORMAT_VERSION:
        return f"it was written in format {version} by a newer version of this lab, this checkout reads up to " \
               f"format {FORMAT_VERSION}"
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        return "it has no list of shards"
    for i, entry in enumerate(shards):
        if not isinstance(entry, dict):
            return f"shard entry {i} is not an object"
        name = entry.get("file")
        if not isinstance(name, str) or not name:
            return f"shard entry {i} has no \"file\""
        if name != Path(name).name or name in (".", "..") or "\\" in name:
            return f"shard entry {i} names {name!r}, not a file inside the cache folder"
        if not isinstance(entry.get("rows"), int) or entry["rows"] < 0:
            return f"shard entry {i} ({name}) has no row count"
        if "bytes" in entry and (not isinstance(entry["bytes"], int) or entry["bytes"] < 0):
            return f"shard entry {i} ({name}) has a size that is not a number of bytes"
    if not isinstance(manifest.get("num_rows"), int):
        return "it has no num_rows"
    records = manifest.get("records")
    if version >= 3 and records is None:
        return "it lists no length records (format 3 always has them)"
    if records is not None:

        if not isinstance(records, dict) or records.get("file") != RECORDS_FILE:
            return f"its length records entry does not name {RECORDS_FILE}"
        if records.get("version") != RECORDS_VERSION:
            return f"its length records are version {records.get('version')!r}, this checkout reads {RECORDS_VERSION}"
        if records.get("rows") != manifest["num_rows"] or not isinstance(records.get("sha256"), str) \
                or not isinstance(records.get("bytes"), int):
            return "its length records entry has no matching row count, size and SHA-256"
    return None


@dataclass
class Cache:
    """An opened cached split: a checked manifest and its shards. `fix` is the advice damage errors give."""

    path: Path
    verify_hashes: bool = False
    fix: str | None = None
    quiet: bool = False

    def __post_init__(self):
        self.path = Path(self.path)
        mpath = self.path / MANIFEST
        if not mpath.is_file():
            raise VLMStudiesError(f"cache {self.path} has no {MANIFEST} (incomplete or not a cache); run "
                                  f"`python scripts/prepare_data.py` for this source and split again")
        raw = mpath.read_bytes()
        try:
            self.manifest = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise VLMStudiesError(f"cache manifest {mpath} is not valid JSON; {self._fix()}") from None
        problem = _manifest_problem(self.manifest)
        if problem:
            raise VLMStudiesError(f"cache manifest {mpath} is not a usable manifest ({problem}); {self._fix()}")
        self.manifest_sha256 = hashlib.sha256(raw).hexdigest()
        self.format_version = self.manifest.get("format_version", 1)
        # A cache written before page checksums cannot check its pages as they are read: hash it whole instead.
        problems = self.check(hashes=self.verify_hashes or self.format_version < 2)
        if problems:
            raise VLMStudiesError(f"cache {self.path} does not match its manifest: {'; '.join(problems[:3])}; "
                                  f"{self._fix()}")
        if self.format_version < 2 and not self.quiet:
            print(f"[vlm_datasets] cache {self.path} predates page checksums, so every shard was re-hashed to open "
                  f"it; rebuilding it makes opening cheap: {self._fix()}", file=sys.stderr)

    def _fix(self) -> str:
        if self.fix:
            return self.fix
        m = self.manifest if isinstance(getattr(self, "manifest", None), dict) else {}
        if m.get("source") and m.get("split"):
            command = rebuild_command(m["source"], m["split"], m.get("requested_revision"), m.get("limit"))
            return f"rebuild it: `{command}`"
        return "rebuild it with `python scripts/prepare_data.py --source SOURCE --split SPLIT --rebuild`"

    @property
    def num_rows(self) -> int:
        return int(self.manifest["num_rows"])

    @property
    def files(self) -> list[Path]:

        return [path_inside(self.path, s["file"]) for s in self.manifest["shards"]]

    def check(self, hashes: bool = True) -> list[str]:
        """Problems found: missing shards, wrong row counts, (optionally) changed bytes, extra files."""
        import pyarrow.parquet as pq

        problems = []
        listed = set()
        for s, f in zip(self.manifest["shards"], self.files):
            listed.add(s["file"])
            if not f.is_file():
                problems.append(f"missing shard {s['file']}")
                continue
            if "bytes" in s and not hashes:  # format 3: a stat; the footer's row count is checked when it is opened
                if f.stat().st_size != s["bytes"]:
                    problems.append(f"{s['file']} is {f.stat().st_size} bytes, manifest says {s['bytes']}")
                continue
            try:
                n = pq.ParquetFile(f).metadata.num_rows
            except Exception:
                problems.append(f"unreadable shard {s['file']}")
                continue
            if n != s["rows"]:
                problems.append(f"{s['file']} has {n} rows, manifest says {s['rows']}")
            elif hashes and sha256_file(f) != s.get("sha256"):
                problems.append(f"{s['file']} SHA-256 differs from the manifest")
        if sum(s["rows"] for s in self.manifest["shards"]) != self.manifest["num_rows"]:
            problems.append("shard row counts do not add up to num_rows")
        records = self.manifest.get("records")
        if records is not None:
            listed.add(records["file"])
            rpath = self.path / records["file"]
            if not rpath.is_file():
                problems.append(f"missing length records {records['file']}")
            elif rpath.stat().st_size != records["bytes"] or (hashes and sha256_file(rpath) != records["sha256"]):
                problems.append(f"length records {records['file']} differ from the manifest")
        extra = sorted(p.name for p in self.path.glob("*.parquet") if p.name not in listed)
        if extra:
            problems.append(f"unlisted shard(s) {', '.join(extra)}")
        return problems

    def records(self) -> dict | None:
        """The length records (`vlm_datasets.records`) as columns, checked against the manifest (row count,
        SHA-256, page checksums); None for a cache written before them (format < 3)."""

        entry = self.manifest.get("records")
        if entry is None:
            return None
        path = self.path / entry["file"]
        fix = f"the cache is damaged: {self._fix()}"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise VLMStudiesError(f"cannot read the length records {path} ({type(exc).__name__}); {fix}") from None
        if sha256_bytes(data) != entry["sha256"]:
            raise VLMStudiesError(f"length records {path} differ from the manifest (SHA-256); {fix}")
        return read_records(path, self.num_rows, fix)

    def rows(self) -> "CachedRows":
        """Random access to the raw rows (format 3: one small row group read per row)."""
        return CachedRows(self.path, self.files, [s["rows"] for s in self.manifest["shards"]],
                          f"the cache is damaged: {self._fix()}")

    def iter_rows(self) -> Iterator[dict]:
        """Raw rows of every shard in order; a page that fails its checksum stops the read with the fix."""

        yield from _iter_parquet(self.files, f"the cache {self.path}", f"the cache is damaged: {self._fix()}")


class CachedRows:
    """Raw row `i` of a cache, read from its shard's row group alone (pages checksum-verified).

    Picklable for dataloader workers: open files are not carried, each process opens its own on first use.
    Each shard's footer row count is checked against the manifest when the shard is first opened.
    """

    def __init__(self, path: Path, files: list[Path], rows: list[int], fix: str):
        self.path, self.files, self.shard_rows, self.fix = Path(path), [str(f) for f in files], list(rows), fix
        self.starts = []
        total = 0
        for n in self.shard_rows:
            self.starts.append(total)
            total += n
        self.total = total
        self._open: dict = {}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_open"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open = {}

    def __len__(self) -> int:
        return self.total

    def _shard(self, k: int):
        entry = self._open.get(k)
        if entry is None:

            pf = open_parquet(self.files[k], f"the cache {self.path}", self.fix)
            meta = pf.metadata
            if meta.num_rows != self.shard_rows[k]:
                raise VLMStudiesError(f"cache shard {self.files[k]} has {meta.num_rows} rows, its manifest says "
                                      f"{self.shard_rows[k]}; {self.fix}")
            starts, total = [], 0
            for g in range(meta.num_row_groups):
                starts.append(total)
                total += meta.row_group(g).num_rows
            entry = self._open[k] = (pf, starts)
        return entry

    def __getitem__(self, i: int) -> dict:
        import bisect


        if not 0 <= i < self.total:
            raise IndexError(f"row {i} of a cache of {self.total} rows")
        k = bisect.bisect_right(self.starts, i) - 1
        pf, starts = self._shard(k)
        local = i - self.starts[k]
        g = bisect.bisect_right(starts, local) - 1
        try:
            table = pf.read_row_group(g)
        except Exception as exc:  # checksum failures, cut pages
            raise damaged(self.files[k], f"the cache {self.path}", exc, self.fix) from None
        return table.slice(local - starts[g], 1).to_pylist()[0]


def open_cache(info, root=None, verify_hashes: bool = False) -> Cache:
    """Open the cache for `info` (a resolved source), refusing one that is missing, incomplete or altered."""
    path = cache_dir(info, root)
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        why = "an interrupted prepare left only a partial copy" if partial.exists() else "it has not been prepared"
        raise VLMStudiesError(f"no cached copy of {info.source} [{info.split}] at {path} ({why}); run "
                              f"`python scripts/prepare_data.py --source {info.source} --split {info.split}` "
                              f"or use --mode streaming")
    fix = f"rebuild it: `{rebuild_command(info.source, info.split, info.revision, _cached_limit(path), root)}`"
    return Cache(path, verify_hashes=verify_hashes, fix=fix)


def split_rebuild_command(source: str | None, split: str, root=None, revision: str | None = None) -> str:
    """`rebuild_command` for the cache of `source` [`split`], with the --limit it was prepared with."""

    info = resolve_source(source, split, root, revision)
    return rebuild_command(source or info.source, split, revision, _cached_limit(cache_dir(info, root)), root)


def _cached_limit(path: Path) -> int | None:
    """The --limit a cache was prepared with (so the rebuild command reproduces it); None if unreadable."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        return manifest.get("limit") if isinstance(manifest, dict) else None
    except (OSError, ValueError):
        return None


def verify_split(source: str | None, split: str, root=None, revision: str | None = None) -> list[str]:
    """Re-hash every shard of a prepared split; return the problems found (empty: intact)."""

    info = resolve_source(source, split, root, revision)
    path = cache_dir(info, root)
    if not (path / MANIFEST).is_file():
        return [f"no manifest at {path}"]
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [f"{MANIFEST} is not valid JSON"]
    problem = _manifest_problem(manifest)
    if problem:
        return [f"{MANIFEST} is not a usable manifest ({problem})"]
    cache = Cache.__new__(Cache)
    cache.path, cache.verify_hashes, cache.manifest = path, True, manifest
    return cache.check(hashes=True)
