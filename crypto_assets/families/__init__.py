"""Model families (DESIGN.md §6.1): one registry, one protocol, artifacts that replay.

    from crypto_assets.families import registered_types, get_family, replay
    registered_types()                      # ('LSTM_Attn', 'CNN_LSTM', 'PPO_Agent', ...)
    weights = replay("storage/demo/artifacts/model_lstm_attn/2024-03-01", bars)   # symbol, ts, weight

A family is one module: a parameter class (its config entry under `models.families`), a `Family` subclass
(`fit`, `predict`, save / load, metrics, curves) and a `register(...)` call. No Dagster here, and torch /
stable-baselines3 load only inside the families' methods.
"""

from crypto_assets.config.schema import FamilyParams
from crypto_assets.families.base import (
    Artifact,
    Context,
    Family,
    FoldData,
    SeedArtifacts,
    build_fold,
    compute_inputs,
    feature_columns_of,
    fit_artifact,
    order_rows,
)
from crypto_assets.families.registry import default_params, get_family, register, registered_types, validate_params
from crypto_assets.families.replay import replay

__all__ = [
    "Artifact",
    "Context",
    "Family",
    "FamilyParams",
    "FoldData",
    "SeedArtifacts",
    "build_fold",
    "compute_inputs",
    "default_params",
    "feature_columns_of",
    "fit_artifact",
    "get_family",
    "order_rows",
    "register",
    "registered_types",
    "replay",
    "validate_params",
]
