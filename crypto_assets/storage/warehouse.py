"""The per-experiment warehouse: Parquet files per (table, partition), a manifest per table, DuckDB views.

Layout under `storage/<experiment>/`:

    warehouse/<table>/_manifest.json            the partitions the warehouse wrote: key → file, rows, bytes
    warehouse/<table>/<key>.w<16 hex>.parquet   one file per partition, a fresh name on every write
    warehouse.duckdb                            views `<table>` over exactly the manifest's files, and
                                                `predictions` over every `predictions_<model>` table

Why a manifest, not a `*.parquet` glob: a glob counts whatever lands in the folder (a stray
`2024-01-01 (copy).parquet`, a foreign file), and a multi-partition write could only replace files one
by one. Here a write puts every new file under a fresh name, then swaps the manifest with `os.replace`:
that swap is the commit point, so either all partitions of a range run are new or none is. Files a
commit replaced stay on disk until the table's next commit (a reader that read the manifest just before
finds them), or for as long as an open DuckDB session's snapshot reads them; then they, and anything a
killed write left behind, are garbage-collected by a later write of the table.

Why views with paths relative to the experiment folder: a moved or copied experiment reads its own
files. DuckDB resolves a relative path against its `file_search_path` setting, else the working
directory, so readers either work from the experiment folder or set it (`Warehouse.reader_command`):

    cd storage/<experiment> && duckdb -readonly warehouse.duckdb

Why the DuckDB file is rebuilt aside and swapped in: DuckDB lets one process open a file read-write
only while nobody else holds it, so a `duckdb -readonly` session would lock writers out. Writers never
open the live file; they build a new one (every view) under the project's own file lock and
`os.replace` it, so an open session keeps its old snapshot and a write never waits for a reader.
Each database's view files are listed beside it (`.warehouse.duckdb.files.<inode>.json`); a replaced
database stays hard-linked (`.warehouse.duckdb.snapshot.<inode>`) while a session holds its DuckDB
lock, and its files are kept until then.

A fault hook (`KILL_AT_ENV`) kills the process at a named point of a write, for crash tests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import struct
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

log = logging.getLogger(__name__)

UNPARTITIONED_KEY = "all"
MANIFEST = "_manifest.json"
MANIFEST_FORMAT = 1
DB_NAME = "warehouse.duckdb"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")
# Files this warehouse writes: `<key>.w<16 hex>.parquet`. Only these are ever garbage-collected, so a
# user's own file in the folder (a copy, a download) is neither counted nor deleted.
_OWN_FILE = re.compile(r"^(?P<key>[A-Za-z0-9_.-]+)\.w(?P<token>[0-9a-f]{16})\.parquet$")
_DB_TMP = re.compile(rf"^\.{re.escape(DB_NAME)}\.[0-9a-f]{{16}}\.tmp(\.wal)?$")

# Views over several tables: `predictions` gathers every model's `predictions_<model>` table.
UNION_VIEWS = {"predictions": "predictions_*"}

# Fault hook for crash tests: `<table>:<point>[:<n>]` (table `*` = any) kills this process with SIGKILL
# (no clean-up runs, as in a real crash) when a write of that table reaches the point for the n-th time.
# Points: `partition_file` (a new partition file is durable), `manifest` (the manifest was swapped, the
# views not yet rebuilt), `views` (the new DuckDB file is built, not yet swapped in).
KILL_AT_ENV = "CRYPTO_ASSETS_WAREHOUSE_KILL_AT"
FAULT_POINTS = ("partition_file", "manifest", "views")
_reached: dict[tuple[str, str], int] = {}


def _fault_point(point: str, table: str) -> None:
    spec = os.environ.get(KILL_AT_ENV)
    if not spec:
        return
    want_table, want_point, *count = spec.split(":")
    if want_point not in FAULT_POINTS:
        raise ValueError(f"{KILL_AT_ENV}={spec!r}: unknown point {want_point!r}; points: {', '.join(FAULT_POINTS)}")
    if want_point != point or want_table not in ("*", table):
        return
    _reached[(table, point)] = seen = _reached.get((table, point), 0) + 1
    if seen == (int(count[0]) if count else 1):
        log.warning("%s=%s: killing process %d", KILL_AT_ENV, spec, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)


class WarehouseError(RuntimeError):
    """A missing, corrupt or foreign partition file, or a bad table / key name."""


class _MissingFile(WarehouseError):
    """A file the manifest lists is not on disk."""


Window = tuple[dt.datetime, dt.datetime]


@dataclass(frozen=True)
class StoredPartition:
    """One manifest entry: the file holding a partition and what the writer knew about it."""

    key: str
    file: str  # name inside the table folder
    rows: int
    bytes: int
    window: Window | None = None  # every `ts` lies in [start, end)
    key_column: str | None = None  # this column, where present, equals the key (e.g. `fold`)

    def to_json(self) -> dict[str, object]:
        window = None if self.window is None else [self.window[0].isoformat(), self.window[1].isoformat()]
        return {
            "file": self.file,
            "rows": self.rows,
            "bytes": self.bytes,
            "window": window,
            "key_column": self.key_column,
        }

    @classmethod
    def from_json(cls, key: str, raw: Mapping[str, object]) -> StoredPartition:
        window = raw.get("window")
        edges = [dt.datetime.fromisoformat(edge) for edge in window] if window else None  # type: ignore[attr-defined]
        bounds = None if edges is None else (edges[0], edges[1])
        return cls(
            key=key,
            file=str(raw["file"]),
            rows=int(raw["rows"]),  # type: ignore[call-overload]
            bytes=int(raw["bytes"]),  # type: ignore[call-overload]
            window=bounds,
            key_column=raw.get("key_column"),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Manifest:
    table: str
    generation: int
    partitions: dict[str, StoredPartition]
    retired: tuple[str, ...] = ()  # files the last commit replaced, kept one more commit for open readers

    def files(self) -> list[str]:
        return [self.partitions[key].file for key in sorted(self.partitions)]


class Warehouse:
    """Parquet-per-partition tables with DuckDB views, rooted at one experiment's storage folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.tables_dir = self.root / "warehouse"
        self.db_path = self.root / DB_NAME

    # ---- paths and the manifest --------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        if not _NAME.match(table):
            raise WarehouseError(f"bad table name {table!r}: letters, digits and underscores only")
        return self.tables_dir / table

    def manifest_path(self, table: str) -> Path:
        return self.table_dir(table) / MANIFEST

    def manifest(self, table: str) -> Manifest:
        """The table's committed state (empty when nothing was written)."""
        path = self.manifest_path(table)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return Manifest(table, 0, {})
        except (OSError, ValueError) as exc:
            raise WarehouseError(f"{path}: unreadable manifest of table {table!r} ({exc})") from exc
        if raw.get("format") != MANIFEST_FORMAT or raw.get("table") != table:
            raise WarehouseError(
                f"{path}: not a format-{MANIFEST_FORMAT} manifest of table {table!r} "
                f"(format {raw.get('format')!r}, table {raw.get('table')!r})"
            )
        partitions = {key: StoredPartition.from_json(key, entry) for key, entry in raw["partitions"].items()}
        return Manifest(table, int(raw["generation"]), partitions, tuple(raw.get("retired", ())))

    def tables(self) -> list[str]:
        """Tables with a manifest (a folder without one holds nothing this warehouse wrote)."""
        if not self.tables_dir.exists():
            return []
        return sorted(p.parent.name for p in self.tables_dir.glob(f"*/{MANIFEST}") if _NAME.match(p.parent.name))

    def stored_keys(self, table: str) -> list[str]:
        return sorted(self.manifest(table).partitions)

    def stored_rows(self, table: str) -> dict[str, int]:
        """Rows per stored partition, from the manifest (no file is read)."""
        return {key: entry.rows for key, entry in sorted(self.manifest(table).partitions.items())}

    def partition_path(self, table: str, key: str = UNPARTITIONED_KEY) -> Path:
        """The file that holds the partition now (a later write stores it under another name)."""
        _check_key(table, key)
        entry = self.manifest(table).partitions.get(key)
        if entry is None:
            raise WarehouseError(f"table {table!r} has no stored partition {key} in {self.manifest_path(table)}")
        return self.table_dir(table) / entry.file

    # ---- writes ------------------------------------------------------------------------------
    def write_partition(
        self,
        table: str,
        frame: pl.DataFrame,
        key: str = UNPARTITIONED_KEY,
        *,
        window: Window | None = None,
        key_column: str | None = None,
    ) -> Path:
        """Replace exactly one partition, atomically (see `write_partitions`)."""
        windows = None if window is None else {key: window}
        return self.write_partitions(table, {key: frame}, windows=windows, key_column=key_column)[0]

    def write_partitions(
        self,
        table: str,
        frames: Mapping[str, pl.DataFrame],
        *,
        windows: Mapping[str, Window] | None = None,
        key_column: str | None = None,
    ) -> list[Path]:
        """Replace the given partitions in one commit: readers see all of them new or none.

        `windows[key]`: every `ts` of that frame must lie in [start, end); `key_column`: that column,
        where present, must equal the key. Both are checked now and recorded, so reads check them too.
        """
        if not frames:
            return []
        for key in frames:
            _check_key(table, key)
        directory = self.table_dir(table)
        directory.mkdir(parents=True, exist_ok=True)
        with _flock(directory / ".lock"):
            entries: dict[str, StoredPartition] = {}
            try:
                for key, frame in frames.items():
                    window = None if windows is None else windows.get(key)
                    _check_rows_belong(table, key, frame, window, key_column, where="refusing to write it")
                    name = f"{key}.w{uuid.uuid4().hex[:16]}.parquet"  # fresh: unreferenced until the commit
                    path = directory / name
                    entries[key] = StoredPartition(key, name, frame.height, 0, window, key_column)
                    frame.write_parquet(path, compression="zstd", statistics=True)
                    with open(path, "rb") as handle:
                        os.fsync(handle.fileno())
                    entries[key] = StoredPartition(key, name, frame.height, path.stat().st_size, window, key_column)
                    _fault_point("partition_file", table)
            except BaseException:
                for entry in entries.values():  # nothing was committed: drop this write's files now
                    (directory / entry.file).unlink(missing_ok=True)
                raise
            old = self.manifest(table)
            replaced = tuple(old.partitions[key].file for key in entries if key in old.partitions)
            new = Manifest(table, old.generation + 1, {**old.partitions, **entries}, replaced)
            _commit_manifest(self.manifest_path(table), new)
            _fault_point("manifest", table)
            self._collect_garbage(directory, new)
        self.refresh_views(table)
        return [directory / entries[key].file for key in frames]

    def _collect_garbage(self, directory: Path, manifest: Manifest) -> None:
        """Delete this warehouse's own files that the manifest neither lists nor just retired: those
        a commit before the last one replaced, and those a killed write left. Runs under the table lock,
        so no other writer of the table has uncommitted files. Files that the live warehouse.duckdb or a
        snapshot an open session still holds refers to are kept too (see `refresh_views`)."""
        keep = set(manifest.files()) | set(manifest.retired)
        prefix = f"warehouse/{manifest.table}/"
        keep |= {f.removeprefix(prefix) for f in self._files_in_views() if f.startswith(prefix)}
        for path in directory.iterdir():
            if (_OWN_FILE.match(path.name) and path.name not in keep) or path.name.startswith(f".{MANIFEST}."):
                path.unlink(missing_ok=True)
                log.debug("removed unreferenced %s", path)

    # ---- reads -------------------------------------------------------------------------------
    def read_partitions(
        self,
        table: str,
        keys: Iterable[str],
        *,
        missing: str = "error",
        windows: Mapping[str, Window] | None = None,
        key_column: str | None = None,
    ) -> pl.DataFrame | None:
        """Concatenate the given partitions. `missing="error"` raises naming the absent keys;
        `missing="skip"` reads what exists (None when nothing does).

        Every file is checked: it is the one the manifest lists (same size and rows), readable Parquet,
        and its rows belong to its partition (`windows` / `key_column` given here, else those recorded
        at write time); otherwise the error names the file and the rule broken."""
        keys = list(keys)
        for key in keys:
            _check_key(table, key)
        for attempt in range(3):
            manifest = self.manifest(table)
            absent = [key for key in keys if key not in manifest.partitions]
            if absent and missing == "error":
                shown = ", ".join(absent[:5]) + (f" (+{len(absent) - 5} more)" if len(absent) > 5 else "")
                raise WarehouseError(
                    f"table {table!r} has no stored partition {shown} in {self.manifest_path(table)}; "
                    "materialize it first"
                )
            present = [manifest.partitions[key] for key in keys if key in manifest.partitions]
            if not present:
                return None
            try:
                frames = [self._read_file(table, entry, windows, key_column) for entry in present]
            except _MissingFile:
                # Two commits since the manifest was read collected the file: read the new state.
                if attempt < 2 and self.manifest(table).generation != manifest.generation:
                    continue
                raise
            return pl.concat(frames, how="vertical_relaxed")
        raise AssertionError("unreachable")

    def _read_file(
        self, table: str, entry: StoredPartition, windows: Mapping[str, Window] | None, key_column: str | None
    ) -> pl.DataFrame:
        path = self.table_dir(table) / entry.file
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise _MissingFile(
                f"{path}: table {table!r} partition {entry.key} is listed in the manifest but the file is gone; "
                "re-materialize the partition"
            ) from None
        if size != entry.bytes:
            raise WarehouseError(
                f"{path}: table {table!r} partition {entry.key} is not the file the warehouse wrote "
                f"({size} bytes, the manifest recorded {entry.bytes}); re-materialize the partition"
            )
        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # polars raises several types for a damaged file
            raise WarehouseError(
                f"{path}: table {table!r} partition {entry.key} is not a readable Parquet file ({exc}); "
                "re-materialize the partition"
            ) from exc
        if frame.height != entry.rows:
            raise WarehouseError(
                f"{path}: table {table!r} partition {entry.key} holds {frame.height} rows, the manifest "
                f"recorded {entry.rows}; re-materialize the partition"
            )
        window = (windows or {}).get(entry.key, entry.window)
        where = f"a foreign file in {path}; re-materialize the partition"
        _check_rows_belong(table, entry.key, frame, window, key_column or entry.key_column, where=where)
        return frame

    def read_table(self, table: str) -> pl.DataFrame | None:
        return self.read_partitions(table, self.stored_keys(table), missing="skip")

    # ---- DuckDB views ------------------------------------------------------------------------
    def view_files(self) -> dict[str, list[str]]:
        """Each view and its files, relative to the experiment folder."""
        own = {table: [f"warehouse/{table}/{name}" for name in self.manifest(table).files()] for table in self.tables()}
        views = {table: files for table, files in own.items() if files}
        for view, pattern in UNION_VIEWS.items():
            files = [f for table, fs in sorted(own.items()) if fnmatch.fnmatchcase(table, pattern) for f in fs]
            if files:
                views[view] = files
        return views

    def refresh_views(self, changed: str | None = None) -> None:
        """Rebuild warehouse.duckdb aside, then swap it in (see the module docstring).

        The new file starts as a copy of the current one when that holds nothing but this warehouse's
        views; each view carries the digest of its definition as its comment, so only views whose files
        changed are re-created (binding a view reads every file's schema: with 16 tables of 12 files a
        full rebuild took ~100 ms per write here, this ~45 ms). Otherwise (first write, a copy that does
        not open, objects a read-write session added) every view is built in a fresh file. A view that
        cannot be bound (a file made unreadable behind the warehouse's back) is left out with a warning
        naming it, so one damaged table never blocks the others."""
        self.root.mkdir(parents=True, exist_ok=True)
        with _flock(self.root / ".warehouse.lock"):
            for path in self.root.iterdir():
                if _DB_TMP.match(path.name):  # left by a killed rebuild; none runs now (we hold the lock)
                    path.unlink(missing_ok=True)
            tmp = self.root / f".{DB_NAME}.{uuid.uuid4().hex[:16]}.tmp"
            try:
                desired = {view: _view_sql(view, files) for view, files in self.view_files().items()}
                con, existing = self._open_copy(tmp)
                with con:
                    _search_here(con, self.root)
                    for view in sorted(set(existing) - set(desired)):
                        con.execute(f'DROP VIEW "{view}"')
                    for view, sql in sorted(desired.items()):
                        digest = _digest(sql)
                        if existing.get(view) == digest:
                            continue
                        try:
                            con.execute(sql)
                            con.execute(f"COMMENT ON VIEW \"{view}\" IS '{_COMMENT_PREFIX}{digest}'")
                        except duckdb.Error as exc:
                            con.execute(f'DROP VIEW IF EXISTS "{view}"')  # never a view over files now gone
                            log.warning("warehouse %s: view %s left out: %s", self.db_path, view, exc)
                # The files the new database's views read, by its inode (a rename and a hard link keep it).
                _write_json(self.root / f"{_FILES_PREFIX}{tmp.stat().st_ino}.json", sorted(_files_of(desired)))
                _fault_point("views", changed or "*")
                if self.db_path.exists():  # the replaced database lives on while a session holds it
                    snapshot = self.root / f"{_SNAPSHOT_PREFIX}{self.db_path.stat().st_ino}"
                    try:
                        os.link(self.db_path, snapshot)
                    except FileExistsError:
                        pass
                    except OSError as exc:  # a file system without hard links: sessions are not tracked
                        log.info("warehouse %s: no snapshot kept for open sessions (%s)", self.db_path, exc)
                os.replace(tmp, self.db_path)
                _fsync_dir(self.root)
                self._release_snapshots()
            finally:
                tmp.unlink(missing_ok=True)
                tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)

    def _release_snapshots(self) -> None:
        """Forget replaced databases no session holds any more (DuckDB locks the file it opened, read-only
        or not; an open-file-description lock probe sees those locks, from any process, this one too),
        and the file lists of databases that are gone; the next writes then collect their files."""
        live = self.db_path.stat().st_ino if self.db_path.exists() else None
        held = {live}
        for snapshot in self.root.glob(f"{_SNAPSHOT_PREFIX}*"):
            if _held_by_a_session(snapshot):
                held.add(snapshot.stat().st_ino)
            else:
                snapshot.unlink(missing_ok=True)
        for listing in self.root.glob(f"{_FILES_PREFIX}*.json"):
            inode = listing.name.removeprefix(_FILES_PREFIX).removesuffix(".json")
            if not inode.isdigit() or int(inode) not in held:
                listing.unlink(missing_ok=True)

    def _files_in_views(self) -> set[str]:
        """Files the live database or a held snapshot reads (paths relative to the experiment)."""
        files: set[str] = set()
        for listing in self.root.glob(f"{_FILES_PREFIX}*.json"):
            with contextlib.suppress(OSError, ValueError):  # released meanwhile, or being written
                files.update(json.loads(listing.read_text()))
        return files

    def _open_copy(self, tmp: Path) -> tuple[duckdb.DuckDBPyConnection, dict[str, str]]:
        """Open `tmp` read-write as a copy of the live database when that holds only this warehouse's
        views (returning their digests), else as a fresh file (returning {})."""
        if self.db_path.exists():
            con = None
            try:
                shutil.copyfile(self.db_path, tmp)
                con = duckdb.connect(str(tmp))
                views = con.execute("SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").fetchall()
                (others,) = con.execute(
                    "SELECT (SELECT count(*) FROM duckdb_tables()) + (SELECT count(*) FROM duckdb_sequences())"
                    " + (SELECT count(*) FROM duckdb_functions() WHERE NOT internal)"
                ).fetchone() or (1,)
                if not others and all((comment or "").startswith(_COMMENT_PREFIX) for _, comment in views):
                    return con, {name: comment.removeprefix(_COMMENT_PREFIX) for name, comment in views}
                log.info("warehouse %s: objects beyond its views found; rebuilding every view", self.db_path)
            except (OSError, duckdb.Error) as exc:
                log.info("warehouse %s: rebuilding every view (%s)", self.db_path, exc)
            if con is not None:
                con.close()
            tmp.unlink(missing_ok=True)
            tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
        return duckdb.connect(str(tmp)), {}

    @property
    def reader_command(self) -> str:
        """How a researcher opens this warehouse in the DuckDB CLI (views resolve from the experiment folder)."""
        return f"cd {self.root} && duckdb -readonly {DB_NAME}"

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection whose views resolve against this experiment's folder."""
        if not self.db_path.exists():
            raise WarehouseError(f"no warehouse database at {self.db_path}: nothing was written to this experiment yet")
        with duckdb.connect(str(self.db_path), read_only=True) as con:
            _search_here(con, self.root)
            yield con

    def query(self, sql: str) -> pl.DataFrame:
        """Run a read-only query against the views (for tests, the CLI and notebooks)."""
        with self.connect() as con:
            return con.execute(sql).pl()


# ---- helpers ---------------------------------------------------------------------------------
def _check_key(table: str, key: str) -> None:
    if not _KEY.match(key):
        raise WarehouseError(f"bad partition key {key!r} for table {table!r}: letters, digits, '_', '.', '-' only")
    if not _NAME.match(table):
        raise WarehouseError(f"bad table name {table!r}: letters, digits and underscores only")


def _check_rows_belong(
    table: str, key: str, frame: pl.DataFrame, window: Window | None, key_column: str | None, *, where: str
) -> None:
    """Rows of partition `key` must lie in its `ts` window and carry its key in `key_column`."""
    if frame.is_empty():
        return
    if window is not None and "ts" in frame.columns:
        start, end = window
        outside = frame.filter((pl.col("ts") < start) | (pl.col("ts") >= end))
        if not outside.is_empty():
            raise WarehouseError(
                f"table {table!r} partition {key}: {outside.height} rows have `ts` outside the partition window "
                f"[{start.isoformat()}, {end.isoformat()}) (first {outside['ts'].min()!s}, last {outside['ts'].max()!s}): "
                f"{where}"
            )
    if key_column is not None and key_column in frame.columns:
        other = frame.filter(pl.col(key_column).cast(pl.String) != key)[key_column].unique().sort().to_list()
        if other:
            raise WarehouseError(
                f"table {table!r} partition {key}: column `{key_column}` must equal the partition key, "
                f"found {other[:5]}: {where}"
            )


_COMMENT_PREFIX = "crypto_assets warehouse view "
_SNAPSHOT_PREFIX = f".{DB_NAME}.snapshot."  # + inode: a replaced database, kept while a session holds it
_FILES_PREFIX = f".{DB_NAME}.files."  # + inode + .json: the files that database's views read


def _files_of(views_sql: Mapping[str, str]) -> set[str]:
    return {f for sql in views_sql.values() for f in re.findall(r"'(warehouse/[^']+)'", sql)}


def _held_by_a_session(path: Path) -> bool:
    """Whether any process (this one included) holds a DuckDB connection to this file."""
    probe = getattr(fcntl, "F_OFD_SETLK", None)
    if probe is None:  # not Linux: no way to tell, so do not keep snapshots
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.fcntl(fd, probe, struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
        return False  # nobody holds it (the probe's lock goes with the descriptor)
    except OSError:
        return True
    finally:
        os.close(fd)


def _write_json(path: Path, payload: object) -> None:
    tmp = path.with_name(f".{DB_NAME}.{uuid.uuid4().hex[:16]}.tmp")  # a killed writer's is cleaned like a database's
    try:
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _view_sql(view: str, files: list[str]) -> str:
    listed = ", ".join(f"'{f}'" for f in files)  # names match [A-Za-z0-9_./-]: nothing to quote
    return f'CREATE OR REPLACE VIEW "{view}" AS SELECT * FROM read_parquet([{listed}], union_by_name = true)'


def _digest(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()[:16]


def _commit_manifest(path: Path, manifest: Manifest) -> None:
    payload = {
        "format": MANIFEST_FORMAT,
        "table": manifest.table,
        "generation": manifest.generation,
        "partitions": {key: manifest.partitions[key].to_json() for key in sorted(manifest.partitions)},
        "retired": list(manifest.retired),
    }
    tmp = path.with_name(f".{MANIFEST}.{uuid.uuid4().hex[:16]}.tmp")
    try:
        with open(tmp, "w") as handle:
            json.dump(payload, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)  # the new files and the manifest's rename survive a power loss


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _search_here(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """Resolve the views' relative paths against the experiment folder (a per-connection setting;
    passing it as connect() config would clash with another open connection to the same file)."""
    escaped = str(root).replace("'", "''")
    con.execute(f"SET file_search_path = '{escaped}'")


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Serialise this project's writers across processes (readers never take it)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
