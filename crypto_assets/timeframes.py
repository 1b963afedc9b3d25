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


def format_us(us: int) -> str:
    """A span of microseconds in the units timeframes are named in: 15m, 1h, 4h, 1d (or 90s, 1h30m)."""
    seconds, rest = divmod(us, 1_000_000)
    if rest:
        return f"{us / 1_000_000:g}s"
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")) if n]
    return "".join(parts) or "0s"


def periods_per_year(timeframe: str) -> int:
    """Bars in a 365-day year: 8760 for 1h, 35040 for 15m, 105120 for 5m, 365 for 1d."""
    return int(dt.timedelta(days=365) / timeframe_delta(timeframe))


# Durations in configs are strings with a unit, so 5m, 15m and 1h experiments mean the same span.
_DURATION_UNITS = {
    "m": dt.timedelta(minutes=1),
    "h": dt.timedelta(hours=1),
    "d": dt.timedelta(days=1),
    "w": dt.timedelta(weeks=1),
}


def parse_duration(text: str, key: str = "duration") -> dt.timedelta:
    """`"24h"` → 24 hours; units m, h, d, w. A bare number (which would silently mean bars of
    whatever timeframe) or any other text is a ValueError naming `key`."""
    if not isinstance(text, str) or len(text) < 2 or text[-1] not in _DURATION_UNITS or not text[:-1].isdigit():
        raise ValueError(
            f"{key} must be a duration string with a unit, e.g. '24h', '30d', '90m' or '2w' (units: m, h, d, w); "
            f"got {text!r}"
        )
    value = int(text[:-1]) * _DURATION_UNITS[text[-1]]
    if value <= dt.timedelta(0):
        raise ValueError(f"{key} must be a positive duration, got {text!r}")
    return value


def duration_bars(text: str, timeframe: str, key: str = "duration") -> int:
    """Bars of `timeframe` in a duration: `"24h"` is 24 bars at 1h, 96 at 15m. A duration that is not a
    whole number of bars is refused naming `key` (rounding would change what the config means)."""
    value, bar = parse_duration(text, key), timeframe_delta(timeframe)
    if value % bar:
        raise ValueError(f"{key} = {text!r} is not a whole number of {timeframe} bars")
    return value // bar
