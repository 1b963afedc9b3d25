"""One self-contained HTML page: plotly.js inlined once in the head, every chart a `<div>`, tables as HTML.

Nothing on the page refers to the network (no CDN, no web font), so it opens offline from disk
(DESIGN.md §6.5; plotly's `include_plotlyjs="cdn"` would fetch the library at view time).
"""

from __future__ import annotations

import datetime as dt
import html
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from crypto_assets.dashboard.data import ExperimentData
from crypto_assets.dashboard.sections import (
    REPORT_TABLES,
    SECTIONS,
    Section,
    equity_section,
    fold_sharpe_section,
    kpi_frame,
)

DASHBOARD_FILE = "dashboard.html"
REPORTS_DIR = "reports"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 2rem 3rem; color: #222; }
nav { position: sticky; top: 0; background: #fff; padding: .5rem 0; border-bottom: 1px solid #ddd; z-index: 10; }
nav a { margin-right: 1rem; }
section { margin-top: 2rem; }
p.note { color: #555; max-width: 60rem; }
div.table { max-height: 32rem; overflow: auto; }
table.data { border-collapse: collapse; font-size: .85rem; margin: 1rem 0; }
table.data caption { text-align: left; font-weight: 600; padding: .3rem 0; }
table.data th, table.data td { border: 1px solid #ddd; padding: .2rem .5rem; text-align: right; }
table.data th { background: #f4f4f4; }
td.verdict-pass { background: #d9f2d9; } td.verdict-fail { background: #f8d7d7; }
"""


@dataclass(frozen=True)
class Page:
    html: str
    sections: dict[str, int]
    """The sections shown, in order: key → number of charts."""

    @property
    def charts(self) -> int:
        return sum(self.sections.values())


def dashboard(data: ExperimentData) -> Page:
    """The experiment's dashboard: every section it has data for (`sections.SECTIONS`); a page with none is an
    error naming the report tables."""
    shown = [section for build in SECTIONS if (section := build(data)) is not None]
    missing = [table for table in REPORT_TABLES if data.table(table) is None]
    if not shown:
        data.require(missing[0])
    note = f"Not computed yet: {', '.join(missing)} (run the reports job). " if missing else ""
    return _page(f"{data.name}: research dashboard", shown, note)


def compare(experiments: Sequence[ExperimentData]) -> Page:
    """Several experiments side by side: stitched equity, KPI table and per-fold Sharpe, strategies named
    `<experiment>/<strategy>`."""
    names = [data.name for data in experiments]
    if len(set(names)) != len(names):
        raise ValueError(f"compare: an experiment is listed twice ({', '.join(names)})")

    def combined(table: str) -> pl.DataFrame:
        return pl.concat(
            [
                data.require(table).with_columns(strategy=pl.lit(f"{data.name}/") + pl.col("strategy"))
                for data in experiments
            ],
            how="diagonal_relaxed",
        )

    kpis = combined("kpis")
    table = Section("kpis", "KPIs and verdict (stitched walk-forward)")
    table.table(kpi_frame(kpis))
    shown = [
        equity_section(combined("walk_forward_equity").select("strategy", "ts", "equity"), []),
        table,
        *(s for s in [fold_sharpe_section(kpis)] if s is not None),
    ]
    return _page(f"Compare: {', '.join(names)}", shown)


def _page(title: str, sections: list[Section], note: str = "") -> Page:
    from plotly.offline import get_plotlyjs

    nav = "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>'
        + (f'<p class="note">{html.escape(s.note)}</p>' if s.note else "")
        + "".join(s.blocks)
        + "</section>"
        for s in sections
    )
    generated = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f'<body><h1>{html.escape(title)}</h1><p class="note">{html.escape(note)}generated {generated}</p>'
        f"<nav>{nav}</nav>{body}"
        "</body></html>"
    )
    return Page(html=page, sections={s.key: s.charts for s in sections})


def write_page(page: Page, path: Path) -> Path:
    """Write aside and rename into place: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:16]}.tmp")
    try:
        tmp.write_text(page.html, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def dashboard_path(root: Path) -> Path:
    """`storage/<experiment>/reports/dashboard.html`."""
    return root / REPORTS_DIR / DASHBOARD_FILE
