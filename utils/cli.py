"""Small pieces every entry point shares: the one-line error guard, a console that cannot crash, --root."""

from __future__ import annotations

import argparse
import codecs
import os
import sys
from typing import Callable

from utils.errors import VLMStudiesError, disk_full_error, failed_path, is_disk_full


def safe_console() -> None:
    """Let stdout/stderr print any character, whatever their encoding.

    On Windows, output redirected to a file or a pipe is encoded in the ANSI code page (cp1252 in Western
    Europe), which has no "≥", "→", Chinese or most other characters; a sentence, a path or a model's answer
    holding one would raise UnicodeEncodeError mid-run. Such characters are written escaped (`\\u2265`)
    instead. UTF-8 streams (Linux, macOS, Windows consoles, PYTHONUTF8=1) are left as they are.
    """
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None)
        try:
            if encoding and codecs.lookup(encoding).name != "utf-8" and getattr(stream, "errors", None) == "strict":
                stream.reconfigure(errors="backslashreplace")
        except (AttributeError, LookupError, ValueError):  # not a TextIOWrapper, or already closed
            pass


def main_guard(fn: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run `fn(argv)`; a `VLMStudiesError` (or a full disk) becomes `error: <message>` on stderr and exit status 2.

    Output first goes through `safe_console`, so no character can crash a script's printing.
    """
    safe_console()
    try:
        fn(argv)
    except VLMStudiesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        # A full disk in a place without its own guard: still one line (files are written atomically, so
        # what was there before is intact).
        where = failed_path(exc) or os.getcwd()
        print(f"error: {disk_full_error(where, 'run the same command again')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: everything already written is kept; run the same command again to continue",
              file=sys.stderr)
        return 130
    return 0


def add_root_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None,
                        help="artifact root (default: $VLM_STUDIES_ROOT, else Drive on Colab, else ./artifacts)")


def add_data_args(parser: argparse.ArgumentParser, split: str = "validation", source: str | None = None) -> None:
    """The three flags every script that reads NLVR2 takes, with the same meaning everywhere."""
    parser.add_argument("--source", default=source,
                        help="hub id (e.g. pingzhili/nlvr2) or a local folder / parquet file in its schema "
                             "(default: the synthetic set under the root)")
    parser.add_argument("--split", default=split, help="split name: train, validation, test (default %(default)s)")
    parser.add_argument("--mode", default="streaming", choices=["streaming", "cached"],
                        help="streaming reads the source directly; cached reads manifest-checked local shards")
