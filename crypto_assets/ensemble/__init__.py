"""Soft-voting ensemble of strategies' target weights."""

from crypto_assets.ensemble.voting import soft_vote

__all__ = ["soft_vote"]
