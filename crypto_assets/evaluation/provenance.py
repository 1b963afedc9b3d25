"""Provenance carried by every KPI row (DESIGN.md §3.2): what produced these numbers."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess

import polars as pl

from crypto_assets.config import ExperimentConfig, config_hash
from crypto_assets.config.loader import PROJECT_ROOT

PACKAGES = ("crypto_assets", "dagster", "polars", "numpy", "duckdb", "pandera", "ccxt", "torch", "stable-baselines3")


def git_commit() -> str:
    """The project's HEAD commit, with `-dirty` when tracked files changed; `unknown` outside git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def package_versions() -> str:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return json.dumps(versions, sort_keys=True)


def data_fingerprint(bars: pl.DataFrame) -> str:
    """sha256 of the bars' values (symbol, ts, OHLCV) in (symbol, ts) order: independent of file layout,
    row order and library versions (polars' row hash is not stable across releases)."""
    frame = bars.select("symbol", "ts", "open", "high", "low", "close", "volume").sort("symbol", "ts")
    digest = hashlib.sha256()
    digest.update("\x1f".join(frame["symbol"].to_list()).encode())
    digest.update(frame["ts"].dt.epoch("us").to_numpy().astype("<i8").tobytes())
    for column in ("open", "high", "low", "close", "volume"):
        digest.update(frame[column].to_numpy().astype("<f8").tobytes())
    return digest.hexdigest()[:16]


def provenance(config: ExperimentConfig, bars: pl.DataFrame) -> dict[str, object]:
    return {
        "experiment": config.experiment.name,
        "config_hash": config_hash(config),
        "seed": config.experiment.seed,
        "git_commit": git_commit(),
        "data_fingerprint": data_fingerprint(bars),
        "package_versions": package_versions(),
    }
