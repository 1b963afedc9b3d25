"""Paper trading (DESIGN.md §6.5): the live fold's strategies traded forward on closed bars, in an append-only ledger.

    from crypto_assets.paper import PaperLedgerStore, paper_report
    ledger = PaperLedgerStore("storage/<experiment>/warehouse").read()       # every stored row

No Dagster here (`crypto_assets.orchestration.assets.paper` wires it: asset `paper_ledger[month]`, job `paper`,
schedule `paper_trade`). How a step trades (causal decisions bar by bar, fills through the engine, immutability,
catch-up) is in `crypto_assets.paper.ledger`.

Tables (names are stable: the dashboard shows them)
---------------------------------------------------
`paper_ledger` — one row per strategy × symbol × closed bar, stored under
`storage/<experiment>/warehouse/paper_ledger/<month>/<strategy>/<first bar>.parquet` (one file per batch of new
bars; never rewritten, never removed by a re-materialization):

    experiment, strategy (family slug), month (live fold key YYYY-MM-01), symbol, ts (bar open time, UTC)
    artifact        hash of the live model folder that decided (`artifact_digest`)
    watermark       newest closed bar (open time) when the row was written; > ts for rows written by a catch-up
    open, close     the bar's prices as traded (a revised bar is detected, never absorbed)
    fill_units, fill_price, fill_notional, fill_cost
                    the fill at this bar's OPEN of the decision made at the previous close (0 = none; cost =
                    fee + slippage + impact of the engine's cost model, quote currency)
    units, position_value, weight
                    the symbol's position at this bar's close (base units, quote value, fraction of equity)
    cash, equity    the strategy's cash and portfolio value at this bar's close (quote currency; each month
                    starts from `experiment.capital`)
    return          the portfolio's net return of this bar
    signal          the family's own decision columns at this close as JSON (e.g. {"p_up": 0.53, "vol": 0.012})
    target_weight   the decision at this bar's CLOSE, executed at the next open (null = no order)

`paper_report` (`PaperReport`, also the asset's metadata):
    track    strategy, month, ts, equity, return, track_equity (months chained, from 1), rolling_sharpe
             (annualised, over ROLLING_SHARPE), replay_equity, gap ((paper − replay equity) / capital)
    summary  strategy, bars, first_bar, last_bar, watermark, total_return, sharpe (annualised), psr_vs_zero,
             backtest_sharpe, backtest_source (kpis | replay | none), psr_vs_backtest, min_track_record_bars,
             min_track_record_bars_vs_backtest (95 %), max_abs_gap
"""

from crypto_assets.paper.ledger import (
    LEDGER_SCHEMA,
    ForwardResult,
    LedgerConflict,
    PaperLedgerStore,
    PaperSetup,
    artifact_digest,
    decide,
    trade_forward,
)
from crypto_assets.paper.report import ROLLING_SHARPE, PaperReport, min_track_record_length, paper_report, replay_gap

__all__ = [
    "LEDGER_SCHEMA",
    "ROLLING_SHARPE",
    "ForwardResult",
    "LedgerConflict",
    "PaperLedgerStore",
    "PaperReport",
    "PaperSetup",
    "artifact_digest",
    "decide",
    "min_track_record_length",
    "paper_report",
    "replay_gap",
    "trade_forward",
]
