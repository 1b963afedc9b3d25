"""Equity and drawdown chart of the stitched walk-forward run, as PNG bytes for the UI."""

from __future__ import annotations

import io

import polars as pl


def equity_drawdown_png(per_bar: pl.DataFrame, title: str) -> bytes:
    """`per_bar`: `strategy, ts, equity` (one curve per strategy, each starting at 1)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, height_ratios=(2, 1))
    for (strategy,), group in per_bar.sort("ts").group_by("strategy", maintain_order=True):
        ts = group["ts"].to_list()
        equity = group["equity"]
        drawdown = equity / equity.cum_max() - 1.0
        top.plot(ts, equity.to_list(), label=str(strategy), linewidth=1)
        bottom.plot(ts, drawdown.to_list(), linewidth=1)
    top.set_ylabel("equity (start = 1)")
    top.set_yscale("log")
    top.legend(fontsize=8, loc="upper left")
    top.set_title(title, fontsize=10)
    bottom.set_ylabel("drawdown")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()
