"""What the dashboard reads: one experiment's warehouse tables and its models' training curves, each optional.

Every table is read as it is stored when the dashboard renders (no Dagster): a section whose table is absent
(no stress job, no sweep, no paper ledger yet) is simply left out of the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from crypto_assets.families.base import CURVES_DIR
from crypto_assets.storage.warehouse import Warehouse

TABLES = (
    "walk_forward_equity",
    "walk_forward_trades",
    "kpis",
    "regime_kpis",
    "bars",
    "stress_kpis",
    "sweep",
    "seed_dispersion",
)
"""The warehouse tables a dashboard may show; `predictions_<model>` tables are found by prefix, and the paper
ledger (its own append-only store beside them, crypto_assets.paper) is read when its folder exists."""
PAPER_LEDGER = "paper_ledger"  # = paper.ledger.LEDGER_DIR, the key of the ledger in `ExperimentData.tables`
PREDICTIONS_PREFIX = "predictions_"
ARTIFACTS_DIR = "artifacts"
MODEL_PREFIX = "model_"  # = orchestration.assets.families.MODEL_PREFIX (artifact folders `model_<slug>/<fold>/`)


class MissingTableError(LookupError):
    """A table the page cannot do without (e.g. `kpis`) is absent from an experiment's warehouse."""


@dataclass(frozen=True)
class Curve:
    """One training curve of one fold's artifact: `model_<model>/<fold>/curves/<name>.parquet`."""

    model: str
    name: str
    fold: str
    frame: pl.DataFrame


@dataclass(frozen=True)
class ExperimentData:
    """One experiment's stored results, as the dashboard sees them."""

    name: str
    root: Path
    timeframe: str
    label_horizon: int
    tables: dict[str, pl.DataFrame]
    predictions: dict[str, pl.DataFrame] = field(default_factory=dict)
    """Model slug → its out-of-sample forecasts (`symbol, ts, p_up, vol, fold`), forecasters only."""
    curves: list[Curve] = field(default_factory=list)

    def table(self, name: str) -> pl.DataFrame | None:
        frame = self.tables.get(name)
        return frame if frame is not None and frame.height else None

    def require(self, name: str) -> pl.DataFrame:
        frame = self.table(name)
        if frame is None:
            raise MissingTableError(
                f"experiment {self.name!r}: no `{name}` table in {self.root / 'warehouse'}; run its reports first "
                f"(crypto-lab run --config ... --only reports)"
            )
        return frame


def load_experiment(root: Path, *, name: str, timeframe: str, label_horizon: int) -> ExperimentData:
    """Read what `root` (`storage/<experiment>/`) holds; a missing experiment folder is an error naming it."""
    if not (root / "warehouse").is_dir():
        raise MissingTableError(f"experiment {name!r}: no warehouse under {root}; run it first (crypto-lab run)")
    warehouse = Warehouse(root)
    stored = set(warehouse.tables())
    tables = {
        table: frame for table in TABLES if table in stored and (frame := warehouse.read_table(table)) is not None
    }
    if (warehouse.tables_dir / PAPER_LEDGER).is_dir():  # imported only then: paper trading is optional
        from crypto_assets.paper import PaperLedgerStore

        tables[PAPER_LEDGER] = PaperLedgerStore(warehouse.tables_dir).read()
    predictions: dict[str, pl.DataFrame] = {}
    for table in sorted(t for t in stored if t.startswith(PREDICTIONS_PREFIX)):
        frame = warehouse.read_table(table)
        if frame is not None and {"p_up", "vol"} <= set(frame.columns):  # agents decide weights, not forecasts
            predictions[table.removeprefix(PREDICTIONS_PREFIX)] = frame.select("symbol", "ts", "p_up", "vol", "fold")
    return ExperimentData(
        name=name,
        root=root,
        timeframe=timeframe,
        label_horizon=label_horizon,
        tables=tables,
        predictions=predictions,
        curves=_curves(root / ARTIFACTS_DIR),
    )


def _curves(artifacts: Path) -> list[Curve]:
    return [
        Curve(
            model=path.parents[2].name.removeprefix(MODEL_PREFIX),
            name=path.stem,
            fold=path.parents[1].name,
            frame=frame,
        )
        for path in sorted(artifacts.glob(f"{MODEL_PREFIX}*/*/{CURVES_DIR}/*.parquet"))
        if (frame := pl.read_parquet(path)).height
    ]
