"""Markdown tables for Dagster metadata (check samples, KPI tables, training curves)."""

from __future__ import annotations

import datetime as dt
import math

import dagster as dg
import polars as pl


def markdown_table(frame: pl.DataFrame, *, digits: int = 4, limit: int = 200, empty: str = "(none)") -> str:
    """The first `limit` rows of `frame` as a markdown table; floats with `digits` significant digits."""
    if frame.is_empty():
        return empty

    def fmt(value: object) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.{digits}g}"
        if isinstance(value, dt.datetime):
            return value.strftime("%Y-%m-%d %H:%M")
        return str(value)

    head = frame.head(limit)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in head.iter_rows()]
    return "\n".join(lines)


def md(frame: pl.DataFrame, **options: object) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(frame, **options))  # type: ignore[arg-type]
