"""IO managers: polars frames ⇄ the Parquet-per-partition warehouse; model checkpoints ⇄ artifacts."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig
from crypto_assets.paths import experiment_root
from crypto_assets.storage.fingerprint import DataFingerprint, check_data_fingerprint, data_fingerprint
from crypto_assets.storage.warehouse import UNPARTITIONED_KEY, Warehouse, WarehouseError, Window

ARTIFACT_CLASS_FILE = "artifact_class.txt"
PARTITION_BY = "partition_by"
SPLIT_BY_TS = {PARTITION_BY: "ts"}  # asset metadata for time-partitioned data assets


FOLD_COLUMN = "fold"  # fold-partitioned tables carry their fold key in this column


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Stores each asset as warehouse table `<asset name>`, one file per partition.

    An asset whose definition metadata says `partition_by: ts` (the monthly data assets) is split by
    partition window, so a single-run backfill over many months writes exactly one file per month, all
    committed at once; rows outside the run's windows are an error, never silently dropped. Other
    partitioned assets (folds) store one frame per partition key, and a `fold` column must equal it.
    Reads check the same rules on every file. Before any write, the experiment's data fingerprint must
    match this config's (crypto_assets.storage.fingerprint), so runs launched from the Dagster CLI or UI
    cannot mix two datasets under one experiment name either.
    """

    storage_root: str
    data_fingerprint: str = ""
    """JSON of `DataFingerprint.fields` for this config; empty = no check (tests of the IO manager alone)."""

    @classmethod
    def for_experiment(cls, experiment: ExperimentConfig) -> WarehouseIOManager:
        """The experiment's warehouse, guarded by its data fingerprint."""
        fields = data_fingerprint(experiment).fields
        return cls(storage_root=str(experiment_root(experiment)), data_fingerprint=json.dumps(fields))

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.storage_root)

    def _check_fingerprint(self) -> None:
        if self.data_fingerprint:
            fields = json.loads(self.data_fingerprint)
            check_data_fingerprint(self.storage_root, DataFingerprint(fields), record=True)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        table = context.asset_key.path[-1]
        self._check_fingerprint()
        if not context.has_asset_partitions:
            path = self.warehouse.write_partition(table, obj)
            context.add_output_metadata({"path": dg.MetadataValue.path(str(path)), "rows": obj.height})
            return
        keys = context.asset_partition_keys
        windows = None
        if (context.definition_metadata or {}).get(PARTITION_BY) == "ts":
            windows = _windows(context.asset_partitions_def, keys)
            frames = {key: obj.filter((pl.col("ts") >= s) & (pl.col("ts") < e)) for key, (s, e) in windows.items()}
            stray = obj.height - sum(frame.height for frame in frames.values())
            if stray:
                raise ValueError(f"{table}: {stray} rows fall outside partitions {keys[0]}..{keys[-1]}")
        elif len(keys) == 1:
            frames = {keys[0]: obj}
        else:
            raise ValueError(f"{table}: one frame for {len(keys)} partitions, and no `partition_by` to split it")
        key_column = None if windows is not None else FOLD_COLUMN
        self.warehouse.write_partitions(table, frames, windows=windows, key_column=key_column)
        context.add_output_metadata(
            {"rows": obj.height, "partitions_written": len(frames), "table_dir": str(self.warehouse.table_dir(table))}
        )

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        table = context.asset_key.path[-1]
        if not context.has_asset_partitions:
            frame = self.warehouse.read_partitions(table, [UNPARTITIONED_KEY])
            assert frame is not None  # missing="error" raises instead
            return frame
        keys = context.asset_partition_keys
        upstream = context.upstream_output
        by_ts = upstream is not None and (upstream.definition_metadata or {}).get(PARTITION_BY) == "ts"
        checks: dict[str, Any] = (
            {"windows": _windows(context.asset_partitions_def, keys)} if by_ts else {"key_column": FOLD_COLUMN}
        )
        # Every key is read or the load fails naming the missing ones: fold partitions are exactly the
        # folds the reports need (partitions.fold_partitions), so a report over all folds needs them all.
        frame = self.warehouse.read_partitions(table, keys, **checks)
        assert frame is not None  # missing="error" raises instead
        return frame


def _windows(partitions_def: dg.PartitionsDefinition | None, keys: Sequence[str]) -> dict[str, Window]:
    """Each monthly key's [start, end) window."""
    assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition), partitions_def
    windows = {}
    for key in keys:
        window = partitions_def.time_window_for_partition_key(key)
        windows[key] = (window.start, window.end)
    return windows


class ModelArtifactIOManager(dg.ConfigurableIOManager):
    """Model checkpoints per asset and partition under `<storage>/artifacts/<asset>/<partition>/`.

    The object stored must have `save(directory)` and a classmethod `load(directory)`; the class is
    recorded beside the files so loading needs nothing else. A new checkpoint is written into a fresh
    folder and swapped in by rename, so a crash never leaves a half-written one in place."""

    storage_root: str

    def _directory(self, context: dg.OutputContext | dg.InputContext) -> Path:
        key = context.asset_partition_key if context.has_asset_partitions else UNPARTITIONED_KEY
        return Path(self.storage_root) / "artifacts" / context.asset_key.path[-1] / key

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        target = self._directory(context)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            obj.save(staging)
            (staging / ARTIFACT_CLASS_FILE).write_text(f"{type(obj).__module__}:{type(obj).__qualname__}")
            retired = target.with_name(f".{target.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            if target.exists():
                os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        context.add_output_metadata({"checkpoint": dg.MetadataValue.path(str(target))})

    def load_input(self, context: dg.InputContext) -> Any:
        directory = self._directory(context)
        if not directory.exists():
            raise WarehouseError(
                f"no checkpoint for {context.asset_key.to_user_string()} at {directory}; materialize it first"
            )
        module, _, name = (directory / ARTIFACT_CLASS_FILE).read_text().partition(":")
        cls = getattr(importlib.import_module(module), name)
        return cls.load(directory)
