"""`Meta_Learner`: a learned ensemble of other families' out-of-sample target weights (crypto_assets.ensemble.meta).

A stacked family (`MetaLearnerParams.stacked`): it is not trained on fold data like the others but, for fold k, on
its members' predictions of the earlier folds' test windows (labels ending before fold k's test window), so it
has its own fold assets (`crypto_assets.orchestration.assets.meta_learner`). Its artifact (`MetaArtifact`) holds
the fitted parameters and replays from the members' predictions and the bars (`MetaArtifact.weights`). The
protocol's `fit` / `predict` take a `FoldData` whose frame is `ensemble.meta.stack_frame`'s.

    models:
      families:
        - {type: Meta_Learner, members: [LSTM_Attn, CNN_LSTM, PPO_Agent], learner: mlp, hidden: 8,
           min_history_folds: 2}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import polars as pl
from pydantic import Field, model_validator

from crypto_assets.config.schema import FamilyParams
from crypto_assets.ensemble.meta import MetaModel, equal_votes, fit_meta, predict_meta, stack_frame
from crypto_assets.families.base import Context, Family, FoldData, order_rows
from crypto_assets.families.registry import register
from crypto_assets.folds import FoldWindow, add_months
from crypto_assets.folds.windows import parse_key, utc
from crypto_assets.timeframes import duration_bars

MODEL_FILE = "meta.json"
MANIFEST = "meta_learner.json"
ARTIFACT_FORMAT = 1


class MetaLearnerParams(FamilyParams):
    """A `models.families` entry `{type: Meta_Learner, members: [...], ...}`: which families it weights and how it
    learns. Its members must be trained by the experiment (listed in `families` or ensemble members)."""

    stacked: ClassVar[bool] = True
    type: Literal["Meta_Learner"] = "Meta_Learner"
    members: Annotated[list[str], Field(min_length=2)]
    """Member family types (`LSTM_Attn`, `PPO_Agent`, ...): their target weights are the learner's inputs."""
    learner: Literal["mlp", "logistic"] = "mlp"
    """`mlp`: one tanh hidden layer (torch, seeded, full-batch Adam). `logistic`: L2 logistic regression
    (scikit-learn lbfgs), the simpler documented fallback; both predict P(forward return > 0)."""
    hidden: Annotated[int, Field(ge=1, le=256)] = 8
    epochs: Annotated[int, Field(ge=1, le=10_000)] = 200
    lr: Annotated[float, Field(gt=0, le=1)] = 0.01
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 1e-3
    """The MLP's L2 penalty (Adam weight decay)."""
    l2: Annotated[float, Field(gt=0, le=1e6)] = 1.0
    """The logistic regression's L2 strength (scikit-learn C = 1 / l2)."""
    min_history_folds: Annotated[int, Field(ge=1, le=120)] = 2
    """Earlier folds with labelled rows needed before the learner replaces the soft vote."""
    history_folds: Annotated[int, Field(ge=1, le=120)] = 12
    """Earlier folds whose test windows a fold learns from (a rolling window; the fold assets read this many)."""
    votes: dict[str, Annotated[float, Field(ge=0, le=1)]] | None = None
    """Soft-vote weights (member type → weight, summing to 1) while the history is too short; null = equal."""
    vol_window: str = "7d"
    """Trailing window of the per-bar σ of log returns that sizes the learned forecast (a duration)."""

    @property
    def member_types(self) -> list[str]:
        return list(self.members)

    @property
    def member_slugs(self) -> list[str]:
        return [m.lower() for m in self.members]

    def fallback_votes(self) -> dict[str, float]:
        """Soft-vote weights by member slug."""
        if self.votes is None:
            return equal_votes(self.member_slugs)
        return {m.lower(): self.votes[m] for m in self.members}

    @model_validator(mode="after")
    def _consistent(self) -> MetaLearnerParams:
        from crypto_assets.families.registry import registered_types  # lazy: the registry imports this module

        if len(set(self.members)) != len(self.members):
            raise ValueError(f"members lists a type twice: {self.members}")
        types = [t for t in registered_types() if t != self.type]
        unknown = [m for m in self.members if m not in types]
        if unknown:
            raise ValueError(f"members: unknown model families {unknown}; allowed: {', '.join(types)}")
        if self.n_seeds != 1:
            raise ValueError("n_seeds: the meta-learner trains one seed per fold (its members may train several)")
        if self.min_history_folds > self.history_folds:
            raise ValueError(
                f"min_history_folds ({self.min_history_folds}) must be <= history_folds ({self.history_folds})"
            )
        if self.votes is not None:
            if set(self.votes) != set(self.members):
                raise ValueError(f"votes: keys {sorted(self.votes)} must be the members {sorted(self.members)}")
            if abs(sum(self.votes.values()) - 1.0) > 1e-9:
                raise ValueError(f"votes: weights must sum to 1, got {sum(self.votes.values()):g}")
        duration_bars(self.vol_window, "1m", "vol_window")  # a valid duration (bars are counted per timeframe)
        return self


class MetaLearnerFamily(Family):
    type = "Meta_Learner"
    params_class = MetaLearnerParams
    uses_gpu = False
    description = "Learned ensemble: an MLP (or logistic regression) on the members' out-of-sample target weights."

    def fit(self, data: FoldData, params: Any, seed: int, device: str) -> MetaModel:
        return fit_meta(
            data.frame,
            params.member_slugs,
            label_horizon=data.context.label_horizon,
            learner=params.learner,
            votes=params.fallback_votes(),
            min_history_folds=params.min_history_folds,
            seed=seed,
            hidden=params.hidden,
            epochs=params.epochs,
            lr=params.lr,
            weight_decay=params.weight_decay,
            l2=params.l2,
        )

    def predict(self, model: MetaModel, data: FoldData) -> pl.DataFrame:
        ctx = data.context
        return predict_meta(
            model,
            data.frame,
            target_vol_annual=ctx.target_vol_annual,
            periods_per_year=ctx.periods_per_year,
            max_leverage=float(ctx.costs["max_leverage"]),
            allow_short=bool(ctx.costs["allow_short"]),
            rebalance_every=ctx.rebalance_every,
        )

    def metrics(self, model: MetaModel, data: FoldData) -> dict[str, float]:
        out = {"learned": float(model.learned), "history_folds": float(len(model.history_folds))}
        out["train_rows"] = float(model.train_rows)
        if model.loss_curve:
            out["train_log_loss"] = model.loss_curve[-1]
        return out

    def curves(self, model: MetaModel) -> dict[str, pl.DataFrame]:
        if not model.loss_curve:
            return {}
        return {"loss": pl.DataFrame({"epoch": range(1, len(model.loss_curve) + 1), "train_loss": model.loss_curve})}

    def training_info(self, model: MetaModel) -> dict[str, Any]:
        return {"device": "cpu", "precision": "fp32" if model.kind == "mlp" else "fp64", "kind": model.kind}

    def save_model(self, model: MetaModel, directory: Path) -> None:
        (directory / MODEL_FILE).write_text(json.dumps(model.to_dict(), indent=1))

    def load_model(self, directory: Path, device: str) -> MetaModel:
        return MetaModel.from_dict(json.loads((directory / MODEL_FILE).read_text()))


register(MetaLearnerFamily())


@dataclass
class MetaArtifact:
    """One fold's fitted meta-learner with everything its replay needs: the parameters (members, learner), the
    experiment's context (label horizon, sizing, costs), the fold's window and test length, seed, code version."""

    params: MetaLearnerParams
    model: MetaModel
    context: Context
    window: FoldWindow
    """Train rows come from [`train_start`, `train_end` = `test_start`); decisions in [`test_start`, `test_end`)."""
    test_months: int
    seed: int
    code_version: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def family(self) -> MetaLearnerFamily:
        return MetaLearnerFamily()

    def inputs(self, members: Mapping[str, pl.DataFrame], bars: pl.DataFrame) -> FoldData:
        """The stacked rows of this fold from the members' predictions (slug → `symbol, ts, weight, fold`) and bars."""
        frame = stack_frame(
            members,
            bars,
            self.window.key,
            test_months=self.test_months,
            label_horizon=self.context.label_horizon,
            timeframe=self.context.timeframe,
            vol_bars=duration_bars(self.params.vol_window, self.context.timeframe, "vol_window"),
        )
        return FoldData(key=self.window.key, frame=frame, bars=bars, context=self.context)

    def weights(self, members: Mapping[str, pl.DataFrame], bars: pl.DataFrame) -> pl.DataFrame:
        """Replay: the fold's target weights (`symbol, ts, weight`, orders only) from the stored parameters."""
        return order_rows(self.family.predict(self.model, self.inputs(members, bars)))

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.family.save_model(self.model, out)
        w = self.window
        manifest = {
            "format": ARTIFACT_FORMAT,
            "params": self.params.model_dump(mode="json"),
            "context": self.context.to_dict(),
            "window": {k: getattr(w, k) if k == "key" else getattr(w, k).isoformat() for k in w.__dataclass_fields__},
            "test_months": self.test_months,
            "seed": self.seed,
            "code_version": self.code_version,
            "metrics": self.metrics,
        }
        tmp = out / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        os.replace(tmp, out / MANIFEST)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> MetaArtifact:
        import datetime as dt

        src = Path(directory)
        meta = json.loads((src / MANIFEST).read_text())
        if meta.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{src}: unsupported meta-learner artifact format {meta.get('format')!r}")
        w = meta["window"]
        return cls(
            params=MetaLearnerParams.model_validate(meta["params"]),
            model=MetaLearnerFamily().load_model(src, "cpu"),
            context=Context.from_dict(meta["context"]),
            window=FoldWindow(key=w.pop("key"), **{k: dt.datetime.fromisoformat(v) for k, v in w.items()}),
            test_months=int(meta["test_months"]),
            seed=int(meta["seed"]),
            code_version=meta["code_version"],
            metrics={k: float(v) for k, v in meta["metrics"].items()},
        )


def meta_window(key: str, *, test_months: int, step_months: int, history_folds: int) -> FoldWindow:
    """Fold `key`'s meta-learner calendar: train rows from the test windows of the `history_folds` folds before it
    ([key − history_folds · step_months, key)), decisions over its own test window."""
    first = parse_key(key)
    return FoldWindow(
        key=key,
        train_start=utc(add_months(first, -history_folds * step_months)),
        train_end=utc(first),
        test_start=utc(first),
        test_end=utc(add_months(first, test_months)),
    )


def fit_meta_artifact(
    params: MetaLearnerParams,
    members: Mapping[str, pl.DataFrame],
    bars: pl.DataFrame,
    window: FoldWindow,
    context: Context,
    *,
    test_months: int,
    seed: int,
    code_version: str = "",
) -> tuple[MetaArtifact, pl.DataFrame, pl.DataFrame]:
    """Fit fold `window.key`'s meta-learner: (artifact, decisions over its test window with `p_up`, `vol`,
    `weight`, the stacked rows it fitted on and decided from). `members`: member slug → its predictions of the
    folds up to this one (later folds are ignored)."""
    missing = [m for m in params.member_slugs if m not in members]
    if missing:
        raise ValueError(f"Meta_Learner: no predictions of members {missing}")
    artifact = MetaArtifact(
        params=params,
        model=MetaModel(kind="soft_vote", members=[], votes={}, history_folds=[]),
        context=context,
        window=window,
        test_months=test_months,
        seed=seed,
        code_version=code_version,
    )
    data = artifact.inputs({m: members[m] for m in params.member_slugs}, bars)
    family = artifact.family
    artifact.model = family.fit(data, params, seed, "cpu")
    artifact.metrics = family.metrics(artifact.model, data)
    return artifact, family.predict(artifact.model, data), data.frame
