"""Monthly UTC data partitions, fold partitions that are exactly the walk-forward folds (DESIGN.md §1), the
mappings between them, and the span of bars each window asks a source for."""

from __future__ import annotations

import datetime as dt
import math

import dagster as dg

from crypto_assets.config.schema import DataSection, fold_grid_problems
from crypto_assets.folds import FoldSpec, add_months, first_fold_month, fold_keys, month_start
from crypto_assets.ingestion.coverage import requested_end
from crypto_assets.ingestion.scope import data_end_exclusive

__all__ = [
    "MONTH_FMT",
    "check_fold_grid",
    "data_end_exclusive",
    "data_partitions",
    "fetch_span",
    "fold_cron",
    "fold_partitions",
    "fold_test_mapping",
    "fold_window_mapping",
    "previous_fold_mapping",
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


def check_fold_grid(spec: FoldSpec) -> None:
    """Raise ValueError unless the folds can be partitions: step_months divides 12 and train_months /
    test_months are whole steps (the config validates the same rule, `config.schema.fold_grid_problems`;
    this guards specs built in code)."""
    problems = fold_grid_problems(spec.train_months, spec.test_months, spec.step_months)
    if problems:
        raise ValueError("walk-forward windows cannot be fold partitions: " + "; ".join(problems))


def fold_cron(first_fold: dt.date, step_months: int) -> str:
    """Cron of the fold grid: midnight UTC on the 1st of every step-th month, in phase with `first_fold`.

    `0 0 1 * *` for step 1; step 2 from July: `0 0 1 1,3,5,7,9,11 *`. A time-window partition then lasts
    `step_months` and its key is the fold key (the first month of its test window)."""
    if step_months == 1:
        return "0 0 1 * *"
    phase = (first_fold.month - 1) % step_months
    months = range(phase + 1, 13, step_months)  # step_months divides 12: the same months every year
    return f"0 0 1 {','.join(map(str, months))} *"


def fold_partitions(data: DataSection, spec: FoldSpec) -> dg.TimeWindowPartitionsDefinition:
    """One partition per walk-forward fold, keyed by the first month of its test window: exactly
    `crypto_assets.folds.fold_keys` (what walk-forward stitching uses), so every fold partition is a
    real fold and "materialize missing" in the UI runs exactly the folds the reports need.

    A partition spans the `step_months` from its key to the next fold's key (see `fold_cron`): that is
    what lets mappings count in steps (`fold_window_mapping`, `previous_fold_mapping`) and keeps
    off-step months from ever being keys. From data start + train_months to the newest fold whose test
    window has fully closed: with an open end that is `end_offset = -(test_months / step_months - 1)`
    partitions before the newest closed step, so a new fold appears when its last test month closes.

    A fixed span too short for one fold gets a definition with no key at all: the code location still
    loads (a data-only experiment, `crypto_assets.ingestion.data_only_note`) and the definitions leave
    the fold and report assets out."""
    check_fold_grid(spec)
    first = first_fold_month(data.start, spec)
    start, cron = first.strftime(MONTH_FMT), fold_cron(first, spec.step_months)
    if data.end is None:
        end, end_offset = None, -(spec.test_months // spec.step_months - 1)
    else:
        keys = fold_keys(data.start, data_end_exclusive(data), spec)
        # end is exclusive: the end of the newest fold's partition (start == end: no key at all)
        end = add_months(dt.date.fromisoformat(keys[-1]), spec.step_months).strftime(MONTH_FMT) if keys else start
        end_offset = 0
    return dg.TimeWindowPartitionsDefinition(
        start=start, end=end, end_offset=end_offset, fmt=MONTH_FMT, cron_schedule=cron, timezone="UTC"
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


# Fold-side offsets of a TimeWindowPartitionMapping are counted in partitions of the *downstream*
# definition, i.e. in steps of step_months, even when the upstream is monthly (dagster 1.13
# TimeWindowPartitionMapping._map_partitions shifts the fold's [key, key + step) window by whole fold
# partitions, then widens it to the monthly partitions it overlaps). Dagster clamps the shifted window
# at the upstream's bounds without error, so fold assets still check that their window is complete.


def fold_window_mapping(spec: FoldSpec) -> dg.TimeWindowPartitionMapping:
    """Fold key → the monthly partitions the fold reads: its `train_months` before the key and its
    `test_months` from it, i.e. [key − train_months, key + test_months)."""
    check_fold_grid(spec)
    step = spec.step_months
    return dg.TimeWindowPartitionMapping(
        start_offset=-(spec.train_months // step), end_offset=spec.test_months // step - 1
    )


def fold_test_mapping(spec: FoldSpec, lookback_months: int) -> dg.TimeWindowPartitionMapping:
    """Fold key → the monthly partitions of its test window plus at least `lookback_months` before it
    (rounded up to whole steps; a backtest's or baseline's warm-up)."""
    check_fold_grid(spec)
    if lookback_months < 0:
        raise ValueError(f"lookback_months must be >= 0, got {lookback_months}")
    step = spec.step_months
    return dg.TimeWindowPartitionMapping(
        start_offset=-math.ceil(lookback_months / step), end_offset=spec.test_months // step - 1
    )


def previous_fold_mapping() -> dg.TimeWindowPartitionMapping:
    """Fold → the fold before it (fine-tuning from the previous fold's model), on the fold partitions
    themselves: both ends shift back one partition = one step. The first fold maps to no partition
    (nothing to fine-tune from), without error."""
    return dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
