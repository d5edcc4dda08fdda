"""`mipet-tune data prepare NAME [--source PATH] [--cache-dir DIR]` (registered by tune.cli)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tune.data._registry import DATASETS


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `data` command group to an argparse subparsers object."""
    data = subparsers.add_parser("data", help="prepare or check a dataset cache",
                                 description="Dataset caches (one per machine).")
    sub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    prep = sub.add_parser(
        "prepare", help="build (or verify) the cache of a dataset",
        description="Convert a real dataset file, or generate the built-in stand-in, into the "
        "cache once; an existing cache is fully checksummed (and rebuilt if corrupt). Prints a "
        "JSON summary (path, bytes, checksum, seconds) on stdout; progress goes to stderr.")
    prep.add_argument("name", choices=DATASETS, metavar="NAME",
                      help="one of: " + ", ".join(DATASETS))
    prep.add_argument("--source", default=None, metavar="PATH",
                      help="the real file (Cars3D: folder); default: built-in generator")
    prep.add_argument("--cache-dir", default=None, metavar="DIR",
                      help="cache folder (default $MIPET_TUNE_CACHE or ~/.cache/mipet-tune)")
    prep.set_defaults(func=prepare_command)
    return data


def prepare_command(args: argparse.Namespace) -> int:
    """Handler of `data prepare`; raises DataFileError/ConfigError on bad input."""
    from tune.data import prepare_dataset

    summary = prepare_dataset(args.name, args.source, args.cache_dir, progress=True)
    print(json.dumps(summary, indent=1))
    return 0
