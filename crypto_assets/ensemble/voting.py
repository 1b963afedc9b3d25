"""Soft voting: a weighted average of the members' target weights.

Members order at different times (a forecaster every `rebalance_every` bars, an agent every bar), and a
bar without a member's order means that member holds its last target (the engine's "no row = hold").
So at every bar where any member orders, the ensemble's target for a symbol is

    w_ens[t, s] = Σ_m  v_m · w_m[t, s],   w_m[t, s] = member m's latest order for s at or before t (0 before its first)

with vote weights v_m that must sum to 1. Orders decided at the close of t stay decided at the close of
t: nothing later is looked at.
"""

from __future__ import annotations

import math

import polars as pl

from crypto_assets.baselines import WEIGHT_SCHEMA


def soft_vote(members: dict[str, pl.DataFrame], votes: dict[str, float]) -> pl.DataFrame:
    """`members`: name → long `symbol, ts, weight` (a null weight = no order); `votes`: name → weight.
    Returns long `symbol, ts, weight` orders at every timestamp where any member ordered."""
    if set(members) != set(votes):
        raise ValueError(f"ensemble members {sorted(members)} and vote weights {sorted(votes)} differ")
    total = sum(votes.values())
    if not math.isclose(total, 1.0, rel_tol=0, abs_tol=1e-9):
        raise ValueError(f"ensemble vote weights must sum to 1, got {total:g} ({votes})")
    if any(v < 0 for v in votes.values()):
        raise ValueError(f"ensemble vote weights must be >= 0: {votes}")
    orders = {
        name: frame.filter(pl.col("weight").is_not_null()).select(list(WEIGHT_SCHEMA)).cast(WEIGHT_SCHEMA)  # type: ignore[arg-type]
        for name, frame in members.items()
    }
    grid = pl.concat([frame.select("symbol", "ts") for frame in orders.values()]).unique().sort("symbol", "ts")
    combined = grid.with_columns(weight=pl.lit(0.0))
    for name, frame in orders.items():
        held = grid.join(frame, on=["symbol", "ts"], how="left").with_columns(
            pl.col("weight").forward_fill().over("symbol").fill_null(0.0)
        )
        combined = combined.with_columns(weight=pl.col("weight") + votes[name] * held["weight"])
    return combined.sort("symbol", "ts")
