"""Bar timeframes: their length and how many bars a year holds (crypto trades 24/7, never 252 days)."""

from __future__ import annotations

import datetime as dt

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)

TIMEFRAMES: dict[str, dt.timedelta] = {
    "1m": dt.timedelta(minutes=1),
    "5m": dt.timedelta(minutes=5),
    "15m": dt.timedelta(minutes=15),
    "30m": dt.timedelta(minutes=30),
    "1h": dt.timedelta(hours=1),
    "4h": dt.timedelta(hours=4),
    "1d": dt.timedelta(days=1),
}


def timeframe_delta(timeframe: str) -> dt.timedelta:
    """Length of one bar, e.g. `1h` → 1 hour. Raises ValueError naming the allowed values."""
    try:
        return TIMEFRAMES[timeframe]
    except KeyError:
        raise ValueError(f"unknown timeframe {timeframe!r}; allowed: {', '.join(TIMEFRAMES)}") from None


def timeframe_ms(timeframe: str) -> int:
    return int(timeframe_delta(timeframe).total_seconds() * 1000)


def timeframe_us(timeframe: str) -> int:
    """Length of one bar in microseconds (the unit of every `ts` column)."""
    return timeframe_delta(timeframe) // MICROSECOND


def epoch_us(moment: dt.datetime, name: str = "datetime") -> int:
    """Epoch microseconds of a timezone-aware datetime. A naive one is refused (it is ambiguous), naming `name`."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{name} must be a UTC-aware datetime (timezone-aware, e.g. tzinfo=datetime.UTC), "
            f"got naive {moment.isoformat()}"
        )
    return (moment - EPOCH) // MICROSECOND


def periods_per_year(timeframe: str) -> int:
    """Bars in a 365-day year: 8760 for 1h, 35040 for 15m, 105120 for 5m, 365 for 1d."""
    return int(dt.timedelta(days=365) / timeframe_delta(timeframe))
