"""The sweep driver: Optuna's TPE sampler asks configurations in batches of `concurrency`, Ray runs each batch's
walk-forward evaluations (`sweeps.evaluate`) as tasks spread over the cluster's nodes, and the results are told
back in trial-index order.

Why an own ask / tell loop over Ray tasks rather than `ray.tune.Tuner` + `OptunaSearch`: Tune tells the searcher
each result as it completes, so with concurrent trials the sampler's history (and every later configuration)
depends on which worker finished first; and Tune's trial bookkeeping wants a storage path every node shares. Here
a batch is asked, evaluated, and told in index order before the next batch is asked, so the same seed gives the
same sequence of configurations on any cluster, and nothing but the object store and `runtime_env` is shared.
Early stopping uses only trials told before the batch was asked (the median rule of `evaluate.prune_thresholds`).

Data reaches the workers through Ray's object store (`ray.put` of the bars and features frames, once per sweep),
code through the session's `runtime_env` (`sweeps.cluster.ray_session`); no path of this machine is passed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from crypto_assets.sweeps.evaluate import TrialResult, evaluate_trial, prune_thresholds, running_means
from crypto_assets.sweeps.space import decode, distance, distributions, normalized, to_params

if TYPE_CHECKING:
    from crypto_assets.config import ExperimentConfig
    from crypto_assets.config.schema import FamilyParams, SweepSection
    from crypto_assets.evaluation.trials import TrialRegistry
    from crypto_assets.families import Context
    from crypto_assets.folds import FoldWindow

BatchEvaluator = Callable[[Sequence["FamilyParams"], Sequence[float | None]], list[TrialResult]]
"""A batch of configurations and the pruning thresholds per fold → their results, in the batch's order."""
FoldsEvaluator = Callable[
    [Sequence["FamilyParams"], list["FoldWindow"], Sequence[float | None] | None], list[TrialResult]
]
"""Configurations, the folds to evaluate them on and the pruning thresholds (None: no pruning) → their results."""
NEIGHBOURS = 3
"""Nearest configurations (normalized parameter space) the stability report shows next to the best."""
TABLE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "trial": pl.Int64,
    "trial_id": pl.String,
    "family": pl.String,
    "state": pl.String,
    "objective_sharpe": pl.Float64,
    "fold_sharpes": pl.List(pl.Float64),
    "folds_evaluated": pl.Int64,
    "params": pl.String,
    "node_id": pl.String,
    "seconds": pl.Float64,
}


@dataclass(frozen=True)
class SweepPlan:
    """Which folds the sweep's objective sees and which are held out."""

    windows: list[FoldWindow]
    """Folds whose test windows end before the holdout: every trial's walk-forward evaluation."""
    holdout: list[FoldWindow]
    """Folds testing inside the newest `holdout_months`: the chosen configuration only."""
    holdout_start: dt.datetime | None


@dataclass(frozen=True)
class SweepTrial:
    number: int
    sampled: dict[str, Any]
    """The sampled values (JSON-ready: lists, not tuples)."""
    params: FamilyParams
    result: TrialResult
    state: str
    """`complete`, `pruned`, or `failed` (no finite objective: e.g. a configuration that never trades)."""


@dataclass(frozen=True)
class SweepOutcome:
    plan: SweepPlan
    trials: list[SweepTrial]
    table: pl.DataFrame
    """One row per trial (TABLE_SCHEMA), in trial order."""
    best: SweepTrial | None
    stability: pl.DataFrame
    """The best trial and its nearest neighbours: objective and fold Sharpes (see `stability_table`)."""
    holdout: TrialResult | None
    """The best configuration on the holdout folds (never part of the objective)."""
    added: list[str]
    """Trial ids newly recorded in the registry."""


def plan_folds(experiment: ExperimentConfig, sweep: SweepSection, today: dt.date | None = None) -> SweepPlan:
    """The experiment's folds split into the sweep's and the holdout's (ValueError naming the key when either is
    empty)."""
    from crypto_assets.folds import fold_windows
    from crypto_assets.folds.windows import add_months, month_start, utc
    from crypto_assets.ingestion.scope import data_end_exclusive, experiment_fold_spec

    end = data_end_exclusive(experiment.data, today)
    windows = fold_windows(experiment.data.start, end, experiment_fold_spec(experiment))
    if sweep.holdout_months == 0:
        holdout, start = [], None
    else:
        start = utc(add_months(month_start(end), -sweep.holdout_months))
        holdout = [w for w in windows if w.test_start >= start]
        windows = [w for w in windows if w.test_end <= start]
        if not holdout:
            raise ValueError(
                f"sweep.holdout_months ({sweep.holdout_months}): no fold tests inside the holdout from {start:%Y-%m} "
                f"(a fold's test window, walk_forward.test_months = {experiment.walk_forward.test_months}, must fit "
                "in it)"
            )
    if not windows:
        raise ValueError(
            f"sweep: no walk-forward fold ends before the holdout (sweep.holdout_months = {sweep.holdout_months}); "
            "lengthen the data span or shorten the holdout"
        )
    return SweepPlan(windows=windows, holdout=holdout, holdout_start=start)


def base_params(experiment: ExperimentConfig, family_type: str) -> FamilyParams:
    """What the sweep leaves unswept: the family's `models.families` entry, or its defaults."""
    from crypto_assets.families import default_params

    listed = [p for p in experiment.models.families if p.type == family_type]
    return listed[0] if listed else default_params(family_type)


def trial_definitions(experiment: ExperimentConfig, params: FamilyParams) -> dict[str, object]:
    """The registry definition of a family trained with `params`: `evaluation.trials.experiment_definitions` of the
    experiment with that entry, so a swept configuration equal to the experiment's own is the same trial."""
    from crypto_assets.evaluation.trials import experiment_definitions

    families = [p for p in experiment.models.families if p.type != params.type] + [params]
    models = experiment.models.model_copy(update={"families": families})
    return experiment_definitions(experiment.model_copy(update={"models": models}), [params.slug])[params.slug]


def drive(
    sweep: SweepSection, base: FamilyParams, n_folds: int, evaluate_batch: BatchEvaluator, seed: int
) -> list[SweepTrial]:
    """The ask / tell loop (see the module docstring): `sweep.n_trials` configurations, `sweep.concurrency` at a
    time, results told in trial order; pruned trials are reported fold by fold and told as pruned."""
    import optuna
    from optuna.trial import TrialState

    space = distributions(sweep.family, sweep.space)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=optuna.pruners.NopPruner()
    )
    rule = sweep.early_stopping
    done: list[SweepTrial] = []
    while len(done) < sweep.n_trials:
        batch = [study.ask(space) for _ in range(min(sweep.concurrency, sweep.n_trials - len(done)))]
        earlier = [t.result.fold_sharpes for t in done if t.state != "failed"]
        thresholds = (
            prune_thresholds(earlier, n_folds, warmup_folds=rule.warmup_folds, min_trials=rule.min_trials)
            if rule.enabled
            else [None] * n_folds
        )
        drawn = [decode(sweep.space, trial.params) for trial in batch]
        params = [to_params(base, values) for values in drawn]
        results = evaluate_batch(params, thresholds)
        for trial, sampled, p, result in zip(batch, drawn, params, results, strict=True):
            if result.pruned:
                for step, value in enumerate(running_means(result.fold_sharpes)):
                    trial.report(value, step)
                study.tell(trial, state=TrialState.PRUNED)
                state = "pruned"
            elif math.isfinite(result.objective):
                study.tell(trial, result.objective)
                state = "complete"
            else:
                study.tell(trial, state=TrialState.FAIL)
                state = "failed"
            done.append(SweepTrial(trial.number, sampled, p, result, state))
    return done


def _evaluate_on_worker(
    params: FamilyParams,
    bars: pl.DataFrame,
    features: pl.DataFrame,
    windows: list[FoldWindow],
    context: Context,
    seed_root: int,
    step_months: int,
    thresholds: list[float | None] | None,
    use_gpu: bool,
) -> TrialResult:
    """A Ray task (bars and features arrive from the object store): `evaluate_trial` on this worker's device."""
    import ray

    from crypto_assets.models import select_device

    # Ray hides every card but this task's share (CUDA_VISIBLE_DEVICES), so it is cuda:0; CPU with a warning
    # when torch has no CUDA
    device = str(select_device(0)) if use_gpu and ray.get_gpu_ids() else "cpu"
    result = evaluate_trial(
        params,
        windows,
        bars,
        features,
        context,
        seed_root=seed_root,
        step_months=step_months,
        thresholds=thresholds,
        device=device,
    )
    return replace(result, node_id=ray.get_runtime_context().get_node_id())


def check_feasible(cpu: float, gpu: float) -> None:
    """ValueError naming `sweep.resources_per_trial` when no node of the connected cluster has that much room:
    Ray would queue such tasks forever instead of failing."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if not any(r.get("CPU", 0.0) >= cpu and r.get("GPU", 0.0) >= gpu for r in nodes):
        have = ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in nodes) or "no node"
        raise ValueError(
            f"sweep.resources_per_trial ({cpu:g} CPU, {gpu:g} GPU per trial) fits no node of the Ray cluster ({have})"
        )


class RayEvaluator:
    """Runs configurations as Ray tasks on one plan's folds; the frames are put in the object store once."""

    def __init__(
        self,
        experiment: ExperimentConfig,
        sweep: SweepSection,
        bars: pl.DataFrame,
        features: pl.DataFrame,
    ) -> None:
        import ray

        from crypto_assets.families import Context

        check_feasible(sweep.resources_per_trial.cpu, sweep.resources_per_trial.gpu)
        self.bars_ref, self.features_ref = ray.put(bars), ray.put(features)
        self.context = Context.from_experiment(experiment)
        self.seed_root = experiment.experiment.seed
        self.step_months = experiment.walk_forward.step_months
        resources = sweep.resources_per_trial
        self.use_gpu = resources.gpu > 0
        # SPREAD: a batch's trials go to different nodes while any has room (a sweep scales out, not up)
        self.task = ray.remote(_evaluate_on_worker).options(
            num_cpus=resources.cpu, num_gpus=resources.gpu, scheduling_strategy="SPREAD", max_retries=0
        )

    def run(
        self, params: Sequence[FamilyParams], windows: list[FoldWindow], thresholds: Sequence[float | None] | None
    ) -> list[TrialResult]:
        import ray

        refs = [
            self.task.remote(
                p,
                self.bars_ref,
                self.features_ref,
                windows,
                self.context,
                self.seed_root,
                self.step_months,
                list(thresholds) if thresholds is not None else None,
                self.use_gpu,
            )
            for p in params
        ]
        return list(ray.get(refs))


def stability_table(trials: Sequence[SweepTrial], sweep: SweepSection) -> tuple[SweepTrial | None, pl.DataFrame]:
    """The best complete trial (highest objective; the lowest number on ties) and a table of it and its
    `NEIGHBOURS` nearest complete trials in normalized parameter space: `role, trial, distance, objective_sharpe,
    fold_sharpes, fold_sharpe_mean, fold_sharpe_std, fold_sharpe_min, positive_folds` — a maximum that its own
    folds or its neighbours do not support is an overfit, not a finding."""
    schema: dict[str, pl.DataType | type[pl.DataType]] = {
        "role": pl.String,
        "trial": pl.Int64,
        "distance": pl.Float64,
        "objective_sharpe": pl.Float64,
        "fold_sharpes": pl.List(pl.Float64),
        "fold_sharpe_mean": pl.Float64,
        "fold_sharpe_std": pl.Float64,
        "fold_sharpe_min": pl.Float64,
        "positive_folds": pl.Float64,
    }
    complete = [t for t in trials if t.state == "complete"]
    if not complete:
        return None, pl.DataFrame(schema=schema)
    best = max(complete, key=lambda t: (t.result.objective, -t.number))
    where = normalized(sweep.space, best.sampled)
    others = sorted(
        ((distance(where, normalized(sweep.space, t.sampled)), t) for t in complete if t.number != best.number),
        key=lambda pair: (pair[0], pair[1].number),
    )[:NEIGHBOURS]
    rows = []
    for role, dist, trial in [("best", 0.0, best), *(("neighbour", d, t) for d, t in others)]:
        sharpes = np.asarray(trial.result.fold_sharpes, dtype=np.float64)
        finite = sharpes[np.isfinite(sharpes)]
        rows.append(
            {
                "role": role,
                "trial": trial.number,
                "distance": dist,
                "objective_sharpe": trial.result.objective,
                "fold_sharpes": sharpes.tolist(),
                "fold_sharpe_mean": float(finite.mean()) if finite.size else math.nan,
                "fold_sharpe_std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
                "fold_sharpe_min": float(finite.min()) if finite.size else math.nan,
                "positive_folds": float((sharpes > 0).mean()) if sharpes.size else math.nan,
            }
        )
    return best, pl.DataFrame(rows, schema=schema)


def sweep_table(trials: Sequence[SweepTrial], experiment: ExperimentConfig) -> pl.DataFrame:
    from crypto_assets.evaluation.trials import trial_id

    rows = [
        {
            "trial": t.number,
            "trial_id": trial_id(trial_definitions(experiment, t.params)),
            "family": t.params.type,
            "state": t.state,
            "objective_sharpe": t.result.objective,
            "fold_sharpes": t.result.fold_sharpes,
            "folds_evaluated": len(t.result.folds),
            "params": json.dumps(t.sampled, sort_keys=True),
            "node_id": t.result.node_id,
            "seconds": t.result.seconds,
        }
        for t in trials
    ]
    return pl.DataFrame(rows, schema=TABLE_SCHEMA)


def record_trials(registry: TrialRegistry, trials: Sequence[SweepTrial], experiment: ExperimentConfig) -> list[str]:
    """Append every trial (pruned ones flagged) to the experiment's trials registry; first wins on rerun."""
    from crypto_assets.evaluation.trials import Trial

    entries = [
        Trial(
            f"sweep:{t.params.slug}:{t.number}",
            trial_definitions(experiment, t.params),
            t.result.ts,
            t.result.returns,
            pruned=t.state == "pruned",
        )
        for t in trials
        if t.result.returns.size
    ]
    return registry.record(entries)


def run_sweep(
    experiment: ExperimentConfig,
    bars: pl.DataFrame,
    features: pl.DataFrame,
    *,
    registry: TrialRegistry | None = None,
    today: dt.date | None = None,
    evaluate: FoldsEvaluator | None = None,
) -> SweepOutcome:
    """The experiment's `sweep` end to end on the connected Ray (`cluster.ray_session`), or with `evaluate` (a
    batch evaluator, e.g. in-process) instead: trials on the sweep folds, the registry and sweep table, the
    stability report, and the best configuration on the holdout folds."""
    sweep = experiment.sweep
    if sweep is None:
        raise ValueError("the experiment has no `sweep` section")
    plan = plan_folds(experiment, sweep, today)
    run = evaluate or RayEvaluator(experiment, sweep, bars, features).run
    seed = experiment.experiment.seed if sweep.seed is None else sweep.seed
    trials = drive(
        sweep,
        base_params(experiment, sweep.family),
        len(plan.windows),
        lambda params, thresholds: run(params, plan.windows, thresholds),
        seed,
    )
    best, stability = stability_table(trials, sweep)
    holdout = run([best.params], plan.holdout, None)[0] if best is not None and plan.holdout else None
    added = record_trials(registry, trials, experiment) if registry is not None else []
    return SweepOutcome(
        plan=plan,
        trials=trials,
        table=sweep_table(trials, experiment),
        best=best,
        stability=stability,
        holdout=holdout,
        added=added,
    )
