"""The report as parallel Markdown and HTML (`Doc`), what its sections read (`Sweep`), and the
two pages written from it (`index.md`, and `index.html` with its images embedded)."""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import _format as fmt


@dataclasses.dataclass
class Doc:
    """The report as parallel Markdown and HTML."""

    folder: Path
    md: list[str] = dataclasses.field(default_factory=list)
    html: list[str] = dataclasses.field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.md.append(f"{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{fmt.html_escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.md.append(text + "\n")
        body = re.sub(r"`([^`]+)`", r"<code>\1</code>", fmt.html_escape(text))
        self.html.append(f"<p>{body}</p>")

    def table(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[str]],
        align: Sequence[str] | None = None,
    ) -> None:
        self.md.append(fmt.markdown_table(header, rows, align))
        self.html.append(fmt.html_table(header, rows, align=align))

    def raw(self, md: str, html: str) -> None:
        self.md.append(md)
        self.html.append(html)

    def image(self, path: Path | None, alt: str) -> None:
        if path is None:
            return
        rel = path.relative_to(self.folder).as_posix()
        self.md.append(f"![{alt}]({rel})\n")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.html.append(
            f'<figure><img alt="{fmt.html_escape(alt)}" '
            f'src="data:image/png;base64,{data}"></figure>'
        )


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px}th{background:#f3f3f3}
img{max-width:100%}figure{margin:1em 0}code{background:#f3f3f3;padding:0 3px}"""


@dataclasses.dataclass
class Sweep:
    """What every section of the report reads: the table, the rankings, where files go."""

    df: pd.DataFrame
    root: Path
    out: Path
    primary: list[str]  # the ranking metrics
    metrics: list[str]  # the metrics for plots, importance and agreement
    ranked: pd.DataFrame
    params: list[str]  # the searched parameters
    importance: pd.DataFrame | None = None  # from the caller (Optuna's evaluators), or None
    confirmed: Any = None  # the finished confirmation (analysis.confirm), or None

    @property
    def plots(self) -> Path:
        return self.out / "plots"


def write_pages(doc: Doc, out: Path, name: str) -> Path:
    index = out / "index.md"
    index.write_text("\n".join(doc.md))
    html = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{fmt.html_escape(name)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(doc.html)
        + "\n</body></html>\n"
    )
    (out / "index.html").write_text(html)
    return index
