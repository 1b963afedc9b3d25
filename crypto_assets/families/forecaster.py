"""The torch sequence forecasters as model families (LSTM_Attn, CNN_LSTM): shared parameters and behaviour.

fit: `crypto_assets.models.train_forecaster` on the fold's train rows (early stopping on a purged slice at
their end); fit_warm (`retrain: fine_tune`): the same, starting from the previous fold's weights. predict: P(up) and per-bar vol for every decision bar, sized to target weights by
`forecast_to_weights` with the experiment's sizing and leverage. Torch is imported inside the methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import Field

from crypto_assets.config.schema import FamilyParams
from crypto_assets.families.base import STATE_FORECAST_COLUMNS, Family, FoldData

ARCH_TYPES = {"lstm_attn": "LSTM_Attn", "cnn_lstm": "CNN_LSTM"}
"""Network architecture (crypto_assets.models.forecasters) → the family type that trains it."""


class ForecasterParams(FamilyParams):
    """Hyper-parameters of one forecaster: a `models.families` entry `{type: LSTM_Attn | CNN_LSTM, ...}`. Defaults
    are small enough to train a fold on a CPU in minutes."""

    type: Literal["LSTM_Attn", "CNN_LSTM"] = "LSTM_Attn"
    window: Annotated[int, Field(ge=2, le=2048)] = 48
    """Bars per input window, ending at the decision bar (inclusive)."""
    hidden: Annotated[int, Field(ge=1, le=4096)] = 32
    """LSTM hidden size (and the width of the shared head)."""
    layers: Annotated[int, Field(ge=1, le=8)] = 1
    """Stacked LSTM layers."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Dropout before the heads (and between LSTM layers when layers > 1)."""
    conv_channels: Annotated[int, Field(ge=1, le=4096)] = 32
    """CNN_LSTM only: channels of the two causal 1D convolutions."""
    kernel_size: Annotated[int, Field(ge=1, le=64)] = 3
    """CNN_LSTM only: convolution kernel length in bars."""
    revin: bool = False
    """Reversible instance normalization of each input window (off by default: the features are already robust
    z-scores fitted on the train window, and RevIN discards each window's level, e.g. an RSI's)."""
    lr: Annotated[float, Field(gt=0, le=1)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 1e-5
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 256
    max_epochs: Annotated[int, Field(ge=1, le=10_000)] = 10
    patience: Annotated[int, Field(ge=0, le=1000)] = 3
    """Epochs without a lower validation loss before stopping; the best epoch's weights are restored."""
    val_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.2
    """Share of the train window's timestamps, taken from its END, used for early stopping (0 = none)."""
    max_train_samples: Annotated[int, Field(ge=1)] | None = 50_000
    """Cap on fitting windows: a seeded uniform subsample (null = all)."""
    bf16: bool = False
    """bfloat16 autocast for convolutions, attention and heads on CUDA; the LSTM itself stays fp32. Off by
    default: fp32 is the reproducible setting (DESIGN §3.6)."""
    vol_loss_weight: Annotated[float, Field(ge=0, le=100)] = 1.0
    """Weight of the vol head's Gaussian NLL next to the direction BCE in the training loss."""
    grad_clip: Annotated[float, Field(gt=0)] | None = 1.0
    """Max global gradient norm (LSTMs occasionally produce exploding gradients); null disables."""

    @property
    def arch(self) -> str:
        """The network (`lstm_attn` / `cnn_lstm`, crypto_assets.models.forecasters) this family trains."""
        return self.type.lower()

    @classmethod
    def for_arch(cls, arch: str, **values: Any) -> ForecasterParams:
        """Parameters of the family training `arch` (`lstm_attn` / `cnn_lstm`)."""
        if arch not in ARCH_TYPES:
            raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCH_TYPES)}")
        return cls(type=ARCH_TYPES[arch], **values)  # type: ignore[arg-type]


class ForecasterFamily(Family):
    """Shared by LSTM_Attn and CNN_LSTM; subclasses set `type` (and `seed_label`)."""

    params_class = ForecasterParams
    forecast_columns = STATE_FORECAST_COLUMNS  # on every test bar, whatever the rebalancing grid

    def fit(self, data: FoldData, params: Any, seed: int, device: str) -> Any:
        return _train(data, params, seed, device, init=None)

    def fit_warm(self, data: FoldData, params: Any, seed: int, device: str, init: Any) -> Any:
        return _train(data, params, seed, device, init=init)

    def predict(self, model: Any, data: FoldData) -> pl.DataFrame:
        preds = model.predict(data.frame, only_split="test")
        weights = data.context.forecast_weights(preds)
        return preds.join(weights, on=["symbol", "ts"], how="left")

    def forecast_vol_scale(self, model: Any, data: FoldData) -> float:
        """The scale its vol head was trained in (the fitting windows' √(mean(r_h²) / h))."""
        return float(model.vol_scale)

    def metrics(self, model: Any, data: FoldData) -> dict[str, float]:
        out = {f"validation_{k}": float(v) for k, v in model.val_metrics.items()}
        if any(c.startswith("label_") for c in data.frame.columns):
            oos = model.evaluate(data.frame, only_split="test")
            out.update({f"oos_{k}": float(v) for k, v in oos.items()})
        return out

    def curves(self, model: Any) -> dict[str, pl.DataFrame]:
        history = model.history
        epochs = len(history.get("train_loss", []))
        frame = pl.DataFrame({"epoch": list(range(1, epochs + 1)), **{k: list(v) for k, v in history.items()}})
        return {"loss": frame.cast({k: pl.Float64 for k in history})}

    def training_info(self, model: Any) -> dict[str, Any]:
        return {
            "device": str(model.device),
            "precision": model.precision,
            "samples_per_second": float(model.samples_per_second),
            "train_seconds": float(model.train_seconds),
            "epochs_run": model.epochs_run,
            "best_epoch": model.best_epoch,
        }

    def save_model(self, model: Any, directory: Path) -> None:
        model.save(directory)

    def load_model(self, directory: Path, device: str) -> Any:
        from crypto_assets.models import TrainedForecaster

        return TrainedForecaster.load(directory, device)


def _train(data: FoldData, params: ForecasterParams, seed: int, device: str, init: Any) -> Any:
    from crypto_assets.models import default_feature_columns, train_forecaster

    frame = data.frame
    return train_forecaster(
        frame, default_feature_columns(frame), data.context.label_horizon, params, device=device, seed=seed, init=init
    )
