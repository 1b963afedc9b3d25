"""Plain-Python ingestion logic behind the Dagster wiring: what is missing, what a tick fetches,
and whether the data span holds a walk-forward fold at all."""

from crypto_assets.ingestion.coverage import (
    SPAN_SCHEMA,
    CatchUpResult,
    CatchUpWindow,
    FetchFailure,
    RowCountDrop,
    catch_up,
    catch_up_window,
    describe_spans,
    missing_spans,
    requested_end,
    row_count_drops,
)
from crypto_assets.ingestion.scope import data_end_exclusive, data_only_note

__all__ = [
    "SPAN_SCHEMA",
    "CatchUpResult",
    "CatchUpWindow",
    "FetchFailure",
    "RowCountDrop",
    "catch_up",
    "catch_up_window",
    "data_end_exclusive",
    "data_only_note",
    "describe_spans",
    "missing_spans",
    "requested_end",
    "row_count_drops",
]
