"""The model-family protocol (DESIGN.md §6.1) and the artifact every trained family leaves behind.

A family turns one fold's data into a trained model (`fit`) and a model plus inputs into target weights
(`predict`), and says how to save and load its model. `fit_artifact` wraps the result into an `Artifact`: the
model together with everything inference needs (the fold's fitted scaler, the feature list, the parameters, the
experiment's timeframe / sizing / costs / capital, code version, seed, family type), so `Artifact.weights` (and
`crypto_assets.families.replay`) can replay it on bars it never saw. No Dagster here; torch and stable-baselines3
are imported inside the families' methods only.
"""

from __future__ import annotations

import builtins
import datetime as dt
import importlib
import json
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

from crypto_assets.config.schema import FamilyParams
from crypto_assets.folds import FoldWindow, RobustZScore
from crypto_assets.timeframes import duration_bars, periods_per_year, timeframe_delta

if TYPE_CHECKING:
    from crypto_assets.backtest import CostModel
    from crypto_assets.config.schema import ExperimentConfig

ARTIFACT_FORMAT = 1
MANIFEST = "family.json"
MODEL_DIR = "model"
CURVES_DIR = "curves"
TS_DTYPE = pl.Datetime("us", "UTC")
STATE_FORECAST_COLUMNS = ("p_up", "vol")
"""What a hybrid agent observes of a forecaster: P(label_fwd_ret_h > 0) and the forecast per-bar volatility."""


@dataclass(frozen=True)
class Context:
    """The experiment settings a family trains and decides under; stored in every artifact (JSON)."""

    timeframe: str
    label_horizon: int
    """Bars ahead of the training labels `label_fwd_ret_{h}` / `label_dir_{h}`."""
    purge_bars: int
    """Bars dropped before each decision window from the inputs' history, as the fold dropped them from train."""
    capital: float
    """Starting value (quote currency) of the environment an agent learns in."""
    costs: dict[str, Any]
    """`CostModel` fields, windows in bars of `timeframe`."""
    target_vol_annual: float
    """Forecast sizing: a sure forecast sizes a position to this annualised volatility."""
    rebalance_every: int
    """Forecast sizing: bars between orders (the config's null already resolved to the label horizon)."""

    @classmethod
    def from_experiment(cls, experiment: ExperimentConfig) -> Context:
        wf, sizing = experiment.walk_forward, experiment.models.sizing
        costs = experiment.costs.model_dump()
        for key in ("vol_window", "adv_window"):
            costs[key] = duration_bars(costs[key], experiment.data.timeframe, f"costs.{key}")
        return cls(
            timeframe=experiment.data.timeframe,
            label_horizon=wf.label_horizon,
            purge_bars=wf.purge,
            capital=experiment.experiment.capital,
            costs=costs,
            target_vol_annual=sizing.target_vol_annual,
            rebalance_every=sizing.rebalance_every or wf.label_horizon,
        )

    @property
    def periods_per_year(self) -> int:
        return periods_per_year(self.timeframe)

    def forecast_weights(self, forecasts: pl.DataFrame, rebalance_every: int | None = None) -> pl.DataFrame:
        """The forecasters' sizing rule (`forecast_to_weights`) under these settings: `symbol, ts, p_up, vol` →
        `symbol, ts, weight` every `rebalance_every` bars (default: the experiment's)."""
        from crypto_assets.models import forecast_to_weights

        return forecast_to_weights(
            forecasts,
            target_vol_annual=self.target_vol_annual,
            periods_per_year=self.periods_per_year,
            max_leverage=float(self.costs["max_leverage"]),
            allow_short=bool(self.costs["allow_short"]),
            rebalance_every=self.rebalance_every if rebalance_every is None else rebalance_every,
        )

    def cost_model(self) -> CostModel:
        from crypto_assets.backtest import CostModel  # numba-compiled: imported when needed

        return CostModel(**self.costs)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Context:
        return cls(**data)


@dataclass(frozen=True)
class FoldData:
    """What a family sees of one fold (or of any bars being replayed).

    `frame`: long `symbol, ts, <features>, [label_*], split`, features robust-z-scored with the fold's train-only
    scaler; rows with `split == "train"` are the purged train window (fit on them; also the history the first
    decisions look back into), rows with `split == "test"` are the decision window. `bars`: long OHLCV covering
    both, from the first train bar on (an agent's environment executes on them)."""

    key: str
    frame: pl.DataFrame
    bars: pl.DataFrame
    context: Context
    state_models: dict[str, Artifact] = field(default_factory=dict)
    """The fold's trained forecasters (config type → artifact) a hybrid agent observes (`state_forecasters`)."""
    final_decision: bool = False
    """Decide at the close of the decision window's last bar too, although its fill (the next open) lies past the
    window: the paper ledger's decision on the newest closed bar. Off in folds: the stitched walk-forward run would
    otherwise fill a fold's last decision at the next fold's first open. The forecasters and baselines decide at
    every bar anyway; the agents' replay ends without stepping into the last bar (crypto_assets.agents.env)."""


class Family(ABC):
    """One model family. Subclass, set the class attributes, implement the methods, and `register()` an
    instance (crypto_assets.families.registry); the config then accepts `{type: <type>, ...}` entries."""

    type: ClassVar[str]
    """Config `type`; its lower case is the slug of every name after the config (`model_<slug>`, KPI `<slug>`)."""
    params_class: ClassVar[builtins.type[FamilyParams]]
    """The family's parameters: exactly its config entry (a pydantic model with a `type` field)."""
    seed_label: ClassVar[str | None] = None
    """Label of `derive_seed(experiment seed, label, fold)`; None = the fold asset's name `model_<slug>`."""
    uses_gpu: ClassVar[bool] = True
    """Whether training runs in the GPU pool (limits how many train at once)."""
    description: ClassVar[str] = ""
    forecast_columns: ClassVar[tuple[str, ...]] = ()
    """A forecaster family's forecast columns in `predict`, on every bar of the context's rebalancing grid (with
    `rebalance_every` 1: every decision bar), each from the data up to its bar only. A family declaring
    `STATE_FORECAST_COLUMNS` can be observed by hybrid agents (`state_forecasters`, crypto_assets.models.cross_fit)."""

    @property
    def slug(self) -> str:
        return self.type.lower()

    def random_label(self) -> str:
        return self.seed_label or f"model_{self.slug}"

    @abstractmethod
    def fit(self, data: FoldData, params: FamilyParams, seed: int, device: str) -> Any:
        """Train on the rows with `split == "train"` only (and their bars); return the family's model."""

    def fit_warm(self, data: FoldData, params: FamilyParams, seed: int, device: str, init: Any) -> Any:
        """Like `fit`, but starting from `init`, a model this family trained before (the previous fold's, for
        `retrain: fine_tune`), on `params.fine_tune_fraction` of the full budget. Families that can warm-start
        override it; the config refuses `fine_tune` for the others (`can_warm_start`)."""
        raise NotImplementedError(f"{self.type} cannot warm-start")

    @property
    def can_warm_start(self) -> bool:
        """Whether the family implements `fit_warm` (and so accepts `retrain: fine_tune`)."""
        return type(self).fit_warm is not Family.fit_warm

    @abstractmethod
    def predict(self, model: Any, data: FoldData) -> pl.DataFrame:
        """Decisions over the `test` rows: long `symbol, ts, weight` (decided at the close of ts; a null weight is
        no order) plus any family columns (e.g. `p_up`, `vol`), sorted by (symbol, ts)."""

    @abstractmethod
    def save_model(self, model: Any, directory: Path) -> None: ...

    @abstractmethod
    def load_model(self, directory: Path, device: str) -> Any: ...

    @property
    def is_state_forecaster(self) -> bool:
        """Whether hybrid agents can observe this family: its `forecast_columns` hold `STATE_FORECAST_COLUMNS`."""
        return set(STATE_FORECAST_COLUMNS) <= set(self.forecast_columns)

    def forecast_vol_scale(self, model: Any, data: FoldData) -> float:
        """The per-bar volatility a forecaster's `vol` is measured against as a hybrid agent's feature: by default
        the train rows' realised √(mean(r_h²) / h) of the forward log returns (labels of the train split only);
        a family whose model has its own train-window scale returns that."""
        from crypto_assets.folds.split import label_columns

        horizon = data.context.label_horizon
        ret_col, _ = label_columns(horizon)
        returns = data.frame.filter(pl.col("split") == "train")[ret_col].cast(pl.Float64).fill_nan(None).drop_nulls()
        return math.sqrt(float(returns.pow(2).sum()) / (returns.len() * horizon)) if returns.len() else math.nan

    def metrics(self, model: Any, data: FoldData) -> dict[str, float]:
        """Scores the family reports (out of sample where `data` has labels), flat name → number."""
        return {}

    def curves(self, model: Any) -> dict[str, pl.DataFrame]:
        """Training curves as tables (loss per epoch, reward per rollout), name → frame."""
        return {}

    def training_info(self, model: Any) -> dict[str, Any]:
        """device, precision, throughput, train_seconds and the like, for the asset's metadata."""
        return {}


def load_family(family_type: str, family_module: str = "") -> Family:
    """The family registered as `family_type`, importing `family_module` first when it is not registered yet (a
    plug-in named by a saved artifact)."""
    from crypto_assets.families.registry import get_family, registered_types

    if family_type not in registered_types() and family_module:
        importlib.import_module(family_module)
    return get_family(family_type)


def _iso(value: dt.datetime) -> str:
    return value.isoformat()


def _when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


@dataclass
class Artifact:
    """A trained family on one fold (or live month) with everything inference needs (DESIGN.md §6.1)."""

    family_type: str
    params: FamilyParams
    model: Any
    context: Context
    scaler: RobustZScore
    feature_columns: list[str]
    """The raw feature columns (as `compute_inputs` gives them) the fold's frame held, in its order."""
    window: FoldWindow
    """The fold's calendar: inputs from `train_start`, decisions in [`test_start`, `test_end`)."""
    seed: int
    code_version: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    family_module: str = ""
    """Module that registers the family (imported on load when the type is not registered yet: plug-ins)."""

    @property
    def family(self) -> Family:
        from crypto_assets.families.registry import get_family

        return get_family(self.family_type)

    @property
    def slug(self) -> str:
        return self.family_type.lower()

    # ---------------------------------------------------------------------------------------- inference

    def inputs(
        self,
        bars: pl.DataFrame,
        features: pl.DataFrame | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> FoldData:
        """The family's inputs for decisions in [start, end) (default: this artifact's own decision window).

        Features are `compute_inputs(bars)` (one pass over every bar given, as a single-run ingest computes them)
        unless given; they are scaled with the fold's train-only scaler. Rows before `start − purge_bars` bars
        are the history (`split = "train"`), from the fold's first input bar when the bars reach back that far;
        the `purge_bars` just before `start` are left out, exactly as the fold's purge left them out of train."""
        start = start or self.window.test_start
        end = end or self.window.test_end
        raw = compute_inputs(bars, self.context.timeframe) if features is None else features
        missing = [c for c in self.feature_columns if c not in raw.columns]
        if missing:
            raise ValueError(f"{self.family_type} artifact needs feature columns {missing}")
        raw = raw.select("symbol", pl.col("ts").cast(TS_DTYPE), *self.feature_columns)
        first = max(self.window.train_start, raw["ts"].min())  # type: ignore[type-var]
        ts = pl.col("ts")
        gap_from = start - timeframe_delta(self.context.timeframe) * self.context.purge_bars
        history = raw.filter((ts >= first) & (ts < gap_from)).sort("symbol", "ts")
        decide = raw.filter((ts >= start) & (ts < end)).sort("symbol", "ts")
        if decide.height == 0:
            raise ValueError(f"no bars in the decision window [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})")
        frame = pl.concat(
            [
                self.scaler.transform(history).with_columns(split=pl.lit("train")),
                self.scaler.transform(decide).with_columns(split=pl.lit("test")),
            ]
        )
        bars_ts = bars["ts"].cast(TS_DTYPE)
        bars_from = max(self.window.train_start, bars_ts.min())  # type: ignore[type-var]
        window_bars = bars.with_columns(ts.cast(TS_DTYPE)).filter((ts >= bars_from) & (ts < end))
        return FoldData(key=self.window.key, frame=frame, bars=window_bars, context=self.context)

    def weights(
        self,
        bars: pl.DataFrame,
        features: pl.DataFrame | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> pl.DataFrame:
        """Target weights (`symbol, ts, weight`, orders only) decided in [start, end) on `bars` (see `inputs`)."""
        out = self.family.predict(self.model, self.inputs(bars, features, start, end))
        return order_rows(out)

    # -------------------------------------------------------------------------------------- persistence

    def manifest(self) -> dict[str, Any]:
        w = self.window
        return {
            "format": ARTIFACT_FORMAT,
            "family_type": self.family_type,
            "family_module": self.family_module,
            "params": self.params.model_dump(mode="json"),
            "context": self.context.to_dict(),
            "scaler": self.scaler.to_dict(),
            "feature_columns": list(self.feature_columns),
            "window": {
                "key": w.key,
                "train_start": _iso(w.train_start),
                "train_end": _iso(w.train_end),
                "test_start": _iso(w.test_start),
                "test_end": _iso(w.test_end),
            },
            "seed": self.seed,
            "code_version": self.code_version,
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()},
        }

    def save(self, directory: str | Path) -> Path:
        """`family.json` (everything but the model), `model/` (the family's own files), `curves/*.parquet`."""
        out = Path(directory)
        (out / MODEL_DIR).mkdir(parents=True, exist_ok=True)
        self.family.save_model(self.model, out / MODEL_DIR)
        curves = self.family.curves(self.model)
        if curves:
            (out / CURVES_DIR).mkdir(exist_ok=True)
            for name, frame in curves.items():
                frame.write_parquet(out / CURVES_DIR / f"{name}.parquet")
        tmp = out / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(self.manifest(), indent=2, sort_keys=True))
        os.replace(tmp, out / MANIFEST)
        return out

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> Artifact:
        """Rebuild an artifact from its folder alone (the family's module is imported if it is a plug-in)."""
        src = Path(directory)
        meta = json.loads((src / MANIFEST).read_text())
        if meta.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{src}: unsupported artifact format {meta.get('format')!r}")
        family_type = meta["family_type"]
        family = load_family(family_type, meta.get("family_module", ""))
        w = meta["window"]
        return cls(
            family_type=family_type,
            params=family.params_class.model_validate(meta["params"]),
            model=family.load_model(src / MODEL_DIR, device),
            context=Context.from_dict(meta["context"]),
            scaler=RobustZScore.from_dict(meta["scaler"]),
            feature_columns=list(meta["feature_columns"]),
            window=FoldWindow(
                key=w["key"],
                train_start=_when(w["train_start"]),
                train_end=_when(w["train_end"]),
                test_start=_when(w["test_start"]),
                test_end=_when(w["test_end"]),
            ),
            seed=int(meta["seed"]),
            code_version=meta.get("code_version", ""),
            metrics={k: (math.nan if v is None else float(v)) for k, v in meta.get("metrics", {}).items()},
            family_module=meta.get("family_module", ""),
        )


SEED_DIR = "seed_{index}"


@dataclass
class SeedArtifacts:
    """The extra seeds of one family on one fold (`n_seeds` > 1): seed index → artifact, indices from 1 (index 0 is
    the family's own artifact). Saved as one artifact folder per seed, `seed_<i>/`, each replayable on its own
    (`crypto_assets.families.replay(<folder>/seed_<i>, bars)`)."""

    artifacts: dict[int, Artifact]

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        for index, artifact in sorted(self.artifacts.items()):
            artifact.save(out / SEED_DIR.format(index=index))
        return out

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> SeedArtifacts:
        src = Path(directory)
        found = sorted(int(p.name.removeprefix("seed_")) for p in src.glob("seed_*") if (p / MANIFEST).exists())
        return cls({i: Artifact.load(src / SEED_DIR.format(index=i), device) for i in found})


def feature_columns_of(frame: pl.DataFrame) -> list[str]:
    """The fold frame's input columns: everything but keys, `split` and the look-ahead `label_*` targets
    (`crypto_assets.folds.dataset.input_columns`, the rule every reader of a fold frame shares)."""
    from crypto_assets.folds.dataset import input_columns

    return input_columns(frame)


def compute_inputs(bars: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """The `features` asset's rows for every bar given, in one pass: causal features and the causal regime codes
    (crypto_assets.features.compute_features + crypto_assets.regimes.causal.causal_regimes)."""
    from crypto_assets.features import compute_features
    from crypto_assets.regimes.causal import causal_regimes

    feats = compute_features(bars, timeframe)
    regimes = causal_regimes(bars, timeframe).select("symbol", "ts", "vol_regime_code", "trend_regime_code")
    return feats.join(regimes, on=["symbol", "ts"], how="left")


def fit_artifact(
    params: FamilyParams,
    data: FoldData,
    scaler: RobustZScore,
    window: FoldWindow,
    *,
    seed: int,
    device: str = "cpu",
    code_version: str = "",
    init: Artifact | None = None,
) -> tuple[Artifact, pl.DataFrame]:
    """Train `params.type` on `data` and return (artifact, decisions over the test rows with the family's columns).

    `init`: an artifact of the same family to warm-start from (`Family.fit_warm`; the previous fold's, for
    `retrain: fine_tune`); None trains from scratch. The decisions are `family.predict` on the very inputs the
    artifact replays from, so replaying the artifact on the fold's own bars gives them again."""
    from crypto_assets.families.registry import get_family

    family = get_family(params.type)
    if init is None:
        model = family.fit(data, params, seed, device)
    else:
        if init.family_type != params.type:
            raise ValueError(f"cannot warm-start {params.type} from a {init.family_type} artifact")
        model = family.fit_warm(data, params, seed, device, init.model)
    decisions = family.predict(model, data)
    artifact = Artifact(
        family_type=params.type,
        params=params,
        model=model,
        context=data.context,
        scaler=scaler,
        feature_columns=feature_columns_of(data.frame),
        window=window,
        seed=seed,
        code_version=code_version,
        metrics=family.metrics(model, data),
        family_module=type(family).__module__,
    )
    return artifact, decisions


def order_rows(weights: pl.DataFrame) -> pl.DataFrame:
    """Only the rows that are orders (`symbol, ts, weight`; the engine's rule), sorted so a replay compares equal."""
    from crypto_assets.evaluation.runs import order_rows as engine_orders

    return engine_orders(weights).sort("symbol", "ts")


def build_fold(
    features: pl.DataFrame, bars: pl.DataFrame, window: FoldWindow, purge_bars: int, label_horizon: int, timeframe: str
) -> tuple[pl.DataFrame, RobustZScore]:
    """One fold's rows as `fold_dataset` holds them, and the scaler that made them: labels over the whole window,
    the purged train / test split, robust z-scores fitted on the train rows (regime codes stay as they are).

    Used for the live fold, whose window ends at the month being traded, and by the fold assets to keep the
    scaler that `fold_dataset` fitted (it stores only the scaled rows)."""
    from crypto_assets.folds.dataset import build_fold_dataset  # the one implementation `fold_dataset` uses too

    fold = build_fold_dataset(
        features, bars, window, purge_bars=purge_bars, label_horizon=label_horizon, timeframe=timeframe
    )
    return fold.frame, fold.scaler
