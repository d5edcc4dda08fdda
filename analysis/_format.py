"""Small text helpers shared by the tables: numbers, cells, Markdown, LaTeX and HTML escaping."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

DASH = "—"


def num(x: Any, digits: int = 4) -> str:
    """A number with `digits` significant digits; NaN/None as an em dash."""
    if x is None or x is np.nan:
        return DASH
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(f):
        return DASH
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if f != 0 and f.is_integer() and abs(f) < 10**digits:
        return str(int(f))
    return f"{f:.{digits}g}"


def value(x: Any) -> str:
    """A config value for a table cell or an axis label."""
    if x is None:
        return DASH
    if isinstance(x, float) and math.isnan(x):
        return DASH
    if isinstance(x, tuple):
        return "(" + ", ".join(value(v) for v in x) + ")"
    if isinstance(x, (float, np.floating)):
        return num(x)
    try:
        if x is not None and bool(x != x):  # pd.NA and friends
            return DASH
    except (TypeError, ValueError):
        return DASH
    return str(x)


def cell(mean: float, std: float, n: int, digits: int = 3, pm: str = "±") -> str:
    """`mean ± std (n)`; the std is left out for a single value."""
    if n == 0 or (isinstance(mean, float) and math.isnan(mean)):
        return f"{DASH} (0)"
    if n < 2 or math.isnan(std):
        return f"{num(mean, digits)} ({n})"
    return f"{num(mean, digits)} {pm} {num(std, 2)} ({n})"


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None
) -> str:
    """A GitHub Markdown table; `align` holds 'l' or 'r' per column."""

    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    align = list(align or ["l"] * len(header))
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(s: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(s))
    return out.replace("±", r"$\pm$").replace(DASH, "--")


def html_escape(s: Any) -> str:
    return html.escape(str(s))


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    escape: bool = True,
    align: Sequence[str] | None = None,
) -> str:
    """A plain HTML table; cells are escaped unless `escape` is False (already HTML)."""

    def td(tag: str, text: str, a: str) -> str:
        style = ' style="text-align:right"' if a == "r" else ""
        return f"<{tag}{style}>{html_escape(text) if escape else text}</{tag}>"

    align = list(align or ["l"] * len(header))
    head = "".join(
        td("th", h, a) if escape else f"<th>{html_escape(h)}</th>"
        for h, a in zip(header, align, strict=True)
    )
    body = "\n".join(
        "<tr>" + "".join(td("td", c, a) for c, a in zip(r, align, strict=True)) + "</tr>"
        for r in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n"
