"""`LSTM_Attn`: an LSTM with additive attention over its time steps (crypto_assets.models.LSTMAttention)."""

from __future__ import annotations

from crypto_assets.families.forecaster import ForecasterFamily
from crypto_assets.families.registry import register


class LSTMAttnFamily(ForecasterFamily):
    type = "LSTM_Attn"
    # The fold asset was `forecaster_lstm_attn` when the published results were made; its name seeds every random
    # stream of training, so it stays the label: renaming the asset must not change the results.
    seed_label = "forecaster_lstm_attn"
    description = "LSTM + additive attention forecaster: P(up) and per-bar vol, sized to target weights."


register(LSTMAttnFamily())
