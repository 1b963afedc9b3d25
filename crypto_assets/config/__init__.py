"""Experiment configuration: strict YAML → typed objects (DESIGN.md §3.1)."""

from crypto_assets.config.loader import ConfigError, config_hash, fingerprint, load_config, parse_config, section_hash
from crypto_assets.config.schema import ExperimentConfig

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "config_hash",
    "fingerprint",
    "load_config",
    "parse_config",
    "section_hash",
]
