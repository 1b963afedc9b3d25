"""Probability of backtest overfitting by combinatorially symmetric cross-validation (CSCV).

Bailey, D. H., Borwein, J. M., López de Prado, M. & Zhu, Q. J. (2017), "The probability of backtest
overfitting", Journal of Computational Finance 20(4), 39–69, §2:

1. M is the T × N matrix of per-bar returns of N trials on a common span; its rows are cut into S
   (even) contiguous blocks of equal length (the last T mod S bars are dropped).
2. For each of the C(S, S/2) ways of choosing S/2 blocks as in-sample (IS, the rest out-of-sample, OOS),
   the trial with the best IS Sharpe is selected, and ω = its OOS Sharpe's relative rank among the N
   trials, rank / (N + 1) in (0, 1).
3. λ = ln(ω / (1 − ω)) is the logit; PBO = share of combinations with λ ≤ 0, i.e. where the IS winner
   did no better than the OOS median.

Sharpes here are per bar (mean / std, ddof=1): the ranking is all that matters, so √P is irrelevant.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PBOResult:
    pbo: float
    """Share of IS/OOS splits whose IS-best trial ranked at or below the OOS median (λ ≤ 0)."""
    logits: np.ndarray
    """λ per split, in the order of `itertools.combinations(range(S), S // 2)`."""
    n_trials: int
    n_splits: int


def probability_of_backtest_overfitting(returns: np.ndarray, n_blocks: int = 16) -> PBOResult:
    """CSCV PBO of the columns of `returns` (T bars × N trials, aligned, no NaN), `n_blocks` = S (even, ≥ 2).

    Ties in the OOS ranking count half (mid-rank), so N identical trials give ω = 1/2, λ = 0. Raises
    ValueError for fewer than two trials, an odd S, NaNs, or fewer bars than 2·S (each block needs two
    bars for a standard deviation)."""
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"PBO needs a T × N return matrix with N ≥ 2 trials, got shape {m.shape}")
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"PBO needs an even number of blocks ≥ 2, got {n_blocks}")
    if not np.isfinite(m).all():
        raise ValueError("PBO needs finite returns: align the trials on their common span first")
    t, n = m.shape
    size = t // n_blocks
    if size < 2:
        raise ValueError(f"PBO with {n_blocks} blocks needs ≥ {2 * n_blocks} bars, got {t}")
    blocks = m[: size * n_blocks].reshape(n_blocks, size, n)
    # Per-block sums and sums of squares: any union of blocks' mean / variance follows without the bars.
    sums, squares = blocks.sum(axis=1), (blocks**2).sum(axis=1)
    combos = np.array(list(itertools.combinations(range(n_blocks), n_blocks // 2)))
    is_mask = np.zeros((len(combos), n_blocks))
    is_mask[np.arange(len(combos))[:, None], combos] = 1.0
    half = size * n_blocks // 2

    def sharpes(mask: np.ndarray) -> np.ndarray:
        s, q = mask @ sums, mask @ squares
        mean = s / half
        var = (q - half * mean**2) / (half - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(var > 0, mean / np.sqrt(np.maximum(var, 0.0)), 0.0)

    is_sr, oos_sr = sharpes(is_mask), sharpes(1.0 - is_mask)
    best = np.argmax(is_sr, axis=1)
    chosen = oos_sr[np.arange(len(combos)), best][:, None]
    rank = (oos_sr < chosen).sum(axis=1) + 0.5 * ((oos_sr == chosen).sum(axis=1) - 1) + 1.0
    omega = rank / (n + 1)
    logits = np.log(omega / (1.0 - omega))
    return PBOResult(float(np.mean(logits <= 0.0)), logits, n, len(combos))


def pbo_or_nan(returns: np.ndarray, n_blocks: int = 16) -> float:
    """PBO, or NaN where it is undefined (fewer than two trials or too few bars): for reports."""
    m = np.asarray(returns)
    if m.ndim != 2 or m.shape[1] < 2 or m.shape[0] < 2 * n_blocks:
        return math.nan
    return probability_of_backtest_overfitting(m, n_blocks).pbo
