"""Torch sequence forecasters (LSTM + attention, CNN-LSTM) trained per walk-forward fold, and forecast sizing.

This is the only package that imports torch: nothing else in `crypto_assets` imports it at module level, and
the Dagster assets import it lazily inside their bodies (DESIGN §2: the multiprocess executor re-imports the
code location in every step process).

    from crypto_assets.models import ForecasterParams, derive_seed, select_device, train_forecaster
    # ForecasterParams is the LSTM_Attn / CNN_LSTM entry of `models.families` (crypto_assets.families)
    model = train_forecaster(fold, default_feature_columns(fold), horizon=24, params=ForecasterParams(),
                             device=select_device(cfg.experiment.gpu_id),
                             seed=derive_seed(cfg.seed, "forecaster_lstm_attn", fold_key))
    preds = model.predict(fold, only_split="test")          # symbol, ts, p_up, vol
    weights = forecast_to_weights(preds, target_vol_annual=0.4, periods_per_year=8760,
                                  max_leverage=1.0, allow_short=False)
"""

from crypto_assets.models.data import WindowSet, build_windows, default_feature_columns, gather_windows
from crypto_assets.models.device import (
    autocast,
    derive_seed,
    deterministic,
    precision_name,
    seed_everything,
    select_device,
)
from crypto_assets.models.forecasters import (
    ARCHS,
    CNNLSTM,
    ForecasterParams,
    ForecastOutput,
    LSTMAttention,
    build_model,
    forecast_loss,
    vol_nll,
)
from crypto_assets.models.revin import RevIN, RevINStats
from crypto_assets.models.sizing import forecast_to_weights
from crypto_assets.models.training import (
    TrainedForecaster,
    ValidationSplit,
    classification_metrics,
    train_forecaster,
    validation_split,
)

__all__ = [
    "ARCHS",
    "CNNLSTM",
    "ForecastOutput",
    "ForecasterParams",
    "LSTMAttention",
    "RevIN",
    "RevINStats",
    "TrainedForecaster",
    "ValidationSplit",
    "WindowSet",
    "autocast",
    "build_model",
    "build_windows",
    "classification_metrics",
    "default_feature_columns",
    "derive_seed",
    "deterministic",
    "forecast_loss",
    "forecast_to_weights",
    "gather_windows",
    "precision_name",
    "seed_everything",
    "select_device",
    "train_forecaster",
    "validation_split",
    "vol_nll",
]
