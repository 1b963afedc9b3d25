"""Polars frames as native Dagster table metadata (orchestration.metadata)."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import polars as pl

from crypto_assets.orchestration.metadata import round_significant, table_metadata


def test_table_metadata_types_columns_rounds_floats_and_limits_rows() -> None:
    ts = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    frame = pl.DataFrame(
        {
            "strategy": ["a", "b", "c"],
            "sharpe": [1.23456789, -0.000123456, 12345.678],
            "bars": [10, 20, 30],
            "passes": [True, False, None],
            "ts": [ts, ts, ts],
        }
    )
    value = table_metadata(frame, digits=3, limit=2, descriptions={"sharpe": "annualised"})
    assert isinstance(value, dg.TableMetadataValue)
    assert [(c.name, c.type) for c in value.schema.columns] == [
        ("strategy", "string"),
        ("sharpe", "float"),
        ("bars", "int"),
        ("passes", "bool"),
        ("ts", "datetime"),
    ]
    assert value.schema.columns[1].description == "annualised"
    assert [r.data for r in value.records] == [
        {"strategy": "a", "sharpe": 1.23, "bars": 10, "passes": True, "ts": "2024-01-01T00:00:00+00:00"},
        {"strategy": "b", "sharpe": -0.000123, "bars": 20, "passes": False, "ts": "2024-01-01T00:00:00+00:00"},
    ]


def test_nan_and_inf_become_empty_cells_so_every_record_is_strict_json() -> None:
    """The UI parses each record with JSON.parse: a NaN (Python's json writes it bare) would break the table."""
    frame = pl.DataFrame({"calmar": [float("nan"), float("inf"), 2.0]})
    value = table_metadata(frame)
    assert [r.data["calmar"] for r in value.records] == [None, None, 2.0]
    for record in value.records:
        json.loads(json.dumps(record.data, allow_nan=False))
    assert round_significant(123456.0, 2) == 120000.0
