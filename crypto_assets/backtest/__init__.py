"""Target-weight backtesting (DESIGN.md §3.3): `run_backtest(bars, weights, costs)` → `BacktestResult`.

The cost formula, its defaults, the execution timing and the per-bar cost multipliers are documented in
`crypto_assets.backtest.engine` (the entry point). The rest of the package: `costs` (`CostModel`), `market`
(dense panels of bars, σ, ADV and multipliers), `kernels` (the compiled per-bar functions the RL environment
shares), `results` (`BacktestResult`). `crypto_assets.backtest.reference` is a slow, independent loop used by
the tests to check the engine.
"""

from crypto_assets.backtest.costs import DEFAULT_CAPITAL, CostModel
from crypto_assets.backtest.engine import run_backtest
from crypto_assets.backtest.results import BacktestResult

__all__ = ["DEFAULT_CAPITAL", "BacktestResult", "CostModel", "run_backtest"]
