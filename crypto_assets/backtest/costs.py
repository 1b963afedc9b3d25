"""The cost model (DESIGN.md §3.3): `CostModel`, the settings a user writes, and `CostParams`, the typed record
the compiled kernels read. The formula, its defaults and the execution timing are documented in
`crypto_assets.backtest.engine`; per-bar multipliers of the half-spread and of impact live in the market
(`crypto_assets.backtest.market.Market`), since they vary by bar and symbol."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

FUNDING_PERIOD_S = 8 * 3600.0
DEFAULT_CAPITAL = 100_000.0
"""Starting value of a backtest in quote currency when none is given (the config's `experiment.capital`)."""


@dataclass(frozen=True)
class CostModel:
    """Trading and holding costs. Rates are fractions (0.001 = 0.1 % = 10 bp)."""

    taker_fee: float = 0.001
    """Fee rate on traded notional for market orders (Binance spot VIP 0: 0.1 %)."""
    maker_fee: float = 0.001
    """Fee rate when `fee_side == "maker"` (Binance spot VIP 0 charges 0.1 % for makers too)."""
    fee_side: Literal["taker", "maker"] = "taker"
    half_spread: float = 0.0001
    """Half the bid-ask spread, a fraction of price, paid on every fill (× the bar's `spread_mult`, default 1)."""
    vol_k: float = 0.02
    """Slippage per unit of bar volatility σ (≈ drift of the price over a few seconds of latency at 1h)."""
    vol_window: int = 24
    """Bars of close-to-close returns (up to the decision bar) in σ (24 = the config's `24h` at 1h)."""
    adv_window: int = 168
    """Bars of dollar volume (up to the decision bar) in the ADV that impact divides by (168 = `7d` at 1h)."""
    impact_k: float = 0.5
    """Square-root impact coefficient: impact = impact_k × σ × √(|filled notional| / ADV) (× the bar's
    `impact_mult`, default 1)."""
    max_participation: float | None = 0.05
    """Fills are capped at this fraction of the execution bar's dollar volume (volume × open); None = no cap."""
    allow_short: bool = False
    max_leverage: float = 1.0
    """Cap on gross exposure Σ|w| of the targets given at one decision bar (scaled down proportionally)."""
    funding_rate_8h: float = 0.0
    """Funding / borrow rate per 8 hours on short notional and on borrowed long notional (perp-style)."""

    def __post_init__(self) -> None:
        for name in ("taker_fee", "maker_fee", "half_spread", "vol_k", "impact_k", "funding_rate_8h"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"CostModel.{name} must be a finite number >= 0, got {value!r}")
        if self.fee_side not in ("taker", "maker"):
            raise ValueError(f"CostModel.fee_side must be 'taker' or 'maker', got {self.fee_side!r}")
        if not (isinstance(self.vol_window, int) and self.vol_window >= 2):
            raise ValueError(f"CostModel.vol_window must be an int >= 2, got {self.vol_window!r}")
        if not (isinstance(self.adv_window, int) and self.adv_window >= 1):
            raise ValueError(f"CostModel.adv_window must be an int >= 1, got {self.adv_window!r}")
        if self.max_participation is not None and not (0 < self.max_participation < math.inf):
            raise ValueError(f"CostModel.max_participation must be > 0 or None, got {self.max_participation!r}")
        if not (0 < self.max_leverage < math.inf):
            raise ValueError(f"CostModel.max_leverage must be > 0, got {self.max_leverage!r}")

    @property
    def fee(self) -> float:
        """The fee rate that applies (taker or maker)."""
        return self.maker_fee if self.fee_side == "maker" else self.taker_fee

    @property
    def zero_volume_blocks(self) -> bool:
        """Whether an order on a zero-volume execution bar is unfillable (a cap leaves no capacity there; with
        impact modelled a fill where nobody traded would be fictional)."""
        return self.max_participation is not None or self.impact_k > 0

    def kernel_params(self, step_us: int) -> CostParams:
        """This cost model as the kernels take it, on a grid of `step_us` microseconds (funding is per bar)."""
        return CostParams(
            fee=self.fee,
            half_spread=self.half_spread,
            vol_k=self.vol_k,
            impact_k=self.impact_k,
            max_participation=math.inf if self.max_participation is None else self.max_participation,
            zero_volume_blocks=self.zero_volume_blocks,
            funding_per_bar=funding_per_bar(self, step_us),
        )


class CostParams(NamedTuple):
    """A `CostModel` resolved for one timeframe, as the compiled kernels read it (`CostModel.kernel_params`).

    A NamedTuple of scalars: numba passes it by value with named, typed fields, and it is part of the compiled
    signature, so adding a field recompiles rather than reading a stale cached kernel.
    """

    fee: float
    """The fee rate that applies (taker or maker)."""
    half_spread: float
    vol_k: float
    impact_k: float
    max_participation: float
    """Fraction of the execution bar's dollar volume a fill may take; +inf = no cap."""
    zero_volume_blocks: bool
    """An order on a zero-volume execution bar cannot fill (`CostModel.zero_volume_blocks`)."""
    funding_per_bar: float
    """Funding fraction charged at each close: funding_rate_8h × bar length / 8 h."""


def funding_per_bar(costs: CostModel, step_us: int) -> float:
    """Funding fraction charged at each close: funding_rate_8h × bar length / 8 h (pro-rata accrual)."""
    return costs.funding_rate_8h * (step_us / 1e6) / FUNDING_PERIOD_S
