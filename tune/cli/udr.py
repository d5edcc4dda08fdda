"""`mipet-tune udr SWEEP [--protocol fast|dlib]`: the all-to-all UDR of a finished sweep, added to
its trials.parquet as `eval/udr_a2a` (registered by tune.cli; `rank --by udr_a2a` computes it
when a finished row of the table lacks it)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `udr` command to an argparse subparsers object."""
    p = subparsers.add_parser(
        "udr", help="the all-to-all UDR of a finished sweep (eval/udr_a2a)",
        description="Score every finished model of a sweep against all the others (UDR with "
        "lasso, Duan et al.'s all-to-all variant: a model's score is its median over every "
        "other model of the sweep) and write it into trials.parquet as eval/udr_a2a.")
    p.add_argument("sweep", help="the sweep folder")
    p.add_argument("--protocol", choices=["fast", "dlib"], default=None,
                   help="whose budgets (default: the runs' eval.protocol, fast for another)")
    p.set_defaults(func=udr_command)
    return p


def udr_command(args: argparse.Namespace) -> int:
    from tune.sweep.udr import A2A_COLUMN, write_all_to_all

    path = write_all_to_all(Path(args.sweep).expanduser(), protocol=args.protocol)
    print(f"{A2A_COLUMN} written to {path}")
    return 0


def ensure_all_to_all(folder: str | Path, by: Sequence[str] | None) -> None:
    """Compute the all-to-all UDR before a ranking by `udr_a2a` when a finished row lacks it."""
    if not by or not any(b in ("udr_a2a", "eval/udr_a2a") for b in by):
        return
    import pandas as pd

    from analysis.trials import FINISHED
    from tune.sweep.folder import TRIALS_FILE
    from tune.sweep.udr import A2A_COLUMN, write_all_to_all

    path = Path(folder).expanduser() / TRIALS_FILE
    if path.is_file():
        table = pd.read_parquet(path)
        done = table[table["status"] == FINISHED]
        if A2A_COLUMN in table and done[A2A_COLUMN].notna().all():
            return
    write_all_to_all(Path(folder).expanduser())
