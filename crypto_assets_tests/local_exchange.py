"""A local stand-in for the Binance spot REST API, for tests and benchmarks (no internet).

`LocalExchange` serves recorded bars (polars frames in `RAW_SCHEMA`) the way Binance does:

- `GET /api/v3/exchangeInfo`: enough of the real payload for ccxt's `binance.parse_markets`;
- `GET /api/v3/klines?symbol=&interval=&startTime=&endTime=&limit=`: 12-field kline arrays with
  prices as strings, the first `limit` bars (default 500, max 1000) whose open time is in
  [startTime, endTime];
- `GET /api/v3/time`, `GET /api/v3/ping`.

A `clock` (a callable returning a UTC-aware "now") makes it publish bars only once they have closed
(open time + timeframe ≤ now), like a live exchange serving closed candles: a test advances the clock to
publish the next bar (the paper ledger's tests). Without one every recorded bar is served.

Tests queue faults (`status`, `slow`, `short_page`, `duplicate_rows`, `garbage_row`, `edit_rows`,
`empty_page`, `skip_rows`, `truncated_json`, `html_page`) that the next matching requests get instead of
(or on top of) the normal answer, and read back every request in `requests`. A fault made with
`since=` is kept for the klines request whose startTime is exactly that moment (a page mid-range),
whatever comes first.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit

import polars as pl

from crypto_assets.sources.base import RAW_SCHEMA, TS_DTYPE
from crypto_assets.timeframes import TIMEFRAMES, timeframe_ms

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv"
KLINES_PATH = "/api/v3/klines"
DEFAULT_LIMIT = 500  # Binance's default and maximum page sizes for spot klines
MAX_LIMIT = 1000

Row = list[Any]
# A klines request's startTime: epoch ms or a UTC-aware datetime.
Moment = int | dt.datetime


def load_fixture(symbol: str, timeframe: str = "1h", suffix: str = "") -> pl.DataFrame:
    """Bars of one shared fixture file (e.g. `BTC/USDT`, `1h` → `BTCUSDT_1h.csv`) in RAW_SCHEMA.

    The files are read in place: the data is never copied into the project."""
    path = FIXTURE_DIR / f"{symbol.replace('/', '')}_{timeframe}{suffix}.csv"
    frame = pl.read_csv(
        path,
        schema_overrides={"timestamp": pl.Int64, **{c: pl.Float64 for c in ("open", "high", "low", "close", "volume")}},
    )
    return frame.select(
        pl.lit(symbol).alias("symbol"),
        pl.from_epoch("timestamp", time_unit="ms").cast(TS_DTYPE).alias("ts"),
        "open",
        "high",
        "low",
        "close",
        "volume",
    ).cast(RAW_SCHEMA)  # type: ignore[arg-type]


# --- faults ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour, consumed by the next request whose path equals `path` (and, when
    `when` is set, whose query it accepts).

    kind `status`: answer `status_code` with `body` (and a Retry-After header when `retry_after` is set);
    kind `slow`: sleep `delay_s` (longer than the client's time-out), then answer normally;
    kind `rows`: answer normally but pass the page's kline rows through `edit` first;
    kind `truncate`: answer normally but cut the body to its first `cut_at` characters (half when None),
    with a matching Content-Length: a proxy or a cut upstream connection that still answers 200."""

    kind: Literal["status", "slow", "rows", "truncate"]
    path: str = KLINES_PATH
    status_code: int = 200
    retry_after: str | None = None
    body: str = ""
    delay_s: float = 0.0
    edit: Callable[[list[Row]], list[Any]] | None = None
    cut_at: int | None = None
    content_type: str | None = None
    when: Callable[[Mapping[str, str]], bool] | None = None


def _starting_at(since: Moment | None) -> Callable[[Mapping[str, str]], bool] | None:
    """A `when` that accepts only the request whose startTime is `since`."""
    if since is None:
        return None
    ms = since if isinstance(since, int) else int(since.timestamp() * 1000)
    return lambda query: query.get("startTime") == str(ms)


def status(
    code: int, retry_after: float | str | None = None, body: str | None = None, path: str = KLINES_PATH
) -> Fault:
    """An HTTP error: 429 / 418 (rate limit, ban), 500 / 502 / 503 (server trouble) ..."""
    text = (
        body
        if body is not None
        else json.dumps({"code": -1003 if code in (418, 429) else -1000, "msg": f"injected {code}"})
    )
    after = None if retry_after is None else (retry_after if isinstance(retry_after, str) else f"{retry_after:g}")
    # A 5xx from a load balancer has no Binance JSON body; ccxt then maps the bare status code.
    if code >= 500 and body is None:
        text = f"<html>injected {code}</html>"
    return Fault("status", path=path, status_code=code, retry_after=after, body=text)


def slow(delay_s: float, path: str = KLINES_PATH) -> Fault:
    return Fault("slow", path=path, delay_s=delay_s)


def edit_rows(edit: Callable[[list[Row]], list[Any]], path: str = KLINES_PATH, since: Moment | None = None) -> Fault:
    return Fault("rows", path=path, edit=edit, when=_starting_at(since))


def empty_page(since: Moment | None = None) -> Fault:
    """Answer `[]`: "no bars in [startTime, endTime]" although there are some (a lagging replica)."""
    return edit_rows(lambda rows: [], since=since)


def skip_rows(start: int, count: int = 1, since: Moment | None = None) -> Fault:
    """Silently drop `count` rows of the page from row `start` on (row 0: the page starts late)."""
    return edit_rows(lambda rows: rows[:start] + rows[start + count :], since=since)


def truncated_json(cut_at: int | None = None, path: str = KLINES_PATH, since: Moment | None = None) -> Fault:
    """The normal answer cut to its first `cut_at` characters (half when None): e.g.
    `[[1577836800000,"7195.2`. Inject it N times for a persistent fault."""
    return Fault("truncate", path=path, cut_at=cut_at, when=_starting_at(since))


def html_page(path: str = KLINES_PATH, since: Moment | None = None) -> Fault:
    """A proxy's HTML page with status 200 instead of the API's JSON."""
    body = "<html><head><title>Proxy</title></head><body>upstream busy, retry later</body></html>"
    return Fault("status", path=path, status_code=200, body=body, content_type="text/html", when=_starting_at(since))


def short_page(keep: int) -> Fault:
    """Serve only the first `keep` bars of the page (exchanges do this around listing gaps)."""
    return edit_rows(lambda rows: rows[:keep])


def duplicate_rows(count: int = 3, *, at_end: bool = True) -> Fault:
    """Repeat `count` bars of the page, identical, right after themselves (at the page's end or start)."""

    def edit(rows: list[Row]) -> list[Row]:
        if not rows:
            return rows
        chunk = rows[-count:] if at_end else rows[:count]
        return rows + [list(r) for r in chunk] if at_end else [list(r) for r in chunk] + rows

    return edit_rows(edit)


def garbage_row(
    index: int, kind: Literal["non_numeric", "null", "short", "off_grid", "ohlc", "not_array"], column: int = 1
) -> Fault:
    """Corrupt row `index` of the page: a non-numeric string or null in field `column`, a row cut to 3
    fields, a timestamp moved off the bar grid, a high below the low, or a row that is not an array."""

    def edit(rows: list[Row]) -> list[Any]:
        out: list[Any] = [list(r) for r in rows]
        row = out[index]
        if kind == "non_numeric":
            row[column] = "12,5abc"
        elif kind == "null":
            row[column] = None
        elif kind == "short":
            out[index] = row[:3]
        elif kind == "off_grid":
            row[0] = row[0] + 1234
        elif kind == "ohlc":
            row[2] = str(float(row[3]) / 2)  # high = half the low
        elif kind == "not_array":
            out[index] = "garbage"
        return out

    return edit_rows(edit)


# --- recorded data --------------------------------------------------------------------------------


def _num(x: float) -> str:
    """Binance-style fixed 8-decimal string when it round-trips exactly, else the shortest repr."""
    fixed = f"{x:.8f}"
    return fixed if float(fixed) == x else repr(x)


@dataclass
class _Series:
    """One (symbol, interval) series: open times and the pre-rendered JSON of each kline."""

    ts: list[int] = field(default_factory=list)
    rendered: list[str] = field(default_factory=list)


def _render(frame: pl.DataFrame, interval_ms: int) -> _Series:
    series = _Series()
    rows = frame.sort("ts").select(pl.col("ts").dt.epoch("ms"), "open", "high", "low", "close", "volume").iter_rows()
    for ts, o, h, low, c, v in rows:
        kline = [
            ts, _num(o), _num(h), _num(low), _num(c), _num(v),
            ts + interval_ms - 1,  # close time
            _num(round(c * v, 8)),  # quote volume (approximate, unused)
            100,  # trades
            _num(round(v / 2, 8)), _num(round(c * v / 2, 8)), "0",  # taker buy base / quote, ignore
        ]  # fmt: skip
        series.ts.append(int(ts))
        series.rendered.append(json.dumps(kline, separators=(",", ":")))
    return series


def _exchange_symbol(symbol_id: str, base: str, quote: str) -> dict[str, Any]:
    return {
        "symbol": symbol_id,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.00000100",
                "maxPrice": "1000000.00000000",
                "tickSize": "0.00000100",
            },
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "100.00000000",
                "stepSize": "0.00000000",
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    query: dict[str, str]


class LocalExchange:
    """Binance-spot look-alike on 127.0.0.1 (random port), serving `bars` (RAW_SCHEMA, symbols as
    `BASE/QUOTE`) at `timeframe`; `bars` may also map timeframe → frame. `extra_symbols` are listed
    in exchangeInfo without bars; with a `clock`, only bars closed by `clock()` are served. Use as a context
    manager, or `start()` / `stop()`."""

    def __init__(
        self,
        bars: pl.DataFrame | Mapping[str, pl.DataFrame],
        timeframe: str = "1h",
        extra_symbols: tuple[str, ...] = (),
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._clock = clock
        frames = dict(bars) if isinstance(bars, Mapping) else {timeframe: bars}
        self._series: dict[tuple[str, str], _Series] = {}
        symbols: set[str] = set(extra_symbols)
        for tf, frame in frames.items():
            for (symbol,), part in frame.partition_by("symbol", as_dict=True).items():
                symbols.add(str(symbol))
                self._series[(str(symbol).replace("/", ""), tf)] = _render(part, timeframe_ms(tf))
        self._markets = {s.replace("/", ""): s.split("/") for s in sorted(symbols)}
        self._faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- test knobs --

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each is used once, by the next request to its path that its `when` accepts, in order."""
        with self._lock:
            self._faults.extend(faults)

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def klines_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == KLINES_PATH]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def url(self) -> str:
        assert self._server is not None, "LocalExchange is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- life cycle --

    def start(self) -> LocalExchange:
        handler = type("Handler", (_Handler,), {"exchange": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # Keep-alive connections hold a thread each; don't let stop() wait for clients to hang up.
        server.block_on_close = False
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling (called from handler threads) --

    def _take_fault(self, path: str, query: Mapping[str, str]) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.path == path and (fault.when is None or fault.when(query)):
                    del self._faults[i]
                    return fault
        return None

    def _record(self, path: str, query: dict[str, str]) -> None:
        with self._lock:
            self._requests.append(RecordedRequest(path, query))

    def _exchange_info(self) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [_exchange_symbol(sid, base, quote) for sid, (base, quote) in self._markets.items()],
        }

    def _klines(self, query: dict[str, str]) -> tuple[int, str]:
        symbol_id = query.get("symbol", "")
        interval = query.get("interval", "")
        if symbol_id not in self._markets:
            return 400, json.dumps({"code": -1121, "msg": "Invalid symbol."})
        if interval not in TIMEFRAMES:
            return 400, json.dumps({"code": -1120, "msg": "Invalid interval."})
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
            start = int(query["startTime"]) if "startTime" in query else None
            end = int(query["endTime"]) if "endTime" in query else None
        except ValueError:
            return 400, json.dumps({"code": -1100, "msg": "Illegal characters found in a parameter."})
        limit = max(1, min(limit, MAX_LIMIT))
        series = self._series.get((symbol_id, interval), _Series())
        hi = len(series.ts) if end is None else bisect.bisect_right(series.ts, end)
        if self._clock is not None:  # publish closed bars only: open time + interval <= now
            now_ms = int(self._clock().timestamp() * 1000)
            hi = min(hi, bisect.bisect_right(series.ts, now_ms - timeframe_ms(interval)))
        if start is None:  # Binance serves the most recent bars when no start is given
            lo = max(0, hi - limit)
        else:
            lo = bisect.bisect_left(series.ts, start)
            hi = min(hi, lo + limit)
        return 200, "[" + ",".join(series.rendered[lo:hi]) + "]"

    def handle(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], str]:
        """Status, extra headers and body for one GET."""
        self._record(path, query)
        fault = self._take_fault(path, query)
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            if fault.content_type is not None:
                headers["Content-Type"] = fault.content_type
            return fault.status_code, headers, fault.body
        code, headers, body = self._answer(path, query, fault)
        if fault is not None and fault.kind == "truncate":
            body = body[: len(body) // 2 if fault.cut_at is None else fault.cut_at]
        return code, headers, body

    def _answer(self, path: str, query: dict[str, str], fault: Fault | None) -> tuple[int, dict[str, str], str]:
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay_s)
        if path == "/api/v3/ping":
            return 200, {}, "{}"
        if path == "/api/v3/time":
            return 200, {}, json.dumps({"serverTime": int(time.time() * 1000)})
        if path == "/api/v3/exchangeInfo":
            return 200, {}, json.dumps(self._exchange_info())
        if path == KLINES_PATH:
            code, body = self._klines(query)
            if code == 200 and fault is not None and fault.kind == "rows" and fault.edit is not None:
                body = json.dumps(fault.edit(json.loads(body)))
            return code, {}, body
        return 404, {}, json.dumps({"code": -1, "msg": f"no route {path}"})


class _Handler(BaseHTTPRequestHandler):
    exchange: LocalExchange
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API (a fresh TCP connection per page is slow)
    timeout = 10  # idle keep-alive connections close after this
    # Headers and body go out as two writes: with Nagle on, a small body (a gap re-request's `[]`)
    # waits for the client's delayed ACK of the headers, ~40 ms per request on Linux.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        code, headers, body = self.exchange.handle(parts.path, query)
        payload = body.encode()
        content_type = headers.pop("Content-Type", "application/json;charset=UTF-8")
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # BrokenPipeError, ConnectionResetError ...
            # The client gave up (time-out test): nothing to answer to.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded in LocalExchange.requests; keep test output clean


@contextmanager
def running_exchange(
    bars: pl.DataFrame | Mapping[str, pl.DataFrame],
    timeframe: str = "1h",
    extra_symbols: tuple[str, ...] = (),
    clock: Callable[[], dt.datetime] | None = None,
) -> Iterator[LocalExchange]:
    """`with running_exchange(bars) as ex: CcxtSource("binance", settings, api_url=ex.url)`."""
    exchange = LocalExchange(bars, timeframe, extra_symbols, clock)
    with exchange:
        yield exchange
