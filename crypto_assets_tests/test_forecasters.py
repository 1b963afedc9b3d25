"""Torch forecasters: shapes, RevIN, overfitting, no test-window leakage, seeds, causal windows, persistence,
sizing, device selection, and (where a GPU exists) one CUDA / bf16 training step.

Everything runs on tiny synthetic fold frames (random-walk closes and features, a `split` column) on CPU.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from crypto_assets.folds import add_labels
from crypto_assets.models import (
    ARCHS,
    ForecasterParams,
    RevIN,
    TrainedForecaster,
    autocast,
    build_model,
    build_windows,
    classification_metrics,
    default_feature_columns,
    derive_seed,
    deterministic,
    forecast_to_weights,
    gather_windows,
    select_device,
    train_forecaster,
    validation_split,
)

UTC = dt.UTC
START = dt.datetime(2024, 1, 1, tzinfo=UTC)
HOUR = dt.timedelta(hours=1)
H = 4  # label horizon in bars

TINY = ForecasterParams(window=12, hidden=8, conv_channels=8, batch_size=64, max_epochs=3, dropout=0.1)


def fold_frame(
    n_train: int = 400,
    n_test: int = 120,
    symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT"),
    n_features: int = 3,
    horizon: int = H,
    purge: int = H,
    seed: int = 0,
) -> pl.DataFrame:
    """A fold like `fold_dataset`'s: `symbol, ts, f0.., label_fwd_ret_h, label_dir_h, split`.

    Labels are added over the whole window first, then the last `purge` train bars are dropped, as
    `split_fold` does, so train labels never reach into the test window."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    frames = []
    for symbol in symbols:
        ts = pl.datetime_range(START, START + (n - 1) * HOUR, "1h", eager=True, time_zone="UTC", time_unit="us")
        data: dict[str, object] = {
            "symbol": symbol,
            "ts": ts,
            "close": 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n))),
        }
        for j in range(n_features):
            data[f"f{j}"] = np.tanh(np.cumsum(rng.normal(0, 0.2, n)))  # bounded, like clipped z-scores
        frames.append(pl.DataFrame(data))
    labelled = add_labels(pl.concat(frames), horizon).drop("close")
    train_end = START + n_train * HOUR
    t = pl.col("ts")
    return (
        labelled.filter((t < train_end - purge * HOUR) | (t >= train_end))
        .with_columns(split=pl.when(t < train_end).then(pl.lit("train")).otherwise(pl.lit("test")))
        .sort("symbol", "ts")
    )


def features_of(frame: pl.DataFrame) -> list[str]:
    return default_feature_columns(frame)


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def fold() -> pl.DataFrame:
    return fold_frame()


@pytest.fixture(scope="module")
def trained(fold: pl.DataFrame) -> TrainedForecaster:
    return train_forecaster(fold, features_of(fold), H, TINY, seed=11)


# ---------------------------------------------------------------------------------------------- modules


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("revin", [False, True])
def test_both_archs_return_both_heads_with_the_right_shapes(arch: str, revin: bool) -> None:
    params = ForecasterParams.for_arch(arch, window=10, hidden=6, layers=2, conv_channels=5, kernel_size=4, revin=revin)
    model = build_model(params, n_features=3).eval()
    model.set_vol_scale(0.01)
    x = torch.randn(7, 10, 3)
    out = model(x)
    assert out.logit.shape == (7,) and out.vol.shape == (7,)
    assert out.logit.dtype == torch.float32 and out.vol.dtype == torch.float32
    assert torch.isfinite(out.logit).all() and (out.vol > 0).all()
    # The vol head starts at vol_scale for every sample (zero weights, bias softplus⁻¹(1)).
    assert torch.allclose(out.vol, torch.full((7,), 0.01), rtol=1e-5)
    with pytest.raises(ValueError, match="expected input"):
        model(torch.randn(7, 10, 4))


def test_revin_round_trip_is_identity_and_normalizes_each_window() -> None:
    torch.manual_seed(0)
    revin = RevIN(4).double()
    with torch.no_grad():  # a trained-looking affine map, not the identity it starts at
        revin.weight.copy_(torch.tensor([0.5, 2.0, -1.5, 1.0]))
        revin.bias.copy_(torch.tensor([0.1, -3.0, 0.0, 7.0]))
    x = torch.randn(5, 30, 4, dtype=torch.float64) * torch.tensor([1.0, 50.0, 0.01, 3.0]) + torch.tensor(
        [0.0, 1e3, -2.0, 5.0]
    )
    z, stats = revin.normalize(x)
    assert torch.allclose(revin.denormalize(z, stats), x, atol=1e-6, rtol=0)
    plain = RevIN(4, affine=False).double()
    zp, _ = plain.normalize(x)
    assert torch.allclose(zp.mean(dim=1), torch.zeros(5, 4, dtype=torch.float64), atol=1e-9)
    big = [0, 1, 3]  # eps (1e-5) inflates σ only where Var ≪ 1 (feature 2 has σ ≈ 0.01)
    assert torch.allclose(zp.std(dim=1, unbiased=False)[:, big], torch.ones(5, 3, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(plain.denormalize(zp, _), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_overfits_a_tiny_dataset(arch: str) -> None:
    # 64 labelled windows of one symbol with coin-flip labels: only memorisation reaches 100 % accuracy.
    # i.i.d. features (not random walks) so neighbouring windows, which share 11 of 12 bars, still differ clearly.
    frame = fold_frame(n_train=64 + 11 + H, n_test=0, symbols=("BTC/USDT",), n_features=4, seed=3)
    rng = np.random.default_rng(3)
    frame = frame.with_columns([pl.Series(f"f{j}", rng.normal(0, 1, frame.height)) for j in range(4)])
    params = ForecasterParams.for_arch(
        arch,
        window=12,
        hidden=32,
        conv_channels=16,
        dropout=0.0,
        lr=1e-2,
        weight_decay=0.0,
        batch_size=64,
        max_epochs=120,
        val_fraction=0.0,
        vol_loss_weight=0.0,
        grad_clip=None,
    )
    model = train_forecaster(frame, features_of(frame), H, params, seed=0)
    metrics = model.evaluate(frame)
    assert metrics["n"] == 64
    assert 0.2 < metrics["base_rate"] < 0.8  # both classes present: 100 % is not a constant prediction
    assert metrics["accuracy"] == 1.0
    assert model.history["train_loss"][-1] < 0.05 < model.history["train_loss"][0]


# ---------------------------------------------------------------------------------------------- leakage


def test_test_window_never_reaches_training(fold: pl.DataFrame, trained: TrainedForecaster) -> None:
    is_test = pl.col("split") == "test"
    poisoned = fold.with_columns(
        *[pl.when(is_test).then(pl.lit(1e6)).otherwise(pl.col(c)).alias(c) for c in features_of(fold)],
        pl.when(is_test).then(pl.lit(5.0)).otherwise(pl.col(f"label_fwd_ret_{H}")).alias(f"label_fwd_ret_{H}"),
        pl.when(is_test).then(1 - pl.col(f"label_dir_{H}")).otherwise(pl.col(f"label_dir_{H}")).alias(f"label_dir_{H}"),
    )
    assert not poisoned.equals(fold)
    again = train_forecaster(poisoned, features_of(fold), H, TINY, seed=11)
    assert state_equal(again.model, trained.model)
    assert again.history == trained.history and again.vol_scale == trained.vol_scale
    assert again.val_metrics == pytest.approx(trained.val_metrics, nan_ok=True)


def test_validation_slice_is_the_end_of_train_with_a_horizon_purge(
    fold: pl.DataFrame, trained: TrainedForecaster
) -> None:
    train_ts = fold.filter(pl.col("split") == "train").get_column("ts").unique().sort()
    info = trained.split_info
    val_start = dt.datetime.fromisoformat(info["val_start"])
    fit_end = dt.datetime.fromisoformat(info["fit_end_exclusive"])
    n_val_bars = sum(1 for t in train_ts if t >= val_start)
    assert n_val_bars == math.ceil(train_ts.len() * TINY.val_fraction)
    assert val_start - fit_end == H * HOUR  # the last fit label (at fit_end − 1 bar) ends before val_start
    test_start: dt.datetime = fold.filter(pl.col("split") == "test").select(pl.col("ts").min()).item()
    assert dt.datetime.fromisoformat(info["val_end"]) < test_start
    assert trained.n_val == 2 * n_val_bars  # every validation bar of both symbols has a full window
    # The helper on its own: purge counted in distinct timestamps, val_fraction 0 means no slice.
    ts = np.arange(100, dtype=np.int64)
    split = validation_split(ts, ts, 0.1, purge=3)
    assert split.val.sum() == 10 and ts[split.val].min() == 90
    assert ts[split.fit].max() == 86 and not (split.fit & split.val).any()
    none = validation_split(ts, ts, 0.0, purge=3)
    assert none.fit.all() and not none.val.any()
    with pytest.raises(ValueError, match="no fit bars"):
        validation_split(ts, ts, 0.95, purge=10)


def test_early_stopping_restores_the_best_epoch(fold: pl.DataFrame) -> None:
    params = ForecasterParams(window=12, hidden=16, batch_size=32, max_epochs=12, patience=1, lr=3e-2, dropout=0.0)
    model = train_forecaster(fold, features_of(fold), H, params, seed=5)
    val_loss = model.history["val_loss"]
    assert model.best_epoch == int(np.argmin(val_loss)) + 1
    assert model.best_epoch < model.epochs_run  # this seed does stop after a worse epoch: the restore path runs
    assert model.epochs_run in (params.max_epochs, model.best_epoch + params.patience + 1)
    # The kept weights are the best epoch's: the val slice re-scored after training has that epoch's loss.
    assert model.val_metrics["log_loss"] == pytest.approx(model.history["val_bce"][model.best_epoch - 1], rel=1e-5)
    assert model.val_metrics["loss"] == min(val_loss)


# ---------------------------------------------------------------------------------------------- reproducibility


def test_same_seed_is_bit_identical_and_another_seed_differs(fold: pl.DataFrame, trained: TrainedForecaster) -> None:
    same = train_forecaster(fold, features_of(fold), H, TINY, seed=11)
    assert state_equal(same.model, trained.model)
    assert same.predict(fold).equals(trained.predict(fold))
    other = train_forecaster(fold, features_of(fold), H, TINY, seed=12)
    assert not state_equal(other.model, trained.model)
    assert not other.predict(fold).equals(trained.predict(fold))


def test_training_leaves_global_rng_and_torch_settings_alone(fold: pl.DataFrame) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    train_forecaster(fold, features_of(fold), H, ForecasterParams(window=8, hidden=4, max_epochs=1), seed=1)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()


def test_derive_seed_is_stable_and_separates_streams() -> None:
    seed = derive_seed(42, "forecaster_lstm_attn", "2024-03-01")
    assert seed == derive_seed(42, "forecaster_lstm_attn", "2024-03-01")
    assert seed == 2_198_829_583  # pinned: the same in every process and Python version (sha256, not hash())
    assert 0 <= seed < 2**32
    seeds = {derive_seed(42, "a", "b"), derive_seed(42, "a/b"), derive_seed(43, "a", "b"), derive_seed(42, "b", "a")}
    assert len(seeds) == 4


def test_deterministic_context_sets_and_restores() -> None:
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    with deterministic(threads=1):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.get_num_threads() == 1
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before


def test_max_train_samples_caps_the_fit_windows(fold: pl.DataFrame) -> None:
    params = ForecasterParams(window=8, hidden=4, max_epochs=1, max_train_samples=100)
    a = train_forecaster(fold, features_of(fold), H, params, seed=2)
    assert a.n_fit == 100
    assert state_equal(a.model, train_forecaster(fold, features_of(fold), H, params, seed=2).model)


# ---------------------------------------------------------------------------------------------- windows


def test_windows_never_cross_symbols_and_end_at_t() -> None:
    rows = []
    for s, n in (("A", 7), ("B", 3), ("C", 5)):  # B is shorter than a window: no window at all
        for i in range(n):
            rows.append(
                {"symbol": s, "ts": START + i * HOUR, "x": float(ord(s) * 100 + i), "y": None if i == 1 else 1.0}
            )
    frame = (
        pl.DataFrame(rows).with_columns(pl.col("ts").dt.cast_time_unit("us")).sample(fraction=1.0, shuffle=True, seed=1)
    )
    ws = build_windows(frame, ["x", "y"], window=4)
    assert ws.keys["symbol"].to_list() == ["A"] * 4 + ["C"] * 2
    assert ws.keys["ts"].to_list() == [START + i * HOUR for i in (3, 4, 5, 6, 3, 4)]
    windows = ws.windows()
    assert windows.shape == (6, 4, 2) and windows.dtype == np.float32
    for (symbol, ts), win in zip(ws.keys.iter_rows(), windows, strict=True):
        t = int((ts - START) / HOUR)
        assert win[:, 0].tolist() == [
            float(ord(symbol) * 100 + i) for i in range(t - 3, t + 1)
        ]  # bars t−3..t of one symbol
    assert windows[0, :, 1].tolist() == [1.0, 0.0, 1.0, 1.0]  # the null became 0
    torch_windows = gather_windows(torch.from_numpy(ws.features), torch.from_numpy(ws.ends), 4)
    assert np.array_equal(torch_windows.numpy(), windows)
    with pytest.raises(ValueError, match="label_"):
        build_windows(frame.with_columns(label_x=pl.lit(1.0)), ["x", "label_x"], window=2)


def test_predictions_use_only_bars_up_to_t(fold: pl.DataFrame, trained: TrainedForecaster) -> None:
    cut = START + 300 * HOUR
    before = trained.predict(fold)
    future = pl.col("ts") > cut
    changed = fold.with_columns(
        *[pl.when(future).then(pl.col(c) * -3 + 1).otherwise(pl.col(c)).alias(c) for c in features_of(fold)]
    )
    after = trained.predict(changed)
    past = pl.col("ts") <= cut
    assert after.filter(past).equals(before.filter(past))
    assert not after.filter(future).equals(before.filter(future))  # the change is visible where it should be
    truncated = trained.predict(fold.filter(past))
    assert truncated.select("symbol", "ts").equals(before.filter(past).select("symbol", "ts"))
    np.testing.assert_allclose(truncated["p_up"].to_numpy(), before.filter(past)["p_up"].to_numpy(), rtol=0, atol=1e-6)


def test_predict_and_evaluate_on_the_test_split(fold: pl.DataFrame, trained: TrainedForecaster) -> None:
    preds = trained.predict(fold, only_split="test")
    test = fold.filter(pl.col("split") == "test")
    # The first test bars get windows from the last train bars (bridging the purge gap): every test row is predicted.
    assert preds.select("symbol", "ts").equals(test.select("symbol", "ts"))
    assert preds.columns == ["symbol", "ts", "p_up", "vol"]
    assert preds["p_up"].is_between(0, 1).all() and (preds["vol"] > 0).all()
    metrics = trained.evaluate(fold, only_split="test")
    assert metrics["n"] == test.filter(pl.col(f"label_dir_{H}").is_not_null()).height
    assert {"accuracy", "auc", "brier", "log_loss", "vol_nll", "vol_ratio"} <= metrics.keys()


def test_classification_metrics_by_hand() -> None:
    m = classification_metrics(np.array([0.9, 0.2, 0.6, 0.4]), np.array([1.0, 0.0, 0.0, 1.0]))
    assert m["accuracy"] == 0.5 and m["n"] == 4
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.36 + 0.36) / 4)
    assert m["auc"] == pytest.approx(0.75)
    assert math.isnan(classification_metrics(np.array([0.3, 0.7]), np.array([1.0, 1.0]))["auc"])  # one class


# ---------------------------------------------------------------------------------------------- persistence


def test_save_load_reproduces_predictions_exactly(
    fold: pl.DataFrame, trained: TrainedForecaster, tmp_path: Path
) -> None:
    trained.save(tmp_path / "ckpt")
    loaded = TrainedForecaster.load(tmp_path / "ckpt", device="cpu")
    assert state_equal(loaded.model, trained.model)
    assert loaded.params == trained.params and loaded.feature_columns == trained.feature_columns
    assert loaded.horizon == H and loaded.vol_scale == trained.vol_scale and loaded.best_epoch == trained.best_epoch
    assert loaded.history == trained.history
    assert loaded.predict(fold).equals(trained.predict(fold))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["forecaster.json", "model.pt"]


def test_params_validate_and_round_trip() -> None:
    """The parameters are the LSTM_Attn / CNN_LSTM config entries: strict, bounded, JSON round trip."""
    params = ForecasterParams(type="CNN_LSTM", window=24, max_train_samples=None)
    assert (
        params.arch == "cnn_lstm" and ForecasterParams.for_arch("cnn_lstm", window=24, max_train_samples=None) == params
    )
    assert ForecasterParams.model_validate(params.model_dump(mode="json")) == params
    with pytest.raises(ValueError, match="arch"):
        ForecasterParams.for_arch("transformer")
    with pytest.raises(ValueError, match="type"):
        ForecasterParams(type="Transformer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="val_fraction"):
        ForecasterParams(val_fraction=1.0)
    with pytest.raises(ValueError, match="windw"):
        ForecasterParams.model_validate({"windw": 3})


# ---------------------------------------------------------------------------------------------- sizing

P = 8760
TARGET = 0.01 * math.sqrt(P)  # 1 % per bar


def preds(rows: list[tuple[str, int, float | None, float | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"symbol": s, "ts": START + t * HOUR, "p_up": p, "vol": v} for s, t, p, v in rows],
        schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC"), "p_up": pl.Float64, "vol": pl.Float64},
    )


def weights_of(frame: pl.DataFrame) -> dict[tuple[str, int], float]:
    return {(s, int((t - START) / HOUR)): w for s, t, w in frame.iter_rows()}


def test_sizing_long_only_inverse_vol() -> None:
    out = forecast_to_weights(
        preds(
            [("A", 0, 0.75, 0.01), ("B", 0, 0.3, 0.01), ("A", 1, 0.6, 0.02), ("B", 1, None, 0.01), ("C", 1, 0.9, 0.0)]
        ),
        target_vol_annual=TARGET,
        periods_per_year=P,
        max_leverage=2.0,
        allow_short=False,
    )
    w = weights_of(out)
    assert w[("A", 0)] == pytest.approx(0.5)  # edge 0.5 × (1 % / 1 %)
    assert w[("B", 0)] == 0.0  # bearish → flat when long-only
    assert w[("A", 1)] == pytest.approx(0.1)  # edge 0.2 × (1 % / 2 %)
    assert w[("B", 1)] == 0.0 and w[("C", 1)] == 0.0  # no forecast / no vol estimate → no position
    assert out.schema == {"symbol": pl.String, "ts": pl.Datetime("us", "UTC"), "weight": pl.Float64}


def test_sizing_caps_each_symbol_then_scales_gross() -> None:
    out = forecast_to_weights(
        preds([("A", 0, 0.9, 0.001), ("A", 1, 0.9, 0.001), ("B", 1, 0.7, 0.01), ("C", 1, 0.2, 0.01)]),
        target_vol_annual=TARGET,
        periods_per_year=P,
        max_leverage=1.0,
        allow_short=True,
    )
    w = weights_of(out)
    assert w[("A", 0)] == pytest.approx(1.0)  # raw 8.0, capped at max_leverage
    # ts 1: capped A = 1.0, B = 0.4, C = −0.6 → gross 2.0 > 1 → all halved.
    assert w[("A", 1)] == pytest.approx(0.5)
    assert w[("B", 1)] == pytest.approx(0.2)
    assert w[("C", 1)] == pytest.approx(-0.3)
    gross = out.group_by("ts").agg(pl.col("weight").abs().sum())["weight"]
    assert (gross <= 1.0 + 1e-12).all()


def test_sizing_rebalance_every_emits_every_kth_timestamp() -> None:
    rows = [(s, t, 0.7, 0.01) for t in range(5) for s in ("A", "B")]
    sizing = {"target_vol_annual": TARGET, "periods_per_year": P, "max_leverage": 1.0, "allow_short": False}
    out = forecast_to_weights(preds(rows), **sizing, rebalance_every=2)  # type: ignore[arg-type]
    assert sorted({t for _, t in weights_of(out)}) == [0, 2, 4]
    assert out.height == 6  # both symbols at each kept timestamp
    with pytest.raises(ValueError, match="p_up"):
        forecast_to_weights(preds([("A", 0, 1.5, 0.01)]), **sizing)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- devices


def test_select_device_none_is_cpu() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_device(None) == torch.device("cpu")


def test_select_device_falls_back_to_cpu_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="gpu_id=0"):
        assert select_device(0) == torch.device("cpu")
    with pytest.raises(ValueError, match="gpu_id"):
        select_device(-1)


def test_autocast_is_a_noop_unless_bf16() -> None:
    layer = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    with autocast("cpu", bf16=False):
        assert layer(x).dtype == torch.float32
    with autocast("cpu", bf16=True):
        assert layer(x).dtype == torch.bfloat16


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_autocast_trains_on_cpu(arch: str) -> None:
    frame = fold_frame(n_train=150, n_test=30)
    params = ForecasterParams.for_arch(arch, window=8, hidden=8, conv_channels=8, max_epochs=2, bf16=True)
    model = train_forecaster(frame, features_of(frame), H, params, seed=0)
    assert model.precision == "bf16-autocast"
    assert all(math.isfinite(v) for v in model.history["train_loss"] + model.history["val_loss"])
    assert all(p.dtype == torch.float32 for p in model.model.parameters())  # autocast never casts the weights
    preds = model.predict(frame)
    assert preds["p_up"].is_between(0, 1).all() and (preds["vol"] > 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: GPU path not exercised here")
@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_training_step(arch: str, bf16: bool) -> None:
    frame = fold_frame(n_train=200, n_test=40)
    device = select_device(0)
    params = ForecasterParams.for_arch(arch, window=12, hidden=8, conv_channels=8, max_epochs=1, bf16=bf16)
    model = train_forecaster(frame, features_of(frame), H, params, device=device, seed=0)
    assert next(model.model.parameters()).device.type == "cuda"
    assert model.precision == ("bf16-autocast" if bf16 else "fp32")
    assert all(math.isfinite(v) for v in model.history["train_loss"])
    out = model.predict(frame, only_split="test")
    assert out.height == frame.filter(pl.col("split") == "test").height and out["p_up"].is_finite().all()
    if not bf16:  # fp32 on CUDA with deterministic settings: the same seed gives the same weights
        again = train_forecaster(frame, features_of(frame), H, params, device=device, seed=0)
        assert state_equal(again.model, model.model)
