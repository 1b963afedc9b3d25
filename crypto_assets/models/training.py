"""Train a forecaster on one walk-forward fold, with early stopping that never sees the test window.

Data flow of `train_forecaster` (DESIGN §3.5, §3.6):

1. Only rows with `split == "train"` are read (already purged by `split_fold`); test rows cannot reach the
   weights, the vol scale, or early stopping.
2. Windows (see `crypto_assets.models.data`) whose labels exist are split by the decision bar's time:
   the validation slice is the last `val_fraction` of the train window's distinct timestamps, and the fit
   part ends `horizon` timestamps before it — a purge, because a fit label at t looks at the close of
   t + horizon, which would otherwise lie inside the validation slice (AFML ch. 7). Inputs of validation
   windows may reach back into the fit part; that is history, not leakage.
3. The fit windows are capped at `max_train_samples` by a seeded uniform subsample.
4. Adam on BCE(direction) + `vol_loss_weight` × Gaussian NLL(vol) (see `forecasters`); mini-batch order from
   a seeded `torch.Generator`; early stopping on the validation loss with `patience`, restoring the best
   epoch's weights.

Reproducibility: every stream derives from `seed` (the caller derives it from experiment seed, asset and
fold with `derive_seed`): weight init and dropout (`init`), batch order (`shuffle`), subsampling
(`subsample`). Training runs under `deterministic(threads)` and inside `torch.random.fork_rng`, so the
caller's global RNG state is untouched and, on CPU, the same seed gives a bit-identical state_dict.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from sklearn.metrics import roc_auc_score

from crypto_assets.models.data import WindowSet, build_windows, gather_windows
from crypto_assets.models.device import autocast, derive_seed, deterministic, precision_name
from crypto_assets.models.forecasters import ForecasterParams, _Forecaster, build_model, forecast_loss, vol_nll

FORMAT_VERSION = 2  # 2: params are the family entry (`type`, not `arch`)
STATE_FILE = "model.pt"
META_FILE = "forecaster.json"
PREDICTION_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "p_up": pl.Float64(),
    "vol": pl.Float64(),
}


@dataclass
class TrainedForecaster:
    """A fitted forecaster with everything needed to use, audit and reload it."""

    model: _Forecaster
    params: ForecasterParams
    feature_columns: list[str]
    horizon: int
    device: torch.device
    vol_scale: float
    """Train-set RMS per-bar vol √(mean(r_h²)/h) the vol head is expressed in."""
    seed: int | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    """Per epoch: `train_loss`, `val_loss` (NaN without a validation slice), `val_bce`, `val_nll`."""
    best_epoch: int = 0
    """1-based epoch whose weights were kept (the last one without a validation slice)."""
    epochs_run: int = 0
    val_metrics: dict[str, float] = field(default_factory=dict)
    """`classification_metrics` on the validation slice with the kept weights (empty without one)."""
    n_fit: int = 0
    n_val: int = 0
    split_info: dict[str, str] = field(default_factory=dict)
    """Time bounds of the fit part and the validation slice (ISO strings)."""
    train_seconds: float = 0.0
    """Wall time of the fitting passes only (no validation), summed over epochs."""
    samples_per_second: float = 0.0
    """Fit windows processed per second of `train_seconds` (forward + backward + step)."""
    threads: int = 1
    """torch CPU threads for `predict` / `evaluate` (runtime setting, not saved; 1 = reproducible)."""

    @property
    def precision(self) -> str:
        return precision_name(self.params.bf16)

    # ------------------------------------------------------------------------------------ inference

    def _infer(self, ws: WindowSet, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(p_up, vol) float64 for every window of `ws`, eval mode, no grad."""
        if len(ws) == 0:
            return np.empty(0), np.empty(0)
        size = batch_size or max(self.params.batch_size * 4, 1024)
        feats = torch.from_numpy(ws.features).to(self.device)
        ends = torch.from_numpy(ws.ends).to(self.device)
        logits, vols = [], []
        self.model.eval()
        # Same settings as training: a different thread count may change the last bits of a prediction.
        settings = deterministic(self.threads, warn_only=self.device.type != "cpu")
        with settings, torch.inference_mode(), autocast(self.device, self.params.bf16):
            for start in range(0, len(ws), size):
                out = self.model(gather_windows(feats, ends[start : start + size], ws.window))
                logits.append(out.logit.float().cpu())
                vols.append(out.vol.float().cpu())
        logit = torch.cat(logits).double().numpy()
        return 1.0 / (1.0 + np.exp(-logit)), torch.cat(vols).double().numpy()

    def _windows(self, frame: pl.DataFrame, horizon: int | None = None) -> WindowSet:
        return build_windows(frame, self.feature_columns, self.params.window, horizon)

    def predict(self, frame: pl.DataFrame, *, only_split: str | None = None) -> pl.DataFrame:
        """`symbol, ts, p_up, vol` for every (symbol, ts) of `frame` with a full window, sorted by (symbol, ts).

        `p_up` = P(label_fwd_ret_h > 0) decided at the close of ts; `vol` = forecast per-bar σ of the log
        return over the next h bars. `only_split`: build windows over the whole frame (so the first test bars
        use the preceding train bars as history) but return only rows whose `split` equals it.
        """
        ws = self._windows(frame)
        p_up, vol = self._infer(ws)
        out = ws.keys.with_columns(pl.Series("p_up", p_up, pl.Float64), pl.Series("vol", vol, pl.Float64))
        out = out.cast(PREDICTION_SCHEMA)  # type: ignore[arg-type]
        return _only_split(out, frame, only_split)

    def evaluate(self, frame: pl.DataFrame, *, only_split: str | None = None) -> dict[str, float]:
        """`classification_metrics` on every labelled window of `frame` (optionally only rows of one split)."""
        ws = self._windows(frame, self.horizon)
        if only_split is not None:
            keep = _only_split(ws.keys.with_row_index("_i"), frame, only_split).get_column("_i").to_numpy()
            ws = ws.subset(keep.astype(np.int64))
        ws = ws.subset(ws.labelled())
        p_up, vol = self._infer(ws)
        assert ws.y_dir is not None and ws.fwd_ret is not None
        return classification_metrics(p_up, ws.y_dir, ws.fwd_ret, vol, self.horizon, self.vol_scale)

    # ------------------------------------------------------------------------------------ persistence

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable description (also what `save` writes next to the weights)."""
        return {
            "format_version": FORMAT_VERSION,
            "params": self.params.model_dump(mode="json"),
            "feature_columns": list(self.feature_columns),
            "horizon": self.horizon,
            "vol_scale": self.vol_scale,
            "seed": self.seed,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "val_metrics": self.val_metrics,
            "n_fit": self.n_fit,
            "n_val": self.n_val,
            "split_info": self.split_info,
            "device": str(self.device),
            "precision": self.precision,
            "train_seconds": self.train_seconds,
            "samples_per_second": self.samples_per_second,
            "torch_version": torch.__version__,
        }

    def save(self, directory: Path) -> Path:
        """Write `model.pt` (state_dict) and `forecaster.json` into `directory`; each file is written aside
        and renamed, so a crash never leaves a half-written checkpoint."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        tmp_state = directory / f".{STATE_FILE}.tmp"
        torch.save(state, tmp_state)
        os.replace(tmp_state, directory / STATE_FILE)
        tmp_meta = directory / f".{META_FILE}.tmp"
        tmp_meta.write_text(json.dumps(_json_safe(self.metadata()), indent=2, sort_keys=True))
        os.replace(tmp_meta, directory / META_FILE)
        return directory

    @classmethod
    def load(cls, directory: Path, device: torch.device | str | None = None, *, threads: int = 1) -> TrainedForecaster:
        """Rebuild a saved forecaster on `device` (default CPU); predictions equal the saved model's exactly
        on the same device and precision."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory}: unsupported forecaster format {meta.get('format_version')!r}")
        target = torch.device(device or "cpu")
        params = ForecasterParams.model_validate(meta["params"])
        model = build_model(params, len(meta["feature_columns"]))
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        model.to(target).eval()
        return cls(
            model=model,
            params=params,
            feature_columns=list(meta["feature_columns"]),
            horizon=int(meta["horizon"]),
            device=target,
            vol_scale=float(meta["vol_scale"]),
            seed=meta.get("seed"),
            history={k: [_float(x) for x in v] for k, v in meta.get("history", {}).items()},
            best_epoch=int(meta.get("best_epoch", 0)),
            epochs_run=int(meta.get("epochs_run", 0)),
            val_metrics={k: _float(v) for k, v in meta.get("val_metrics", {}).items()},
            n_fit=int(meta.get("n_fit", 0)),
            n_val=int(meta.get("n_val", 0)),
            split_info=dict(meta.get("split_info", {})),
            train_seconds=float(meta.get("train_seconds", 0.0)),
            samples_per_second=_float(meta.get("samples_per_second")),
            threads=threads,
        )


# ---------------------------------------------------------------------------------------------- metrics


def classification_metrics(
    p_up: np.ndarray,
    y_dir: np.ndarray,
    fwd_ret: np.ndarray | None = None,
    vol: np.ndarray | None = None,
    horizon: int | None = None,
    vol_scale: float | None = None,
) -> dict[str, float]:
    """Direction metrics of P(up) against 0/1 labels, plus the vol head's fit when its inputs are given.

    accuracy (threshold 0.5), auc (sklearn `roc_auc_score`; NaN when only one class is present), brier
    (mean (p − y)²), log_loss, base_rate (share of ups), n. With the vol inputs: vol_nll (the training loss's
    vol term, in vol_scale units) and vol_ratio = mean(r_h² / h) / mean(σ²) — 1 for an unbiased variance
    forecast. Empty input gives n = 0 and NaN elsewhere.
    """
    p = np.asarray(p_up, dtype=np.float64)
    y = np.asarray(y_dir, dtype=np.float64)
    n = int(p.size)
    nan = float("nan")
    out: dict[str, float] = {
        "n": float(n),
        "accuracy": nan,
        "auc": nan,
        "brier": nan,
        "log_loss": nan,
        "base_rate": nan,
    }
    if n == 0:
        return out
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    out["accuracy"] = float(np.mean((p > 0.5) == (y > 0.5)))
    out["auc"] = float(roc_auc_score(y, p)) if np.unique(y).size == 2 else nan
    out["brier"] = float(np.mean((p - y) ** 2))
    out["log_loss"] = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
    out["base_rate"] = float(np.mean(y))
    if fwd_ret is not None and vol is not None and horizon is not None and vol_scale is not None:
        r = np.asarray(fwd_ret, dtype=np.float64)
        s = np.asarray(vol, dtype=np.float64)
        out["vol_nll"] = float(vol_nll(torch.from_numpy(s), torch.from_numpy(r), horizon, vol_scale).mean())
        out["vol_ratio"] = float(np.mean(r**2 / horizon) / np.mean(s**2))
    return out


# ---------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class ValidationSplit:
    fit: np.ndarray
    """Boolean mask over the labelled windows: the part the weights are fitted on."""
    val: np.ndarray
    """Boolean mask over the labelled windows: the early-stopping slice (all False when val_fraction = 0)."""
    val_start_us: int | None
    """First timestamp (epoch µs) of the validation slice."""
    fit_end_us: int | None
    """First timestamp (epoch µs) NOT in the fit part (= val start minus the purge)."""


def validation_split(
    window_ts_us: np.ndarray, train_ts_us: np.ndarray, val_fraction: float, purge: int
) -> ValidationSplit:
    """Split windows by their decision time into fit and validation parts (see the module docstring).

    `train_ts_us`: every timestamp of the train window (any symbol); its distinct values are counted, so the
    slice covers the last `val_fraction` of the window's bars for every symbol at once. The fit part ends
    `purge` distinct timestamps before the slice: on a grid without holes that is `purge` bars, and a hole
    only widens the gap in time.
    """
    n_windows = window_ts_us.size
    if val_fraction <= 0:
        return ValidationSplit(np.ones(n_windows, bool), np.zeros(n_windows, bool), None, None)
    grid = np.unique(train_ts_us)
    n_val = math.ceil(grid.size * val_fraction)
    k = grid.size - n_val  # index of the first validation timestamp
    if k - purge <= 0:
        raise ValueError(
            f"validation slice of {n_val} bars plus a purge of {purge} bars leaves no fit bars in a train window "
            f"of {grid.size} distinct timestamps; lower val_fraction or provide more data"
        )
    val_start, fit_end = int(grid[k]), int(grid[k - purge])
    return ValidationSplit(window_ts_us < fit_end, window_ts_us >= val_start, val_start, fit_end)


def train_forecaster(
    fold: pl.DataFrame,
    feature_columns: list[str],
    horizon: int,
    params: ForecasterParams,
    *,
    device: torch.device | str | None = None,
    seed: int,
    threads: int = 1,
    init: TrainedForecaster | None = None,
) -> TrainedForecaster:
    """Fit `params.arch` on the train rows of one fold (`symbol, ts, <features>, label_*_{h}, split`).

    `device`: a `torch.device` (e.g. from `select_device(gpu_id)`); CPU when None. `seed`: the run's seed,
    already derived from (experiment seed, asset, fold) by the caller. `threads`: torch CPU threads while
    training (1 = the reproducible setting, DESIGN §3.6). `init`: warm start (fine-tuning): training starts from
    `init`'s weights instead of a fresh initialisation, for ceil(`fine_tune_fraction` × `max_epochs`) epochs
    (early stopping as usual), with a fresh optimizer; the vol head is re-expressed in this fold's `vol_scale`.
    `init` must have the same architecture and feature columns. Raises ValueError when the fold has no `split`
    column, lacks a column, or leaves no labelled fit windows.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be ≥ 1 bar, got {horizon}")
    if "split" not in fold.columns:
        raise ValueError("train_forecaster: the fold frame needs a `split` column ('train' / 'test')")
    max_epochs = params.max_epochs
    if init is not None:
        if init.feature_columns != list(feature_columns) or init.params.arch != params.arch:
            raise ValueError("warm start needs the same architecture and feature columns as the model it starts from")
        max_epochs = math.ceil(params.fine_tune_fraction * params.max_epochs)
    target = torch.device(device or "cpu")
    train = fold.filter(pl.col("split") == "train")  # the test window never goes further than this line
    ws = build_windows(train, feature_columns, params.window, horizon)
    ws = ws.subset(ws.labelled())
    window_ts = ws.keys.get_column("ts").dt.epoch("us").to_numpy()
    split = validation_split(window_ts, train.get_column("ts").dt.epoch("us").to_numpy(), params.val_fraction, horizon)
    fit, val = ws.subset(split.fit), ws.subset(split.val)
    if params.max_train_samples is not None and len(fit) > params.max_train_samples:
        rng = np.random.default_rng(derive_seed(seed, "subsample"))
        fit = fit.subset(np.sort(rng.choice(len(fit), params.max_train_samples, replace=False)))
    if len(fit) == 0:
        raise ValueError(
            f"no labelled fit windows: {train.height} train rows, window {params.window}, horizon {horizon}, "
            f"val_fraction {params.val_fraction}"
        )
    assert fit.fwd_ret is not None and fit.y_dir is not None
    vol_scale = math.sqrt(float(np.mean(fit.fwd_ret.astype(np.float64) ** 2)) / horizon)
    if not (math.isfinite(vol_scale) and vol_scale > 0):
        raise ValueError("every forward return in the fit part is 0: no volatility to learn")

    strict = target.type == "cpu"  # on CUDA a few kernels lack deterministic versions: warn instead of fail
    rng_devices = (
        [target.index if target.index is not None else torch.cuda.current_device()] if target.type == "cuda" else []
    )
    with deterministic(threads, warn_only=not strict), torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(derive_seed(seed, "init"))  # weight init (on CPU, so identical on every device) and dropout
        model = build_model(params, ws.n_features)
        if init is not None:
            model.load_state_dict(init.model.state_dict())  # loading copies: `init` itself is left untouched
        model.set_vol_scale(vol_scale)
        model.to(target)
        result = _fit(model, ws, fit, val, horizon, params, target, seed, vol_scale, max_epochs)

    def iso(us: int | None) -> str:
        return "" if us is None else str(np.datetime64(us, "us")) + "Z"

    trained = TrainedForecaster(
        model=model,
        params=params,
        feature_columns=list(feature_columns),
        horizon=horizon,
        device=target,
        vol_scale=vol_scale,
        seed=seed,
        n_fit=len(fit),
        n_val=len(val),
        threads=threads,
        split_info={
            "fit_start": iso(int(fit.keys.get_column("ts").dt.epoch("us").min())),  # type: ignore[arg-type]
            "fit_end_exclusive": iso(split.fit_end_us),
            "val_start": iso(split.val_start_us),
            "val_end": iso(int(window_ts.max())) if len(val) else "",
        },
        **result,
    )
    if len(val):
        p_up, vol = trained._infer(val)
        assert val.y_dir is not None and val.fwd_ret is not None
        trained.val_metrics = classification_metrics(p_up, val.y_dir, val.fwd_ret, vol, horizon, vol_scale)
        trained.val_metrics["loss"] = min(result["history"]["val_loss"])
    return trained


def _fit(
    model: _Forecaster,
    ws: WindowSet,
    fit: WindowSet,
    val: WindowSet,
    horizon: int,
    params: ForecasterParams,
    device: torch.device,
    seed: int,
    vol_scale: float,
    max_epochs: int,
) -> dict[str, Any]:
    """The epoch loop (at most `max_epochs`); returns the TrainedForecaster fields it determines. Loads the best
    weights into `model`."""
    feats = torch.from_numpy(ws.features).to(device)  # every row once; batches are gathered on the device

    def tensors(part: WindowSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert part.y_dir is not None and part.fwd_ret is not None
        return (
            torch.from_numpy(part.ends).to(device),
            torch.from_numpy(part.y_dir).to(device),
            torch.from_numpy(part.fwd_ret).to(device),
        )

    fit_ends, fit_y, fit_r = tensors(fit)
    val_ends, val_y, val_r = tensors(val)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    shuffle = torch.Generator().manual_seed(derive_seed(seed, "shuffle"))
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_bce": [], "val_nll": []}
    best_loss, best_epoch, best_state, stale = math.inf, 0, None, 0
    train_seconds, samples = 0.0, 0
    n_fit, size = len(fit), params.batch_size

    for epoch in range(1, max_epochs + 1):
        model.train()
        order = torch.randperm(n_fit, generator=shuffle).to(device)
        total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per batch
        _sync(device)
        started = time.perf_counter()
        for start in range(0, n_fit, size):
            idx = order[start : start + size]
            with autocast(device, params.bf16):
                out = model(gather_windows(feats, fit_ends[idx], ws.window))
            loss, _, _ = forecast_loss(out, fit_y[idx], fit_r[idx], horizon, vol_scale, params.vol_loss_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if params.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
            optimizer.step()
            total += loss.detach().double() * idx.numel()
        _sync(device)
        train_seconds += time.perf_counter() - started
        samples += n_fit
        train_loss = float(total.item()) / n_fit
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at epoch {epoch} (try bf16=False or a lower lr)")
        history["train_loss"].append(train_loss)

        if len(val) == 0:
            for key in ("val_loss", "val_bce", "val_nll"):
                history[key].append(float("nan"))
            best_epoch = epoch  # no validation slice: keep the last epoch
            continue
        val_loss, val_bce, val_nll = _eval_loss(
            model, feats, ws.window, val_ends, val_y, val_r, horizon, params, vol_scale, device
        )
        history["val_loss"].append(val_loss)
        history["val_bce"].append(val_bce)
        history["val_nll"].append(val_nll)
        if val_loss < best_loss:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale > params.patience:
                break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {
        "history": history,
        "best_epoch": best_epoch,
        "epochs_run": len(history["train_loss"]),
        "train_seconds": train_seconds,
        "samples_per_second": samples / train_seconds if train_seconds > 0 else float("nan"),
    }


def _eval_loss(
    model: _Forecaster,
    feats: torch.Tensor,
    window: int,
    ends: torch.Tensor,
    y: torch.Tensor,
    r: torch.Tensor,
    horizon: int,
    params: ForecasterParams,
    vol_scale: float,
    device: torch.device,
) -> tuple[float, float, float]:
    """Sample-weighted mean (total, bce, nll) over a labelled window set, eval mode, no grad."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    size = max(params.batch_size * 4, 1024)
    with torch.inference_mode(), autocast(device, params.bf16):
        for start in range(0, ends.numel(), size):
            sl = slice(start, start + size)
            out = model(gather_windows(feats, ends[sl], window))
            parts = forecast_loss(out, y[sl], r[sl], horizon, vol_scale, params.vol_loss_weight)
            sums += torch.stack([p.double() for p in parts]) * y[sl].numel()
    total, bce, nll = (sums / ends.numel()).tolist()
    return total, bce, nll


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _only_split(out: pl.DataFrame, frame: pl.DataFrame, split: str | None) -> pl.DataFrame:
    """Rows of `out` (keyed by symbol, ts) whose `split` in `frame` equals `split`; all rows when None."""
    if split is None:
        return out
    if "split" not in frame.columns:
        raise ValueError("only_split needs a `split` column in the frame")
    keys = frame.filter(pl.col("split") == split).select("symbol", pl.col("ts").cast(out.schema["ts"]))
    return out.join(keys, on=["symbol", "ts"], how="semi", maintain_order="left")


def _json_safe(value: Any) -> Any:
    """NaN / inf → None (JSON has no NaN); containers recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _float(value: Any) -> float:
    """JSON null (a NaN on save) back to NaN."""
    return float("nan") if value is None else float(value)
