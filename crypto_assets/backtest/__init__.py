"""Target-weight backtesting (DESIGN.md §3.3): `run_backtest(bars, weights, costs)` → `BacktestResult`.

The cost formula, its defaults and the execution timing are documented in `crypto_assets.backtest.engine`.
`crypto_assets.backtest.reference` is a slow, independent loop used by the tests to check the engine.
"""

from crypto_assets.backtest.engine import DEFAULT_CAPITAL, BacktestResult, CostModel, run_backtest

__all__ = ["DEFAULT_CAPITAL", "BacktestResult", "CostModel", "run_backtest"]
