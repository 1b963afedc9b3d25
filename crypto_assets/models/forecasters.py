"""Sequence forecasters over a window of scaled features: `LSTMAttention` and `CNNLSTM` (plain PyTorch).

Both take x of shape (B, T, F) — T = `window` bars ending at the decision bar t (inclusive), F features —
and return two heads (`ForecastOutput`):

- `logit`: log-odds of P(label_fwd_ret_h > 0), i.e. that the log return from the close of t to the close of
  t + h is positive (`label_dir_h` = 1). Trained with binary cross-entropy.
- `vol`: forecast per-bar volatility σ of the log return over the next h bars, in return units per bar
  (e.g. 0.006 = 0.6 % per bar). Target model: r_h = label_fwd_ret_h ~ N(0, σ² h), so σ is what the
  √h-rule scales to the horizon, and the proxy r_h² / h is conditionally unbiased for σ². Trained with the
  zero-mean Gaussian negative log-likelihood (`vol_nll`) — equal, up to constants, to the QLIKE loss that
  is robust for ranking variance forecasts against a noisy proxy (Patton 2011). The mean is ignored: at
  hourly-to-daily horizons the drift is orders of magnitude below the volatility. Why not MSE on |r|/√h:
  E|r| = σ√h·√(2/π), so that target is biased low by ~20 %, and squared errors on a heavy-tailed proxy are
  dominated by a few crashes.

`vol` = softplus(raw) × `vol_scale`, where `vol_scale` (a buffer, saved in the state_dict) is the train
set's RMS per-bar vol √(mean(r_h²) / h). The network therefore learns a multiplier around 1 (the head's
bias starts at softplus⁻¹(1)), which keeps the loss O(1) whatever the asset's volatility.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# The parameters are the LSTM_Attn / CNN_LSTM families' config entries (one source of truth, DESIGN.md §6.1).
from crypto_assets.families.forecaster import ForecasterParams
from crypto_assets.models.revin import RevIN

Arch = Literal["lstm_attn", "cnn_lstm"]
ARCHS: tuple[str, ...] = ("lstm_attn", "cnn_lstm")
SOFTPLUS_INV_ONE = math.log(math.e - 1.0)  # softplus(0.5413…) = 1: the vol head starts at vol_scale


class ForecastOutput(NamedTuple):
    logit: torch.Tensor
    """(B,) log-odds that the forward return over the horizon is > 0 (fp32)."""
    vol: torch.Tensor
    """(B,) forecast per-bar volatility of the forward log return, > 0 (fp32)."""


class _Heads(nn.Module):
    """Shared trunk → (logit, vol). Outputs are cast to fp32 so losses never run in bf16."""

    vol_scale: torch.Tensor

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.logit = nn.Linear(hidden, 1)
        self.vol = nn.Linear(hidden, 1)
        nn.init.zeros_(self.vol.weight)  # start every sample at vol = vol_scale; the data moves it from there
        nn.init.constant_(self.vol.bias, SOFTPLUS_INV_ONE)
        self.register_buffer("vol_scale", torch.ones(()))

    def forward(self, z: torch.Tensor) -> ForecastOutput:
        h = self.trunk(z)
        logit = self.logit(h).squeeze(-1).float()
        vol = F.softplus(self.vol(h).squeeze(-1).float()) * self.vol_scale + 1e-8
        return ForecastOutput(logit=logit, vol=vol)


class _Forecaster(nn.Module):
    """Common input handling: optional RevIN, then the subclass's encoder, then the two heads."""

    def __init__(self, n_features: int, params: ForecasterParams, encoded_dim: int) -> None:
        super().__init__()
        self.n_features = n_features
        self.revin: RevIN | None = RevIN(n_features) if params.revin else None
        self.heads: _Heads = _Heads(encoded_dim, params.hidden, params.dropout)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def set_vol_scale(self, value: float) -> None:
        """Per-bar vol the vol head is expressed in (see module docstring); set once before training."""
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"vol_scale must be a positive finite number, got {value}")
        self.heads.vol_scale.fill_(value)

    def forward(self, x: torch.Tensor) -> ForecastOutput:
        if x.dim() != 3 or x.shape[-1] != self.n_features:
            raise ValueError(f"expected input (B, T, {self.n_features}), got {tuple(x.shape)}")
        if self.revin is not None:
            x = self.revin(x)
        return self.heads(self.encode(x))


class LSTMAttention(_Forecaster):
    """LSTM over the window, then additive (Bahdanau) attention over its time steps.

        h_1..h_T = LSTM(x_1..x_T)
        e_t = vᵀ tanh(W h_t + U h_T)      α = softmax_t(e)      c = Σ_t α_t h_t
        heads([c ; h_T])

    The query is the last hidden state (the state at the decision bar), so the attention picks the earlier
    bars most relevant to it; concatenating h_T keeps the recency signal even when attention spreads out.
    """

    def __init__(self, n_features: int, params: ForecasterParams) -> None:
        super().__init__(n_features, params, encoded_dim=2 * params.hidden)
        self.lstm = nn.LSTM(
            n_features,
            params.hidden,
            num_layers=params.layers,
            batch_first=True,
            dropout=params.dropout if params.layers > 1 else 0.0,
        )
        self.attn_key = nn.Linear(params.hidden, params.hidden, bias=True)
        self.attn_query = nn.Linear(params.hidden, params.hidden, bias=False)
        self.attn_v = nn.Linear(params.hidden, 1, bias=False)

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoded (B, 2H), attention weights (B, T)) — the weights are useful for inspection."""
        out = _run_lstm(self.lstm, x)  # (B, T, H), fp32
        last = out[:, -1, :]
        scores = self.attn_v(torch.tanh(self.attn_key(out) + self.attn_query(last).unsqueeze(1))).squeeze(-1)
        alpha = torch.softmax(scores.float(), dim=1)
        context = torch.bmm(alpha.unsqueeze(1), out).squeeze(1)  # bf16 under autocast: promote before cat
        return torch.cat([context.float(), last], dim=-1), alpha

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x)[0]


class CNNLSTM(_Forecaster):
    """Two causal 1D convolutions over time (local pattern extraction), then an LSTM; heads on its last state.

    Convolutions are left-padded (causal), so the encoding at step t sees only steps ≤ t of the window and the
    sequence length is kept; the LSTM then summarises the conv features into its state at the decision bar.
    """

    def __init__(self, n_features: int, params: ForecasterParams) -> None:
        super().__init__(n_features, params, encoded_dim=params.hidden)
        self.pad = params.kernel_size - 1
        self.conv1 = nn.Conv1d(n_features, params.conv_channels, params.kernel_size)
        self.conv2 = nn.Conv1d(params.conv_channels, params.conv_channels, params.kernel_size)
        self.conv_dropout = nn.Dropout(params.dropout)
        self.lstm = nn.LSTM(
            params.conv_channels,
            params.hidden,
            num_layers=params.layers,
            batch_first=True,
            dropout=params.dropout if params.layers > 1 else 0.0,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = x.transpose(1, 2)  # (B, F, T): Conv1d convolves over the last axis
        z = F.gelu(self.conv1(F.pad(z, (self.pad, 0))))
        z = self.conv_dropout(F.gelu(self.conv2(F.pad(z, (self.pad, 0)))))
        return _run_lstm(self.lstm, z.transpose(1, 2))[:, -1, :]


def _run_lstm(lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """The LSTM's outputs (B, T, H) in fp32, with autocast switched off around it.

    Why: under CUDA autocast PyTorch runs cuDNN RNNs in fp16 whatever dtype was asked for
    (aten/src/ATen/cudnn/AutocastRNN.cpp), and fp16 without a loss scaler can underflow gradients. With
    `bf16=True`, the convolutions, attention and heads run in bf16 and the recurrent core stays fp32.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        out, _ = lstm(x.float())
    return out


def build_model(params: ForecasterParams, n_features: int) -> _Forecaster:
    """The module `params.arch` names, for `n_features` input features."""
    if n_features < 1:
        raise ValueError(f"a forecaster needs at least one feature, got {n_features}")
    if params.arch == "lstm_attn":
        return LSTMAttention(n_features, params)
    if params.arch == "cnn_lstm":
        return CNNLSTM(n_features, params)
    raise ValueError(f"unknown arch {params.arch!r}; allowed: {', '.join(ARCHS)}")


def vol_nll(vol: torch.Tensor, fwd_ret: torch.Tensor, horizon: int, vol_scale: float) -> torch.Tensor:
    """Per-sample zero-mean Gaussian NLL of r_h under N(0, σ² h), in units of `vol_scale` (constant dropped):

        s = σ / vol_scale,  z² = r_h² / (h · vol_scale²),  nll = log s + z² / (2 s²)

    Minimised at s² = E[z² | x], i.e. σ² = E[r_h² | x] / h. Measured in `vol_scale` units so it is O(1) and
    comparable across assets; the same scale is used for validation, so early stopping is unaffected.
    """
    s = vol / vol_scale
    z2 = fwd_ret.square() / (horizon * vol_scale * vol_scale)
    return torch.log(s) + 0.5 * z2 / s.square()


def forecast_loss(
    out: ForecastOutput, y_dir: torch.Tensor, fwd_ret: torch.Tensor, horizon: int, vol_scale: float, vol_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, bce, nll) batch means: BCE on the direction + `vol_weight` × Gaussian NLL of the vol head."""
    bce = F.binary_cross_entropy_with_logits(out.logit, y_dir)
    nll = vol_nll(out.vol, fwd_ret, horizon, vol_scale).mean()
    return bce + vol_weight * nll, bce, nll
