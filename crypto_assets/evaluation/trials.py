"""The trials registry (DESIGN §3.4): every distinct configuration an experiment ever evaluated.

A trial is a configuration, not a fold. The deflated Sharpe (Bailey & López de Prado 2014) deflates by
the number of configurations tried and the spread of their Sharpes; counting only the strategies of the
current run (or its folds, which are time periods) understates N as soon as a search spans several runs.
So the registry is append-only across runs: one Parquet file per trial id under
`storage/<experiment>/warehouse/trial_registry/`, written by the evaluator only, never through the
warehouse's partition-replacing IO manager, so a re-materialization never removes a trial.

- Trial id = `config.fingerprint` of what defines the strategy (`trial_definition`): its kind and name,
  its own settings (a family's `models.families` entry, a baseline's settings, an ensemble's members and
  weights), the feature columns, the seed, the `walk_forward` and `costs` sections, and the experiment's
  data-definition fingerprint. Not the whole config hash (an unrelated model's change would renumber
  every trial) and not a hash of the bars (a new bar would).
- First wins: re-running a configuration whose file exists keeps the file as it is (results are not
  refreshed), so N never grows by re-running and a trial's row never changes under a reader.
- Each file is written under a hidden temporary name and `os.replace`d into place, so a reader listing
  `*.parquet` sees whole files only.
- `pruned` trials (a sweep stopped them early) count in N but not in the variance of Sharpes or in PBO.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from crypto_assets.config import fingerprint
from crypto_assets.metrics import pbo_or_nan, sharpe_ratio

if TYPE_CHECKING:
    from crypto_assets.config import ExperimentConfig

REGISTRY_DIR = "trial_registry"
"""The registry's directory under the experiment's warehouse directory."""
SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "trial_id": pl.String,
    "experiment": pl.String,
    "strategy": pl.String,
    "kind": pl.String,
    "definition": pl.String,
    "pruned": pl.Boolean,
    "sharpe_per_bar": pl.Float64,
    "n_bars": pl.Int64,
    "start": pl.Datetime("us", "UTC"),
    "end": pl.Datetime("us", "UTC"),
    "recorded_at": pl.Datetime("us", "UTC"),
    "ts": pl.List(pl.Datetime("us", "UTC")),
    "returns": pl.List(pl.Float64),
}


def trial_definition(
    *,
    kind: str,
    name: str,
    settings: Mapping[str, object],
    features: Sequence[str],
    seed: int,
    walk_forward: Mapping[str, object],
    costs: Mapping[str, object],
    data_fingerprint: str,
) -> dict[str, object]:
    """What defines a strategy, as a JSON-ready dict: `kind` (`family`, `baseline`, `ensemble`), `name`, its
    `settings` (hyper-parameters / baseline settings / members and weights), the feature columns (sorted:
    their order does not change a model's inputs as a set), the seed, the walk-forward and cost sections
    and the data-definition fingerprint (`storage.fingerprint.data_fingerprint(...).digest()`)."""
    return {
        "kind": kind,
        "name": name,
        "settings": dict(settings),
        "features": sorted(features),
        "seed": seed,
        "walk_forward": dict(walk_forward),
        "costs": dict(costs),
        "data": data_fingerprint,
    }


def trial_id(definition: Mapping[str, object]) -> str:
    """The stable id of a trial definition (`config.fingerprint`: 16 hex digits of a SHA-256)."""
    return fingerprint(dict(definition))


@dataclass(frozen=True)
class Trial:
    """One configuration's stitched out-of-sample result: its per-bar net returns on the stitched span."""

    strategy: str
    definition: Mapping[str, object]
    ts: pl.Series
    returns: np.ndarray
    pruned: bool = False

    @property
    def id(self) -> str:
        return trial_id(self.definition)


class TrialRegistry:
    """The append-only trials registry of one experiment (see the module docstring)."""

    def __init__(self, warehouse_root: str | Path, experiment: str) -> None:
        self.directory = Path(warehouse_root) / REGISTRY_DIR
        self.experiment = experiment

    def path(self, trial: str) -> Path:
        return self.directory / f"{trial}.parquet"

    def record(self, trials: Sequence[Trial]) -> list[str]:
        """Add the trials whose id is new; return the ids added (first wins: an existing file is kept)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        added: list[str] = []
        now = dt.datetime.now(dt.UTC)
        for trial in trials:
            target = self.path(trial.id)
            if target.exists() or trial.id in added:
                continue
            r = np.asarray(trial.returns, dtype=np.float64)
            ts = trial.ts.cast(pl.Datetime("us", "UTC"))
            if len(ts) != r.size or r.size == 0:
                raise ValueError(f"trial {trial.strategy} ({trial.id}): {len(ts)} timestamps for {r.size} returns")
            row = {
                "trial_id": trial.id,
                "experiment": self.experiment,
                "strategy": trial.strategy,
                "kind": str(trial.definition.get("kind", "")),
                "definition": _dumps(trial.definition),
                "pruned": trial.pruned,
                "sharpe_per_bar": sharpe_ratio(r, 1),
                "n_bars": int(r.size),
                "start": ts.min(),
                "end": ts.max(),
                "recorded_at": now,
                "ts": ts.to_list(),
                "returns": r.tolist(),
            }
            tmp = self.directory / f".{trial.id}.{uuid.uuid4().hex[:16]}.tmp"
            try:
                pl.DataFrame([row], schema=SCHEMA).write_parquet(tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            added.append(trial.id)
        return added

    def read(self) -> pl.DataFrame:
        """Every trial recorded, sorted by trial id (an empty frame of the registry's schema if none)."""
        files = sorted(self.directory.glob("*.parquet")) if self.directory.is_dir() else []
        if not files:
            return pl.DataFrame(schema=SCHEMA)
        frames = []
        for file in files:
            try:
                frames.append(pl.read_parquet(file))
            except Exception as exc:  # name the file: a corrupt registry entry must be findable
                raise ValueError(f"trials registry: cannot read {file}: {exc}") from exc
        return pl.concat(frames, how="vertical").sort("trial_id")


def _dumps(definition: Mapping[str, object]) -> str:
    return json.dumps(dict(definition), sort_keys=True, default=str)


def deflation_inputs(registry: pl.DataFrame) -> tuple[int, float]:
    """(N, variance) for the deflated Sharpe: N = distinct trials ever evaluated (pruned ones included),
    variance = sample variance (ddof=1) of the finite per-bar Sharpes of the non-pruned ones (NaN with
    fewer than two)."""
    n = registry["trial_id"].n_unique()
    kept = registry.filter(~pl.col("pruned"))["sharpe_per_bar"].drop_nulls().drop_nans().to_numpy()
    return n, float(np.var(kept, ddof=1)) if kept.size > 1 else math.nan


def aligned_returns(registry: pl.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The non-pruned trials' per-bar returns on their common span (the bars every one of them has),
    T × N in time order, and the trial ids of the columns."""
    kept = registry.filter(~pl.col("pruned")).sort("trial_id")
    if kept.is_empty():
        return np.empty((0, 0)), []
    long = kept.select("trial_id", "ts", "returns").explode("ts", "returns")
    wide = long.pivot(on="trial_id", index="ts", values="returns").drop_nulls().sort("ts")
    ids = kept["trial_id"].to_list()
    return wide.select(ids).to_numpy(), ids


def registry_pbo(registry: pl.DataFrame, n_blocks: int = 16) -> float:
    """CSCV PBO (metrics.pbo) of the non-pruned trials on their common span; NaN when undefined."""
    matrix, _ = aligned_returns(registry)
    return pbo_or_nan(matrix, n_blocks)


def experiment_definitions(experiment: ExperimentConfig, strategies: Sequence[str]) -> dict[str, dict[str, object]]:
    """The trial definition of each KPI strategy name of `experiment`: a baseline (its name and
    `baseline_settings`, no features: the rules read bars only), a trained family (its `models.families`
    entry or defaults, and the feature columns with the features section and sizing it trades through), or
    the ensemble (its members with weights and each member's parameters). Raises KeyError naming a strategy
    the config does not define."""
    from crypto_assets.features.engine import FEATURE_COLUMNS
    from crypto_assets.storage.fingerprint import data_fingerprint as data_definition

    data = data_definition(experiment).digest

    def define(kind: str, name: str, settings: Mapping[str, object], features: Sequence[str]) -> dict[str, object]:
        return trial_definition(
            kind=kind,
            name=name,
            settings=settings,
            features=features,
            seed=experiment.experiment.seed,
            walk_forward=experiment.walk_forward.model_dump(mode="json"),
            costs=experiment.costs.model_dump(mode="json"),
            data_fingerprint=data,
        )

    models = experiment.models
    families = {params.slug: params.strategy_dump() for params in models.trained}
    # a stacked family (Meta_Learner) learns from its members' predictions: their parameters are its configuration too
    families |= {
        params.slug: {
            **params.strategy_dump(),
            "member_params": [models.params_of(m).strategy_dump() for m in params.member_types],
        }
        for params in models.stacked
    }
    model_inputs = {
        "features_section": experiment.features.model_dump(mode="json"),
        "sizing": models.sizing.model_dump(mode="json"),
    }
    definitions: dict[str, dict[str, object]] = {}
    settings: dict[str, object]
    for name in strategies:
        if name in experiment.baselines:
            settings = {"baseline_settings": experiment.baseline_settings.model_dump(mode="json")}
            definitions[name] = define("baseline", name, settings, [])
        elif name in families:
            settings = {"params": families[name], **model_inputs}
            definitions[name] = define("family", name, settings, FEATURE_COLUMNS)
        elif name == "ensemble":
            members = [
                {"type": m.type, "weight": m.weight, "params": models.params_of(m.type).strategy_dump()}
                for m in models.ensemble
            ]
            settings = {"members": members, **model_inputs}
            definitions[name] = define("ensemble", name, settings, FEATURE_COLUMNS)
        else:
            raise KeyError(f"strategy {name!r} is not a baseline, a trained family or the ensemble of this config")
    return definitions


def stitched_trials(per_bar: pl.DataFrame, definitions: Mapping[str, Mapping[str, object]]) -> list[Trial]:
    """One trial per strategy of the stitched run's per-bar frame (`strategy, ts, return`, ...), in name order."""
    trials = []
    for (name,), group in per_bar.sort("strategy", "ts").group_by("strategy", maintain_order=True):
        trials.append(Trial(str(name), definitions[str(name)], group["ts"], group["return"].to_numpy()))
    return trials
