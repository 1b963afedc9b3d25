"""Reversible instance normalization (RevIN; Kim et al., ICLR 2022, "Reversible Instance Normalization for
Accurate Time-Series Forecasting against Distribution Shift").

For an input window x of shape (B, T, F), each instance b and feature f is normalized with the mean and
standard deviation over its own T time steps (statistics of the window only — nothing outside it, so no
look-ahead), optionally followed by a learnable per-feature affine map:

    x̂ = (x − μ_bf) / σ_bf · γ_f + β_f          σ_bf = √(Var_t(x_bf) + eps)   (population variance)
    denormalize(y) = (y − β_f) / (γ_f + eps²) · σ_bf + μ_bf

The statistics are returned to the caller rather than stored on the module, so one module can normalize
several batches at once and the forward pass has no hidden state. The forecasters here only use
`normalize` (their heads predict a probability and a volatility, not values in the input's units);
`denormalize` is the inverse for models whose output lives in the input's space.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class RevINStats(NamedTuple):
    """Per-instance, per-feature window statistics, each of shape (B, 1, F)."""

    mean: torch.Tensor
    std: torch.Tensor


class RevIN(nn.Module):
    def __init__(self, num_features: int, *, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be ≥ 1, got {num_features}")
        self.num_features = num_features
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))

    def stats(self, x: torch.Tensor) -> RevINStats:
        """Window mean and std over the time axis (dim 1); computed without gradient, as in the paper's code."""
        if x.dim() != 3 or x.shape[-1] != self.num_features:
            raise ValueError(f"RevIN expects (B, T, {self.num_features}), got {tuple(x.shape)}")
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        return RevINStats(mean=mean, std=std)

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, RevINStats]:
        """(x̂, stats): the normalized window and the statistics `denormalize` needs."""
        stats = self.stats(x)
        out = (x - stats.mean) / stats.std
        if self.affine:
            out = out * self.weight + self.bias
        return out, stats

    def denormalize(self, y: torch.Tensor, stats: RevINStats) -> torch.Tensor:
        """Inverse of `normalize` for a tensor in the normalized space, (B, T', F) with the same F."""
        if self.affine:
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * stats.std + stats.mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize only (the statistics are dropped); use `normalize` to keep them."""
        return self.normalize(x)[0]

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"
