"""Is a Sharpe ratio real? Probabilistic and deflated Sharpe ratios (DESIGN §3.4).

Everything here works on the *per-bar, non-annualised* Sharpe ratio SR̂ = mean(r) / std(r, ddof=1)
of simple bar returns, because the standard error formula below is per observation. Annualising first
(× √P) and then plugging into these formulas would be wrong. A benchmark or a trials' Sharpe variance
quoted annualised must be converted first: SR_bar = SR_annual / √P, Var_bar = Var_annual / P.

Moment conventions (stated because they change the numbers at small n):
- SR̂ uses the sample standard deviation (ddof=1), the same as `compute_kpis`' Sharpe.
- Skewness γ̂₃ = m₃ / m₂^{3/2} and kurtosis γ̂₄ = m₄ / m₂² use population central moments
  m_k = mean((r − r̄)^k) (ddof=0, no small-sample bias correction, like `scipy.stats.skew` /
  `kurtosis(fisher=False)` with their defaults). γ̂₄ is NON-excess kurtosis: 3 for a normal.

The normal CDF / inverse CDF come from `statistics.NormalDist` (no scipy dependency).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Final

import numpy as np
import polars as pl

from crypto_assets.metrics.kpis import as_returns

EULER_MASCHERONI: Final[float] = 0.5772156649015329
_STD_NORMAL: Final[NormalDist] = NormalDist()
NAN: Final[float] = float("nan")


def sharpe_moments(returns: np.ndarray | pl.Series) -> tuple[float, float, float, int]:
    """(SR̂ per bar with ddof=1, skewness γ̂₃, non-excess kurtosis γ̂₄, n), moments with ddof=0.
    NaN moments when n < 2 or the returns are constant."""
    r = as_returns(returns)
    n = int(r.size)
    # Constant returns: exact test, since rounding can leave a ~1e-36 "variance" that explodes SR̂.
    if n < 2 or np.all(r == r[0]):
        return NAN, NAN, NAN, n
    centred = r - r.mean()
    m2 = float(np.mean(centred**2))
    sr = float(r.mean()) / float(np.std(r, ddof=1))
    skew = float(np.mean(centred**3)) / m2**1.5
    kurt = float(np.mean(centred**4)) / m2**2
    return sr, skew, kurt, n


def probabilistic_sharpe(returns: np.ndarray | pl.Series, benchmark_sharpe: float = 0.0) -> float:
    """Probability that the true per-bar Sharpe exceeds `benchmark_sharpe` (per bar, not annualised).

    Bailey, D. H. & López de Prado, M. (2012), "The Sharpe Ratio Efficient Frontier", Journal of Risk
    15(2), 3–44 (the PSR definition):

        PSR(SR*) = Φ( (SR̂ − SR*) · √(n − 1) / √(1 − γ̂₃·SR̂ + (γ̂₄ − 1)/4 · SR̂²) )

    with n bars, γ̂₃ skewness and γ̂₄ non-excess kurtosis (see module docstring for ddof). The square root
    is the non-normal standard error of SR̂ (Mertens 2002). Returns a probability in [0, 1]; NaN for
    fewer than 2 bars, constant returns, or a non-positive variance term (possible only with extreme
    skew at very large SR̂).
    """
    sr, skew, kurt, n = sharpe_moments(returns)
    if math.isnan(sr):
        return NAN
    variance_term = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    if variance_term <= 0.0:
        return NAN
    z = (sr - benchmark_sharpe) * math.sqrt(n - 1) / math.sqrt(variance_term)
    return _STD_NORMAL.cdf(z)


def expected_max_sharpe(n_trials: int, trials_sharpe_variance: float) -> float:
    """Expected maximum of `n_trials` independent per-bar Sharpe estimates whose true value is 0 and
    whose cross-trial variance is `trials_sharpe_variance` (the "False Strategy" theorem):

        E[max SR] ≈ √V · ((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e)))

    γ = Euler–Mascheroni constant; Bailey & López de Prado (2014), the SR₀ of the deflated Sharpe (the
    expected maximum of N standard normals, scaled by the trials' Sharpe standard deviation).
    NaN for n_trials < 2, where Φ⁻¹(0) is undefined (one trial needs no deflation: use PSR).
    """
    if n_trials < 2:
        return NAN
    if trials_sharpe_variance < 0.0 or math.isnan(trials_sharpe_variance):
        raise ValueError(f"trials_sharpe_variance must be ≥ 0, got {trials_sharpe_variance}")
    g = EULER_MASCHERONI
    spread = (1.0 - g) * _STD_NORMAL.inv_cdf(1.0 - 1.0 / n_trials) + g * _STD_NORMAL.inv_cdf(
        1.0 - 1.0 / (n_trials * math.e)
    )
    return math.sqrt(trials_sharpe_variance) * spread


def deflated_sharpe(returns: np.ndarray | pl.Series, n_trials: int, trials_sharpe_variance: float) -> float:
    """PSR of the selected strategy against the Sharpe that the best of `n_trials` skill-less trials
    would reach by luck.

    Bailey, D. H. & López de Prado, M. (2014), "The Deflated Sharpe Ratio: Correcting for Selection
    Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5), 94–107:

        SR₀ = expected_max_sharpe(N, V[{SR̂ₙ}]),    DSR = PSR(SR₀)

    `n_trials` = number of trials actually evaluated: distinct configurations (family, hyper-parameters,
    features, seed, ...) in the experiment's trials registry, never folds (time periods, not trials);
    `trials_sharpe_variance` = variance of those trials' stitched per-bar, non-annualised Sharpes
    (`crypto_assets.evaluation.trials.deflation_inputs`).
    `returns` are the selected strategy's net bar returns. NaN for n_trials < 2 (undefined).
    """
    sr0 = expected_max_sharpe(n_trials, trials_sharpe_variance)
    if math.isnan(sr0):
        return NAN
    return probabilistic_sharpe(returns, benchmark_sharpe=sr0)
