"""Robust z-score feature scaling fitted on a fold's train window only (Qlib `RobustZScoreNorm`, DESIGN §3.5).

    scale_c = MAD_c × 1.4826                    (MAD = median |x − median|; × 1.4826 = σ for normal data)
    z       = clip((x − median_c) / (scale_c + eps), −clip, +clip)

Statistics are per feature column, pooled across symbols (as Qlib pools across instruments). Why pooled and
not per symbol: features are already scale-free (returns, ratios, z-scores, bounded oscillators), pooling
keeps a cross-sectional comparison meaningful, and a symbol that lists late (SOL in 2020) would otherwise
get statistics from a few weeks of train data, or none at all when it lists inside the test window.

Edge cases: nulls and NaNs are ignored when fitting and come out as null; ±inf comes out as ±clip. A column
whose MAD is 0 (more than half its values equal, e.g. a sparse indicator) falls back to its standard
deviation (ddof=0) rather than blowing every other value up to ±clip; a constant column (std 0 as well)
maps every non-null value to 0. A column with no finite train value maps everything to null.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from crypto_assets.folds.split import LABEL_PREFIX

MAD_TO_SIGMA = 1.4826
KEY_COLUMNS = ("symbol", "ts")


@dataclass(frozen=True)
class ColumnStats:
    """Fitted centre and scale of one column; `scale` 0 marks a constant column, None an all-missing one."""

    median: float | None
    scale: float | None
    n: int


@dataclass
class RobustZScore:
    """Fit on the train window (`fit(train)`), then `transform` train and test with the same statistics."""

    clip: float = 3.0
    eps: float = 1e-12
    stats: dict[str, ColumnStats] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.clip > 0:
            raise ValueError(f"clip must be > 0, got {self.clip}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be ≥ 0, got {self.eps}")

    @property
    def columns(self) -> list[str]:
        return list(self.stats)

    @property
    def fitted(self) -> bool:
        return bool(self.stats)

    @staticmethod
    def default_columns(frame: pl.DataFrame) -> list[str]:
        """Numeric columns except the keys and the `label_*` targets (targets are never normalised here)."""
        return [
            name
            for name, dtype in frame.schema.items()
            if name not in KEY_COLUMNS and not name.startswith(LABEL_PREFIX) and dtype.is_numeric()
        ]

    def fit(self, train: pl.DataFrame, columns: Sequence[str] | None = None) -> RobustZScore:
        """Fit median and scale per column on `train` (the fold's purged train rows, nothing later)."""
        names = list(columns) if columns is not None else self.default_columns(train)
        absent = [c for c in names if c not in train.columns]
        if absent:
            raise ValueError(f"RobustZScore.fit: columns {absent} not in the frame")
        stats: dict[str, ColumnStats] = {}
        for name in names:
            values = train.get_column(name).cast(pl.Float64).to_numpy()
            values = values[np.isfinite(values)]  # nulls arrive as NaN from to_numpy; inf carries no scale
            if values.size == 0:
                stats[name] = ColumnStats(median=None, scale=None, n=0)
                continue
            median = float(np.median(values))
            scale = float(np.median(np.abs(values - median))) * MAD_TO_SIGMA
            if scale == 0.0:
                scale = float(np.std(values))  # MAD 0 with spread: a mostly-constant column; 0 if truly constant
            stats[name] = ColumnStats(median=median, scale=scale, n=int(values.size))
        self.stats = stats
        return self

    def _expr(self, name: str, s: ColumnStats) -> pl.Expr:
        x = pl.col(name).cast(pl.Float64).fill_nan(None)
        if s.median is None or s.scale is None:
            return pl.lit(None, dtype=pl.Float64).alias(name)
        if s.scale == 0.0:
            return pl.when(x.is_not_null()).then(pl.lit(0.0)).alias(name)  # constant in train: no information
        z = (x - s.median) / (s.scale + self.eps)
        return z.clip(-self.clip, self.clip).alias(name)

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Scale the fitted columns (Float64); other columns pass through unchanged, order kept."""
        if not self.fitted:
            raise ValueError("RobustZScore.transform before fit (or from_dict)")
        absent = [c for c in self.stats if c not in frame.columns]
        if absent:
            raise ValueError(f"RobustZScore.transform: fitted columns {absent} not in the frame")
        return frame.with_columns([self._expr(name, s) for name, s in self.stats.items()])

    def fit_transform(self, train: pl.DataFrame, columns: Sequence[str] | None = None) -> pl.DataFrame:
        return self.fit(train, columns).transform(train)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters (store next to the fold's model artifacts)."""
        return {
            "kind": "robust_zscore",
            "version": 1,
            "clip": self.clip,
            "eps": self.eps,
            "columns": {n: {"median": s.median, "scale": s.scale, "n": s.n} for n, s in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RobustZScore:
        if data.get("kind") != "robust_zscore":
            raise ValueError(f"not a robust_zscore scaler: kind={data.get('kind')!r}")
        stats: dict[str, ColumnStats] = {}
        for name, s in data["columns"].items():
            median = None if s["median"] is None else float(s["median"])
            scale = None if s["scale"] is None else float(s["scale"])
            if scale is not None and (scale < 0 or math.isnan(scale)):
                raise ValueError(f"robust_zscore column {name!r}: invalid scale {scale}")
            stats[name] = ColumnStats(median=median, scale=scale, n=int(s.get("n", 0)))
        return cls(clip=float(data["clip"]), eps=float(data["eps"]), stats=stats)
