"""A ranked table as text: the Markdown table `mipet-tune rank` prints and the report shows, its
footnotes, the report's summary sentence, and the noise floor's reference rows.

`analysis.rank` computes the ranking (a DataFrame whose `attrs` say how it was ranked); this
module only renders one, so it never ranks, reads a sweep or changes a table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import _format as fmt
from analysis.columns import param_label
from analysis.floor import FLOOR_FILE, FLOOR_RULE

__all__ = [
    "FLOOR_LABEL",
    "NOT_ABOVE",
    "excluded_line",
    "floor_csv_rows",
    "ranked_markdown",
    "ranked_notes",
    "ranked_rows",
    "ranked_text",
    "summary_sentence",
]

NOT_ABOVE = "†"  # marks a value that is not clearly above the noise floor
FLOOR_LABEL = "noise floor"


def ranked_text(ranked: pd.DataFrame, *, top: int | None = None) -> str:
    """What `mipet-tune rank` prints for a ranking: one line saying how it was ranked and what
    was left out, then `ranked_markdown` (the first `top` rows; all for None)."""
    dirs = ", ".join(
        f"{m} ({'higher' if d == 'max' else 'lower'} is better)"
        for m, d in ranked.attrs["directions"].items()
    )
    how = "mean rank across metrics" if len(ranked.attrs["by"]) > 1 else "mean over seeds"
    text = (
        f"Ranked by {dirs}; {how}; {len(ranked)} configurations, "
        f"{excluded_line(ranked)}.\n\n" + ranked_markdown(ranked, top=top)
    )
    if top is not None and len(ranked) > top:
        text += f"\n(the first {top} of {len(ranked)} configurations)\n"
    return text


def excluded_line(ranked: pd.DataFrame) -> str:
    """`"27 trials, 24 used; left out: 2 failed, 1 nonfinite"`."""
    ex = ranked.attrs.get("excluded", {})
    left = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in ex.items() if n)
    line = f"{ranked.attrs.get('n_trials', '?')} trials, {ranked.attrs.get('n_used', '?')} used"
    return line + (f"; left out: {left}" if left else "; none left out")


def ranked_markdown(ranked: pd.DataFrame, *, top: int | None = None) -> str:
    """The ranked table as Markdown: parameters, `mean ± std (n)` and the 95% interval, the
    noise floor's reference row, then its footnotes (`ranked_notes`)."""
    notes = "".join(f"\n{line}\n" for line in ranked_notes(ranked))
    return fmt.markdown_table(*ranked_rows(ranked, top=top)) + notes


def ranked_notes(ranked: pd.DataFrame) -> list[str]:
    """The footnote lines under a ranked table: what the floor column and its mark mean (or
    that no floor was computed), and whether the first two configurations differ."""
    if ranked.attrs.get("floor") is None:
        lines = [f"No noise floor was computed for this sweep (no {FLOOR_FILE}: a sweep from "
                 "before floors, or without evaluation), so the table cannot say which values "
                 "an untrained model would reach too."]
    else:
        lines = [f"× floor: the seed mean over the `{FLOOR_LABEL}` row (the untrained model, "
                 f"step 0, same protocol); {NOT_ABOVE} not clearly above it ({FLOOR_RULE})."]
    verdict = ranked.attrs.get("seed_verdict")
    if verdict is not None and verdict.second is not None:
        lines.append("Seeds: " + verdict.sentence())
    return lines


def summary_sentence(ranked: pd.DataFrame) -> str:
    """One sentence: the best configuration against the noise floor, and against the second."""
    m = ranked.attrs["by"][0]
    name = m.split("/", 1)[-1]
    best = ranked.iloc[0]
    value = fmt.num(best[f"{m}/mean"])
    head = f"The best configuration, {best['config_id']}, reaches {name} {value}"
    if ranked.attrs.get("floor") is None:
        head += (f"; no noise floor was computed for this sweep (no {FLOOR_FILE}), so whether "
                 "that is more than an untrained model scores is not known")
    elif not np.isfinite(float(best.get(f"{m}/floor", np.nan))):
        head += f"; the noise floor has no {name} for its model and dataset"
    else:
        times = best[f"{m}/margin"]
        shown = "" if not np.isfinite(times) else f"{fmt.num(times, 3)}x "
        head += f", {shown}the noise floor of {fmt.num(best[f'{m}/floor'])}: " + (
            "clearly above it" if best[f"{m}/above_floor"]
            else "not clearly above it, so this ranking may be noise")
    verdict = ranked.attrs.get("seed_verdict")
    if verdict is None or verdict.second is None:
        return head + "."
    tail = verdict.sentence()
    return f"{head}; {tail[0].lower()}{tail[1:]}"


def ranked_rows(
    ranked: pd.DataFrame, *, top: int | None = None
) -> tuple[list[str], list[list[str]], list[str]]:
    """The ranked table as text cells: (header, rows, alignment 'l'/'r' per column)."""
    metrics = ranked.attrs.get("by", [])
    params = [p for p in ranked.attrs.get("params", []) if p in ranked.columns]
    multi = "mean_rank" in ranked.columns
    floored = ranked.attrs.get("floor") is not None
    header = ["rank", "config", *[param_label(p) for p in params]]
    align = ["r", "l", *["l"] * len(params)]
    for m in metrics:
        arrow = "↑" if ranked.attrs["directions"][m] == "max" else "↓"
        header += [f"{m} {arrow}", "95% CI"]
        align += ["r", "r"]
        if floored:
            header.append("× floor")
            align.append("r")
    if multi:
        header += ["mean rank", "front"]
        align += ["r", "r"]
    header.append("best run")
    align.append("l")
    rows = []
    shown = ranked if top is None else ranked.head(top)
    for _, r in shown.iterrows():
        row = [str(r["rank"]), str(r["config_id"]), *[fmt.value(r[p]) for p in params]]
        for m in metrics:
            row.append(fmt.cell(r[f"{m}/mean"], r[f"{m}/std"], int(r[f"{m}/n"]), digits=4))
            lo, hi = r[f"{m}/ci_low"], r[f"{m}/ci_high"]
            row.append(fmt.DASH if np.isnan(lo) else f"[{fmt.num(lo)}, {fmt.num(hi)}]")
            if floored:
                row.append(_margin_cell(r, m))
        if multi:
            row += [fmt.num(r["mean_rank"], 3), str(r["pareto_front"])]
        seed = r["best_seed"]
        row.append(str(r["best_trial"]) + ("" if pd.isna(seed) else f" (seed {seed})"))
        rows.append(row)
    rows += _floor_rows(ranked, params, metrics, len(header))
    return header, rows, align


def _margin_cell(r: pd.Series, m: str) -> str:
    """`5.2`, `1.3 †`; `—` where its model and dataset have no floor for the metric, `— †`
    where there is a floor but no ratio to give (a floor of 0 or less)."""
    if pd.isna(r.get(f"{m}/floor", np.nan)):
        return fmt.DASH
    times = r.get(f"{m}/margin", np.nan)
    text = fmt.DASH if pd.isna(times) else fmt.num(times, 3)
    return text if bool(r.get(f"{m}/above_floor", False)) else f"{text} {NOT_ABOVE}"


def floor_csv_rows(ranked: pd.DataFrame) -> pd.DataFrame:
    """The floor's reference rows in the ranked table's columns (for `ranked.csv`): `config_id`
    `noise floor`, no rank, the model and dataset, and each metric's floor statistics."""
    rows = []
    for f in ranked.attrs.get("floor") or []:
        row = {"config_id": FLOOR_LABEL, "best_trial": "untrained (step 0)"}
        row.update({k: v for k, v in f.items() if k in ranked.columns or "/" in k})
        rows.append(row)
    return pd.DataFrame(rows)


def _floor_rows(ranked: pd.DataFrame, params: list[str], metrics: list[str],
                width: int) -> list[list[str]]:
    """The reference rows of a ranked table: one per model and dataset of the floor."""
    floors = ranked.attrs.get("floor") or []
    rows = []
    for f in floors:
        label = FLOOR_LABEL
        if len(floors) > 1:
            label += f" ({f['config/model/name']}, {f['config/data/name']})"
        row = [fmt.DASH, label]
        row += [fmt.value(f[p]) if p in f else fmt.DASH for p in params]
        for m in metrics:
            n = int(f.get(f"{m}/n", 0) or 0)
            row.append(fmt.cell(f[f"{m}/mean"], f[f"{m}/std"] if n > 1 else np.nan, n, digits=4)
                       if n else fmt.DASH)
            row += [fmt.DASH, "1" if n else fmt.DASH]
        row += [fmt.DASH] * (width - len(row) - 1) + ["untrained (step 0)"]
        rows.append(row)
    return rows
