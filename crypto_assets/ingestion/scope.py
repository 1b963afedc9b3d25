"""Does the experiment's data span hold a walk-forward fold? (plain Python: `validate-config` uses it)

An experiment whose span is shorter than one fold (train + test months) is a *data-only* experiment:
it ingests and validates bars (and computes features), and has no fold or report assets. The note
below says so in the Dagster job description, the definitions' metadata and both CLI commands.
"""

from __future__ import annotations

import datetime as dt

from crypto_assets.config.schema import DataSection, ExperimentConfig
from crypto_assets.folds import FoldSpec, fold_keys
from crypto_assets.folds.windows import add_months, first_fold_month


def data_end_exclusive(data: DataSection, today: dt.date | None = None) -> dt.date:
    """First day after the data: the day after `data.end`, or today (its month still open)."""
    return data.end + dt.timedelta(days=1) if data.end is not None else (today or dt.datetime.now(dt.UTC).date())


def experiment_fold_spec(config: ExperimentConfig) -> FoldSpec:
    """The walk-forward geometry of the config's `walk_forward` section."""
    wf = config.walk_forward
    return FoldSpec(
        train_months=wf.train_months,
        test_months=wf.test_months,
        step_months=wf.step_months,
        purge_bars=wf.purge,
        label_horizon=wf.label_horizon,
    )


def data_only_note(config: ExperimentConfig, today: dt.date | None = None) -> str | None:
    """None when the data span holds at least one closed fold; otherwise the sentence that explains why
    the fold and report assets are absent (a fixed span) or have nothing to run yet (an open span)."""
    data, spec = config.data, experiment_fold_spec(config)
    if fold_keys(data.start, data_end_exclusive(data, today), spec):
        return None
    fold = f"one fold ({spec.train_months} train + {spec.test_months} test months)"
    if data.end is not None:
        return (
            f"data {data.start}..{data.end} is shorter than {fold}: fold and report assets are absent; "
            "this is a data-only experiment"
        )
    first = add_months(first_fold_month(data.start, spec), spec.test_months)
    return (
        f"data {data.start}..now holds no closed fold yet ({fold}; the first closes on {first}): "
        "fold and report runs are skipped until then"
    )
