"""Native Dagster table metadata from polars frames: typed columns the UI renders as a sortable table
(KPI, regime and per-fold tables, training curves), instead of markdown pop-ups."""

from __future__ import annotations

import datetime as dt
import math

import dagster as dg
import polars as pl


def column_type(dtype: pl.DataType) -> str:
    """The Dagster column type shown in the UI's schema for a polars dtype."""
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype == pl.Boolean:
        return "bool"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype == pl.Date:
        return "date"
    return "string"


def round_significant(value: float, digits: int) -> float | None:
    """`value` with `digits` significant digits; NaN and ±inf become None (an empty cell): the UI parses
    each record as JSON, which has no NaN or Infinity, so one would blank the whole table."""
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _cell(value: object, digits: int) -> str | int | float | bool | None:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return round_significant(value, digits)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)  # lists, structs, decimals: shown as text


def table_schema(frame: pl.DataFrame, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    """The typed schema of `frame`; `descriptions` (column → text) appear as the columns' tooltips."""
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, column_type(dtype), description=descriptions.get(name))
            for name, dtype in frame.schema.items()
        ]
    )


def table_metadata(
    frame: pl.DataFrame, *, digits: int = 4, limit: int = 200, descriptions: dict[str, str] | None = None
) -> dg.TableMetadataValue:
    """The first `limit` rows of `frame` as a Dagster table: typed columns, floats rounded to `digits`
    significant digits (a KPI's fourth digit is noise), datetimes as ISO strings, NaN as an empty cell."""
    records = [
        dg.TableRecord({name: _cell(value, digits) for name, value in row.items()})
        for row in frame.head(limit).iter_rows(named=True)
    ]
    return dg.MetadataValue.table(records=records, schema=table_schema(frame, descriptions))
