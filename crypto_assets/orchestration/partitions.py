"""Monthly UTC partitions (DESIGN.md §1) and the span of bars each window asks a source for."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from crypto_assets.config.schema import DataSection
from crypto_assets.folds import FoldSpec, add_months, first_fold_month, fold_keys, month_start
from crypto_assets.timeframes import EPOCH, timeframe_delta

MONTH_FMT = "%Y-%m-%d"


def data_partitions(data: DataSection) -> dg.MonthlyPartitionsDefinition:
    """Months from `data.start`; through `data.end`'s month if set, else through the current month
    (end_offset=1), which the schedule then refreshes incrementally."""
    start = month_start(data.start).strftime(MONTH_FMT)
    if data.end is None:
        return dg.MonthlyPartitionsDefinition(start_date=start, end_offset=1)
    return dg.MonthlyPartitionsDefinition(start_date=start, end_date=add_months(data.end, 1).strftime(MONTH_FMT))


def data_end_exclusive(data: DataSection, today: dt.date | None = None) -> dt.date:
    """First day after the data: the day after `data.end`, or today (its month still open)."""
    return data.end + dt.timedelta(days=1) if data.end is not None else (today or dt.datetime.now(dt.UTC).date())


def fold_partitions(data: DataSection, spec: FoldSpec) -> dg.MonthlyPartitionsDefinition:
    """Fold keys = first month of each test window: from data start + train_months to the newest fold
    whose test window has fully closed (DESIGN.md §1). Every month is a key; with step_months > 1 the
    walk-forward stitching uses every step-th fold (crypto_assets.folds.fold_windows)."""
    monthly = FoldSpec(spec.train_months, spec.test_months, 1, spec.purge_bars, spec.label_horizon)
    start = first_fold_month(data.start, monthly).strftime(MONTH_FMT)
    if data.end is None:
        return dg.MonthlyPartitionsDefinition(start_date=start, end_offset=-(spec.test_months - 1))
    keys = fold_keys(data.start, data_end_exclusive(data), monthly)
    if not keys:
        raise ValueError(
            f"data {data.start}..{data.end} is too short for one fold of {spec.train_months} train + "
            f"{spec.test_months} test months (walk_forward section)"
        )
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
    and to bars that have closed by `now` (an open candle is never stored)."""
    first = dt.datetime.combine(data.start, dt.time(), tzinfo=dt.UTC)
    bar = timeframe_delta(data.timeframe)
    in_progress = EPOCH + ((now - EPOCH) // bar) * bar  # open time of the bar still forming at `now`
    end = min(window_end, in_progress)
    if data.end is not None:
        end = min(end, dt.datetime.combine(data.end + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC))
    start = max(window_start, first)
    return start, max(start, end)


def fold_window_mapping(spec: FoldSpec) -> dg.TimeWindowPartitionMapping:
    """Fold key → the monthly partitions the fold reads: its train months and its test months."""
    return dg.TimeWindowPartitionMapping(start_offset=-spec.train_months, end_offset=spec.test_months - 1)
