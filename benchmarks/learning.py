"""Does it learn? Trains each model with the product's own loop and metrics, and prints the table.

For each model and seed: `tune.train.run_training` on the built-in data, the `fast` metrics every
`--eval-every` steps (the learning curves), the `--final-protocol` metrics at the end (`dlib` by
default: disentanglement_lib's budgets). Beside each model: its noise floor, the same model
untrained (step 0, the same init seeds, three of them; `tune.sweep.floor`), evaluated with the
same protocols. A value that is not clearly above its floor (`analysis.floor.FLOOR_RULE`) is
marked `~`.

    python benchmarks/learning.py                          # the default budget: about an hour
                                                           # on 2 cores (see --help)
    python benchmarks/learning.py --models betatcvae --steps 1500 --seeds 1
    python benchmarks/learning.py --device cuda --steps 30000 --seeds 3 --batch 256

Writes `<out>/learning.md` (the table), `<out>/learning_curves.png` and `<out>/learning.json`
(every number), and prints the table. Timings on a shared machine are indicative only.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_MODELS = ("beta_vae", "betatcvae", "mipet_vae", "mipet_betatcvae")
FINAL_METRICS = ("mig", "dci", "factor_vae", "sap")  # the paper's four
CURVE_METRICS = ("mig", "dci", "factor_vae")
TABLE_KEYS = ("mig", "dci_disentanglement", "factor_vae", "sap")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    p.add_argument("--steps", type=int, default=2500, help="optimizer steps per run (default "
                   "2500: with 2 seeds of the four default models, about an hour on 2 cores)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per model (0, 1, ...)")
    p.add_argument("--dataset", default="dsprites")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta", type=float, default=6.0, help="beta of the beta models "
                   "(mipet_vae ignores it, as the paper code does)")
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=0,
                   help="steps between fast evaluations (default: steps / 5)")
    p.add_argument("--final-protocol", default="dlib", choices=["dlib", "fast", "mipet"])
    p.add_argument("--metrics", nargs="+", default=list(FINAL_METRICS),
                   help="final metrics (analysis.metrics names)")
    p.add_argument("--floor-seeds", type=int, default=3, help="untrained models per floor")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default="runs/learning")
    args = p.parse_args(argv)
    if args.eval_every <= 0:
        args.eval_every = max(1, args.steps // 5)
    return args


def run_config(args: argparse.Namespace, model: str, seed: int, protocol: str):
    from tune.config.run import RunConfig

    return RunConfig.from_dict({
        "model": {"name": model, "beta": args.beta, "latent_dim": args.latent_dim},
        "data": {"name": args.dataset},
        "train": {"steps": args.steps, "batch_size": args.batch, "lr": args.lr,
                  "sub_lr": args.lr, "report_every": args.eval_every,
                  "checkpoint_every": args.steps, "eval_every": args.eval_every,
                  "images": False, "device": args.device, "num_threads": args.threads},
        "eval": {"protocol": protocol, "metrics": list(args.metrics),
                 "fast_metrics": list(CURVE_METRICS)},
        "seed": seed,
    })


def train_one(args: argparse.Namespace, model: str, seed: int, data: Any) -> dict[str, Any]:
    """One run: its fast curve (step -> metrics), final metrics and timings."""
    from tune.train.loop import run_training

    cfg = run_config(args, model, seed, args.final_protocol)
    curve: dict[int, dict[str, float]] = {}

    def report(metrics: dict[str, Any], _checkpoint) -> None:
        fast = {k[5:]: v for k, v in metrics.items() if k.startswith("fast/")}
        if fast:
            curve[int(metrics["step"])] = fast

    t0 = time.perf_counter()
    result = run_training(cfg, report=report, data=data)
    if args.final_protocol == "fast":  # the last point of the curve is the final evaluation
        curve[result.step] = dict(result.metrics)
    return {"model": model, "seed": seed, "curve": curve, "final": dict(result.metrics),
            "losses": dict(result.losses), "seconds": time.perf_counter() - t0,
            "train_seconds": result.train_seconds, "images_per_s": result.images_per_s}


def floors(args: argparse.Namespace, protocol: str, metrics: Sequence[str]) -> list[dict]:
    """The floor rows of every model (see `analysis.floor`) under one protocol."""
    import dataclasses

    from tune.sweep.floor import floor_table

    cfgs = []
    for model in args.models:
        cfg = run_config(args, model, 0, protocol)
        cfgs.append(cfg.replace(eval=dataclasses.replace(cfg.eval, metrics=tuple(metrics))))
    return floor_table(cfgs, seeds=args.floor_seeds).to_dict("records")


def _stats(values: list[float]) -> tuple[float, float, int]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan"), 0
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return statistics.fmean(values), sd, len(values)


def table(args: argparse.Namespace, runs: list[dict], floor: list[dict]) -> str:
    """Markdown: per model, each final metric's mean ± sd (n) over seeds, its floor, margin."""
    from analysis.floor import clearly_above, margin

    keys = [k for k in TABLE_KEYS if any(k in r["final"] for r in runs)]
    header = ["model", "steps", "min/run"]
    for k in keys:
        header += [k, "floor", "x"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in args.models:
        mine = [r for r in runs if r["model"] == model]
        minutes = statistics.fmean(r["seconds"] for r in mine) / 60 if mine else float("nan")
        cells = [model, str(args.steps), f"{minutes:.1f}"]
        for k in keys:
            m, sd, n = _stats([r["final"].get(k) for r in mine])
            f, fsd, _ = _stats([row.get(f"eval/{k}") for row in floor
                                if row["config/model/name"] == model])
            mark = "" if clearly_above(m, f, spread=sd, floor_spread=fsd) else " ~"
            spread = f" ± {sd:.3f}" if n > 1 else ""
            cells += [f"{m:.3f}{spread} ({n}){mark}", f"{f:.3f}", f"{margin(m, f):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(args: argparse.Namespace, runs: list[dict], floor: list[dict], path: Path) -> Path:
    """The fast metrics against the step, one panel per metric; floors dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in ("mig", "dci_disentanglement", "factor_vae")
            if any(k in c for r in runs for c in r["curve"].values())] or ["mig"]
    fig = Figure(figsize=(4.2 * len(keys), 3.4), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        for j, model in enumerate(args.models):
            color = f"C{j}"
            f, _, _ = _stats([row.get(f"eval/{key}") for row in floor
                              if row["config/model/name"] == model])
            mine = [r for r in runs if r["model"] == model]
            steps = sorted({s for r in mine for s in r["curve"]})
            xs, ys = [0], [f]
            for s in steps:
                xs.append(s)
                ys.append(_stats([r["curve"].get(s, {}).get(key) for r in mine])[0])
            ax.plot(xs, ys, marker="o", ms=3, color=color, label=model)
            if math.isfinite(f):
                ax.axhline(f, color=color, ls="--", lw=0.8)
        ax.set_xlabel("step")
        ax.set_title(f"fast {key} (dashed: untrained)")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from tune.data import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = load_dataset(args.dataset)
    print(f"learning benchmark: {args.models} on {args.dataset}, {args.steps} steps x "
          f"{args.seeds} seeds, batch {args.batch}, lr {args.lr}, beta {args.beta}, device "
          f"{args.device}, torch threads {torch.get_num_threads()}", file=sys.stderr)
    fast_floor = floors(args, "fast", CURVE_METRICS)
    final_floor = (fast_floor if args.final_protocol == "fast" and
                   set(args.metrics) <= set(CURVE_METRICS) else
                   floors(args, args.final_protocol, args.metrics))
    runs = []
    for model in args.models:
        for seed in range(args.seeds):
            run = train_one(args, model, seed, data)
            runs.append(run)
            shown = ", ".join(f"{k} {v:.3f}" for k, v in run["final"].items() if k in TABLE_KEYS)
            print(f"  {model} seed {seed}: {shown} ({run['seconds'] / 60:.1f} min, "
                  f"{run['images_per_s']:.0f} img/s)", file=sys.stderr, flush=True)
    text = table(args, runs, final_floor)
    note = (f"{args.final_protocol} protocol at step {args.steps}; floor = the untrained model "
            f"(mean of {args.floor_seeds} init seeds); x = mean / floor; ~ = not clearly above "
            f"the floor; total {(time.perf_counter() - t0) / 60:.1f} min")
    (out / "learning.md").write_text(text + "\n\n" + note + "\n")
    png = plot(args, runs, fast_floor, out / "learning_curves.png")
    record = {"args": vars(args), "runs": runs, "floor": final_floor, "fast_floor": fast_floor}
    (out / "learning.json").write_text(json.dumps(record, indent=1, default=str))
    print(text)
    print(f"\n{note}\ncurves: {png}")
    return {"table": text, "png": png, "runs": runs, "floor": final_floor}


if __name__ == "__main__":
    main()
