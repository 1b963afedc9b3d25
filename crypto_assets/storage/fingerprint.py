"""One experiment name, one dataset: the fingerprint of what defines an experiment's data.

The first write to an experiment records `storage/<experiment>/data_fingerprint.json`; every later run
under the same name must have the same fingerprint, or it is refused before it runs (`crypto-lab run`)
and before anything is written (the warehouse IO manager, so `dagster asset materialize` and the UI are
covered too). Without this, a 15m config under a 1h experiment's name would append 15m bars to a table
of 1h bars, and every later fold would train on the mix.

What defines the data: the source kind and where it reads (ccxt exchange id / CSV folder), the tickers,
the timeframe and `data.start`; for the synthetic source also its parameters, the seed and the ticker
order (symbol i of the list gets the i-th loading). Not `data.end`: extending a span is normal. Not
`api_url`: a proxy or regional endpoint serves the same exchange's bars.

Plain Python (no Dagster, no DuckDB): `crypto-lab` imports it before deciding to start anything.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crypto_assets.config import ExperimentConfig, fingerprint

FINGERPRINT_FILE = "data_fingerprint.json"


class DataMismatchError(RuntimeError):
    """A config whose data differs from what its experiment already stores."""


@dataclass(frozen=True)
class DataFingerprint:
    fields: dict[str, Any]

    @property
    def digest(self) -> str:
        return fingerprint(self.fields)

    def describe(self) -> str:
        return ", ".join(f"{name} {_show(value)}" for name, value in self.fields.items() if value is not None)

    def differences(self, other: DataFingerprint) -> list[str]:
        """`name: mine → other's` for every field that differs."""
        return _differences(self.fields, other.fields, prefix="")


def data_fingerprint(config: ExperimentConfig) -> DataFingerprint:
    data = config.data
    kind = data.source_kind
    synthetic = kind == "synthetic"
    return DataFingerprint(
        {
            "source": kind,
            "exchange": data.exchange_id if kind == "ccxt" else None,
            # As written in the config (normalised), so a copied project with the same layout matches.
            "csv_dir": os.path.normpath(data.csv_dir) if kind == "csv" and data.csv_dir else None,
            # The order of real tickers does not change their bars; the synthetic market's does.
            "tickers": list(data.tickers) if synthetic else sorted(data.tickers),
            "timeframe": data.timeframe,
            "start": data.start.isoformat(),
            "seed": config.experiment.seed if synthetic else None,
            "synthetic": data.synthetic.model_dump(mode="json") if synthetic else None,
        }
    )


def stored_fingerprint(root: str | Path) -> DataFingerprint | None:
    path = Path(root) / FINGERPRINT_FILE
    try:
        raw = json.loads(path.read_text())
        return DataFingerprint(dict(raw["fields"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataMismatchError(
            f"{path}: unreadable data fingerprint ({exc}); restore it, or delete {Path(root)}/ to start over"
        ) from exc


def check_data_fingerprint(root: str | Path, current: DataFingerprint, *, record: bool) -> None:
    """Refuse `current` if the experiment at `root` stores other data; with `record`, store `current`
    when nothing is recorded yet (the first write)."""
    root = Path(root)
    stored = stored_fingerprint(root)
    if stored is None:
        if record:
            _record(root, current)
        return
    if stored.fields == current.fields:
        return
    name = root.name
    raise DataMismatchError(
        f"experiment {name!r} already stores other data ({root / FINGERPRINT_FILE}):\n"
        f"  stored: {stored.digest}  {stored.describe()}\n"
        f"  config: {current.digest}  {current.describe()}\n"
        f"  differs: {'; '.join(stored.differences(current))}\n"
        f"One experiment name holds one dataset, so bars of different data never mix in one table. "
        f"Give this config another experiment.name, or delete {root}/ to start over."
    )


def _record(root: Path, current: DataFingerprint) -> None:
    root.mkdir(parents=True, exist_ok=True)
    payload = {
        "digest": current.digest,
        "fields": current.fields,
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    path = root / FINGERPRINT_FILE
    tmp = root / f".{FINGERPRINT_FILE}.{uuid.uuid4().hex[:16]}.tmp"
    try:
        tmp.write_text(json.dumps(payload, indent=1))
        # Two first writers racing: the link fails for the second, which then checks against the first.
        os.link(tmp, path)
    except FileExistsError:
        check_data_fingerprint(root, current, record=False)
    finally:
        tmp.unlink(missing_ok=True)


def _differences(mine: dict[str, Any], theirs: dict[str, Any], prefix: str) -> list[str]:
    names = [*mine, *(n for n in theirs if n not in mine)]
    out = []
    for name in names:
        a, b = mine.get(name), theirs.get(name)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):  # name the parameter, not the whole section
            out += _differences(a, b, prefix=f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name} {_show(a)} → {_show(b)}")
    return out


def _show(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, dict):  # a parameter section: its hash keeps the message short
        return f"<{fingerprint(value)[:8]}>"
    return str(value)
