"""Bookmarks: a persistent set of NLVR2 uids worth another look, with tags and notes.

    python -m vlm_datasets.bookmarks add dev-3-1-0 --tag hard --note "counts the dogs wrong"
    python -m vlm_datasets.bookmarks add dev-3-1-0 dev-7-0-1 --tag counting --split validation
    python -m vlm_datasets.bookmarks list                 # all bookmarks, oldest first
    python -m vlm_datasets.bookmarks list --tag hard --json
    python -m vlm_datasets.bookmarks remove dev-3-1-0 --tag hard   # drop one tag; without --tag, the bookmark
    python -m vlm_datasets.bookmarks tags

They live in `<root>/bookmarks.json` (on Drive in Colab, so they outlive the VM). Every change is
a locked read-modify-write followed by an atomic replace, so several processes may add at once
without losing anything, and a crash leaves the old file or the new one, never half. The gallery,
inspect and playground scripts take `--bookmarks [TAG]` in place of uids. Python API:

    from vlm_datasets.bookmarks import Bookmarks
    bm = Bookmarks()                       # under the current root
    bm.add("dev-3-1-0", tags=["hard"], note="...")
    bm.uids(tag="hard"); bm.next("dev-3-1-0", tag="hard"); bm.previous(None)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterable

from utils.cli import ArgumentParser, add_root_arg
from utils.errors import VLMStudiesError
from utils.io import atomic_write_json
from utils.locks import locked
from vlm_datasets.nlvr2 import parse_uid, UID_SPLITS
from utils.paths import get_root

FILE_NAME = "bookmarks.json"
FORMAT = "vlm_studies_bookmarks"
VERSION = 1
# What an identifier of a dataset row looks like (NLVR2 `dev-850-0-0`, VSR `validation-00012-000000050403`).
# Anything else (`../../x`, `a/b`, shell characters) is refused: bookmarked uids end up in file names and commands.
_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def plausible_uid(uid: str) -> bool:
    """True when `uid` looks like a row identifier: one word of letters, digits, `-`, `_`, `.`, no `..`."""
    return bool(_UID.fullmatch(uid)) and ".." not in uid


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _as_tags(tags: str | Iterable[str] | None) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [tags]
    out = []
    for t in tags:
        t = str(t).strip()
        if not t:
            continue
        if any(c.isspace() for c in t):
            raise VLMStudiesError(f"tag '{t}' contains whitespace; use one word per tag (e.g. {t.replace(' ', '_')})")
        if t not in out:
            out.append(t)
    return out


def bookmark_split(bookmark: dict) -> str | None:
    """The split a bookmark belongs to: the one recorded with it, else the one its uid prefix names."""
    if bookmark.get("split"):
        return bookmark["split"]
    prefix = parse_uid(bookmark["uid"])["uid_split"]
    return UID_SPLITS.get(prefix) if prefix else None


class Bookmarks:
    """The bookmark set under one artifact root (`<root>/bookmarks.json`)."""

    def __init__(self, root=None, path: str | os.PathLike | None = None):
        if path is None:

            path = get_root(root) / FILE_NAME
        self.path = Path(path)

    # ------------------------------------------------------------------ storage
    def _read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        text = self.path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            # Refuse to go on: rewriting would drop whatever the broken file still holds.
            raise VLMStudiesError(f"bookmarks file {self.path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                                  f"fix it by hand or move it away to start a new set") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("bookmarks"), list):
            raise VLMStudiesError(f"{self.path} is not a bookmarks file (expected format '{FORMAT}'); move it away "
                                  f"or point --root elsewhere")
        if data.get("version", VERSION) > VERSION:
            raise VLMStudiesError(f"{self.path} was written by a newer version (format v{data['version']}); update "
                                  f"this checkout")
        return data["bookmarks"]

    def _write(self, items: list[dict]) -> None:
        atomic_write_json(self.path, {"format": FORMAT, "version": VERSION, "bookmarks": items})

    def _change(self, fn):
        """Locked read-modify-write: `fn(items)` edits the list in place and returns the result."""
        with locked(self.path):
            items = self._read()
            result = fn(items)
            self._write(items)
        return result

    # ------------------------------------------------------------------ changes
    def add(self, uid: str, tags: str | Iterable[str] | None = None, note: str | None = None,
            source: str | None = None, split: str | None = None) -> dict:
        """Bookmark `uid` (again): tags are merged, a given note replaces the old one. Returns the bookmark."""
        return self.add_many([uid], tags, note, source, split)[0]

    def add_many(self, uids: Iterable[str], tags: str | Iterable[str] | None = None, note: str | None = None,
                 source: str | None = None, split: str | None = None) -> list[dict]:
        """Bookmark several uids in one locked write (e.g. an eval's mistakes)."""
        uids = [str(u).strip() for u in uids]
        bad = [u for u in uids if not plausible_uid(u)]
        if bad:
            raise VLMStudiesError(f"invalid uid {bad[0]!r}: a uid is one word of letters, digits, '-', '_' and '.' "
                                  f"such as dev-850-0-0 (no path separators or '..')")
        new_tags = _as_tags(tags)

        def apply(items):
            by_uid = {b["uid"]: b for b in items}
            out = []
            for uid in uids:
                b = by_uid.get(uid)
                if b is None:
                    b = {"uid": uid, "tags": [], "note": "", "added": _now()}
                    items.append(b)
                    by_uid[uid] = b
                b["tags"] = b.get("tags", []) + [t for t in new_tags if t not in b.get("tags", [])]
                if note is not None:
                    b["note"] = note
                if source:
                    b["source"] = source
                if split:
                    b["split"] = split
                b["updated"] = _now()
                out.append(dict(b))
            return out

        return self._change(apply)

    def remove(self, uid: str, tag: str | None = None) -> bool:
        """Drop the bookmark (or, with `tag`, only that tag of it). False when there was nothing to drop."""
        def apply(items):
            for i, b in enumerate(items):
                if b["uid"] == uid:
                    if tag is None:
                        del items[i]
                        return True
                    if tag in b.get("tags", []):
                        b["tags"] = [t for t in b["tags"] if t != tag]
                        b["updated"] = _now()
                        return True
                    return False
            return False

        return self._change(apply)

    # ------------------------------------------------------------------ reading
    def list(self, tag: str | None = None, split: str | None = None) -> list[dict]:
        """Bookmarks in the order they were first added; only those with `tag` / in `split` when given."""
        with locked(self.path):  # Windows cannot replace a file another process is reading
            items = self._read()
        if tag is not None:
            items = [b for b in items if tag in b.get("tags", [])]
        if split is not None:
            items = [b for b in items if bookmark_split(b) in (None, split)]
        return items

    def uids(self, tag: str | None = None, split: str | None = None) -> list[str]:
        return [b["uid"] for b in self.list(tag, split)]

    def get(self, uid: str) -> dict | None:
        return next((b for b in self.list() if b["uid"] == uid), None)

    def tags(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for b in self.list():
            for t in b.get("tags", []):
                counts[t] = counts.get(t, 0) + 1
        return dict(sorted(counts.items()))

    def _step(self, uid: str | None, tag: str | None, step: int) -> str | None:
        uids = self.uids(tag)
        if not uids:
            return None
        if uid not in uids:
            return uids[0] if step > 0 else uids[-1]
        return uids[(uids.index(uid) + step) % len(uids)]

    def next(self, uid: str | None = None, tag: str | None = None) -> str | None:
        """The bookmark after `uid` (wrapping round; the first when `uid` is None or not bookmarked)."""
        return self._step(uid, tag, +1)

    def previous(self, uid: str | None = None, tag: str | None = None) -> str | None:
        """The bookmark before `uid` (wrapping round; the last when `uid` is None or not bookmarked)."""
        return self._step(uid, tag, -1)


# ---------------------------------------------------------------------- for the scripts

ALL = "__all__"  # `--bookmarks` given without a tag


def add_bookmarks_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bookmarks", nargs="?", const=ALL, default=None, metavar="TAG",
                        help="use the bookmarked uids (only those tagged TAG when given) of this split")


def bookmarked_uids(tag: str | None, split: str | None = None, root=None) -> list[str]:
    """The uids a `--bookmarks [TAG]` flag selects; an empty selection is an error that says how to add some."""
    bm = Bookmarks(root)
    want = None if tag in (None, ALL) else tag
    uids = bm.uids(want, split)
    if not uids:
        what = f"tagged '{want}' " if want else ""
        where = f" for split '{split}'" if split else ""
        known = bm.tags()
        hint = f" (tags in use: {', '.join(known)})" if known and want else ""
        raise VLMStudiesError(f"no bookmarks {what}{where} in {bm.path}{hint}; add some with "
                              f"`python -m vlm_datasets.bookmarks add UID{' --tag ' + want if want else ''}`")
    return uids


# ---------------------------------------------------------------------- CLI

def _print_bookmarks(items: list[dict]) -> None:
    if not items:
        print("no bookmarks")
        return
    for b in items:
        tags = ",".join(b.get("tags", [])) or "-"
        where = "/".join(x for x in (b.get("source"), b.get("split")) if x)
        note = f"  {b['note']}" if b.get("note") else ""
        print(f"{b['uid']:<24} [{tags}]{'  (' + where + ')' if where else ''}{note}")


def main(argv=None):
    ap = ArgumentParser(prog="python -m vlm_datasets.bookmarks", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_add = sub.add_parser("add", help="bookmark uids (tags merge, a note replaces the old one)")
    p_add.add_argument("uids", nargs="+")
    p_add.add_argument("--tag", action="append", default=[], help="repeatable")
    p_add.add_argument("--note", default=None)
    p_add.add_argument("--source", default=None, help="the data source the uid comes from (recorded only)")
    p_add.add_argument("--split", default=None, help="the split the uid belongs to (default: from its prefix)")
    p_list = sub.add_parser("list", help="show bookmarks")
    p_list.add_argument("--tag", default=None)
    p_list.add_argument("--split", default=None)
    p_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_rm = sub.add_parser("remove", help="remove bookmarks (or one tag of them)")
    p_rm.add_argument("uids", nargs="+")
    p_rm.add_argument("--tag", default=None, help="remove only this tag")
    sub.add_parser("tags", help="tags with their counts")
    for p in (p_add, p_list, p_rm, sub.choices["tags"]):
        add_root_arg(p)
    args = ap.parse_args(argv)
    bm = Bookmarks(args.root)
    if args.cmd == "add":
        added = bm.add_many(args.uids, args.tag, args.note, args.source, args.split)
        print(f"bookmarked {len(added)} uid(s) in {bm.path}")
        _print_bookmarks(added)
    elif args.cmd == "list":
        items = bm.list(args.tag, args.split)
        if args.json:
            print(json.dumps(items, indent=2))
        else:
            _print_bookmarks(items)
    elif args.cmd == "remove":
        missing = [u for u in args.uids if not bm.remove(u, args.tag)]
        done = len(args.uids) - len(missing)
        print(f"removed {done} {'tag(s)' if args.tag else 'bookmark(s)'} from {bm.path}")
        if missing:
            what = f"tagged '{args.tag}'" if args.tag else "bookmarked"
            raise VLMStudiesError(f"not {what}: {', '.join(missing)} (see `python -m vlm_datasets.bookmarks list`)")
    else:
        tags = bm.tags()
        print("\n".join(f"{t}\t{n}" for t, n in tags.items()) or "no tags")


if __name__ == "__main__":
    from utils.cli import main_guard

    sys.exit(main_guard(main))
