"""NeuralForecast families (NHITS, TFT, NF_LSTM): fit on the train rows only, replay, determinism, no look-ahead.

Tiny budgets on a synthetic two-symbol fold (2 train months, 1 test month, horizon 12). `neuralforecast` is
imported once by this process (the first fit), as a step process would.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from crypto_assets.config import ConfigError, parse_config
from crypto_assets.config.schema import SyntheticSection
from crypto_assets.families import Artifact, Context, FoldData, build_fold, compute_inputs, fit_artifact, get_family
from crypto_assets.folds import fold_window_for_key
from crypto_assets.folds.windows import FoldSpec
from crypto_assets.models.neuralforecast_adapter import fit_nf_forecaster, kept_global_rng, log_return_series
from crypto_assets.sources.synthetic import SyntheticSource

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
SPEC = FoldSpec(train_months=2, test_months=1, step_months=1, purge_bars=12, label_horizon=12)
TINY_BUDGET: dict[str, Any] = {"input_size": 24, "max_steps": 6, "windows_batch_size": 16}
TINY: dict[str, dict[str, Any]] = {
    "NHITS": {"type": "NHITS", **TINY_BUDGET, "mlp_width": 8, "mlp_layers": 1},
    "TFT": {"type": "TFT", **TINY_BUDGET, "hidden_size": 8, "n_head": 2},
    "NF_LSTM": {"type": "NF_LSTM", **TINY_BUDGET, "encoder_hidden_size": 8, "decoder_hidden_size": 8},
}
CONFIG: dict[str, Any] = {
    "experiment": {"name": "nf_families"},
    "data": {"tickers": ["BTC/USDT", "ETH/USDT"], "start": "2024-01-01", "end": "2024-04-30"},
    "walk_forward": {"train_months": 2, "test_months": 1, "label_horizon": 12},
    "models": {
        "families": list(TINY.values()),
        "ensemble": [
            {"type": "NHITS", "weight": 0.4},
            {"type": "TFT", "weight": 0.3},
            {"type": "NF_LSTM", "weight": 0.3},
        ],
        "sizing": {"rebalance_every": 6},
    },
}
FAMILIES = list(TINY)


@pytest.fixture(scope="module")
def fold() -> tuple[FoldData, Any, Any, pl.DataFrame]:
    """(fold data of 2024-03, its scaler, its window, every bar up to the end of the data)."""
    config = parse_config(CONFIG)
    bars = SyntheticSource(SyntheticSection(), seed=5, anchor=START).fetch(["BTC/USDT", "ETH/USDT"], "1h", START, END)
    window = fold_window_for_key("2024-03-01", SPEC)
    in_window = pl.col("ts") < window.test_end
    frame, scaler = build_fold(
        compute_inputs(bars, "1h").filter(in_window),
        bars.filter(in_window),
        window,
        SPEC.purge_bars,
        SPEC.label_horizon,
        "1h",
    )
    data = FoldData(key=window.key, frame=frame, bars=bars.filter(in_window), context=Context.from_experiment(config))
    return data, scaler, window, bars


def params_of(family_type: str, **overrides: Any) -> Any:
    return get_family(family_type).params_class.model_validate({**TINY[family_type], **overrides})


def state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.model.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(fold: tuple[FoldData, Any, Any, pl.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every family fitted on the fold (seed 11) and saved: type → (artifact folder, decisions, model state).
    Fitting leaves the caller's global random streams (Python, NumPy, torch) exactly where they were."""
    data, scaler, window, _ = fold
    root = tmp_path_factory.mktemp("nf_families")
    out = {}
    for family_type in FAMILIES:
        random.seed(3), np.random.seed(3), torch.manual_seed(3)
        expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
        random.seed(3), np.random.seed(3), torch.manual_seed(3)
        artifact, decisions = fit_artifact(params_of(family_type), data, scaler, window, seed=11, code_version="v1")
        after = (random.random(), float(np.random.rand()), float(torch.rand(1)))
        assert after == expected, f"{family_type} moved the global random state"
        out[family_type] = (artifact.save(root / family_type.lower()), decisions, state(artifact.model))
    return out


def test_config_accepts_the_families_and_names_bad_keys() -> None:
    config = parse_config(CONFIG)
    assert [p.type for p in config.models.trained] == FAMILIES
    assert [get_family(t).random_label() for t in FAMILIES] == ["model_nhits", "model_tft", "model_nf_lstm"]
    bad = {**CONFIG, "models": {"families": [{"type": "NHITS", "n_freq_downsample": [4, 2]}]}}
    with pytest.raises(ConfigError, match=r"models.families\[0\].n_freq_downsample"):
        parse_config(bad)
    bad = {**CONFIG, "models": {"families": [{"type": "TFT", "distribution": "Poisson"}]}}
    with pytest.raises(ConfigError, match=r"models.families\[0\].distribution"):
        parse_config(bad)


@pytest.mark.parametrize("family_type", FAMILIES)
def test_decisions_are_sized_forecasts_on_the_rebalancing_grid(
    trained: dict[str, Any], fold: tuple[FoldData, Any, Any, pl.DataFrame], family_type: str
) -> None:
    data, *_ = fold
    _, decisions, _ = trained[family_type]
    test_ts = data.frame.filter(pl.col("split") == "test")["ts"].unique().sort()
    assert decisions["ts"].unique().sort().to_list() == test_ts.gather_every(6).to_list()  # rebalance_every = 6
    assert decisions["p_up"].is_between(0, 1).all() and (decisions["vol"] > 0).all()
    expected_p = [0.5 * math.erfc(-m / s / math.sqrt(2)) for m, s in decisions.select("mu_h", "sigma_h").rows()]
    assert np.allclose(decisions["p_up"].to_numpy(), expected_p, rtol=1e-9, atol=1e-12)
    assert np.allclose(decisions["vol"].to_numpy(), decisions["sigma_h"].to_numpy() / math.sqrt(12))
    # long-only: a bearish view is flat, a bullish one is long, never beyond the gross cap
    assert ((decisions["weight"] > 0) == (decisions["p_up"] > 0.5)).all()
    gross = decisions.group_by("ts").agg(pl.col("weight").abs().sum())["weight"]
    assert gross.max() <= 1.0 + 1e-12  # type: ignore[operator]


@pytest.mark.parametrize("family_type", FAMILIES)
def test_replay_from_the_artifact_equals_the_stored_decisions(
    trained: dict[str, Any], fold: tuple[FoldData, Any, Any, pl.DataFrame], family_type: str
) -> None:
    _, _, _, bars = fold
    directory, decisions, _ = trained[family_type]
    artifact = Artifact.load(directory)
    replayed = artifact.weights(bars)
    stored = decisions.filter(pl.col("weight").is_not_null()).select("symbol", "ts", "weight")
    assert replayed.height > 0 and replayed.equals(stored.sort("symbol", "ts"))
    assert (Path(directory) / "curves" / "loss.parquet").exists()
    assert artifact.metrics["oos_n"] > 0 and math.isfinite(artifact.metrics["train_nll"])
    # bars it never saw: another market, a later month
    other = SyntheticSource(SyntheticSection(), seed=99, anchor=START).fetch(
        ["BTC/USDT", "ETH/USDT"], "1h", START, dt.datetime(2024, 6, 15, tzinfo=dt.UTC)
    )
    start, end = dt.datetime(2024, 5, 1, tzinfo=dt.UTC), dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    unseen = artifact.weights(other, start=start, end=end)
    assert unseen.height > 0 and unseen["ts"].min() >= start and unseen["ts"].max() < end  # type: ignore[operator]


@pytest.mark.parametrize("family_type", FAMILIES)
def test_same_seed_same_bits_other_seed_other_model(
    trained: dict[str, Any], fold: tuple[FoldData, Any, Any, pl.DataFrame], family_type: str
) -> None:
    data, scaler, window, _ = fold
    _, decisions, weights = trained[family_type]
    again, again_decisions = fit_artifact(params_of(family_type), data, scaler, window, seed=11)
    assert same_state(state(again.model), weights) and again_decisions.equals(decisions)
    other, _ = fit_artifact(params_of(family_type), data, scaler, window, seed=12)
    assert not same_state(state(other.model), weights)


@pytest.mark.parametrize("family_type", FAMILIES)
def test_poisoned_test_window_leaves_the_trained_weights_identical(
    trained: dict[str, Any], fold: tuple[FoldData, Any, Any, pl.DataFrame], family_type: str
) -> None:
    """Test rows' features replaced by noise, and every bar from the test window on moved: training sees none of it
    (same weights, bit for bit), while the decisions, which do read the test bars, change."""
    data, scaler, window, _ = fold
    _, decisions, weights = trained[family_type]
    rng = np.random.default_rng(0)
    is_test = pl.col("split") == "test"
    features = [c for c in data.frame.columns if c not in ("symbol", "ts", "split") and not c.startswith("label_")]
    noise = {c: rng.normal(0, 3, data.frame.height) for c in features}
    frame = data.frame.with_columns(
        [pl.when(is_test).then(pl.Series(c, v)).otherwise(pl.col(c)) for c, v in noise.items()]
    )
    late = pl.col("ts") >= window.test_start
    shock = pl.Series(rng.lognormal(0, 0.05, data.bars.height))
    bars = data.bars.with_columns(
        [pl.when(late).then(pl.col(c) * shock).otherwise(pl.col(c)) for c in ("open", "high", "low", "close")]
    )
    poisoned = FoldData(key=data.key, frame=frame, bars=bars, context=data.context)
    artifact, poisoned_decisions = fit_artifact(params_of(family_type), poisoned, scaler, window, seed=11)
    assert same_state(state(artifact.model), weights)
    assert not poisoned_decisions["p_up"].equals(decisions["p_up"])


@pytest.mark.parametrize("family_type", FAMILIES)
def test_decisions_before_a_cut_do_not_depend_on_the_bars_after_it(
    trained: dict[str, Any], fold: tuple[FoldData, Any, Any, pl.DataFrame], family_type: str
) -> None:
    _, _, window, bars = fold
    directory, _, _ = trained[family_type]
    artifact = Artifact.load(directory)
    family = artifact.family
    cut = window.test_start + dt.timedelta(days=10, hours=7)
    full = family.predict(artifact.model, artifact.inputs(bars))
    truncated = family.predict(artifact.model, artifact.inputs(bars.filter(pl.col("ts") <= cut)))
    before = full.filter(pl.col("ts") <= cut)
    assert before.height > 0 and truncated.equals(before)


def test_direct_forecast_equals_neuralforecasts_own_predict(fold: tuple[FoldData, Any, Any, pl.DataFrame]) -> None:
    """The windows built here and the module called directly give NeuralForecast's predict-step parameters: the
    horizon moments after the last train bar of each symbol equal those from `model.predict` (Lightning)."""
    from neuralforecast.tsdataset import TimeSeriesDataset

    data, *_ = fold
    series = log_return_series(data.frame, data.bars, [])
    model = fit_nf_forecaster(
        series,
        "NHITS",
        {"input_size": 24, "mlp_units": [[8, 8]]},
        horizon=12,
        distribution="Normal",
        seed=1,
        max_steps=3,
        windows_batch_size=16,
    )
    train = series.filter(pl.col("split") == "train")
    last = train.group_by("symbol").agg(pl.col("ts").max()).sort("symbol")
    ours = model.forecast(train, last)
    frame = train.select(pl.col("symbol").alias("unique_id"), pl.col("ts").dt.replace_time_zone(None).alias("ds"), "y")
    dataset, *_ = TimeSeriesDataset.from_df(frame.to_pandas())
    model.model.trainer_kwargs.update(enable_progress_bar=False, logger=False, enable_model_summary=False)
    with kept_global_rng():
        raw = model.model.predict(dataset=dataset)  # rows: symbol-major, h steps each; loc and scale last
    loc, scale = raw[:, -2].reshape(2, 12), raw[:, -1].reshape(2, 12)
    assert np.allclose(ours["mu_h"].to_numpy(), loc.sum(axis=1), rtol=1e-5, atol=1e-7)
    assert np.allclose(ours["sigma_h"].to_numpy(), np.sqrt((scale.astype(np.float64) ** 2).sum(axis=1)), rtol=1e-5)


def test_fine_tune_starts_from_the_previous_model_on_a_fraction_of_the_steps(
    trained: dict[str, Any], fold: tuple[FoldData, Any, Any, pl.DataFrame]
) -> None:
    data, *_ = fold
    family = get_family("NF_LSTM")
    assert family.can_warm_start
    previous = Artifact.load(trained["NF_LSTM"][0]).model
    params = params_of("NF_LSTM", retrain="fine_tune", fine_tune_fraction=0.5)
    warm = family.fit_warm(data, params, 11, "cpu", previous)
    assert warm.steps_run == 3  # half of max_steps = 6
    # one step from the previous weights stays closer to them than one step from a fresh initialisation
    start = state(previous)

    def distance(model: Any) -> float:
        return sum(float((v - start[k]).abs().sum()) for k, v in state(model).items())

    one_step = params_of("NF_LSTM", max_steps=1)
    assert (
        0
        < distance(family.fit_warm(data, one_step, 11, "cpu", previous))
        < distance(family.fit(data, one_step, 11, "cpu"))
    )


def test_validation_tail_keeps_the_best_checkpoint(fold: tuple[FoldData, Any, Any, pl.DataFrame]) -> None:
    data, *_ = fold
    family = get_family("NF_LSTM")
    model = family.fit(data, params_of("NF_LSTM", val_bars=48, val_check_steps=2), 11, "cpu")
    steps, losses = zip(*model.val_loss, strict=True)
    assert steps == (2, 4, 6) and model.best_step == steps[int(np.argmin(losses))]
    curve = family.curves(model)["loss"]
    assert curve.height == 6 and curve["val_loss"].drop_nulls().to_list() == list(losses)
    with pytest.raises(ValueError, match=r"val_bars=11 leaves no validation window: it must be at least the horizon"):
        family.fit(data, params_of("NF_LSTM", val_bars=11), 11, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: GPU path not exercised here")
@pytest.mark.parametrize("family_type", FAMILIES)
def test_cuda_training_and_forecasts(
    fold: tuple[FoldData, Any, Any, pl.DataFrame], family_type: str, tmp_path: Path
) -> None:
    """The family trains and forecasts on `cuda:0`; the artifact loads back on the CPU with the same decisions
    (up to float differences between the devices)."""
    data, scaler, window, _ = fold
    artifact, decisions = fit_artifact(params_of(family_type), data, scaler, window, seed=11, device="cuda:0")
    assert {t.device.type for t in state(artifact.model).values()} == {"cuda"}
    assert decisions["p_up"].is_between(0, 1).all() and (decisions["vol"] > 0).all()
    folder = artifact.save(tmp_path / family_type.lower())
    on_cpu = Artifact.load(folder, device="cpu").weights(data.bars, start=window.test_start, end=window.test_end)
    assert np.allclose(on_cpu["weight"].to_numpy(), decisions.drop_nulls("weight")["weight"].to_numpy(), atol=1e-3)
