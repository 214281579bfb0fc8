"""Small pieces every entry point shares: the one-line error guard and the --root flag."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from utils.errors import VLMStudiesError, disk_full_error, failed_path, is_disk_full


def main_guard(fn: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run `fn(argv)`; a `VLMStudiesError` (or a full disk) becomes `error: <message>` on stderr and exit status 2."""
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
