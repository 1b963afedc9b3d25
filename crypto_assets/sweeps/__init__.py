"""Hyper-parameter sweeps on Ray with Optuna's TPE sampler (DESIGN.md §6.4), no Dagster here.

    from crypto_assets.sweeps import ray_session, run_sweep
    with ray_session():                      # RAY_ADDRESS set: that cluster; unset: a local Ray for the block
        outcome = run_sweep(experiment, bars, features, registry=registry)
    outcome.table, outcome.stability, outcome.holdout

- `space`: `sweep.space` checked against the family's parameter class → Optuna distributions.
- `evaluate`: one configuration walk-forward evaluated with the fold assets' rules, engine, costs and capital,
  with the median rule on fold Sharpes (early stopping).
- `driver`: batches asked from TPE, run as Ray tasks, told in trial order (same seed → same configurations); the
  registry, the sweep table, the stability report and the holdout evaluation.
- `cluster`: the Ray session (local, or `RAY_ADDRESS` + Ray's token variables) shipping this package via
  `runtime_env`. Ray and Optuna are imported inside functions only.
"""

from crypto_assets.sweeps.cluster import RaySession, ray_session
from crypto_assets.sweeps.driver import SweepOutcome, SweepPlan, SweepTrial, plan_folds, run_sweep
from crypto_assets.sweeps.evaluate import FoldResult, TrialResult, evaluate_trial

__all__ = [
    "FoldResult",
    "RaySession",
    "SweepOutcome",
    "SweepPlan",
    "SweepTrial",
    "TrialResult",
    "evaluate_trial",
    "plan_folds",
    "ray_session",
    "run_sweep",
]
