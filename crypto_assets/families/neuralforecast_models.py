"""NeuralForecast forecasters as model families: `NHITS`, `TFT` and `NF_LSTM` (NeuralForecast 3.3's LSTM).

fit: the model learns the distribution (Normal or StudentT) of each symbol's next `label_horizon` per-bar log
returns from the fold's train rows (crypto_assets.models.neuralforecast_adapter; the forward-return labels are never
its target). predict: at every `rebalance_every`-th bar of the decision window (the grid `forecast_to_weights` keeps),
from the data up to that bar only, the horizon's μ_h = Σ loc and σ_h = √Σ scale² under independent Normal steps give
p_up = Φ(μ_h / σ_h) and a per-bar vol σ_h / √h, sized to target weights by the same `forecast_to_weights` rule as the
torch forecasters. fit_warm (`retrain: fine_tune`): the same training from the previous fold's weights, on
`fine_tune_fraction` of the steps. NeuralForecast (lightning, ray) is imported inside the methods only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import polars as pl
from pydantic import Field

from crypto_assets.config.schema import FamilyParams
from crypto_assets.families.base import STATE_FORECAST_COLUMNS, Family, FoldData, feature_columns_of
from crypto_assets.families.registry import register

Size = Annotated[int, Field(ge=1, le=4096)]


class NeuralForecastParams(FamilyParams):
    """Shared by every NeuralForecast family: window, budget, per-window scaling and the output distribution."""

    input_size: Annotated[int, Field(ge=2, le=4096)] = 96
    """Bars of history per input window, ending at the decision bar (inclusive)."""
    max_steps: Annotated[int, Field(ge=1, le=1_000_000)] = 300
    """Optimiser steps."""
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-3
    windows_batch_size: Annotated[int, Field(ge=1, le=65536)] = 128
    """Windows per optimiser step, drawn uniformly from every symbol's train rows (NeuralForecast's
    `windows_batch_size`; its `batch_size`, series per step, does not apply: every symbol is drawn from)."""
    scaler_type: Literal["standard", "robust", "invariant"] = "standard"
    """The model's own per-window normalisation of the target (statistics of the window's input steps only).
    `standard` by default: with `robust`, NHITS (whose forecast starts from the last input value) divided the
    heavy-tailed returns by a small MAD and kept a large upward bias after a demo budget (median μ_h +10 % a day)."""
    distribution: Literal["Normal", "StudentT"] = "Normal"
    """Output distribution of each step's log return (`DistributionLoss(..., return_params=True)`)."""
    use_exog: bool = True
    """Feed the fold's scaled features as historical exogenous inputs (false: the return series alone)."""
    val_bars: Annotated[int, Field(ge=0)] = 0
    """Last train bars of every symbol held out to pick the best checkpoint (0 = none, the last weights are kept)."""
    val_check_steps: Annotated[int, Field(ge=1)] = 50
    """Steps between validation checks."""
    patience_checks: Annotated[int, Field(ge=0)] | None = None
    """Checks without a lower validation NLL before stopping (null = train all `max_steps`)."""

    def model_kwargs(self) -> dict[str, Any]:
        """The NeuralForecast model's own constructor arguments."""
        return {"input_size": self.input_size, "learning_rate": self.learning_rate, "scaler_type": self.scaler_type}


class NHITSParams(NeuralForecastParams):
    """`{type: NHITS, ...}`: three identity stacks of one MLP block each (Challu et al. 2023)."""

    type: Literal["NHITS"] = "NHITS"
    mlp_width: Size = 64
    mlp_layers: Annotated[int, Field(ge=1, le=8)] = 1
    """Each block's MLP: an input layer to `mlp_width` units, then this many `mlp_width` → `mlp_width` layers."""
    n_pool_kernel_size: Annotated[list[Size], Field(min_length=3, max_length=3)] = Field(
        default_factory=lambda: [2, 2, 1]
    )
    """Max-pooling kernel of the input in each of the three stacks."""
    n_freq_downsample: Annotated[list[Size], Field(min_length=3, max_length=3)] = Field(
        default_factory=lambda: [4, 2, 1]
    )
    """Downsampling of each stack's forecast (coarse to fine); each must be ≤ the label horizon."""
    dropout_prob_theta: Annotated[float, Field(ge=0, lt=1)] = 0.0
    distribution: Literal["Normal", "StudentT"] = "StudentT"
    """StudentT for NHITS: on the demo fold (300 steps) its Normal head kept an upward bias (median μ_h +2 % a day,
    p_up 0.71, while the train window drifted down) that StudentT did not (−0.7 %, p_up 0.42)."""

    def model_kwargs(self) -> dict[str, Any]:
        return {
            **super().model_kwargs(),
            "mlp_units": [[self.mlp_width, self.mlp_width]] * self.mlp_layers,
            "n_pool_kernel_size": list(self.n_pool_kernel_size),
            "n_freq_downsample": list(self.n_freq_downsample),
            "dropout_prob_theta": self.dropout_prob_theta,
        }


class TFTParams(NeuralForecastParams):
    """`{type: TFT, ...}`: Temporal Fusion Transformer (Lim et al. 2021)."""

    type: Literal["TFT"] = "TFT"
    input_size: Annotated[int, Field(ge=2, le=4096)] = 48
    hidden_size: Size = 32
    n_head: Annotated[int, Field(ge=1, le=64)] = 4
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    attn_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0

    def model_kwargs(self) -> dict[str, Any]:
        return {
            **super().model_kwargs(),
            "hidden_size": self.hidden_size,
            "n_head": self.n_head,
            "dropout": self.dropout,
            "attn_dropout": self.attn_dropout,
        }


class NFLSTMParams(NeuralForecastParams):
    """`{type: NF_LSTM, ...}`: NeuralForecast's LSTM encoder with an MLP decoder emitting all h steps at once
    (`recurrent=False`: direct, no recursive feeding of its own forecasts)."""

    type: Literal["NF_LSTM"] = "NF_LSTM"
    input_size: Annotated[int, Field(ge=2, le=4096)] = 48
    encoder_hidden_size: Size = 32
    encoder_n_layers: Annotated[int, Field(ge=1, le=8)] = 1
    encoder_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    decoder_hidden_size: Size = 32
    decoder_layers: Annotated[int, Field(ge=1, le=8)] = 1

    def model_kwargs(self) -> dict[str, Any]:
        return {
            **super().model_kwargs(),
            "encoder_hidden_size": self.encoder_hidden_size,
            "encoder_n_layers": self.encoder_n_layers,
            "encoder_dropout": self.encoder_dropout,
            "decoder_hidden_size": self.decoder_hidden_size,
            "decoder_layers": self.decoder_layers,
            "recurrent": False,
        }


class NeuralForecastFamily(Family):
    """Shared by NHITS, TFT and NF_LSTM; subclasses set `type`, `params_class` and `model_class`."""

    model_class: ClassVar[Literal["NHITS", "TFT", "LSTM"]]
    forecast_columns = STATE_FORECAST_COLUMNS  # on the rebalancing grid: every bar when asked with rebalance_every 1

    def fit(self, data: FoldData, params: Any, seed: int, device: str) -> Any:
        return self._fit(data, params, seed, device, init=None, max_steps=params.max_steps)

    def fit_warm(self, data: FoldData, params: Any, seed: int, device: str, init: Any) -> Any:
        """From the previous fold's weights, `fine_tune_fraction` of `max_steps` (at least one)."""
        steps = max(1, math.ceil(params.max_steps * params.fine_tune_fraction))
        return self._fit(data, params, seed, device, init=init, max_steps=steps)

    def _fit(self, data: FoldData, params: Any, seed: int, device: str, *, init: Any, max_steps: int) -> Any:
        from crypto_assets.models.neuralforecast_adapter import fit_nf_forecaster, log_return_series

        exog = feature_columns_of(data.frame) if params.use_exog else []
        return fit_nf_forecaster(
            log_return_series(data.frame, data.bars, exog),
            self.model_class,
            params.model_kwargs(),
            horizon=data.context.label_horizon,
            distribution=params.distribution,
            seed=seed,
            max_steps=max_steps,
            windows_batch_size=params.windows_batch_size,
            device=device,
            val_bars=params.val_bars,
            val_check_steps=params.val_check_steps,
            patience_checks=-1 if params.patience_checks is None else params.patience_checks,
            init=init,
        )

    def forecasts(self, model: Any, data: FoldData) -> pl.DataFrame:
        """`symbol, ts, mu_h, sigma_h, p_up, vol` at the decision bars: every `rebalance_every`-th distinct
        timestamp of the test rows, from the first (the grid `forecast_to_weights` keeps)."""
        from crypto_assets.models.neuralforecast_adapter import log_return_series

        series = log_return_series(data.frame, data.bars, model.exog_columns)
        test = series.filter(pl.col("split") == "test")
        grid = test.select(pl.col("ts").unique().sort()).gather_every(data.context.rebalance_every)
        return model.forecast(series, test.join(grid, on="ts", how="semi").select("symbol", "ts"))

    def predict(self, model: Any, data: FoldData) -> pl.DataFrame:
        preds = self.forecasts(model, data)
        weights = data.context.forecast_weights(preds, rebalance_every=1)  # the forecasts are on the grid already
        return preds.join(weights, on=["symbol", "ts"], how="left").sort("symbol", "ts")

    def metrics(self, model: Any, data: FoldData) -> dict[str, float]:
        """`validation_nll` (the kept step's), `train_nll` (mean of the last 10 % of steps) and, where the frame
        has labels, `oos_*` direction metrics of p_up at the decision bars (`classification_metrics`)."""
        from crypto_assets.folds.split import label_columns
        from crypto_assets.models import classification_metrics

        out: dict[str, float] = {}
        if model.train_loss:
            tail = model.train_loss[-max(1, len(model.train_loss) // 10) :]
            out["train_nll"] = float(sum(tail) / len(tail))
        if model.best_step is not None:
            out["validation_nll"] = float(dict(model.val_loss)[model.best_step])
        _, dir_col = label_columns(data.context.label_horizon)
        if dir_col in data.frame.columns:
            labelled = (
                self.forecasts(model, data)
                .join(data.frame.select("symbol", "ts", dir_col), on=["symbol", "ts"])
                .drop_nulls(dir_col)
            )
            oos = classification_metrics(labelled["p_up"].to_numpy(), labelled[dir_col].to_numpy())
            out.update({f"oos_{k}": float(v) for k, v in oos.items()})
        return out

    def curves(self, model: Any) -> dict[str, pl.DataFrame]:
        steps = pl.DataFrame(
            {"step": list(range(1, len(model.train_loss) + 1)), "train_loss": model.train_loss},
            schema={"step": pl.Int64, "train_loss": pl.Float64},
        )
        val = pl.DataFrame(model.val_loss, schema={"step": pl.Int64, "val_loss": pl.Float64}, orient="row")
        return {"loss": steps.join(val, on="step", how="left")}

    def training_info(self, model: Any) -> dict[str, Any]:
        return {
            "device": str(next(model.model.parameters()).device),
            "precision": "fp32",
            "train_seconds": float(model.train_seconds),
            "steps_run": model.steps_run,
            "best_step": model.best_step,
            "steps_per_second": model.steps_run / model.train_seconds if model.train_seconds > 0 else float("nan"),
        }

    def save_model(self, model: Any, directory: Path) -> None:
        model.save(directory)

    def load_model(self, directory: Path, device: str) -> Any:
        from crypto_assets.models.neuralforecast_adapter import NFForecaster

        return NFForecaster.load(directory, device)


class NHITSFamily(NeuralForecastFamily):
    type = "NHITS"
    params_class = NHITSParams
    model_class = "NHITS"
    description = "NeuralForecast NHITS: distribution of the next h log returns → P(up), vol, sized to weights."


class TFTFamily(NeuralForecastFamily):
    type = "TFT"
    params_class = TFTParams
    model_class = "TFT"
    description = "NeuralForecast TFT: distribution of the next h log returns → P(up), vol, sized to weights."


class NFLSTMFamily(NeuralForecastFamily):
    type = "NF_LSTM"
    params_class = NFLSTMParams
    model_class = "LSTM"
    description = "NeuralForecast LSTM: distribution of the next h log returns → P(up), vol, sized to weights."


register(NHITSFamily())
register(TFTFamily())
register(NFLSTMFamily())
