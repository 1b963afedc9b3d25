"""Local CSV archive source (DESIGN.md §3.7): strict reader of per-symbol files and Binance monthly dumps.

Layout of `csv_dir`, per symbol `BASE/QUOTE` and timeframe `tf` (either or both):

- `{BASE}{QUOTE}_{tf}.csv` (e.g. `BTCUSDT_1h.csv`), the fixture format of `../shared/data/ohlcv/`:
  header `timestamp,datetime,open,high,low,close,volume` in any order; `timestamp` = bar open time in
  UTC milliseconds; `datetime` is optional and, when present, must be ISO-8601 UTC text (`Z` or
  `+00:00`) equal to `timestamp`; `volume` is base-asset volume.
- `{BASE}{QUOTE}-{tf}-YYYY-MM.csv` or `.zip` (the zip holding that one csv): Binance's monthly public
  kline dumps (data.binance.vision). No header (a Binance futures-style `open_time,...` header line is
  tolerated), 12 fields per line; field 1 = open time in milliseconds, or microseconds in files from
  2025 on (decided per file: a first value above 1e14 means microseconds); fields 2-6 = open, high,
  low, close, volume; the other six are not used. Every bar must lie in the month the name gives,
  which is why only the dumps whose month overlaps the request are read.

Nothing is repaired. Each of these raises `SourceError` naming the file, the 1-based line (the header
is line 1 in the fixture format), the column and the rule, listing the first 5 offending lines and the
total: empty file or no rows, missing / extra / duplicate header columns, blank line, wrong field
count, non-numeric or empty cell, timestamp out of 2009-2100 (wrong unit), timestamp off the timeframe
grid, duplicate or unsorted timestamps (in file order), OHLC rules (prices finite and > 0, volume ≥ 0,
low ≤ min(open, close), high ≥ max(open, close)), a naive / non-UTC / mixed-zone / disagreeing
`datetime`, a dump bar outside its month, and another timeframe's data under this timeframe's name (the
most common spacing between consecutive rows, seen at least 3 times, is not the timeframe: hourly bars
in a `_30m` file sit on the 30m grid and would otherwise be filled into fake half-hour bars; maintenance
gaps only add a few longer spacings, so correct files with gaps pass). Files of the same symbol are
merged; a bar present in two files must agree on all five values (relative tolerance 1e-5, enough for
the 2-decimal volume rounding documented for some archives), else the error names both files and lines. A symbol with no file at all
is an error naming the folder and the expected names; a symbol whose files have no bar in the span
simply has no rows (it lists later, or was delisted).

Parsed and validated files are cached per source instance (keyed by path, size and modification time),
so fetching a 5-year archive month by month parses each file once.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
import zipfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

import polars as pl

from crypto_assets.sources.base import TS_DTYPE, SourceError, conform, empty_raw, foreign_spacing
from crypto_assets.timeframes import EPOCH, epoch_us, format_us, timeframe_ms, timeframe_us
from crypto_assets.validation.row_rules import ohlc_violations, order_violations

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
FIXTURE_COLUMNS = ("timestamp", "datetime", *PRICE_COLUMNS)
FIXTURE_REQUIRED = ("timestamp", *PRICE_COLUMNS)
DUMP_FIELDS = 12
DUMP_HEADER_FIRST = "open_time"
DUMP_NAME = re.compile(
    r"^(?P<stem>[A-Za-z0-9]+)-(?P<tf>[0-9]+[mhdwM])-(?P<year>[0-9]{4})-(?P<month>[0-9]{2})\.(?P<ext>csv|zip)$"
)
MERGE_RTOL = 1e-5
MAX_REPORTED = 5
# Plausible bar open times; outside them the unit is almost surely wrong (seconds, µs in an ms column).
MIN_TS_US = int(dt.datetime(2009, 1, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000
MAX_TS_US = int(dt.datetime(2100, 1, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000
MICROS_THRESHOLD = 10**14  # dump open times above this are µs (ms stays below it until year 5138)
CACHE_MAX_ROWS = 4_000_000
_ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"
_ZONE = r"(Z|z|[+-][0-9]{2}:?[0-9]{2})$"
_UTC_ZONES = ("Z", "z", "+00:00", "+0000", "-00:00", "-0000")
_DUMP_LABELS = {0: "open_time", 1: "open", 2: "high", 3: "low", 4: "close", 5: "volume"}
_PROBLEM_SCHEMA = pl.Schema({"line": pl.Int64(), "column": pl.String(), "rule": pl.String()})

Layout = Literal["fixture", "dump"]


@dataclass(frozen=True)
class _File:
    """One archive file of one symbol (a zip member is read from inside `path`)."""

    path: Path
    layout: Layout
    month: tuple[int, int] | None = None  # (year, month) of a dump

    @property
    def month_span_us(self) -> tuple[int, int]:
        assert self.month is not None
        year, month = self.month
        first = dt.datetime(year, month, 1, tzinfo=dt.UTC)
        nxt = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC)
        return epoch_us(first), epoch_us(nxt)


def _fmt_us(ts_us: int) -> str:
    return (EPOCH + dt.timedelta(microseconds=ts_us)).strftime("%Y-%m-%d %H:%M UTC")


def _problems(rows: list[tuple[int, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=_PROBLEM_SCHEMA, orient="row")


def _raise(label: str, problems: pl.DataFrame) -> NoReturn:
    """One SourceError listing the first MAX_REPORTED problems by line and the totals."""
    problems = problems.sort("line", maintain_order=True)
    lines = problems["line"].n_unique()
    shown = "; ".join(
        f"line {line}, column {column}: {rule}" for line, column, rule in problems.head(MAX_REPORTED).iter_rows()
    )
    more = f"; ... {problems.height - MAX_REPORTED} more" if problems.height > MAX_REPORTED else ""
    raise SourceError(f"{label}: {problems.height} problem(s) on {lines} line(s): {shown}{more}")


class _Reader:
    """Parses and validates one file's bytes into (line, ts [µs], open, high, low, close, volume)."""

    def __init__(self, label: str, data: bytes, layout: Layout, timeframe: str, file: _File) -> None:
        self.label, self.layout, self.timeframe, self.file = label, layout, timeframe, file
        self.raw_size = len(data)
        # Trailing blank lines are harmless; blank lines inside the data are errors (they shift lines).
        # Copy only when the end is unusual: files are megabytes and most end with one line break.
        tail = data[-256:]
        if tail[len(tail.rstrip(b"\r\n\t ")) :] not in (b"\n", b"\r\n"):
            data = data.rstrip(b"\r\n\t ")
            data = data + b"\n" if data else b""
        self.data = data

    def col(self, name: str) -> str:
        """How messages name a column: by header name, or by 1-based field number in a dump."""
        if self.layout == "fixture":
            return f"'{name}'"
        index = {v: k for k, v in _DUMP_LABELS.items()}.get(name)
        return f"{index + 1} ({name})" if index is not None else f"'{name}'"

    def fail(self, line: int, column: str, rule: str) -> NoReturn:
        _raise(self.label, _problems([(line, column, rule)]))

    # --- header and layout ---------------------------------------------------------------------------

    def _header(self) -> tuple[list[str], int]:
        """Column names in file order and the number of header lines before the data."""
        expected = "timestamp,datetime (optional),open,high,low,close,volume"
        if not self.data:
            what = "zero bytes" if self.raw_size == 0 else "only blank lines"
            want = (
                f"a header {expected} and rows"
                if self.layout == "fixture"
                else f"rows of {DUMP_FIELDS} comma-separated fields"
            )
            self.fail(1, "-", f"empty file ({what}); expected {want}")
        first = self.data.split(b"\n", 1)[0].rstrip(b"\r")
        try:
            text = first.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            self.fail(1, "-", f"not UTF-8 text ({err.reason} at byte {err.start})")
        fields = [f.strip().strip('"').strip() for f in text.split(",")]
        if self.layout == "dump":
            names = [_DUMP_LABELS.get(i, f"unused_{i + 1}") for i in range(DUMP_FIELDS)]
            return names, int(fields[0].lower() == DUMP_HEADER_FIRST)
        duplicated = sorted({f for f in fields if fields.count(f) > 1})
        missing = [c for c in FIXTURE_REQUIRED if c not in fields]
        extra = [f for f in fields if f not in FIXTURE_COLUMNS]
        rules = []
        if duplicated:
            rules.append(f"duplicate column(s) {', '.join(map(repr, duplicated))}")
        if missing:
            rules.append(f"missing column(s) {', '.join(map(repr, missing))}")
        if extra:
            rules.append(f"unexpected column(s) {', '.join(map(repr, extra))}")
        if rules:
            self.fail(1, "(header)", f"{'; '.join(rules)}; expected columns {expected}, found {','.join(fields)}")
        return fields, 1

    # --- parsing -------------------------------------------------------------------------------------

    def _dtypes(self, names: list[str]) -> dict[str, pl.DataType]:
        def dtype(name: str) -> pl.DataType:
            if name in ("timestamp", "open_time"):
                return pl.Int64()
            return pl.Float64() if name in PRICE_COLUMNS else pl.String()

        return {name: dtype(name) for name in names}

    def parse(self) -> pl.DataFrame:
        names, header_lines = self._header()
        n_rows = self.data.count(b"\n") - header_lines
        if n_rows <= 0:
            self.fail(header_lines + 1, "-", "no data rows" + (" after the header" if header_lines else ""))
        schema = self._dtypes(names)
        frame: pl.DataFrame | None
        try:  # fast path: polars' typed parser; any doubt falls back to the line-by-line diagnosis
            frame = pl.read_csv(
                self.data, has_header=False, skip_lines=header_lines, schema=schema, raise_if_empty=False
            )
            if frame.height != n_rows or frame.null_count().sum_horizontal().item() > 0:
                frame = None
        except (pl.exceptions.PolarsError, ValueError):
            frame = None
        if frame is None:
            frame = self._parse_slowly(names, schema, header_lines)
        ts_name = names[0] if self.layout == "dump" else "timestamp"
        return frame.with_row_index("line", offset=header_lines + 1).select(
            pl.col("line").cast(pl.Int64),
            pl.col(ts_name).alias("ts"),
            *PRICE_COLUMNS,
            *(["datetime"] if "datetime" in names else []),
        )

    def _parse_slowly(self, names: list[str], schema: dict[str, pl.DataType], header_lines: int) -> pl.DataFrame:
        """Line-by-line parse that names every blank line, wrong field count and non-numeric cell."""
        try:
            text = self.data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = self.data.count(b"\n", 0, err.start) + 1
            self.fail(line, "-", f"not UTF-8 text ({err.reason})")
        rows = pl.DataFrame({"text": text.split("\n")[header_lines:-1]}).with_row_index("line", offset=header_lines + 1)
        rows = rows.with_columns(pl.col("text").str.strip_suffix("\r"))
        rows = rows.with_columns(pl.col("text").str.split(",").alias("fields"))
        problems = [
            rows.filter(pl.col("text").str.strip_chars() == "").select(
                "line", pl.lit("-").alias("column"), pl.lit("blank line").alias("rule")
            ),
            rows.filter((pl.col("text").str.strip_chars() != "") & (pl.col("fields").list.len() != len(names))).select(
                "line",
                pl.lit("-").alias("column"),
                pl.format(
                    "{} fields, expected {} ({})",
                    pl.col("fields").list.len(),
                    pl.lit(len(names)),
                    pl.lit(
                        ",".join(names)
                        if self.layout == "fixture"
                        else "Binance kline: open_time,open,high,low,close,volume,close_time,..."
                    ),
                ).alias("rule"),
            ),
        ]
        good = rows.filter(pl.col("fields").list.len() == len(names))
        cells = good.select(
            "line",
            *(
                pl.col("fields").list.get(i).str.strip_chars().str.strip_chars('"').alias(name)
                for i, name in enumerate(names)
            ),
        )
        typed = cells.select("line", *(pl.col(n).cast(d, strict=False) for n, d in schema.items()))
        for name, dtype in schema.items():
            if dtype == pl.String():
                continue
            kind = "an integer" if dtype == pl.Int64() else "a number"
            bad = cells.with_columns(typed[name].alias("parsed")).filter(pl.col("parsed").is_null())
            problems.append(
                bad.select(
                    "line",
                    pl.lit(self.col(name)).alias("column"),
                    pl.when(pl.col(name) == "")
                    .then(pl.lit("empty value"))
                    .otherwise(pl.format("not {} ('{}')", pl.lit(kind), pl.col(name).str.slice(0, 40)))
                    .alias("rule"),
                )
            )
        found = pl.concat([p.cast(_PROBLEM_SCHEMA) for p in problems])
        if not found.is_empty():
            _raise(self.label, found)
        if typed.height != len(rows):  # pragma: no cover - every other line was reported above
            self.fail(header_lines + 1, "-", "unparseable CSV")
        return typed.drop("line")

    # --- validation ----------------------------------------------------------------------------------

    def validate(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Convert `ts` to µs and check every rule; returns (line, ts, open, ..., volume)."""
        step_us = timeframe_us(self.timeframe)
        unit, factor = "milliseconds", 1000
        if self.layout == "dump" and frame["ts"][0] > MICROS_THRESHOLD:
            unit, factor = "microseconds", 1
        ts_col = self.col("timestamp" if self.layout == "fixture" else "open_time")
        raw = pl.col("ts")
        in_range = (raw >= MIN_TS_US // factor) & (raw < MAX_TS_US // factor)
        self._check_spacing(frame.filter(in_range).select(raw * factor), step_us)
        month = self.file.month_span_us if self.file.month is not None else (MIN_TS_US, MAX_TS_US)  # dumps: their month
        if self._all_good(frame, factor, step_us, month):
            return frame.select("line", (raw * factor).alias("ts"), *PRICE_COLUMNS)
        frame = frame.with_columns(
            in_range.alias("in_range"), pl.when(in_range).then(raw * factor).otherwise(None).alias("ts_us")
        )
        checks = [
            frame.filter(~pl.col("in_range")).select(
                "line",
                pl.lit(ts_col).alias("column"),
                pl.format("timestamp {} out of range 2009-2100 for UTC {}", raw, pl.lit(unit)).alias("rule"),
            ),
            frame.filter(pl.col("ts_us") % step_us != 0).select(
                "line",
                pl.lit(ts_col).alias("column"),
                pl.format(
                    "timestamp {} is not on the {} grid (open times must be multiples of {} {})",
                    raw,
                    pl.lit(self.timeframe),
                    pl.lit(step_us // factor),
                    pl.lit(unit),
                ).alias("rule"),
            ),
        ]
        if self.file.month is not None:
            lo, hi = self.file.month_span_us
            checks.append(
                frame.filter((pl.col("ts_us") < lo) | (pl.col("ts_us") >= hi)).select(
                    "line",
                    pl.lit(ts_col).alias("column"),
                    pl.format(
                        "bar at {} lies outside the month {}-{} named by the file",
                        pl.col("ts_us").cast(pl.Datetime("us", "UTC")).dt.strftime("%Y-%m-%d %H:%M UTC"),
                        pl.lit(f"{self.file.month[0]:04d}"),
                        pl.lit(f"{self.file.month[1]:02d}"),
                    ).alias("rule"),
                )
            )
        # The shared row rules report 0-based rows of the frame as given: map them back to file lines.
        bars = frame.select(
            pl.lit("").alias("symbol"), pl.col("ts_us").cast(pl.Datetime("us", "UTC")).alias("ts"), *PRICE_COLUMNS
        )
        order = order_violations(bars)
        ohlc = ohlc_violations(bars)
        lines, raw_ts = frame["line"], frame["ts"]
        checks.append(
            pl.DataFrame(
                {
                    "line": lines.gather(order["row"]),
                    "column": [ts_col] * order.height,
                    "rule": [
                        f"{rule} ({value})"
                        for rule, value in zip(order["rule"], raw_ts.gather(order["row"]), strict=True)
                    ],
                },
                schema=_PROBLEM_SCHEMA,
            )
        )
        checks.append(
            pl.DataFrame(
                {
                    "line": lines.gather(ohlc["row"]),
                    "column": [self.col(c) for c in ohlc["column"]],
                    "rule": [
                        f"{rule} (got {value!r})" for rule, value in zip(ohlc["rule"], ohlc["value"], strict=True)
                    ],
                },
                schema=_PROBLEM_SCHEMA,
            )
        )
        if "datetime" in frame.columns:
            checks.append(self._datetime_problems(frame))
        found = pl.concat([c.cast(_PROBLEM_SCHEMA) for c in checks])
        if not found.is_empty():
            _raise(self.label, found)
        return frame.select("line", pl.col("ts_us").alias("ts"), *PRICE_COLUMNS)

    def _check_spacing(self, ts: pl.DataFrame, step_us: int) -> None:
        """Refuse a file holding another timeframe's bars. Hourly bars in a file named for 30m sit on the 30m
        grid, so no row rule catches them, and gap filling would then invent every other bar; 15m bars
        named 1h break the grid rule on 3 rows of 4, which names lines but not the cause. The most common
        spacing between consecutive rows (in µs) says what the file holds: maintenance gaps only add a few
        longer spacings, so a correct file with gaps still has its timeframe as the most common one."""
        other = foreign_spacing(ts["ts"], step_us)
        if other is None:
            return
        mode, n_mode, pairs = other
        off_grid = ts.filter(pl.col("ts") % step_us != 0).height
        grid = f"; {off_grid:,} of {ts.height:,} rows are off the {self.timeframe} grid" if off_grid else ""
        raise SourceError(
            f"{self.label}: bars are {format_us(mode)} apart (the most common spacing, between {n_mode:,} of "
            f"{pairs:,} pairs of consecutive rows), but the file name and config say {self.timeframe}"
            f"{grid}: the file holds another timeframe's data (refused rather than filled into fake bars); "
            f"name it for its timeframe and set data.timeframe to match"
        )

    @staticmethod
    def _all_good(frame: pl.DataFrame, factor: int, step_us: int, month: tuple[int, int]) -> bool:
        """One parallel pass over the same rules as the detailed checks below; any doubt → details."""
        raw = pl.col("ts")
        ts = raw * factor
        o, h, lo, c, v = (pl.col(n) for n in PRICE_COLUMNS)
        rules = [
            # On the raw values first: garbage times a factor could overflow back into range.
            (raw >= MIN_TS_US // factor).all() & (raw < MAX_TS_US // factor).all(),
            (ts >= month[0]).all() & (ts < month[1]).all(),
            (ts % step_us == 0).all(),
            (ts.diff() > 0).all(),  # strictly increasing = no duplicate, no unsorted row
            *((p.is_finite() & (p > 0)).all() for p in (o, h, lo, c)),
            (v.is_finite() & (v >= 0)).all(),
            (lo <= pl.min_horizontal(o, c)).all(),
            (h >= pl.max_horizontal(o, c)).all(),
        ]
        if "datetime" in frame.columns:
            parsed = pl.col("datetime").str.to_datetime(_ISO_UTC, strict=False, time_unit="us")
            rules.append((parsed == ts.cast(pl.Datetime("us"))).fill_null(False).all())
        return bool(frame.select(pl.all_horizontal(rules)).item())

    def _datetime_problems(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Rows whose `datetime` is naive, non-UTC, unparseable or differs from `timestamp`."""
        text = pl.col("datetime")
        blank = text.is_null() | (text.str.strip_chars() == "")
        expected = pl.col("ts_us").cast(pl.Datetime("us", "UTC"))
        col = self.col("datetime")
        zone = text.str.extract(_ZONE, 1)
        local = text.str.replace(_ZONE, "").str.strip_chars()
        parsed = pl.coalesce(
            local.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us"),
            local.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us"),
        )
        checked = frame.filter(pl.col("in_range")).with_columns(zone.alias("zone"), parsed.alias("parsed"))
        zones = sorted({z if z is not None else "naive" for z in checked.filter(~blank)["zone"].unique().to_list()})
        mix_text = f" (mixed time zones in the file: {', '.join(zones)})" if len(zones) > 1 else ""
        is_utc = pl.col("zone").is_in(list(_UTC_ZONES))
        return pl.concat(
            [
                checked.filter(blank).select("line", pl.lit(col).alias("column"), pl.lit("empty value").alias("rule")),
                checked.filter(pl.col("zone").is_null() & ~blank).select(
                    "line",
                    pl.lit(col).alias("column"),
                    pl.format(
                        "datetime '{}' has no time zone (naive); expected UTC such as 2020-01-01T00:00:00Z{}",
                        text,
                        pl.lit(mix_text),
                    ).alias("rule"),
                ),
                checked.filter(pl.col("zone").is_not_null() & ~is_utc).select(
                    "line",
                    pl.lit(col).alias("column"),
                    pl.format(
                        "datetime '{}' is not UTC (offset {}); expected Z or +00:00{}",
                        text,
                        pl.col("zone"),
                        pl.lit(mix_text),
                    ).alias("rule"),
                ),
                checked.filter(is_utc & pl.col("parsed").is_null()).select(
                    "line",
                    pl.lit(col).alias("column"),
                    pl.format("datetime '{}' is not ISO-8601 (YYYY-MM-DDTHH:MM:SSZ)", text).alias("rule"),
                ),
                checked.filter(is_utc & (pl.col("parsed") != expected.dt.replace_time_zone(None))).select(
                    "line",
                    pl.lit(col).alias("column"),
                    pl.format(
                        "datetime '{}' disagrees with timestamp {} ({})",
                        text,
                        pl.col("ts"),
                        expected.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    ).alias("rule"),
                ),
            ]
        )


class CsvArchiveSource:
    """Bars from a local archive folder (see the module docstring for layouts and rules)."""

    def __init__(self, csv_dir: Path) -> None:
        self.csv_dir = Path(csv_dir)
        self._cache: OrderedDict[tuple[str, int, int, str], tuple[str, pl.DataFrame]] = OrderedDict()
        self._cached_rows = 0
        self._lock = threading.Lock()

    # --- files ---------------------------------------------------------------------------------------

    @staticmethod
    def file_stem(symbol: str) -> str:
        """`BTC/USDT` → `BTCUSDT`, the prefix of every file name of the symbol."""
        return symbol.replace("/", "")

    def _dumps(self, timeframe: str) -> dict[str, list[_File]]:
        """Monthly dump files per stem for this timeframe, oldest first (.csv before .zip)."""
        found: dict[str, list[_File]] = {}
        with os.scandir(self.csv_dir) as entries:
            for entry in entries:
                match = DUMP_NAME.match(entry.name)
                if match and match["tf"] == timeframe and entry.is_file():
                    month = (int(match["year"]), int(match["month"]))
                    if 1 <= month[1] <= 12:
                        found.setdefault(match["stem"], []).append(_File(Path(entry.path), "dump", month))
        for files in found.values():
            files.sort(key=lambda f: (f.month, f.path.suffix != ".csv"))
        return found

    def _read_bytes(self, file: _File) -> tuple[str, bytes]:
        if file.path.suffix != ".zip":
            return str(file.path), file.path.read_bytes()
        try:
            with zipfile.ZipFile(file.path) as archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
                if len(members) != 1 or not members[0].filename.lower().endswith(".csv"):
                    names = ", ".join(m.filename for m in members) or "nothing"
                    raise SourceError(
                        f"{file.path}: line 1, column -: a dump zip must hold exactly one .csv file, found {names}"
                    )
                return f"{file.path} (member {members[0].filename})", archive.read(members[0])
        except zipfile.BadZipFile as err:
            raise SourceError(f"{file.path}: line 1, column -: not a valid zip archive ({err})") from None

    def _load(self, file: _File, timeframe: str) -> tuple[str, pl.DataFrame]:
        stat = file.path.stat()
        key = (str(file.path), stat.st_size, stat.st_mtime_ns, timeframe)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        label, data = self._read_bytes(file)
        reader = _Reader(label, data, file.layout, timeframe, file)
        frame = reader.validate(reader.parse())
        with self._lock:
            if key not in self._cache:
                self._cache[key] = (label, frame)
                self._cached_rows += frame.height
            while self._cached_rows > CACHE_MAX_ROWS and len(self._cache) > 1:
                _, (_, evicted) = self._cache.popitem(last=False)
                self._cached_rows -= evicted.height
        return label, frame

    # --- fetch ---------------------------------------------------------------------------------------

    def fetch(self, symbols: list[str], timeframe: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """Bars with open time in [start, end) (UTC-aware), RAW_SCHEMA, sorted by (symbol, ts)."""
        timeframe_ms(timeframe)  # unknown timeframe → ValueError naming the allowed ones
        start_us, end_us = epoch_us(start, "start"), epoch_us(end, "end")
        if not self.csv_dir.is_dir():
            raise SourceError(f"CSV archive folder {self.csv_dir} does not exist or is not a folder (data.csv_dir)")
        dumps = self._dumps(timeframe)
        plan: list[tuple[str, list[_File]]] = []
        for symbol in symbols:
            stem = self.file_stem(symbol)
            fixture = self.csv_dir / f"{stem}_{timeframe}.csv"
            symbol_dumps = dumps.get(stem, [])
            if not fixture.is_file() and not symbol_dumps:
                raise SourceError(
                    f"no CSV file for symbol {symbol} ({timeframe}) in {self.csv_dir}: expected {fixture.name} "
                    f"and/or monthly dumps {stem}-{timeframe}-YYYY-MM.csv or .zip"
                )
            files = [_File(fixture, "fixture")] if fixture.is_file() else []
            for dump in symbol_dumps:
                lo, hi = dump.month_span_us
                if lo < end_us and hi > start_us:  # read only the months the span touches
                    files.append(dump)
            if files and start_us < end_us:
                plan.append((symbol, files))
        todo = [f for _, files in plan for f in files]
        if not todo:
            return empty_raw()
        # Files parse in parallel (polars releases the GIL); map keeps file order, so the first bad
        # file in request order is the one reported.
        with ThreadPoolExecutor(max_workers=min(8, len(todo))) as pool:
            loaded = iter(list(pool.map(lambda f: self._load(f, timeframe), todo)))
        frames = []
        for symbol, files in plan:
            bars = self._merge(symbol, [next(loaded) for _ in files]).filter(
                (pl.col("ts") >= start_us) & (pl.col("ts") < end_us)
            )
            if bars.height:
                frames.append(
                    bars.select(
                        pl.lit(symbol, dtype=pl.String).alias("symbol"), pl.col("ts").cast(TS_DTYPE), *PRICE_COLUMNS
                    )
                )
        if not frames:
            return empty_raw()
        return conform(pl.concat(frames))

    @staticmethod
    def _merge(symbol: str, loaded: list[tuple[str, pl.DataFrame]]) -> pl.DataFrame:
        """One symbol's files into one sorted series; a bar in two files must agree."""
        if len(loaded) == 1:
            return loaded[0][1]
        labels = [label for label, _ in loaded]
        stacked = pl.concat(
            [frame.with_columns(pl.lit(i, dtype=pl.Int64).alias("file")) for i, (_, frame) in enumerate(loaded)]
        )
        shared = stacked.filter(pl.col("ts").is_duplicated()).sort("ts", "file")
        if shared.height:
            # Compare every later copy of a bar with its first copy (files in reading order).
            copies = shared.with_columns(
                *(pl.col(c).first().over("ts").alias(f"first_{c}") for c in (*PRICE_COLUMNS, "file", "line"))
            ).filter(pl.col("file") != pl.col("first_file"))
            conflicts = pl.concat(
                [
                    copies.filter(
                        (pl.col(f"first_{c}") - pl.col(c)).abs()
                        > MERGE_RTOL * pl.max_horizontal(pl.col(f"first_{c}").abs(), pl.col(c).abs())
                    ).select(
                        "ts",
                        "file",
                        "line",
                        "first_file",
                        "first_line",
                        pl.lit(c).alias("column"),
                        pl.col(f"first_{c}").alias("first_value"),
                        pl.col(c).alias("value"),
                    )
                    for c in PRICE_COLUMNS
                ]
            ).sort("ts", maintain_order=True)
            if conflicts.height:
                shown = "; ".join(
                    f"bar {_fmt_us(row['ts'])}: {labels[row['first_file']]} line {row['first_line']} and {labels[row['file']]} "
                    f"line {row['line']} disagree on column '{row['column']}' ({row['first_value']!r} vs {row['value']!r})"
                    for row in conflicts.head(MAX_REPORTED).iter_rows(named=True)
                )
                raise SourceError(
                    f"files of {symbol} disagree on {conflicts.height} value(s) on {conflicts['ts'].n_unique()} bar(s) "
                    f"(relative tolerance {MERGE_RTOL:g}): {shown}"
                )
        return stacked.unique("ts", keep="first", maintain_order=True).sort("ts").drop("file")


def read_archive_file(path: Path, timeframe: str) -> pl.DataFrame:
    """Parse and validate one archive file (either layout, by its name) without a folder around it:
    columns `line, ts (µs since epoch, UTC), open, high, low, close, volume`. Raises SourceError."""
    path = Path(path)
    match = DUMP_NAME.match(path.name)
    file = _File(path, "dump", (int(match["year"]), int(match["month"]))) if match else _File(path, "fixture")
    return CsvArchiveSource(path.parent)._load(file, timeframe)[1]
