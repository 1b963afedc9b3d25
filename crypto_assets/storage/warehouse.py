"""The per-experiment warehouse: one Parquet file per (table, partition), DuckDB views over them.

Layout under `storage/<experiment>/`:

    warehouse/<table>/<partition key>.parquet   one file per partition (`all.parquet` if unpartitioned)
    warehouse.duckdb                            views `<table>` = read_parquet('warehouse/<table>/*.parquet'),
                                                and `predictions` over every `predictions_<model>` table

Why Parquet plus views rather than DuckDB tables: DuckDB allows one read-write process per database
file, so parallel steps and concurrent runs writing tables hit lock errors (dagster issues 16248, 18746,
19068). Writers here touch only their own partition file (write aside, then an atomic rename), and
the database holds nothing but view definitions, which are written once per table under a file lock.
Readers (`duckdb -readonly storage/<experiment>/warehouse.duckdb`) always see whole files.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import polars as pl

log = logging.getLogger(__name__)

UNPARTITIONED_KEY = "all"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


# Views over several tables: `predictions` gathers every model's `predictions_<model>` table.
UNION_VIEWS = {"predictions": "predictions_*"}
# (database, table) pairs whose view this process has seen in place: skips reopening the database.
_CURRENT_VIEWS: set[tuple[str, str]] = set()


class WarehouseError(RuntimeError):
    """A missing partition or a bad table / key name."""


class Warehouse:
    """Parquet-per-partition tables with DuckDB views, rooted at one experiment's storage folder."""

    def __init__(self, root: str | Path, *, lock_timeout_s: float = 60.0) -> None:
        self.root = Path(root).resolve()
        self.tables_dir = self.root / "warehouse"
        self.db_path = self.root / "warehouse.duckdb"
        self.lock_timeout_s = lock_timeout_s

    # ---- paths -------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        if not _NAME.match(table):
            raise WarehouseError(f"bad table name {table!r}: letters, digits and underscores only")
        return self.tables_dir / table

    def partition_path(self, table: str, key: str = UNPARTITIONED_KEY) -> Path:
        if not _KEY.match(key):
            raise WarehouseError(f"bad partition key {key!r} for table {table!r}")
        return self.table_dir(table) / f"{key}.parquet"

    def stored_keys(self, table: str) -> list[str]:
        directory = self.table_dir(table)
        return sorted(p.stem for p in directory.glob("*.parquet")) if directory.exists() else []

    # ---- writes ------------------------------------------------------------------------------
    def write_partition(self, table: str, frame: pl.DataFrame, key: str = UNPARTITIONED_KEY) -> Path:
        """Replace exactly one partition, atomically: readers see the old file or the new, never half."""
        path = self.partition_path(table, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not matched by the views' *.parquet glob
        try:
            frame.write_parquet(tmp, compression="zstd", statistics=True)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self.ensure_view(table)
        for view, pattern in UNION_VIEWS.items():
            if fnmatch.fnmatchcase(table, pattern):
                self.ensure_view(view)
        return path

    def write_partitions(self, table: str, frames: dict[str, pl.DataFrame]) -> list[Path]:
        """Write several partitions; each file is replaced atomically on its own."""
        return [self.write_partition(table, frame, key) for key, frame in frames.items()]

    # ---- reads -------------------------------------------------------------------------------
    def read_partitions(self, table: str, keys: Iterable[str], *, missing: str = "error") -> pl.DataFrame | None:
        """Concatenate the given partitions. `missing="error"` raises naming the absent keys;
        `missing="skip"` reads what exists (None when nothing does)."""
        keys = list(keys)
        paths = [self.partition_path(table, key) for key in keys]
        absent = [key for key, path in zip(keys, paths, strict=True) if not path.exists()]
        if absent and missing == "error":
            shown = ", ".join(absent[:5]) + (f" (+{len(absent) - 5} more)" if len(absent) > 5 else "")
            raise WarehouseError(
                f"table {table!r} has no stored partition {shown} under {self.table_dir(table)}; materialize it first"
            )
        present = [path for path in paths if path.exists()]
        if not present:
            return None
        return pl.concat([pl.read_parquet(path) for path in present], how="vertical_relaxed")

    def read_table(self, table: str) -> pl.DataFrame | None:
        return self.read_partitions(table, self.stored_keys(table), missing="skip")

    # ---- DuckDB views ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _db_lock(self) -> Iterator[None]:
        """Serialise this project's writers of warehouse.duckdb across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".warehouse.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _glob(self, view: str) -> str:
        """Files behind a view: its own table's, or every table a union view gathers."""
        pattern = UNION_VIEWS.get(view, view)
        return (self.tables_dir / pattern / "*.parquet").as_posix()

    def _view_sql(self, table: str) -> str:
        glob = self._glob(table).replace("'", "''")
        return f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet('{glob}', union_by_name = true)"

    def _view_is_current(self, table: str) -> bool:
        if not self.db_path.exists():
            return False
        glob = self._glob(table)
        try:
            with duckdb.connect(str(self.db_path), read_only=True) as con:
                rows = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = ?", [table]).fetchall()
        except duckdb.IOException:
            return False  # held read-write elsewhere: try to (re)create it, which waits for the holder
        return bool(rows) and glob in rows[0][0]

    def ensure_view(self, table: str) -> None:
        """Create the table's view once. All of this project's processes touch the database file only
        under one file lock, so they never contend with each other; a reader elsewhere holding the
        file only delays this, and after `lock_timeout_s` a warning is logged and the data stays safely
        in Parquet, the view being retried on the next write."""
        known = (str(self.db_path), table)
        if known in _CURRENT_VIEWS and self.db_path.exists():
            return
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        with self._db_lock():
            while not self._view_is_current(table):
                try:
                    with duckdb.connect(str(self.db_path)) as con:
                        con.execute(self._view_sql(table))
                    break
                except duckdb.IOException as exc:  # database held by another process
                    if time.monotonic() > deadline:
                        log.warning("could not create view %s in %s: %s", table, self.db_path, exc)
                        return
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
        _CURRENT_VIEWS.add(known)

    def query(self, sql: str) -> pl.DataFrame:
        """Run a read-only query against the views (for tests, the CLI and notebooks)."""
        with duckdb.connect(str(self.db_path), read_only=True) as con:
            return con.execute(sql).pl()
