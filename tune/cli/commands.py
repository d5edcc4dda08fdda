"""The `mipet-tune` command line. Results go to stdout, logs to stderr; bad input is one line and
exit status 2. Heavy imports (torch, ray) happen inside the commands, so `--help` is instant."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

log = logging.getLogger("mipet_tune")


# ---- commands ------------------------------------------------------------------------------
def cmd_sweep(args: argparse.Namespace) -> int:
    """Exit 0 when the sweep ran to its end, 128 + the signal (130 SIGINT, 143 SIGTERM) when a
    signal stopped it (resume it with --resume), 2 on bad input or a folder that is not a sweep
    or that another driver holds."""
    from tune.config.sweep import SweepSpec
    from tune.sweep.driver import run_sweep
    from tune.sweep.interrupts import SweepInterrupted

    try:
        if args.resume:
            if args.preset or args.config:
                raise _usage("--resume continues a sweep as it was saved; drop --preset/--config")
            if args.dry_run:
                raise _usage("--dry-run estimates a new sweep: give --preset NAME or "
                             "--config FILE")
            result = run_sweep(resume=args.resume, address=args.address,
                               verbose=_ray_verbosity(args))
        else:
            if not (args.preset or args.config):
                raise _usage("give --preset NAME or --config FILE (or --resume DIR)")
            spec = SweepSpec.load(preset=args.preset, config=_config_file(args.config, "sweep"),
                                  overrides=args.set, name=args.name, storage=args.out)
            if args.dry_run:
                from tune.sweep.estimate import sweep_dry_run_text

                print(sweep_dry_run_text(spec, args.throughput))
                return 0
            result = run_sweep(spec, address=args.address, verbose=_ray_verbosity(args))
    except SweepInterrupted as exc:
        print(f"mipet-tune sweep: interrupted by {exc}", file=sys.stderr)
        return 128 + exc.signum
    if result.interrupted is not None:
        print(f"interrupted: {result.finished} of {result.planned} trials finished; "
              f"no best config exported")
        print(f"\nsweep folder: {result.folder}")
        print(f"continue it:  mipet-tune sweep --resume {result.folder}")
        return 128 + result.interrupted
    print(result.ranked_text)
    print(f"\nsweep folder: {result.folder}")
    if result.best_config is not None:
        print(f"best config:  {result.best_config}")
        print(f"rerun it:     mipet-tune train --config {result.best_config}")
    if args.confirm is not None and result.best_config is not None:
        from analysis.confirm import CONFIRM_DIR, PLAN_FILE

        again = (result.folder / CONFIRM_DIR / PLAN_FILE).is_file()  # a resumed sweep's
        top, seeds = (None, None) if again else args.confirm
        print()
        return _confirm(result.folder, top=top, seeds=seeds, resume=again, args=args)
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    """Exit 0 when every planned run ended, 128 + the signal when one stopped it (continue
    with --resume), 2 on bad input."""
    return _confirm(Path(args.sweep), top=args.top, seeds=args.seeds, resume=args.resume,
                    args=args, protocol=args.protocol, overrides=args.set)


def _confirm(folder: Path, *, top: int | None, seeds: int | None, resume: bool,
             args: argparse.Namespace, protocol: str | None = None,
             overrides: Sequence[str] = ()) -> int:
    from tune.sweep.confirm import run_confirm
    from tune.sweep.interrupts import SweepInterrupted

    try:
        result = run_confirm(folder, top=top, seeds=seeds, protocol=protocol,
                             overrides=overrides, resume=resume, address=args.address,
                             verbose=_ray_verbosity(args))
    except SweepInterrupted as exc:
        print(f"mipet-tune confirm: interrupted by {exc}", file=sys.stderr)
        return 128 + exc.signum
    if result.interrupted is not None:
        print(f"interrupted: {result.finished} of {result.planned} runs finished")
        print(f"continue it:  mipet-tune confirm {result.folder} --resume")
        return 128 + result.interrupted
    print(result.text)
    return 0


def _config_file(path: str | None, what: str) -> str | None:
    """`--config PATH` as given, after the check that it is not a folder (whose message would
    otherwise be "no such config file", though the path exists)."""
    if path is not None and Path(path).expanduser().is_dir():
        raise _usage(f"--config {path}: is a directory; give a {what} YAML file")
    return path


def cmd_train(args: argparse.Namespace) -> int:
    from tune.train.command import train_from_file

    result = train_from_file(args.config, overrides=args.set, out=args.out, resume=args.resume,
                             restart=args.restart, from_checkpoint=args.from_checkpoint)
    print(result)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tune.cli.evaluate import evaluate_command

    print(evaluate_command(args.target, trial=args.trial, top=args.top, protocol=args.protocol,
                           metrics=args.metrics or (), seed=args.seed, data=args.data,
                           source=args.source, precision=args.precision, device=args.device))
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from tune.cli.udr import ensure_all_to_all
    from tune.sweep.results import rank_text

    ensure_all_to_all(args.sweep, args.by)  # `--by udr_a2a` on a table without it
    print(rank_text(Path(args.sweep), by=args.by, top=args.top))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tune.sweep.results import export

    path = export(Path(args.sweep), to=args.to, by=args.by)
    print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tune.sweep.results import report

    print(report(Path(args.sweep)))
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from tune.sweep.ablate import ablate

    print(ablate(sweep=args.sweep, config=_config_file(args.config, "ablation"),
                 overrides=args.set, out=args.out, address=args.address, fmt=args.format,
                 verbose=_ray_verbosity(args), dry_run=args.dry_run, throughput=args.throughput))
    return 0


# ---- parser --------------------------------------------------------------------------------
def _version() -> str:
    """The installed distribution's version (its metadata), or why there is none."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mipet-tune")
    except PackageNotFoundError:
        return "(not installed: no version; pip install -e . gives one)"


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (its `--help` has the usage), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _at_least_two(text: str) -> int:
    """An argparse type: an integer >= 2 (seeds of a confirmation)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 2 (one seed cannot say how much seeds move a metric), "
            f"got {text!r}")
    return value


def _top_and_seeds(text: str) -> tuple[int, int]:
    """An argparse type: `K,N` (K >= 1 configurations, N >= 2 seeds)."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected K,N (e.g. 2,3), got {text!r}")
    return _positive_int(parts[0].strip()), _at_least_two(parts[1].strip())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mipet-tune",
        description="Hyperparameter search for disentangling VAEs (MIPET) with Ray Tune + Optuna.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("sweep", help="run a hyperparameter sweep (or --resume one)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", help="a built-in sweep: quick, paper, ...")
    src.add_argument("--config", help="a sweep YAML file")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted sweep in DIR")
    p.add_argument("--out", help="parent folder (or URI) of the sweep folder (default: runs)")
    p.add_argument("--name", help="the sweep's name (its folder under --out)")
    p.add_argument("--address", help="join a running Ray cluster (or set RAY_ADDRESS)")
    _add_dry_run(p, "print the trial count, the noise-floor evaluations and the estimated "
                    "time; run nothing")
    p.add_argument("--confirm", type=_top_and_seeds, metavar="K,N",
                   help="then confirm the top K configurations with N fresh seeds each "
                        "(as `mipet-tune confirm SWEEP --top K --seeds N`)")
    _add_set(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "confirm", help="re-run a sweep's top configurations with fresh seeds and test them",
        description="Re-run the top K configurations of a sweep (by its metric) with N seeds "
                    "the search never used, one Ray trial per configuration and seed with the "
                    "sweep's resources, and write SWEEP/confirm/: the runs, and the confirmed "
                    "table (mean, sd, 95%% interval, x floor, Welch and Holm p-values against "
                    "the first) with a one-sentence verdict. rank, report and export then "
                    "show the confirmed result first.")
    p.add_argument("sweep", help="the sweep folder")
    p.add_argument("--top", type=_positive_int, metavar="K", help="configurations to confirm")
    p.add_argument("--seeds", type=_at_least_two, metavar="N",
                   help="fresh seeds per configuration (at least 2)")
    p.add_argument("--protocol", choices=["dlib", "fast", "mipet"],
                   help="the evaluation protocol of the runs (default: dlib)")
    p.add_argument("--resume", action="store_true",
                   help="run the planned runs that have not finished (after a kill or a signal)")
    p.add_argument("--address", help="join a running Ray cluster (or set RAY_ADDRESS)")
    _add_set(p)
    p.set_defaults(func=cmd_confirm)

    p = sub.add_parser(
        "train", help="train one configuration (e.g. an exported best config)",
        description="Train one configuration into OUT/<model>-<run id>-seed<seed>. The run id "
                    "hashes the config but the seed and train/steps, so a run trained longer "
                    "keeps its folder. A folder that already holds checkpoints is never "
                    "overwritten: give --resume, --from or --restart.")
    p.add_argument("--config", required=True, help="a run-config YAML (e.g. best_config.yaml)")
    p.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue this run from its newest readable checkpoint (a changed "
                            "train/steps trains it to the new length; any other change refuses, "
                            "listing the changed keys)")
    again.add_argument("--from", dest="from_checkpoint", metavar="CHECKPOINT",
                       help="continue this run from the checkpoint folder CHECKPOINT (e.g. "
                            "OUT/<run>/checkpoints/checkpoint_00005000), when --resume refuses "
                            "to choose one")
    again.add_argument("--restart", action="store_true",
                       help="remove this run's earlier checkpoints, TensorBoard files and "
                            "images, and train it again from step 0")
    _add_set(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", help="score a trained model again (another protocol, seed or dataset)",
        description="Score the checkpoint of a run (its newest readable one), a sweep trial's "
                    "(--trial) or a sweep's best configurations' (--top) with a protocol, "
                    "beside the noise floor (the same model untrained). Writes "
                    "eval_<protocol>.json in the checkpoint folder and, for a sweep, the "
                    "final/<metric> columns of trials.parquet.")
    p.add_argument("target", help="a run folder or checkpoint folder of mipet-tune train, or "
                                  "a sweep folder (with --trial or --top)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", metavar="ID", help="the sweep trial to evaluate")
    which.add_argument("--top", type=_positive_int, metavar="K",
                       help="evaluate the sweep's K best configurations (every seed)")
    p.add_argument("--protocol", choices=["dlib", "fast", "mipet"], default="dlib",
                   help="evaluation protocol (default dlib: disentanglement_lib's budgets)")
    p.add_argument("--metrics", nargs="+", metavar="METRIC",
                   help="metrics to compute (default: the protocol's set)")
    p.add_argument("--seed", type=int, help="the metric seed (default: the run's own, as its "
                                            "final evaluation used)")
    p.add_argument("--data", metavar="NAME",
                   help="score on this dataset (images of the training shape) instead of the "
                        "run's")
    p.add_argument("--source", metavar="PATH", help="the file or folder of --data NAME")
    p.add_argument("--precision", choices=["fp32", "bf16"],
                   help="the encoder pass's precision (default: the run's eval.precision)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("rank", help="print a sweep's ranked table")
    p.add_argument("sweep", help="the sweep folder")
    p.add_argument("--by", nargs="+", metavar="METRIC",
                   help="metrics to rank by (default: the sweep's)")
    p.add_argument("--top", type=_positive_int, default=20,
                   help="configurations to print (default 20)")
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("ablate", help="an ablation table from a sweep, or run an ablation grid")
    p.add_argument("sweep", nargs="?", help="a finished sweep folder")
    p.add_argument("--config", help="an ablation YAML: a grid run through Ray without a searcher")
    p.add_argument("--out", help="parent folder of the ablation run (with --config)")
    p.add_argument("--address", help="join a running Ray cluster (with --config)")
    p.add_argument("--format", choices=["md", "latex", "csv"], default="md")
    _add_dry_run(p, "with --config: print the cells, trial count and estimated time; "
                    "run nothing")
    _add_set(p)
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("export", help="write a sweep's best configuration as YAML")
    p.add_argument("sweep", help="the sweep folder")
    p.add_argument("--to", help="output file (default: SWEEP/report/best_config.yaml)")
    p.add_argument("--by", nargs="+", metavar="METRIC", help="metrics that define best")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="write a sweep's report (Markdown + HTML, plots)")
    p.add_argument("sweep", help="the sweep folder")
    p.set_defaults(func=cmd_report)

    from tune.cli.udr import register as register_udr
    from tune.data.cli import register as register_data

    register_data(sub)
    register_udr(sub)
    return parser


def _add_dry_run(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--dry-run", action="store_true", help=what)
    p.add_argument("--throughput", action="append", default=[], metavar="[MODEL[@DATA]=]IMG_S",
                   help="images/s for the --dry-run estimate (default: measured here)")


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set model/beta=4 --set train/steps=200")


def _ray_verbosity(args: argparse.Namespace) -> int:
    return max(0, min(3, 1 + args.verbose - args.quiet))


class _UsageError(Exception):
    pass


def _usage(message: str) -> _UsageError:
    return _UsageError(message)


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("ray", "optuna", "matplotlib", "PIL", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    configure_logging(args.verbose - args.quiet)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except _UsageError as exc:
        print(f"mipet-tune {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if _is_failure(exc):  # the run itself failed (diverged): one line, exit 1
            print(f"mipet-tune {args.command}: failed: {exc}", file=sys.stderr)
            return 1
        if _is_user_error(exc):
            print(f"mipet-tune {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


def _is_user_error(exc: BaseException) -> bool:
    """Bad input (ours or the analysis package's): one line, exit 2, no traceback."""
    from models.errors import MipetTuneError

    if isinstance(exc, MipetTuneError) and not _is_failure(exc):
        return True
    mod = sys.modules.get("analysis.errors")
    return mod is not None and isinstance(exc, mod.AnalysisError)


def _is_failure(exc: BaseException) -> bool:
    from models.errors import NonFiniteLossError

    return isinstance(exc, NonFiniteLossError)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
