"""The append-only paper ledger and the forward trader (DESIGN.md §6.5). See `crypto_assets.paper` for the tables.

Forward trading of one strategy (a live fold's artifact) in one month, on the closed bars known now:

1. The watermark is the newest closed bar given (a bar is closed once ts + timeframe ≤ now; the caller passes
   closed bars only). The month's bars up to it that the ledger lacks are the new bars; one earlier than the last
   stored bar means the history changed under the ledger: an error, never a rewrite.
2. Decisions, causally: for each new bar t in order, the artifact is replayed on the bars up to and including t
   only (`decide`: `Artifact.inputs(bars ≤ t, start=month start)`, asking for the decision at that last bar), and
   its decision at t is kept. A restart after an outage decides every missed bar
   this way, so a catch-up decides exactly what ticking bar by bar would have decided.
3. Fills, positions, cash and equity: one engine run (`run_backtest`) from the experiment's capital over the
   month's bars so far (plus the cost model's σ / ADV history before the month) with every decision of the month
   (the stored ones as stored, then the new ones). The engine runs whole paths, so rather than restarting it
   from the last stored row, the ledger recomputes the month and appends only the new bars' rows, after checking
   that the recomputed rows of the stored bars equal what is stored (to `RTOL`): a bar revised by the exchange,
   a changed cost model or a different artifact is an error naming strategy, symbol and bar. Equity therefore
   equals `run_backtest` on the same bars and weights exactly, by construction.
4. The new rows go into one Parquet file per batch (`<month>/<strategy>/<first bar>.parquet`), written aside and
   hard-linked into place (create-if-absent: an existing file is never replaced), so a reader sees whole files
   only and a concurrent run that lost the race fails instead of writing twice. Reads refuse a bar stored twice.

Timing of a row (bar t, open time `ts`): `fill_*` is the fill at the open of t of the decision made at the close of
t − 1; `units`, `position_value`, `weight`, `cash`, `equity`, `return` are at the close of t; `target_weight` and
`signal` are the decision at the close of t, executed at the open of t + 1 (the next row). So everything in a row
is known once bar t has closed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from crypto_assets.timeframes import timeframe_delta

if TYPE_CHECKING:
    from crypto_assets.backtest import BacktestResult, CostModel
    from crypto_assets.families import Artifact

LEDGER_DIR = "paper_ledger"
"""The ledger's directory under the experiment's warehouse directory (`storage/<experiment>/warehouse/`)."""
TS_DTYPE = pl.Datetime("us", "UTC")
LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "experiment": pl.String(),
    "strategy": pl.String(),
    "month": pl.String(),
    "symbol": pl.String(),
    "ts": TS_DTYPE,
    "artifact": pl.String(),
    "watermark": TS_DTYPE,
    "open": pl.Float64(),
    "close": pl.Float64(),
    "fill_units": pl.Float64(),
    "fill_price": pl.Float64(),
    "fill_notional": pl.Float64(),
    "fill_cost": pl.Float64(),
    "units": pl.Float64(),
    "position_value": pl.Float64(),
    "weight": pl.Float64(),
    "cash": pl.Float64(),
    "equity": pl.Float64(),
    "return": pl.Float64(),
    "signal": pl.String(),
    "target_weight": pl.Float64(),
}
KEY = ["strategy", "month", "symbol", "ts"]
CHECKED_NUMBERS = [
    "open",
    "close",
    "fill_units",
    "fill_price",
    "fill_notional",
    "fill_cost",
    "units",
    "position_value",
    "weight",
    "cash",
    "equity",
    "return",
]
"""Columns a re-run recomputes and compares with the stored row (the decision columns are stored, not redone)."""
RTOL = 1e-9
"""Relative tolerance of that comparison (the engine is deterministic: recomputed rows match to the last bit on
one machine; the tolerance only spares a reader on another CPU)."""


class LedgerConflict(RuntimeError):
    """A re-run would produce a different row for a bar already in the ledger (rows are never rewritten)."""


@dataclass(frozen=True)
class PaperSetup:
    """What one strategy's ledger trades under: names, the engine's cost model and capital, the history to give."""

    experiment: str
    strategy: str
    """The family's slug (`lstm_attn`), as in the walk-forward KPI tables."""
    month: str
    """The live fold's key (`YYYY-MM-01`): the month traded."""
    artifact_hash: str
    """`artifact_digest` of the live model's folder: which model made the decisions."""
    costs: CostModel
    capital: float
    cost_lookback: dt.timedelta
    """History before the month the engine gets for σ / ADV (`orchestration.assets.common.cost_lookback`)."""


def artifact_digest(directory: str | Path) -> str:
    """SHA-256 (16 hex digits) of every file under an artifact folder (relative paths and bytes, sorted)."""
    root = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class PaperLedgerStore:
    """The append-only ledger of one experiment: `<warehouse>/paper_ledger/<month>/<strategy>/<first bar>.parquet`."""

    def __init__(self, warehouse_dir: str | Path) -> None:
        self.directory = Path(warehouse_dir) / LEDGER_DIR

    def unit_dir(self, month: str, strategy: str) -> Path:
        return self.directory / month / strategy

    def read(self, month: str | None = None, strategy: str | None = None) -> pl.DataFrame:
        """Stored rows (all, or of one month and/or strategy), sorted by strategy, month, symbol, ts. Raises
        LedgerConflict naming the bar if one is stored twice (files are never merged or deduplicated silently)."""
        pattern = f"{month or '*'}/{strategy or '*'}/*.parquet"
        files = sorted(self.directory.glob(pattern)) if self.directory.is_dir() else []
        if not files:
            return pl.DataFrame(schema=LEDGER_SCHEMA)
        frame = pl.concat([pl.read_parquet(f) for f in files], how="vertical").sort(KEY)
        twice = frame.filter(pl.struct(KEY).is_duplicated())
        if twice.height:
            row = twice.row(0, named=True)
            raise LedgerConflict(
                f"paper ledger: {row['strategy']} {row['symbol']} bar {row['ts']:%Y-%m-%d %H:%M} ({row['month']}) "
                f"is stored twice under {self.unit_dir(row['month'], row['strategy'])}"
            )
        return frame

    def append(self, rows: pl.DataFrame) -> Path | None:
        """Store new rows of one strategy × month as one file (None when there are none). Never replaces a file:
        a file already there for the same first bar (a concurrent run) is a LedgerConflict."""
        if rows.is_empty():
            return None
        units = rows.select("month", "strategy").unique()
        if units.height != 1:
            raise ValueError(f"append one strategy × month at a time, got {units.rows()}")
        month, strategy = units.row(0)
        directory = self.unit_dir(month, strategy)
        directory.mkdir(parents=True, exist_ok=True)
        first: dt.datetime = rows["ts"].min()  # type: ignore[assignment]
        target = directory / f"{first:%Y%m%dT%H%M}.parquet"
        tmp = directory / f".{target.stem}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            rows.select(list(LEDGER_SCHEMA)).cast(LEDGER_SCHEMA).sort(KEY).write_parquet(tmp)  # type: ignore[arg-type]
            try:
                os.link(tmp, target)  # atomic create-if-absent
            except FileExistsError:
                raise LedgerConflict(
                    f"paper ledger: {target} already exists (another run wrote {strategy} {month} from "
                    f"{first:%Y-%m-%d %H:%M}); nothing written — re-run to append what is still missing"
                ) from None
        finally:
            tmp.unlink(missing_ok=True)
        return target


@dataclass(frozen=True)
class ForwardResult:
    """One forward-trading step of one strategy: the rows appended, the watermark, and the engine run."""

    new_rows: pl.DataFrame
    watermark: dt.datetime | None
    """Newest closed bar of the month given (None: none yet)."""
    run: BacktestResult | None
    """The engine run over the month so far (the ledger's equity is its `equity`), None when no bar yet."""
    weights: pl.DataFrame
    """Every decision of the month so far as the engine got them (`symbol, ts, weight`)."""


def decide(artifact: Artifact, bars: pl.DataFrame, month_start: dt.datetime, bar: dt.datetime) -> pl.DataFrame:
    """The artifact's decision rows at the close of `bar` (`symbol, ts, weight` + the family's columns), replayed
    on `bars` up to and including `bar` only: what it would have decided live then. `bar` is the last bar given,
    so the family is asked for its `final_decision` (an agent's replay otherwise ends without deciding there)."""
    tf = timeframe_delta(artifact.context.timeframe)
    inputs = artifact.inputs(bars.filter(pl.col("ts") <= bar), start=month_start, end=bar + tf)
    out = artifact.family.predict(artifact.model, dataclasses.replace(inputs, final_decision=True))
    return out.filter(pl.col("ts") == bar)


def _signal(rows: pl.DataFrame) -> pl.DataFrame:
    """`symbol, ts, signal, target_weight`: the family's own columns (beyond the weight) as a JSON object."""
    extra = [c for c in rows.columns if c not in ("symbol", "ts", "weight")]
    values = rows.select(extra).to_dicts() if extra else [{} for _ in range(rows.height)]
    signals = [json.dumps({c: _plain(v) for c, v in row.items()}, sort_keys=True) for row in values]
    return rows.select(
        "symbol",
        pl.col("ts").cast(TS_DTYPE),
        pl.Series("signal", signals, dtype=pl.String),
        pl.col("weight").cast(pl.Float64).alias("target_weight"),
    )


def _plain(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def trade_forward(
    setup: PaperSetup, artifact: Artifact, bars: pl.DataFrame, stored: pl.DataFrame, watermark_now: dt.datetime
) -> ForwardResult:
    """Decide, fill and book the month's closed bars the ledger lacks (module docstring); returns the new rows
    (not yet stored: `PaperLedgerStore.append` them). `bars`: closed bars (long OHLCV) from the artifact's first
    input bar on; `stored`: this strategy × month's stored rows; `watermark_now`: the newest closed bar's open
    time, written in every new row."""
    from crypto_assets.backtest import run_backtest

    month_start, month_end = artifact.window.test_start, artifact.window.test_end
    bars = bars.with_columns(pl.col("ts").cast(TS_DTYPE)).filter(pl.col("ts") <= watermark_now)
    month_bars = bars.filter((pl.col("ts") >= month_start) & (pl.col("ts") < month_end))
    empty_weights = pl.DataFrame(schema={"symbol": pl.String(), "ts": TS_DTYPE, "weight": pl.Float64()})
    if month_bars.is_empty():
        return ForwardResult(pl.DataFrame(schema=LEDGER_SCHEMA), None, None, empty_weights)
    watermark: dt.datetime = month_bars["ts"].max()  # type: ignore[assignment]
    _check_artifact(setup, stored)
    last_stored: dt.datetime | None = stored["ts"].max() if stored.height else None  # type: ignore[assignment]
    bar_times: list[dt.datetime] = month_bars["ts"].unique().sort().to_list()
    if last_stored is not None:
        stored_cells = stored.select("symbol", "ts")
        late = month_bars.filter(pl.col("ts") <= last_stored).join(stored_cells, on=["symbol", "ts"], how="anti")
        if late.height:
            row = late.row(0, named=True)
            raise LedgerConflict(
                f"paper ledger {setup.strategy} {setup.month}: bar {row['symbol']} {row['ts']:%Y-%m-%d %H:%M} appeared "
                f"after the ledger had booked up to {last_stored:%Y-%m-%d %H:%M} (history changed); rows are never "
                "rewritten"
            )
    new_times = [t for t in bar_times if last_stored is None or t > last_stored]
    decisions = [_signal(decide(artifact, bars, month_start, t)) for t in new_times]
    old = stored.select("symbol", "ts", "signal", "target_weight")
    decided = pl.concat([old, *decisions], how="vertical") if decisions else old
    weights = (
        decided.filter(pl.col("target_weight").is_not_null())
        .select("symbol", "ts", pl.col("target_weight").alias("weight"))
        .sort("symbol", "ts")
    )
    engine_bars = bars.filter((pl.col("ts") >= month_start - setup.cost_lookback) & (pl.col("ts") <= watermark))
    run = run_backtest(
        engine_bars, weights, setup.costs, initial_value=setup.capital, timeframe=artifact.context.timeframe
    )
    rows = _ledger_rows(setup, run, month_bars, decided, watermark_now)
    if stored.height:
        _check_unchanged(setup, stored, rows)
    new_rows = rows.filter(pl.col("ts") > last_stored) if last_stored is not None else rows
    return ForwardResult(new_rows, watermark, run, weights)


def _check_artifact(setup: PaperSetup, stored: pl.DataFrame) -> None:
    hashes = stored["artifact"].unique().to_list() if stored.height else []
    if hashes and hashes != [setup.artifact_hash]:
        raise LedgerConflict(
            f"paper ledger {setup.strategy} {setup.month}: its rows were decided by artifact {', '.join(hashes)} but "
            f"the live model is now {setup.artifact_hash} (re-trained?); rows are never rewritten — keep the model "
            "that started the month, or trade it under another experiment name"
        )


def _ledger_rows(
    setup: PaperSetup, run: BacktestResult, month_bars: pl.DataFrame, decided: pl.DataFrame, watermark: dt.datetime
) -> pl.DataFrame:
    """One row per symbol × bar of the month so far from the engine run (module docstring: timing of a row)."""
    fills = run.trades.select(
        "symbol",
        "ts",
        pl.col("units").alias("fill_units"),
        pl.col("price").alias("fill_price"),
        pl.col("notional").alias("fill_notional"),
        pl.col("cost").alias("fill_cost"),
    )
    positions = run.positions.select("symbol", "ts", "units", pl.col("value").alias("position_value"), "weight")
    book = run.equity.select("ts", "cash", pl.col("value").alias("equity")).join(run.returns, on="ts")
    zero_fill = [pl.col(c).fill_null(0.0) for c in ("fill_units", "fill_notional", "fill_cost")]
    return (
        month_bars.select("symbol", "ts", "open", "close")
        .join(fills, on=["symbol", "ts"], how="left")
        .join(positions, on=["symbol", "ts"], how="left")
        .join(book, on="ts", how="left")
        .join(decided, on=["symbol", "ts"], how="left")
        .with_columns(
            *zero_fill,
            pl.col("signal").fill_null("{}"),
            experiment=pl.lit(setup.experiment),
            strategy=pl.lit(setup.strategy),
            month=pl.lit(setup.month),
            artifact=pl.lit(setup.artifact_hash),
            watermark=pl.lit(watermark).cast(TS_DTYPE),
        )
        .select(list(LEDGER_SCHEMA))
        .cast(LEDGER_SCHEMA)  # type: ignore[arg-type]
        .sort(KEY)
    )


def _check_unchanged(setup: PaperSetup, stored: pl.DataFrame, recomputed: pl.DataFrame) -> None:
    """Raise LedgerConflict naming the first stored row the recomputation would change (and the column)."""
    both = stored.select("symbol", "ts", *CHECKED_NUMBERS).join(
        recomputed.select("symbol", "ts", *CHECKED_NUMBERS), on=["symbol", "ts"], how="left", suffix="_now"
    )
    for column in CHECKED_NUMBERS:
        was, now = both[column].to_numpy(), both[f"{column}_now"].to_numpy()
        same = np.isclose(now, was, rtol=RTOL, atol=0.0, equal_nan=True) | (was == now)
        if not same.all():
            i = int(np.nonzero(~same)[0][0])
            row = both.row(i, named=True)
            raise LedgerConflict(
                f"paper ledger {setup.strategy} {setup.month}: re-running would change {row['symbol']} bar "
                f"{row['ts']:%Y-%m-%d %H:%M}: {column} {row[column]!r} stored, {row[f'{column}_now']!r} now "
                "(revised bars, other costs or capital?); rows are never rewritten"
            )
