"""Materialise an NLVR2 split into manifest-checked local parquet shards (for --mode cached).

    python scripts/prepare_data.py --source synthetic --split validation
    python scripts/prepare_data.py --source pingzhili/nlvr2 --split validation          # needs the Hub once
    python scripts/prepare_data.py --source pingzhili/nlvr2 --split train --limit 2000
    python scripts/prepare_data.py --source pingzhili/nlvr2 --split validation --verify  # re-hash every shard
    python scripts/prepare_data.py --source pingzhili/nlvr2 --split validation --rebuild # a damaged cache

Shards land in <root>/datasets/<name>/<revision-or-fingerprint>/<split>/ with manifest.json, written with
parquet page checksums that every read verifies, and records.parquet: per row what the training length
guard needs (image sizes, sentence, label), so a launch or --resume reads no images before step 1. Running this again on an existing cache re-hashes its
shards and rebuilds it only if it is damaged; --rebuild rebuilds it regardless (the old copy stays in
place until the new one is complete).
"""

from __future__ import annotations

import sys
import time

from utils.cli import ArgumentParser, add_root_arg, main_guard
from utils.errors import VLMStudiesError


def make_parser() -> ArgumentParser:
    from vlm_datasets.nlvr2 import DEFAULT_SOURCE

    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--source", default=DEFAULT_SOURCE,
                    help="hub id, a local folder / parquet file in its schema, or synthetic (default %(default)s)")
    ap.add_argument("--split", default="validation", help="split name: train, validation, test (default %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="cache only the first N rows")
    ap.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    ap.add_argument("--rows_per_shard", type=int, default=1000, help="rows in each parquet shard (default %(default)s)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--verify", action="store_true", help="re-hash an existing cache instead of preparing")
    mode.add_argument("--rebuild", action="store_true", help="prepare again even if a complete cache exists (the "
                                                             "repair for a damaged one)")
    add_root_arg(ap)
    return ap


def main(argv=None):
    from vlm_datasets.cache import Cache, prepare_split, split_rebuild_command, verify_split

    args = make_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise VLMStudiesError(f"--limit must be a positive number of rows, not {args.limit}; drop it to cache the "
                              f"whole split")
    if args.rows_per_shard < 1:
        raise VLMStudiesError(f"--rows_per_shard must be at least 1, not {args.rows_per_shard}")
    if args.verify:
        problems = verify_split(args.source, args.split, args.root, args.revision)
        if problems:
            command = split_rebuild_command(args.source, args.split, args.root, args.revision)
            raise VLMStudiesError(f"cache of {args.source} [{args.split}] is damaged: {'; '.join(problems)}; "
                                  f"rebuild it: `{command}`")
        print(f"verified: every shard of {args.source} [{args.split}] matches its manifest")
        return
    t0 = time.time()
    path = prepare_split(args.source, args.split, args.root, args.limit, args.rows_per_shard, args.revision,
                         rebuild=args.rebuild, verify_existing=True)
    cache = Cache(path)
    print(f"{cache.num_rows} rows of {args.source} [{args.split}] in {len(cache.files)} shard(s) at {path} "
          f"({time.time() - t0:.1f}s); manifest sha256 {cache.manifest_sha256[:12]}")


if __name__ == "__main__":
    sys.exit(main_guard(main))
