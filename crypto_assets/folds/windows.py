"""Walk-forward fold calendar (DESIGN.md §1): monthly, UTC, keyed by the first month of the test window.

A fold with key `K` (`YYYY-MM-01`) trains on the `train_months` months before `K` and tests on the
`test_months` months from `K`:

    train = [K − train_months, K)      test = [K, K + test_months)      (month starts, UTC, end exclusive)

Fold keys run from `data start month + train_months` while the test window fits entirely before the end of
the data; the newest fold is the one whose test window has fully closed. This is exactly the key set of
Dagster's `MonthlyPartitionsDefinition(start_date=data start + train_months, end_offset=-(test_months-1))`
when `step_months == 1`. With `step_months > 1` only every step-th of those keys is a fold, counted from the
first key (offsets 0, step, 2·step, …): anchoring on the first key rather than on the data end means that
adding data appends folds and never renames the existing ones. The orchestration layer makes exactly these
keys the fold partitions (`crypto_assets.orchestration.partitions.fold_partitions`: a time-window definition
whose cron lists the grid months, which needs step_months to divide 12 and train / test months to be whole
steps, see `crypto_assets.config.schema.fold_grid_problems`); `is_fold_key` answers whether a month is on
the grid.

Stitching (`stitch_months`): with overlapping test windows (test_months > step_months) each month sits in
several folds' test windows. The walk-forward equity trades each fold's first `step_months` months only,
and the newest fold also trades the rest of its test window (no later fold covers those months), so every
month from the first test month to the end of the newest test window is traded exactly once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

KEY_FMT = "%Y-%m-%d"


@dataclass(frozen=True)
class FoldSpec:
    """Walk-forward geometry. Months are calendar months (UTC); bars are bars of the experiment timeframe."""

    train_months: int = 24
    """Months of training data before each fold's test window."""
    test_months: int = 3
    """Months in each fold's out-of-sample test window (per-fold KPIs use all of them)."""
    step_months: int = 1
    """Months between consecutive fold keys; also the months each fold contributes to walk-forward stitching."""
    purge_bars: int = 24
    """Bars dropped from the end of each train window: their labels would look into the test window."""
    label_horizon: int = 24
    """Bars ahead the training labels look (`label_fwd_ret_{h}`); purge_bars must cover it."""

    def __post_init__(self) -> None:
        for name in ("train_months", "test_months", "step_months", "label_horizon"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FoldSpec.{name} must be an int ≥ 1, got {value!r}")
        if not isinstance(self.purge_bars, int) or self.purge_bars < 0:
            raise ValueError(f"FoldSpec.purge_bars must be an int ≥ 0, got {self.purge_bars!r}")
        if self.step_months > self.test_months:
            # Months between one fold's test window and the next fold's would never be traded out of sample.
            raise ValueError(
                f"FoldSpec.step_months ({self.step_months}) must be ≤ test_months ({self.test_months}), "
                "otherwise walk-forward stitching leaves months untraded"
            )
        if self.purge_bars < self.label_horizon:
            # A train row's label uses the close `label_horizon` bars later: fewer purged bars leak the test window.
            raise ValueError(
                f"FoldSpec.purge_bars ({self.purge_bars}) must be ≥ label_horizon ({self.label_horizon}): "
                "labels of the last train bars would look into the test window"
            )


@dataclass(frozen=True)
class FoldWindow:
    """One fold's calendar. All datetimes are UTC month starts; ends are exclusive."""

    key: str
    """`YYYY-MM-01`, the first month of the test window (the Dagster partition key)."""
    train_start: dt.datetime
    train_end: dt.datetime
    test_start: dt.datetime
    test_end: dt.datetime

    @property
    def start(self) -> dt.datetime:
        """First instant the fold reads (= train_start)."""
        return self.train_start

    @property
    def end(self) -> dt.datetime:
        """End (exclusive) of everything the fold reads (= test_end)."""
        return self.test_end


def month_start(day: dt.date | dt.datetime) -> dt.date:
    """First day of the month containing `day`."""
    return dt.date(day.year, day.month, 1)


def add_months(day: dt.date, months: int) -> dt.date:
    """`day`'s month start shifted by `months` (may be negative)."""
    index = day.year * 12 + (day.month - 1) + months
    return dt.date(index // 12, index % 12 + 1, 1)


def months_between(start: dt.date, end: dt.date) -> int:
    """Whole months from `start`'s month to `end`'s month."""
    return (end.year - start.year) * 12 + (end.month - start.month)


def utc(day: dt.date) -> dt.datetime:
    """Midnight UTC at the start of `day`."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _as_date(value: dt.date | dt.datetime) -> dt.date:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.date()
    return value


def parse_key(key: str) -> dt.date:
    """`2024-03-01` → date; raises ValueError unless it is a month start."""
    try:
        day = dt.datetime.strptime(key, KEY_FMT).date()
    except ValueError:
        raise ValueError(f"fold key {key!r} is not a YYYY-MM-01 date") from None
    if day.day != 1:
        raise ValueError(f"fold key {key!r} is not a month start (YYYY-MM-01)")
    return day


def fold_window_for_key(key: str, spec: FoldSpec) -> FoldWindow:
    """The calendar of the fold whose test window starts at `key` (no check that `key` is on the step grid)."""
    first_test = parse_key(key)
    return FoldWindow(
        key=key,
        train_start=utc(add_months(first_test, -spec.train_months)),
        train_end=utc(first_test),
        test_start=utc(first_test),
        test_end=utc(add_months(first_test, spec.test_months)),
    )


def first_fold_month(data_start: dt.date | dt.datetime, spec: FoldSpec) -> dt.date:
    """Key month of the first fold: the data's first month + train_months (the fold partitions' start_date)."""
    return add_months(month_start(_as_date(data_start)), spec.train_months)


def is_fold_key(key: str, data_start: dt.date | dt.datetime, spec: FoldSpec) -> bool:
    """True when `key` is on the fold grid (≥ the first fold month and a multiple of step_months after it).
    Does not check the data end: that is `fold_windows`' job."""
    offset = months_between(first_fold_month(data_start, spec), parse_key(key))
    return offset >= 0 and offset % spec.step_months == 0


def fold_windows(
    data_start: dt.date | dt.datetime, data_end_exclusive: dt.date | dt.datetime, spec: FoldSpec
) -> list[FoldWindow]:
    """Every fold whose train and test windows lie inside the data, oldest first.

    `data_start`: first day of data (its month is the first train month even when the data begins mid-month,
    matching the data partitions, which start at that month). `data_end_exclusive`: first instant with no
    data, e.g. `data.end + 1 day`, or the current month's start for an open-ended experiment. A test window
    must end on or before it, so a month that has not fully closed is never part of a test window. Returns
    an empty list when the span is shorter than train_months + test_months.
    """
    first = first_fold_month(data_start, spec)
    # The latest month start a test window may end at: a partial last month is never tested
    # (2024-07-01T00:00 closes June; 2024-07-01T05:00 does not close July).
    limit = month_start(_as_date(data_end_exclusive))
    windows: list[FoldWindow] = []
    offset = 0
    while add_months(first, offset + spec.test_months) <= limit:
        windows.append(fold_window_for_key(add_months(first, offset).strftime(KEY_FMT), spec))
        offset += spec.step_months
    return windows


def fold_keys(
    data_start: dt.date | dt.datetime, data_end_exclusive: dt.date | dt.datetime, spec: FoldSpec
) -> list[str]:
    """Keys of `fold_windows(...)`, oldest first."""
    return [w.key for w in fold_windows(data_start, data_end_exclusive, spec)]


def stitch_months(folds: list[FoldWindow], step_months: int) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    """The [start, end) span of each fold's test window that walk-forward stitching trades.

    Each fold contributes its first `step_months` months; the newest fold (largest key) contributes its whole
    test window, since no later fold covers its remaining months. With folds from `fold_windows` (keys
    `step_months` apart) the spans tile [first test month, newest test end) exactly once. Raises ValueError if
    two folds' spans would overlap (keys closer than step_months), which would trade a month twice.
    """
    if step_months < 1:
        raise ValueError(f"step_months must be ≥ 1, got {step_months}")
    ordered = sorted(folds, key=lambda w: w.test_start)
    spans: dict[str, tuple[dt.datetime, dt.datetime]] = {}
    for i, window in enumerate(ordered):
        if window.key in spans:
            raise ValueError(f"fold {window.key} is listed twice")
        if i == len(ordered) - 1:
            end = window.test_end
        else:
            end = min(utc(add_months(window.test_start.date(), step_months)), window.test_end)
            if ordered[i + 1].test_start < end:
                raise ValueError(
                    f"folds {window.key} and {ordered[i + 1].key} are closer than step_months={step_months}: "
                    "their stitched months would overlap"
                )
        spans[window.key] = (window.test_start, end)
    return spans
