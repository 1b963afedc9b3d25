"""OHLCV from a live exchange through the real (sync) ccxt client (DESIGN.md §3.1).

`CcxtSource.fetch` pages `fetch_ohlcv` over [start, end), retries rate limits / server errors /
time-outs / answers that are not valid JSON with exponential back-off (honouring Retry-After), and
refuses anything malformed: a page with a bad row fails the whole fetch with a `SourceError` naming
the exchange, symbol, span, row, column and rule, so nothing partial ever reaches the warehouse. The
still-open candle is dropped. Incremental refresh is the caller passing a later `start`.

Completeness: the fetch covers [start, min(end, last closed bar)) or raises. Exchanges answer short
under load (a lagging replica answers `[]`, a page silently lacks rows), so no answer is believed
the first time it claims bars are missing: an empty page before the stop is asked again, and each
hole inside an answer (or before its first candle) is asked again once, for exactly the missing
span. What is still missing the second time is real (Binance maintenance, a listing date, a
delisting) and recorded in `CcxtSource.confirmed_gaps`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import polars as pl

from crypto_assets.config.schema import CcxtSection
from crypto_assets.sources.base import TS_DTYPE, SourceError, conform, empty_raw, foreign_spacing
from crypto_assets.timeframes import epoch_us, format_us, timeframe_ms
from crypto_assets.validation.row_rules import ohlc_violations

T = TypeVar("T")

# ccxt's unified candle layout: [timestamp ms, open, high, low, close, volume].
CANDLE_FIELDS = ("ts", "open", "high", "low", "close", "volume")
CANDLE_SCHEMA: dict[str, pl.DataType] = {"ts": pl.Int64(), **{c: pl.Float64() for c in CANDLE_FIELDS[1:]}}
# A Retry-After longer than this is a ban (Binance 418 can say days): fail now rather than hang a run.
MAX_RETRY_AFTER_S = 900.0
# Binance and its US twin: load_markets would also call the futures APIs unless restricted to spot;
# their fetch_ohlcv maps ccxt's `until` to `endTime` (other exchanges might forward an unknown param
# verbatim to an API that rejects it, so they get none and pages are trimmed client-side); and
# their raw answer is always a JSON array of kline arrays, so anything else is garbage.
BINANCE_FAMILY = ("binance", "binanceus")
# Exceptions ccxt's parsers can raise on a malformed answer (not ccxt errors, so not retried).
PARSE_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError)
# How much of an unparseable body an error quotes.
QUOTE_CHARS = 200


class MalformedAnswer(Exception):
    """An HTTP answer whose body is not JSON (cut short, a proxy's HTML page, empty).

    ccxt 4.x does not raise on these: `Exchange.parse_json` swallows the decode error, `fetch` hands
    back the raw text, and `fetch_ohlcv` parses a string into `[]`, indistinguishable from "no bars".
    So the client's `fetch` is wrapped to raise this, and it is retried like a 5xx."""

    def __init__(self, body: str) -> None:
        shown = body[:QUOTE_CHARS] + ("..." if len(body) > QUOTE_CHARS else "")
        cause = "an empty body" if not body.strip() else repr(shown)
        super().__init__(f"the answer was not valid JSON (truncated?): {cause} ({len(body)} chars)")


@dataclass(frozen=True)
class ConfirmedGap:
    """Bars [first, last] (open times, inclusive) the exchange said twice it does not have."""

    symbol: str
    timeframe: str
    first: dt.datetime
    last: dt.datetime


@dataclass(frozen=True)
class _Job:
    """One symbol's fetch: bars with open time on the grid in [start_ms, stop_ms)."""

    symbol: str
    timeframe: str
    tf_ms: int
    start_ms: int
    stop_ms: int

    @property
    def label(self) -> str:
        return f"{self.symbol} {self.timeframe}"

    @property
    def span(self) -> str:
        return f"[{_iso(self.start_ms)}, {_iso(self.stop_ms)})"

    @property
    def last_slot(self) -> int:
        """Open time of the last bar the span can hold."""
        return (self.stop_ms - 1) // self.tf_ms * self.tf_ms


def _not_json(body: Any) -> str | None:
    """The body as text when it does not parse as JSON, else None."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if not isinstance(text, str):
        return None
    try:
        json.loads(text)
    except ValueError:
        return text
    return None


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


def _to_ms(moment: dt.datetime, name: str) -> int:
    return epoch_us(moment, name) // 1000


def _dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _open_times(page: pl.DataFrame, cursor: int) -> pl.Series:
    """The page's distinct open times at or after `cursor`, ascending."""
    return page["ts"].filter(page["ts"] >= cursor).unique().sort()


def _holes(
    fresh: pl.Series, cursor: int, tf_ms: int, last_slot: int, *, trailing: bool = False
) -> list[tuple[int, int]]:
    """Missing bars [first, last] in `fresh` (sorted distinct open times): before its first bar from
    `cursor` on, and between consecutive bars, clipped to `last_slot`; with `trailing`, also after
    its last bar up to `last_slot` (or the whole span when `fresh` is empty)."""
    if fresh.is_empty():
        return [(cursor, last_slot)] if trailing and cursor <= last_slot else []
    frame = pl.DataFrame({"ts": fresh}).with_columns(prev=pl.col("ts").shift(1, fill_value=cursor - tf_ms))
    gaps = frame.filter(pl.col("ts") - pl.col("prev") > tf_ms).select(
        first=pl.col("prev") + tf_ms, last=pl.min_horizontal(pl.col("ts") - tf_ms, pl.lit(last_slot))
    )
    holes = [(first, last) for first, last in gaps.iter_rows() if first <= last]
    if trailing and int(fresh[-1]) < last_slot:
        holes.append((int(fresh[-1]) + tf_ms, last_slot))
    return holes


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rebase_url(url: str, api_url: str) -> str:
    """`https://api.binance.com/api/v3` + `http://127.0.0.1:9000` → `http://127.0.0.1:9000/api/v3`:
    swap scheme and host, keep the endpoint's own path."""
    return api_url + urlsplit(url).path


def _rebase_urls(urls: Any, api_url: str) -> Any:
    if isinstance(urls, str):
        return _rebase_url(urls, api_url)
    if isinstance(urls, Mapping):
        return {key: _rebase_urls(value, api_url) for key, value in urls.items()}
    return urls


def _ts_text(value: Any) -> str:
    """A raw timestamp for a message: ISO when it is a number, else as received."""
    if _is_number(value):
        try:
            return _iso(int(float(value)))
        except (OverflowError, ValueError, OSError):
            pass
    return repr(value)


def _is_number(value: Any) -> bool:
    """A JSON number or a numeric string (Binance sends prices as strings); not bool / None."""
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


class CcxtSource:
    """`OhlcvSource` over a ccxt exchange (`exchange_id` as in `ccxt.exchanges`, e.g. `binance`).

    `api_url` replaces the REST base URL (regional endpoint, proxy, local test exchange); `clock`
    decides which candle is still open; `sleep` is the back-off wait (tests pass a recorder).
    `request_count` counts HTTP requests actually sent, retries and market loading included;
    `confirmed_gaps` lists the spans inside fetched ranges the exchange said twice it has no bars for
    (all fetches of this source, in order)."""

    def __init__(
        self,
        exchange_id: str,
        settings: CcxtSection,
        api_url: str | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import ccxt  # deferred: ccxt takes ~0.5 s to import

        if exchange_id not in ccxt.exchanges:
            raise SourceError(f"unknown ccxt exchange id {exchange_id!r} (see ccxt.exchanges)")
        self.exchange_id = exchange_id
        self.settings = settings
        self.api_url = api_url.rstrip("/") if api_url else None
        self._clock = clock or _utc_now
        self._sleep = sleep
        self.request_count = 0
        self.confirmed_gaps: list[ConfirmedGap] = []
        self._ccxt = ccxt

        config: dict[str, Any] = {"enableRateLimit": True, "timeout": settings.timeout_ms}
        if settings.rate_limit_ms is not None:
            config["rateLimit"] = settings.rate_limit_ms
        exchange = getattr(ccxt, exchange_id)(config)
        # Keep the raw JSON of each answer: ccxt silently drops candles it cannot parse, and the
        # raw rows are what we must name in an error.
        exchange.enableLastJsonResponse = True
        exchange.enableLastResponseHeaders = True
        if exchange_id in BINANCE_FAMILY:
            # load_markets then calls only /api/v3/exchangeInfo (not fapi / dapi / eapi).
            exchange.options["fetchMarkets"] = {"types": ["spot"]}
        if self.api_url is not None:
            exchange.urls["api"] = _rebase_urls(exchange.urls["api"], self.api_url)
        # Count real HTTP requests (retries and load_markets included) for benchmarks, and refuse
        # bodies that are not JSON (ccxt passes them on as text, see MalformedAnswer).
        inner_fetch = exchange.fetch

        def checked_fetch(*args: Any, **kwargs: Any) -> Any:
            self.request_count += 1
            answer = inner_fetch(*args, **kwargs)
            text = _not_json(answer)
            if text is not None:
                raise MalformedAnswer(text)
            return answer

        exchange.fetch = checked_fetch
        self._exchange = exchange
        self._markets_loaded = False

    # -- public API --

    def fetch(self, symbols: list[str], timeframe: str, start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
        """Closed bars with open time in [start, end), RAW_SCHEMA, sorted by (symbol, ts).

        Complete or an error: every bar the exchange has in [start, min(end, last closed bar)) is
        returned (short answers are asked again, see the module docstring), or a `SourceError` names
        the exchange, symbol, span and cause. Spans missing twice are appended to `confirmed_gaps`."""
        tf_ms = timeframe_ms(timeframe)  # raises ValueError naming the allowed timeframes
        start_ms, end_ms = _to_ms(start, "start"), _to_ms(end, "end")
        if not symbols or end_ms <= start_ms:
            return empty_raw()
        self._check_symbols(symbols)
        # A bar is closed once ts + tf <= now, i.e. ts < now floored to the grid.
        now_ms = _to_ms(self._clock(), "clock()")
        stop_ms = min(end_ms, now_ms // tf_ms * tf_ms)
        frames = [self._fetch_symbol(_Job(symbol, timeframe, tf_ms, start_ms, stop_ms)) for symbol in symbols]
        frames = [f for f in frames if f.height]
        return conform(pl.concat(frames)) if frames else empty_raw()

    def close(self) -> None:
        """Close the HTTP session (keep-alive connections)."""
        self._exchange.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- markets --

    def _check_symbols(self, symbols: list[str]) -> None:
        if not self._markets_loaded:
            self._with_retries(f"{self.exchange_id}: loading markets", self._exchange.load_markets)
            self._markets_loaded = True
        markets: Mapping[str, Any] = self._exchange.markets or {}
        missing = [s for s in symbols if s not in markets]
        if missing:
            quotes = {s.split("/")[-1] for s in missing}
            similar = sorted(m for m in markets if m.split("/")[-1] in quotes and ":" not in m)[:8]
            raise SourceError(
                f"{self.exchange_id}: the exchange has no market {', '.join(map(repr, missing))} "
                f"({len(markets)} markets loaded{'; e.g. ' + ', '.join(similar) if similar else ''})"
            )

    # -- paging --

    def _fetch_symbol(self, job: _Job) -> pl.DataFrame:
        pages = [page for page in self._pages(job) if page.height]
        if not pages:
            return empty_raw()
        bars = pl.concat(pages).filter((pl.col("ts") >= pl.lit(job.start_ms)) & (pl.col("ts") < pl.lit(job.stop_ms)))
        # Exchanges repeat candles within and across pages: identical copies are harmless, two
        # different candles for one open time mean the data cannot be trusted.
        bars = bars.unique(maintain_order=True)
        clashes = bars.filter(pl.col("ts").is_duplicated())
        if clashes.height:
            first = clashes.filter(pl.col("ts") == clashes["ts"][0])
            raise SourceError(
                f"{self.exchange_id}: {job.label} returned conflicting candles for ts={_iso(first['ts'][0])} "
                f"(fetching {job.span}): "
                + "; ".join(str(row[1:]) for row in first.rows())
                + " (rule: one candle per open time)"
            )
        return bars.sort("ts").select(
            pl.lit(job.symbol).alias("symbol"),
            pl.from_epoch("ts", time_unit="ms").cast(TS_DTYPE).alias("ts"),
            *CANDLE_FIELDS[1:],
        )

    def _pages(self, job: _Job) -> Iterator[pl.DataFrame]:
        """Validated frames (columns ts ms, open .. volume) that together cover the job's span.

        Short pages are not the end: exchanges return fewer bars than asked around listing gaps
        and maintenance, so the cursor moves one bar past the newest bar received. An answer with
        nothing at or after the cursor claims "no bars in [cursor, stop)" and is asked once more;
        a hole inside an answer is asked once more by `_refetch`. Twice missing is real."""
        tf = job.tf_ms
        cursor = -(-job.start_ms // tf) * tf  # first open time on the grid
        while cursor <= job.last_slot:
            page = self._request(job, cursor, job.stop_ms - 1, self.settings.page_limit)
            fresh = _open_times(page, cursor)
            if fresh.is_empty():
                page = self._request(job, cursor, job.stop_ms - 1, self.settings.page_limit)
                fresh = _open_times(page, cursor)
                if fresh.is_empty():
                    yield page
                    self._confirm(job, cursor, job.last_slot)
                    return
            yield page
            for first, last in _holes(fresh, cursor, tf, job.last_slot):
                yield from self._refetch(job, first, last)
            cursor = int(fresh[-1]) + tf

    def _refetch(self, job: _Job, first: int, last: int) -> Iterator[pl.DataFrame]:
        """Ask once more for exactly the bars [first, last] an answer lacked; record what is still missing.

        Binance bounds the answer by endTime, so one request settles a hole of up to `page_limit`
        bars (a real maintenance gap costs one request that answers `[]`); a longer hole (the span
        before a listing) continues only while answers come back full."""
        tf = job.tf_ms
        received: list[int] = []
        cursor = first
        while cursor <= last:
            limit = min((last - cursor) // tf + 1, self.settings.page_limit)
            page = self._request(job, cursor, last, limit)
            yield page
            got = _open_times(page, cursor)
            got = got.filter(got <= last)
            received.extend(got.to_list())
            if got.is_empty() or page.height < limit:
                break
            cursor = int(got[-1]) + tf
        still_missing = _holes(pl.Series("ts", sorted(set(received)), pl.Int64), first, tf, last, trailing=True)
        for hole_first, hole_last in still_missing:
            self._confirm(job, hole_first, hole_last)

    def _confirm(self, job: _Job, first: int, last: int) -> None:
        self.confirmed_gaps.append(ConfirmedGap(job.symbol, job.timeframe, _dt(first), _dt(last)))

    def _request(self, job: _Job, since: int, until: int, limit: int) -> pl.DataFrame:
        """One `fetch_ohlcv` call for bars from `since` (to `until` inclusive where the exchange takes
        an end), with retries, as a validated page."""
        # Binance maps `until` to endTime; another exchange might pass an unknown param to an API that
        # rejects it, so it gets none and pages are trimmed client-side.
        params = {"until": until} if self.exchange_id in BINANCE_FAMILY else {}
        call = functools.partial(
            self._exchange.fetch_ohlcv, job.symbol, job.timeframe, since=since, limit=limit, params=params
        )
        what = f"{self.exchange_id}: fetching {job.label} since {_iso(since)} (span {job.span})"
        try:
            candles = self._with_retries(what, call)
        except SourceError:
            raise  # already explained (and a ValueError, which PARSE_ERRORS would catch)
        except PARSE_ERRORS as err:
            # ccxt choked on the answer: name the bad raw row when we can, else say what broke.
            self._check_raw(self._exchange.last_json_response, job, since)
            raise SourceError(
                f"{self.exchange_id}: {job.label} page since {_iso(since)}: the answer could not be "
                f"parsed ({type(err).__name__}: {err}); nothing was returned for {job.span}"
            ) from err
        return self._page_frame(candles, self._exchange.last_json_response, job, since)

    # -- retries --

    def _retry_after_s(self) -> float:
        """The server's Retry-After (seconds or an HTTP date) from the last response, else 0."""
        headers = self._exchange.last_response_headers or {}
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        if value is None:
            return 0.0
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(str(value))
        except (TypeError, ValueError):
            return 0.0
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return max(0.0, (when - self._clock()).total_seconds())

    def _with_retries(self, what: str, call: Callable[[], T]) -> T:
        """`call()`, retried on transient faults; `what` (exchange, action, symbol, span) opens any error."""
        ccxt = self._ccxt
        attempt = 0
        while True:
            # ccxt keeps the previous answer's headers on a time-out: never reuse a stale Retry-After.
            self._exchange.last_response_headers = None
            self._exchange.last_json_response = None
            try:
                return call()
            except ccxt.BadSymbol as err:
                raise SourceError(f"{what}: the exchange has no such market ({err})") from err
            except (ccxt.OperationFailed, MalformedAnswer) as err:
                # ccxt's transient family: NetworkError (RateLimitExceeded / DDoSProtection for 429 /
                # 418, ExchangeNotAvailable / OnMaintenance for 5xx, RequestTimeout, BadResponse) plus
                # Binance's -1000 / -1001 "unknown error, try again" answers (OperationFailed itself);
                # and a body that is not JSON (cut short, a proxy's page), which ccxt does not raise on.
                retry_after = self._retry_after_s()
                if retry_after > MAX_RETRY_AFTER_S:
                    raise SourceError(
                        f"{what}: the server asks to wait {retry_after:g} s (Retry-After), more than "
                        f"{MAX_RETRY_AFTER_S:g} s; giving up. Last error: {type(err).__name__}: {err}"
                    ) from err
                if attempt >= self.settings.max_retries:
                    raise SourceError(
                        f"{what} failed after {attempt + 1} attempts ({self.settings.max_retries} retries); "
                        f"last error: {type(err).__name__}: {err}"
                    ) from err
                self._sleep(max(self.settings.backoff_s * 2**attempt, retry_after))
                attempt += 1
            except ccxt.BaseError as err:
                raise SourceError(f"{what}: {type(err).__name__}: {err}") from err

    # -- validation --

    def _fail(self, job: _Job, since: int, where: str, column: str, rule: str, value: Any) -> SourceError:
        return SourceError(
            f"{self.exchange_id}: {job.label} page since {_iso(since)}: {where}, column {column!r}: "
            f"{rule} (got {value!r}); nothing was returned for {job.span}"
        )

    def _check_raw(self, raw: Any, job: _Job, since: int) -> None:
        """Row-by-row checks of the raw JSON rows when they are arrays: ccxt drops candles whose
        timestamp it cannot parse and turns bad numbers into None, losing the row's position and
        the offending text."""
        if self.exchange_id in BINANCE_FAMILY and not isinstance(raw, list):
            raise self._fail(job, since, "response", "*", "klines must be a JSON array", str(raw)[:QUOTE_CHARS])
        # A list of objects is another exchange's structured format: ccxt's parsed candles are checked next.
        if not isinstance(raw, list) or all(isinstance(row, dict) for row in raw):
            return
        for i, row in enumerate(raw):
            if not isinstance(row, list | tuple):
                raise self._fail(job, since, f"raw row {i}", "*", "a candle must be an array", row)
            if len(row) < len(CANDLE_FIELDS):
                rule = f"a candle needs at least {len(CANDLE_FIELDS)} fields {list(CANDLE_FIELDS)}"
                raise self._fail(job, since, f"raw row {i}", "*", rule, row)
            where = f"raw row {i} (ts={_ts_text(row[0])})"
            for j, column in enumerate(CANDLE_FIELDS):
                if not _is_number(row[j]):
                    raise self._fail(job, since, where, column, "must be numeric", row[j])
            if float(row[0]) <= 0:
                raise self._fail(job, since, where, "ts", "must be a positive epoch time", row[0])

    def _page_frame(self, candles: Any, raw: Any, job: _Job, since: int) -> pl.DataFrame:
        """A page as a frame (ts in epoch ms, open .. volume), refused unless every row is sound.

        Fast path: ccxt parsed every raw row into 6 numbers. When it did not (a row dropped, a None,
        a frame that will not build), the row-by-row checks find and name the culprit."""
        fail = functools.partial(self._fail, job, since)
        tf_ms, timeframe = job.tf_ms, job.timeframe
        page: pl.DataFrame | None = None
        dropped = isinstance(raw, list) and isinstance(candles, list) and len(raw) != len(candles)
        if isinstance(candles, list) and not dropped:
            try:
                page = pl.DataFrame(candles, schema=CANDLE_SCHEMA, orient="row")
            except (TypeError, ValueError, pl.exceptions.PolarsError):
                page = None
        if (
            page is None
            or dropped
            or page.null_count().sum_horizontal()[0]
            or (self.exchange_id in BINANCE_FAMILY and not isinstance(raw, list))
        ):
            self._check_raw(raw, job, since)
            self._check_candles(candles, job, since)
            page = pl.DataFrame([list(c[: len(CANDLE_FIELDS)]) for c in candles], schema=CANDLE_SCHEMA, orient="row")
        bad_ts = page.with_row_index("row").filter((pl.col("ts") <= 0) | (pl.col("ts") % tf_ms != 0))
        if bad_ts.height:
            row, ts = int(bad_ts["row"][0]), int(bad_ts["ts"][0])
            rule = "must be a positive epoch time" if ts <= 0 else f"open time must be on the {timeframe} grid"
            raise fail(f"row {row} (ts={_ts_text(ts)})", "ts", rule, ts)
        other = foreign_spacing(page["ts"], tf_ms)
        if other is not None:
            # Coarser bars (1h answered for 30m) sit on the grid: without this every other bar would be
            # re-requested, confirmed missing and later filled with fake bars.
            spacing, n, pairs = other
            rule = (
                f"bars must be {timeframe} apart; the most common spacing is {format_us(spacing * 1000)} "
                f"({n} of {pairs} pairs of consecutive bars)"
            )
            raise fail("response", "ts", rule, f"{timeframe} asked")
        violations = ohlc_violations(page)
        if violations.height:
            row, column, rule, value = violations.row(0)
            raise fail(f"row {row} (ts={_iso(int(page['ts'][row]))})", column, rule, value)
        return page

    def _check_candles(self, candles: Any, job: _Job, since: int) -> None:
        """Row-by-row type checks of ccxt's parsed candles (the slow path, run only on suspicion)."""
        fail = functools.partial(self._fail, job, since)
        if not isinstance(candles, list):
            raise fail("response", "*", "fetch_ohlcv must return a list of candles", type(candles).__name__)
        for i, candle in enumerate(candles):
            if not isinstance(candle, list | tuple) or len(candle) < len(CANDLE_FIELDS):
                raise fail(f"row {i}", "*", f"a candle needs {len(CANDLE_FIELDS)} fields {list(CANDLE_FIELDS)}", candle)
            if not isinstance(candle[0], int) or isinstance(candle[0], bool):
                raise fail(f"row {i}", "ts", "must be an integer epoch time in ms", candle[0])
            for j in range(1, len(CANDLE_FIELDS)):
                value = candle[j]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise fail(f"row {i} (ts={_ts_text(candle[0])})", CANDLE_FIELDS[j], "must be numeric", value)
