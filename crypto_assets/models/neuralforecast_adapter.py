"""NeuralForecast 3.3 models (NHITS, TFT, LSTM) trained on one fold's per-bar log returns, and their rolling forecasts.

Target and inputs. `y[symbol, t] = log(close_t / close_{t−1})`, the per-bar log return known at the close of t (never
the forward-return label `label_fwd_ret_h`, which is known only h bars later); a symbol's first bar has none (0).
The fold's scaled features are historical exogenous inputs (`hist_exog_list`): the model sees them up to the
decision bar, never after. unique_id = symbol. Training sees the rows with `split == "train"` only.

Scaling. No `local_scaler_type` (NeuralForecast fits it on the whole frame, test rows included: a leak). The
model's own per-window `scaler_type` normalises the target of each window by statistics of that window's input
steps alone; the exogenous features are already the fold's train-only robust z-scores and are fed as they are.

Forecast. The model's head is a `DistributionLoss("Normal" | "StudentT", return_params=True)`: for each decision
bar t it gives per-step parameters (loc_k, scale_k) of the returns at t+1 .. t+h. Assumption: the h steps are
independent (and, for StudentT, their sum is close to Normal), so the horizon return is Normal with

    μ_h = Σ_k loc_k          σ_h = √(Σ_k var_k),   var_k = scale_k²  (StudentT: scale_k² · ν_k / (ν_k − 2))
    p_up = Φ(μ_h / σ_h)      vol = σ_h / √h  (per-bar σ, what `forecast_to_weights` sizes by)

The sampled columns of NeuralForecast (median, quantiles of random draws) are not deterministic and are not used.

Rolling predictions are made by building the input windows here and calling the torch module directly, batched
over every decision bar at once: NeuralForecast's `predict` forecasts from the end of the history it is given, so
rolling decisions need one call per decision bar (each running a Lightning trainer and data module over rebuilt
windows), and `cross_validation` refits. The window of decision bar t is the `input_size` rows of its
symbol up to and including t (consecutive rows, like `crypto_assets.models.data`: the purge gap and exchange gaps are
bridged; a short history is left-padded with masked zeros, as NeuralForecast pads). The scaler, the window parsing,
the forward pass and the scale decoupling are NeuralForecast's own (`scaler.transform`, `_parse_windows`, `forward`,
`loss.domain_map`, `loss.scale_decouple`): without exogenous inputs the moments equal those of its own `predict`
(tested), with them they differ only in leaving the features unscaled per window.

Determinism and side effects (DESIGN.md §2): `neuralforecast` is imported inside the functions only (it loads
lightning and ray). Building a model calls `pl.seed_everything`, which resets Python's, NumPy's and torch's global
random state: every call here restores the caller's global state afterwards (`kept_global_rng`). Training and
forecasting run with one torch thread and deterministic algorithms, on the device given (`cpu`, `cuda:N`). No
Lightning trainer is built (training is the loop in `fit_nf_forecaster`), so there is no progress bar, logger or
checkpoint, and nothing is written to disk except by `save`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch

from crypto_assets.models.device import deterministic

ModelClass = Literal["NHITS", "TFT", "LSTM"]
Distribution = Literal["Normal", "StudentT"]
MODEL_FILE = "model.safetensors"
META_FILE = "nf_forecaster.json"
FORMAT_VERSION = 1
Y = "y"
MASK = "available_mask"
_LOGGERS = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric")


@contextlib.contextmanager
def kept_global_rng() -> Iterator[None]:
    """Restore Python's `random`, NumPy's legacy global RNG, torch's CPU RNG (and `PL_GLOBAL_SEED`) on exit, so
    NeuralForecast's `pl.seed_everything` leaves the caller's random streams where they were."""
    py_state, np_state = random.getstate(), np.random.get_state()
    pl_seed = os.environ.get("PL_GLOBAL_SEED")
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            if pl_seed is None:
                os.environ.pop("PL_GLOBAL_SEED", None)
            else:
                os.environ["PL_GLOBAL_SEED"] = pl_seed


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's INFO lines (GPU available, TPU, ...) and NeuralForecast's warnings muted for the block."""
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def log_return_series(frame: pl.DataFrame, bars: pl.DataFrame, exog_columns: list[str]) -> pl.DataFrame:
    """`symbol, ts, y, <exog>, split` sorted by (symbol, ts): `y` = log(close_t / close_{t−1}) over consecutive bars
    of the symbol in `bars` (0 for its first bar), joined onto the fold frame's rows; missing exogenous values → 0,
    the centre of the robust z-scores (as the torch forecasters' windows treat them)."""
    returns = (
        bars.select("symbol", pl.col("ts").cast(pl.Datetime("us", "UTC")), "close")
        .sort("symbol", "ts")
        .with_columns((pl.col("close").log() - pl.col("close").log().shift(1).over("symbol")).alias(Y))
        .select("symbol", "ts", Y)
    )
    rows = frame.select("symbol", pl.col("ts").cast(pl.Datetime("us", "UTC")), *exog_columns, "split")
    out = rows.join(returns, on=["symbol", "ts"], how="left")
    filled = [pl.col(c).cast(pl.Float64).fill_nan(None).fill_null(0.0) for c in [Y, *exog_columns]]
    out = out.with_columns(filled).with_columns(
        [pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(0.0).alias(c) for c in [Y, *exog_columns]]
    )
    return out.select("symbol", "ts", Y, *exog_columns, "split").sort("symbol", "ts")


@dataclass
class NFForecaster:
    """A fitted NeuralForecast model and what is needed to forecast with, audit and reload it."""

    model: Any
    """The NeuralForecast model (a LightningModule)."""
    model_class: ModelClass
    exog_columns: list[str]
    horizon: int
    distribution: Distribution
    train_seconds: float = 0.0
    steps_run: int = 0
    train_loss: list[float] = field(default_factory=list)
    """Training loss (the distribution's NLL of the targets) per optimiser step."""
    val_loss: list[tuple[int, float]] = field(default_factory=list)
    """(step, validation NLL) at each check; empty without a validation slice."""
    best_step: int | None = None
    """Step whose weights were kept (the lowest validation NLL); None without a validation slice (the last)."""

    @property
    def input_size(self) -> int:
        return int(self.model.input_size)

    def forecast(self, series: pl.DataFrame, decisions: pl.DataFrame, *, batch: int = 1024) -> pl.DataFrame:
        """`symbol, ts, mu_h, sigma_h, p_up, vol` for each (symbol, ts) of `decisions`, from `series`
        (`log_return_series`) rows up to and including that bar (see the module docstring for the formulas).

        Rows of `decisions` absent from `series` are dropped. Output sorted by (symbol, ts)."""
        series = series.sort("symbol", "ts")
        cols = [Y, *self.exog_columns]
        values = series.select(cols).to_numpy().astype(np.float32)
        keys = series.select("symbol", "ts").with_row_index("_row")
        wanted = keys.join(decisions.select("symbol", pl.col("ts").cast(pl.Datetime("us", "UTC"))), on=["symbol", "ts"])
        wanted = wanted.sort("symbol", "ts")
        if wanted.height == 0:
            return _empty_forecast()
        # the first row of each decision's symbol: its window never reaches into the previous symbol's rows
        first_row = keys.group_by("symbol").agg(pl.col("_row").min().alias("_first"))
        wanted = wanted.join(first_row, on="symbol")
        end = wanted["_row"].to_numpy().astype(np.int64)
        start = wanted["_first"].to_numpy().astype(np.int64)
        windows = _gather_windows(values, end, start, self.input_size, self.horizon)
        mu, var = [], []
        with torch.no_grad(), deterministic(threads=1):
            for lo in range(0, windows.shape[0], batch):
                m, v = self._step_moments(windows[lo : lo + batch], cols)
                mu.append(m)
                var.append(v)
        mu_h = np.concatenate(mu).sum(axis=1)
        sigma_h = np.sqrt(np.concatenate(var).sum(axis=1))
        p_up = _normal_cdf(mu_h / np.maximum(sigma_h, 1e-12))
        return pl.DataFrame(
            {
                "symbol": wanted["symbol"],
                "ts": wanted["ts"],
                "mu_h": mu_h,
                "sigma_h": sigma_h,
                "p_up": p_up,
                "vol": sigma_h / math.sqrt(self.horizon),
            }
        )

    def _step_moments(self, windows: np.ndarray, cols: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-step mean and variance (B, h) of the returns after each window's last input bar."""
        model = self.model
        model.eval()
        device = next(model.parameters()).device
        temporal = torch.from_numpy(windows).to(device).unsqueeze(-1)  # [B, L + h, C, n_series = 1]
        params, _ = _distribution_params(model, temporal, cols)
        if self.distribution == "Normal":
            loc, scale = params
            var = scale**2
        else:
            dof, loc, scale = params
            var = scale**2 * dof / (dof - 2.0)  # dof > 3 by NeuralForecast's domain map
        return _per_step(loc), _per_step(var)

    # -------------------------------------------------------------------------------------- persistence

    def save(self, directory: Path) -> Path:
        """`model.safetensors` (NeuralForecast's own checkpoint: weights and hyper-parameters, no pickle) and
        `nf_forecaster.json`; each written aside and renamed."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        from neuralforecast.losses.pytorch import DistributionLoss

        # the loss object the model trained with holds non-leaf tensors from its last forward pass, which
        # `serialize` cannot deep-copy: store an equal, unused one in its hyper-parameters
        self.model.hparams["loss"] = DistributionLoss(distribution=self.distribution, return_params=True)
        tmp_model = directory / f".{MODEL_FILE}.tmp"
        tmp_model.write_bytes(self.model.serialize())
        os.replace(tmp_model, directory / MODEL_FILE)
        meta = {
            "format_version": FORMAT_VERSION,
            "model_class": self.model_class,
            "exog_columns": self.exog_columns,
            "horizon": self.horizon,
            "distribution": self.distribution,
            "train_seconds": self.train_seconds,
            "steps_run": self.steps_run,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "best_step": self.best_step,
        }
        tmp_meta = directory / f".{META_FILE}.tmp"
        tmp_meta.write_text(json.dumps(meta, indent=2))
        os.replace(tmp_meta, directory / META_FILE)
        return directory

    @classmethod
    def load(cls, directory: Path, device: str = "cpu") -> NFForecaster:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory}: unsupported NeuralForecast forecaster format {meta.get('format_version')!r}"
            )
        model_type = _model_type(meta["model_class"])
        with kept_global_rng(), quiet_lightning():
            model = model_type.load(str(directory / MODEL_FILE), map_location=torch.device(device))
        return cls(
            model=model,
            model_class=meta["model_class"],
            exog_columns=list(meta["exog_columns"]),
            horizon=int(meta["horizon"]),
            distribution=meta["distribution"],
            train_seconds=float(meta["train_seconds"]),
            steps_run=int(meta["steps_run"]),
            train_loss=[float(x) for x in meta["train_loss"]],
            val_loss=[(int(s), float(v)) for s, v in meta["val_loss"]],
            best_step=meta["best_step"],
        )


def fit_nf_forecaster(
    series: pl.DataFrame,
    model_class: ModelClass,
    model_kwargs: dict[str, Any],
    *,
    horizon: int,
    distribution: Distribution,
    seed: int,
    max_steps: int,
    windows_batch_size: int,
    device: str = "cpu",
    val_bars: int = 0,
    val_check_steps: int = 50,
    patience_checks: int = -1,
    init: NFForecaster | None = None,
) -> NFForecaster:
    """Train `model_class` on the rows of `series` (`log_return_series`) with `split == "train"`.

    `model_kwargs`: the model's own arguments (input_size, learning_rate, scaler_type, layer sizes, ...). Each of the
    `max_steps` optimiser steps draws `windows_batch_size` windows (decision row, its `input_size` rows of history
    and the `horizon` rows after it, all within one symbol's train rows) uniformly with a seeded generator, and
    takes NeuralForecast's own training step on them: per-window normalisation, forward, `loss.scale_decouple` and
    the distribution's NLL on the unscaled targets, with the model's own optimiser and learning-rate decay
    (`configure_optimizers`). This loop replaces Lightning's `fit`, which rebuilds every window of every series
    (input_size + h rows × all exogenous columns) before sampling a batch: ~0.16 s a step for NHITS on a demo fold
    with 26 exogenous features, against ~0.05 s here (benchmarks/RESULTS.md, "NeuralForecast families").

    `val_bars` > 0 holds out the last `val_bars` train rows of every symbol: training windows' targets end before
    them, validation windows decide at the row just before the slice or later (all their targets lie in it), so no
    target is shared (their inputs reach back into the fit rows, as a decision's inputs do). `val_bars` must be at
    least `horizon` for a validation window to exist. Every `val_check_steps` steps the validation NLL is measured;
    the best state is kept and restored, and `patience_checks` ≥ 0 stops after that many checks without
    improvement. One torch thread, deterministic algorithms, `seed` for the weights and the window draws; the
    caller's global random state is left as it was. `init`: start from that model's weights (same class, horizon,
    inputs and sizes) instead of a fresh initialisation, with a fresh optimiser (the previous fold's model, for
    `retrain: fine_tune`)."""
    exog = [c for c in series.columns if c not in ("symbol", "ts", Y, "split")]
    train = series.filter(pl.col("split") == "train").sort("symbol", "ts")
    if train.height == 0:
        raise ValueError("no train rows to fit a NeuralForecast model on")
    values = train.select(Y, *exog).to_numpy().astype(np.float32)
    fit_ends, val_ends, first = _train_windows(train, horizon, val_bars)
    if fit_ends.size == 0:
        raise ValueError(f"no train window with {horizon} target bars after it (val_bars={val_bars}): too few rows")
    if val_bars > 0 and val_ends.size == 0:
        raise ValueError(
            f"val_bars={val_bars} leaves no validation window: it must be at least the horizon ({horizon})"
        )
    if init is not None and (init.model_class, init.horizon, init.exog_columns) != (model_class, horizon, exog):
        raise ValueError(
            f"cannot warm-start a {model_class} (horizon {horizon}, {len(exog)} inputs) from a {init.model_class} "
            f"(horizon {init.horizon}, {len(init.exog_columns)} inputs)"
        )
    cols = [Y, *exog]
    losses: list[float] = []
    val_losses: list[tuple[int, float]] = []
    model_type = _model_type(model_class)  # imports neuralforecast (and configures lightning's loggers) first
    from neuralforecast.losses.pytorch import DistributionLoss

    started = time.perf_counter()  # training only, not the import

    with kept_global_rng(), quiet_lightning(), deterministic(threads=1):
        model = model_type(
            h=horizon,
            hist_exog_list=exog or None,
            loss=DistributionLoss(distribution=distribution, return_params=True),
            random_seed=seed,
            max_steps=max_steps,
            windows_batch_size=windows_batch_size,
            **model_kwargs,
        )
        if init is not None:
            model.load_state_dict(init.model.state_dict())
        model.to(torch.device(device))
        torch.manual_seed(seed)
        draws = torch.Generator().manual_seed(seed)
        optimizers = model.configure_optimizers()
        optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
        best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        stale_checks = 0
        for step in range(1, max_steps + 1):
            model.train()
            pick = fit_ends[torch.randint(fit_ends.size, (windows_batch_size,), generator=draws).numpy()]
            batch = _gather_windows(values, pick, first[pick], model.input_size, horizon, with_targets=True)
            loss = _window_nll(model, batch, cols)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach().cpu()))
            if val_ends.size and (step % val_check_steps == 0 or step == max_steps):
                model.eval()
                with torch.no_grad():
                    batch = _gather_windows(values, val_ends, first[val_ends], model.input_size, horizon, True)
                    val = float(_window_nll(model, batch, cols).cpu())
                val_losses.append((step, val))
                if best is None or val < best[0]:
                    best = (val, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
                    stale_checks = 0
                else:
                    stale_checks += 1
                    if 0 <= patience_checks < stale_checks:
                        break
        if best is not None:
            model.load_state_dict(best[2])
    model.eval()
    return NFForecaster(
        model=model,
        model_class=model_class,
        exog_columns=exog,
        horizon=horizon,
        distribution=distribution,
        train_seconds=time.perf_counter() - started,
        steps_run=len(losses),
        train_loss=losses,
        val_loss=val_losses,
        best_step=None if best is None else best[1],
    )


def _train_windows(train: pl.DataFrame, horizon: int, val_bars: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit decision rows, validation decision rows, first row of each row's symbol) over `train` sorted by
    (symbol, ts). A fit row has `horizon` rows of its symbol after it, all before the symbol's validation slice (its
    last `val_bars` rows); a validation row's targets lie in that slice."""
    index = (
        train.select("symbol")
        .with_row_index("_row")
        .with_columns(
            pl.col("_row").min().over("symbol").alias("_first"),
            pl.col("_row").max().over("symbol").alias("_last"),
        )
    )
    row, first, last = (index[c].to_numpy().astype(np.int64) for c in ("_row", "_first", "_last"))
    val_start = last - val_bars + 1  # first row of the symbol's validation slice (= last + 1 when none)
    fit = row + horizon < val_start
    val = (row + 1 >= val_start) & (row + horizon <= last) if val_bars > 0 else row < 0
    return row[fit], row[val], first


def _window_nll(model: Any, windows: np.ndarray, cols: list[str]) -> torch.Tensor:
    """NeuralForecast's training loss on `windows` (B, input_size + h, C + 1): the distribution's NLL of the
    unscaled targets under the decoupled parameters (its `training_step` without Lightning)."""
    device = next(model.parameters()).device
    temporal = torch.from_numpy(windows).to(device).unsqueeze(-1)
    targets = temporal[:, model.input_size :, 0].clone()
    params, outsample_mask = _distribution_params(model, temporal, cols)
    loss: torch.Tensor = model.loss(y=targets, distr_args=params, mask=outsample_mask)
    return loss


def _distribution_params(model: Any, temporal: torch.Tensor, cols: list[str]) -> tuple[Any, torch.Tensor]:
    """The forward pass of NeuralForecast's training and predict steps without Lightning: the distribution's
    parameters in the target's own units (decoupled from the window scaler) and the mask of the h future steps."""
    batch = _normalized(model, temporal, cols)
    insample_y, insample_mask, _, outsample_mask, hist_exog, futr_exog, stat_exog = model._parse_windows(
        {"y_idx": 0}, batch
    )
    output = model(
        {
            "insample_y": insample_y,
            "insample_mask": insample_mask,
            "futr_exog": futr_exog,
            "hist_exog": hist_exog,
            "stat_exog": stat_exog,
        }
    )
    y_loc, y_scale = model._get_loc_scale(0)
    params = model.loss.scale_decouple(output=model.loss.domain_map(output), loc=y_loc, scale=y_scale)
    return params, outsample_mask


def _model_type(model_class: str) -> Any:
    """The NeuralForecast model class; imports neuralforecast on first use, keeping the global random state (its
    first import draws from Python's `random`)."""
    with kept_global_rng():
        from neuralforecast.models import LSTM, NHITS, TFT

    types = {"NHITS": NHITS, "TFT": TFT, "LSTM": LSTM}
    if model_class not in types:
        raise ValueError(f"unknown NeuralForecast model {model_class!r}; allowed: {', '.join(types)}")
    return types[model_class]


def _normalized(model: Any, temporal: torch.Tensor, cols: list[str]) -> dict[str, Any]:
    """The windows as `_parse_windows` takes them, the target channel normalised by the model's `scaler_type` with
    statistics of each window's input steps (NeuralForecast's `_normalization`, restricted to y). The exogenous
    channels are left alone: they are already robust z-scores fitted on the fold's train window and clipped, and
    re-scaling them per window blows up slow features (a window MAD near 0 gave inputs of 1e3 and forecasts of
    +2,500 % a day in a trial run)."""
    import pandas as pd

    mask = temporal[:, :, -1:].clone()  # [B, L + h, 1, n_series]
    mask[:, -model.h :] = 0.0
    temporal[:, :, :1] = model.scaler.transform(x=temporal[:, :, :1], mask=mask)
    return {"temporal": temporal, "temporal_cols": pd.Index([*cols, MASK]), "static": None, "static_cols": None}


def _gather_windows(
    values: np.ndarray, end: np.ndarray, start: np.ndarray, input_size: int, h: int, with_targets: bool = False
) -> np.ndarray:
    """(B, input_size + h, C + 1) float32: rows end−input_size+1 .. end of `values` (never before `start`, the
    symbol's first row; earlier positions stay zero with mask 0), then the availability mask as the last column.
    The h steps after `end` are the rows end+1 .. end+h with mask 1 when `with_targets` (training: the caller
    guarantees they exist), else empty (mask 0: the future being forecast)."""
    n_cols = values.shape[1]
    out = np.zeros((end.size, input_size + h, n_cols + 1), dtype=np.float32)
    rows = end[:, None] + np.arange(-input_size + 1, h + 1 if with_targets else 1)[None, :]
    valid = rows >= start[:, None]
    span = rows.shape[1]
    out[:, :span, :n_cols] = np.where(valid[..., None], values[np.clip(rows, 0, None)], 0.0)
    out[:, :span, n_cols] = valid
    return out


def _per_step(values: torch.Tensor) -> np.ndarray:
    """[B, h, 1] tensor → (B, h) float64 array."""
    return values.reshape(values.shape[0], -1).double().cpu().numpy()


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return np.asarray(ndtr(z), dtype=np.float64)


def _empty_forecast() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "symbol": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "mu_h": pl.Float64,
            "sigma_h": pl.Float64,
            "p_up": pl.Float64,
            "vol": pl.Float64,
        }
    )
