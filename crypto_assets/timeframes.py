"""Bar timeframes: their length and how many bars a year holds (crypto trades 24/7, never 252 days)."""

from __future__ import annotations

import datetime as dt

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


def periods_per_year(timeframe: str) -> int:
    """Bars in a 365-day year: 8760 for 1h, 35040 for 15m, 105120 for 5m, 365 for 1d."""
    return int(dt.timedelta(days=365) / timeframe_delta(timeframe))
