"""Monthly UTC partitions (DESIGN.md §1) and the span of bars each window asks a source for."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from crypto_assets.config.schema import DataSection
from crypto_assets.folds import FoldSpec, add_months, first_fold_month, fold_keys, month_start
from crypto_assets.ingestion.coverage import requested_end
from crypto_assets.ingestion.scope import data_end_exclusive

__all__ = [
    "MONTH_FMT",
    "data_end_exclusive",
    "data_partitions",
    "fetch_span",
    "fold_partitions",
    "fold_window_mapping",
    "previous_month_key",
]

MONTH_FMT = "%Y-%m-%d"


def data_partitions(data: DataSection) -> dg.MonthlyPartitionsDefinition:
    """Months from `data.start`; through `data.end`'s month if set, else through the current month
    (end_offset=1); the schedule fetches what is missing from the last `data.catch_up`."""
    start = month_start(data.start).strftime(MONTH_FMT)
    if data.end is None:
        return dg.MonthlyPartitionsDefinition(start_date=start, end_offset=1)
    return dg.MonthlyPartitionsDefinition(start_date=start, end_date=add_months(data.end, 1).strftime(MONTH_FMT))


def fold_partitions(data: DataSection, spec: FoldSpec) -> dg.MonthlyPartitionsDefinition:
    """Fold keys = first month of each test window: from data start + train_months to the newest fold
    whose test window has fully closed (DESIGN.md §1). Every month is a key; with step_months > 1 the
    walk-forward stitching uses every step-th fold (crypto_assets.folds.fold_windows).

    A fixed span too short for one fold gets a definition with no key at all: the code location still
    loads (a data-only experiment, `crypto_assets.ingestion.data_only_note`) and the definitions leave
    the fold and report assets out."""
    monthly = FoldSpec(spec.train_months, spec.test_months, 1, spec.purge_bars, spec.label_horizon)
    start = first_fold_month(data.start, monthly).strftime(MONTH_FMT)
    if data.end is None:
        return dg.MonthlyPartitionsDefinition(start_date=start, end_offset=-(spec.test_months - 1))
    keys = fold_keys(data.start, data_end_exclusive(data), monthly)
    if not keys:
        return dg.MonthlyPartitionsDefinition(start_date=start, end_date=start)
    return dg.MonthlyPartitionsDefinition(
        start_date=start, end_date=add_months(dt.date.fromisoformat(keys[-1]), 1).strftime(MONTH_FMT)
    )


def previous_month_key(key: str) -> str:
    """`2024-03-01` → `2024-02-01` (the key of the month before)."""
    day = dt.datetime.strptime(key, MONTH_FMT).date()
    return add_months(day, -1).strftime(MONTH_FMT)


def fetch_span(
    data: DataSection, window_start: dt.datetime, window_end: dt.datetime, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of bar open times to fetch for a partition window: clamped to the configured days
    and to bars that have closed by `now` (an open candle is never stored). Validation checks
    continuity up to the same end, so a symbol whose bars stop early shows its missing tail."""
    first = dt.datetime.combine(data.start, dt.time(), tzinfo=dt.UTC)
    end = min(window_end, requested_end(data.end, data.timeframe, now))
    start = max(window_start, first)
    return start, max(start, end)


def fold_window_mapping(spec: FoldSpec) -> dg.TimeWindowPartitionMapping:
    """Fold key → the monthly partitions the fold reads: its train months and its test months."""
    return dg.TimeWindowPartitionMapping(start_offset=-spec.train_months, end_offset=spec.test_months - 1)
