"""Meta-learner: a learned ensemble of the members' target weights (stacking), trained without look-ahead.

Inputs (`stack_frame`). For fold k, whose test window starts at T_k, one row per (symbol, bar) with each member's
*held* target weight at that bar (`w_<member>`: its latest order at or before the bar, 0 before its first; the
engine's "no row = hold" rule, as in `soft_vote`) and whether it ordered there (`o_<member>`):

- `train` rows: the members' out-of-sample weights of EARLIER folds' test windows, each bar once. Where test
  windows overlap (test_months > step_months) a bar is taken from the newest fold covering it, and bars at or
  after T_k are never taken from an earlier fold (they belong to fold k's window). A row is kept only when its
  label, the log return over `label_horizon` bars from its close (`folds.add_labels`), ENDS before T_k: labels
  are computed on the bars before T_k alone, so a label reaching into fold k's window does not exist.
- `test` rows: fold k's own test window (what the learner decides on).

Nothing of fold k's test window (its bars, its members' predictions) reaches a `train` row; `vol` (the trailing
σ of per-bar log returns, for sizing) is causal.

Learner (`fit_meta`): with at least `min_history_folds` earlier folds in the train rows, a tiny seeded MLP (torch)
or an L2 logistic regression (scikit-learn) predicts P(label > 0) from the standardised member weights; the
decision is sized like the forecasters' (`models.forecast_to_weights`: edge 2p − 1 at the vol target). With less
history it soft-votes the members (`soft_vote`) with the fallback votes. Inference is plain NumPy on the stored
parameters, so a replay from the saved model gives the same numbers bit for bit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

from crypto_assets.ensemble.voting import soft_vote
from crypto_assets.folds import add_labels, add_months
from crypto_assets.folds.split import label_columns
from crypto_assets.folds.windows import parse_key, utc

MEMBER_PREFIX = "w_"
"""`w_<member>`: the member's held target weight at the bar."""
ORDER_PREFIX = "o_"
"""`o_<member>`: 1 where the member ordered at the bar, else 0."""
TS_DTYPE = pl.Datetime("us", "UTC")
Learner = Literal["mlp", "logistic"]


def member_column(member: str) -> str:
    return f"{MEMBER_PREFIX}{member}"


def order_column(member: str) -> str:
    return f"{ORDER_PREFIX}{member}"


def _test_window(fold: str, test_months: int) -> tuple[dt.datetime, dt.datetime]:
    day = parse_key(fold)
    return utc(day), utc(add_months(day, test_months))


def _held(grid: pl.DataFrame, orders: pl.DataFrame, member: str) -> pl.DataFrame:
    """`grid` (symbol, ts) with the member's held weight and order flag (orders: symbol, ts, weight)."""
    w, o = member_column(member), order_column(member)
    joined = grid.join(orders.rename({"weight": w}), on=["symbol", "ts"], how="left").sort("symbol", "ts")
    return joined.with_columns(
        pl.col(w).is_not_null().cast(pl.Int8).alias(o),
        pl.col(w).forward_fill().over("symbol").fill_null(0.0),
    )


def stack_frame(
    members: Mapping[str, pl.DataFrame],
    bars: pl.DataFrame,
    key: str,
    *,
    test_months: int,
    label_horizon: int,
    timeframe: str,
    vol_bars: int,
) -> pl.DataFrame:
    """The meta-learner's rows for fold `key` (see the module docstring).

    `members`: member name → its predictions (long `symbol, ts, weight, fold`; a null weight is no order) of any
    folds; folds after `key` are ignored. `bars`: long OHLCV (`symbol, ts, close`, ...) covering the folds' test
    windows plus `vol_bars` before. Returns `symbol, ts, fold, w_<m>…, o_<m>…, vol, label_fwd_ret_h,
    label_dir_h, split` sorted by (symbol, ts), members in the order given."""
    if not members:
        raise ValueError("the meta-learner needs at least one member")
    if vol_bars < 2:
        raise ValueError(f"vol_bars must be >= 2, got {vol_bars}")
    names = list(members)
    test_start, _ = _test_window(key, test_months)
    orders = {
        name: frame.filter(pl.col("weight").is_not_null() & (pl.col("fold") <= key)).select(
            "symbol", pl.col("ts").cast(TS_DTYPE), pl.col("weight").cast(pl.Float64), "fold"
        )
        for name, frame in members.items()
    }
    folds = sorted({str(f) for frame in orders.values() for f in frame["fold"].unique().to_list()})
    if key not in folds:
        raise ValueError(f"no member orders for fold {key} (members: {names})")
    prices = bars.select("symbol", pl.col("ts").cast(TS_DTYPE), pl.col("close").cast(pl.Float64)).sort("symbol", "ts")
    parts = []
    for fold in folds:
        start, end = _test_window(fold, test_months)
        if fold != key:
            end = min(end, test_start)  # the rest of an earlier fold's window lies in fold k's: never train on it
        ts = pl.col("ts")
        grid = prices.filter((ts >= start) & (ts < end)).select("symbol", "ts")
        for name in names:
            fold_orders = orders[name].filter((pl.col("fold") == fold) & (ts >= start) & (ts < end))
            grid = _held(grid, fold_orders.select("symbol", "ts", "weight"), name)
        parts.append(grid.with_columns(fold=pl.lit(fold)))
    # overlapping test windows: each bar once, from the newest fold covering it
    rows = pl.concat(parts).sort("symbol", "ts", "fold").unique(subset=["symbol", "ts"], keep="last")
    # labels from the bars before T_k only: a label that would end inside fold k's test window is null
    ret_col, dir_col = label_columns(label_horizon)
    labels = add_labels(prices.filter(pl.col("ts") < test_start), label_horizon, timeframe=timeframe)
    out = (
        rows.join(trailing_vol(prices, vol_bars), on=["symbol", "ts"], how="left")
        .join(labels.select("symbol", "ts", ret_col, dir_col), on=["symbol", "ts"], how="left")
        .with_columns(split=pl.when(pl.col("fold") == key).then(pl.lit("test")).otherwise(pl.lit("train")))
        .filter((pl.col("split") == "test") | pl.col(dir_col).is_not_null())
    )
    columns = [*(member_column(n) for n in names), *(order_column(n) for n in names)]
    return out.select("symbol", "ts", "fold", *columns, "vol", ret_col, dir_col, "split").sort("symbol", "ts")


def trailing_vol(prices: pl.DataFrame, vol_bars: int) -> pl.DataFrame:
    """`symbol, ts, vol`: the sample σ (ddof=1) of the last `vol_bars` per-bar log returns up to and including ts
    (null before enough bars). Each window is computed on its own, so σ at a bar does not depend on how far back
    the bars given start (a running-sum rolling σ does, in its last bits, and a replay must match exactly)."""
    parts = []
    for _, group in prices.sort("symbol", "ts").group_by("symbol", maintain_order=True):
        returns = np.diff(np.log(group["close"].to_numpy()))
        vol = np.full(group.height, np.nan)
        if returns.size >= vol_bars:
            vol[vol_bars:] = sliding_window_view(returns, vol_bars).std(axis=1, ddof=1)
        parts.append(group.select("symbol", "ts").with_columns(vol=pl.Series(vol).fill_nan(None)))
    return pl.concat(parts)


@dataclass
class MetaModel:
    """A fitted meta-learner: `soft_vote` (too little history) or a learned `mlp` / `logistic` on the standardised
    member weights. Layers hold (weight, bias) as nested lists (JSON), applied with tanh between them."""

    kind: Literal["soft_vote", "mlp", "logistic"]
    members: list[str]
    votes: dict[str, float]
    history_folds: list[str]
    """The earlier folds whose test windows the train rows came from."""
    train_rows: int = 0
    mean: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    layers: list[dict[str, list[Any]]] = field(default_factory=list)
    loss_curve: list[float] = field(default_factory=list)
    """Training log-loss per epoch (MLP) or the final one (logistic)."""

    @property
    def learned(self) -> bool:
        return self.kind != "soft_vote"

    @property
    def inputs(self) -> list[str]:
        return [member_column(m) for m in self.members]

    def logit(self, frame: pl.DataFrame) -> np.ndarray:
        """Log-odds of P(label > 0) per row of `frame` (needs the `w_<member>` columns), float64."""
        x = (frame.select(self.inputs).to_numpy().astype(np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        for i, layer in enumerate(self.layers):
            x = x @ np.asarray(layer["weight"], dtype=np.float64).T + np.asarray(layer["bias"], dtype=np.float64)
            if i < len(self.layers) - 1:
                x = np.tanh(x)
        return np.asarray(x[:, 0])

    def member_weights(self, frame: pl.DataFrame) -> dict[str, float]:
        """How much each member moves the learned log-odds: the mean gradient of the logit with respect to the
        member's standardised weight over `frame`'s rows (for the logistic regression, exactly its coefficients).
        The soft vote's are its votes."""
        if not self.learned:
            return dict(self.votes)
        x = (frame.select(self.inputs).to_numpy().astype(np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        grad = np.ones((x.shape[0], 1))
        activations = [x]
        for layer in self.layers[:-1]:
            w, b = np.asarray(layer["weight"], dtype=np.float64), np.asarray(layer["bias"], dtype=np.float64)
            activations.append(np.tanh(activations[-1] @ w.T + b))
        for i in range(len(self.layers) - 1, -1, -1):
            grad = grad @ np.asarray(self.layers[i]["weight"], dtype=np.float64)
            if i > 0:
                grad = grad * (1.0 - activations[i] ** 2)
        means = grad.mean(axis=0) if grad.shape[0] else np.zeros(len(self.members))
        return {m: float(v) for m, v in zip(self.members, means, strict=True)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetaModel:
        return cls(**data)


def equal_votes(members: Sequence[str]) -> dict[str, float]:
    return {m: 1.0 / len(members) for m in members}


def fit_meta(
    frame: pl.DataFrame,
    members: Sequence[str],
    *,
    label_horizon: int,
    learner: Learner,
    votes: Mapping[str, float],
    min_history_folds: int,
    seed: int,
    hidden: int = 8,
    epochs: int = 200,
    lr: float = 0.01,
    weight_decay: float = 1e-3,
    l2: float = 1.0,
) -> MetaModel:
    """Fit on `frame`'s `train` rows only (`stack_frame`); soft vote with `votes` while they come from fewer than
    `min_history_folds` earlier folds or hold a single label class. Same inputs and seed → same parameters."""
    train = frame.filter(pl.col("split") == "train")
    history = sorted(str(f) for f in train["fold"].unique().to_list())
    _, dir_col = label_columns(label_horizon)
    y = train[dir_col].cast(pl.Float64).to_numpy()
    base = MetaModel(kind="soft_vote", members=list(members), votes=dict(votes), history_folds=history)
    if len(history) < min_history_folds or np.unique(y).size < 2:
        return base
    x = train.select(base.inputs).to_numpy().astype(np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[~(scale > 1e-12)] = 1.0  # a member constant over the history carries no information: leave it at 0
    z = (x - mean) / scale
    base.train_rows, base.mean, base.scale = len(y), mean.tolist(), scale.tolist()
    if learner == "logistic":
        base.kind, base.layers, base.loss_curve = "logistic", *_fit_logistic(z, y, l2)
    else:
        base.kind, base.layers, base.loss_curve = "mlp", *_fit_mlp(z, y, hidden, epochs, lr, weight_decay, seed)
    return base


def _fit_logistic(z: np.ndarray, y: np.ndarray, l2: float) -> tuple[list[dict[str, list[Any]]], list[float]]:
    from sklearn.linear_model import LogisticRegression

    # lbfgs is deterministic; C = 1 / l2 is the inverse strength of the L2 penalty
    model = LogisticRegression(C=1.0 / l2, solver="lbfgs", max_iter=1000).fit(z, y)
    layers = [{"weight": model.coef_.tolist(), "bias": model.intercept_.tolist()}]
    p = np.clip(model.predict_proba(z)[:, 1], 1e-12, 1 - 1e-12)
    return layers, [float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))]


def _fit_mlp(
    z: np.ndarray, y: np.ndarray, hidden: int, epochs: int, lr: float, weight_decay: float, seed: int
) -> tuple[list[dict[str, list[Any]]], list[float]]:
    import torch

    from crypto_assets.models.device import deterministic

    with deterministic():
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(z.shape[1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
        inputs = torch.tensor(z, dtype=torch.float32)
        target = torch.tensor(y, dtype=torch.float32).unsqueeze(1)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        curve = []
        for _ in range(epochs):  # full batch: a few thousand rows
            optimizer.zero_grad()
            loss = loss_fn(net(inputs), target)
            loss.backward()
            optimizer.step()
            curve.append(float(loss.detach()))
        linear = [m for m in net if isinstance(m, torch.nn.Linear)]
        layers = [{"weight": m.weight.detach().tolist(), "bias": m.bias.detach().tolist()} for m in linear]
    return layers, curve


def predict_meta(
    model: MetaModel,
    frame: pl.DataFrame,
    *,
    target_vol_annual: float,
    periods_per_year: int,
    max_leverage: float,
    allow_short: bool,
    rebalance_every: int,
) -> pl.DataFrame:
    """Decisions over `frame`'s `test` rows: `symbol, ts, p_up, vol, weight` (null weight = no order), sorted.

    Learned: p_up from the model, sized by `models.forecast_to_weights` (the forecasters' rule). Soft vote: the
    members' orders (`o_<m>` = 1 rows) soft-voted (`ensemble.soft_vote`); p_up is null there."""
    from crypto_assets.models.sizing import forecast_to_weights

    test = frame.filter(pl.col("split") == "test").sort("symbol", "ts")
    keys = ["symbol", "ts"]
    if not model.learned:
        orders = {
            m: test.filter(pl.col(order_column(m)) == 1).select(*keys, pl.col(member_column(m)).alias("weight"))
            for m in model.members
        }
        voted = soft_vote(orders, model.votes)
        decisions = test.select(*keys, pl.lit(None, dtype=pl.Float64).alias("p_up"), "vol")
        return decisions.join(voted, on=keys, how="left").sort(keys)
    p_up = 1.0 / (1.0 + np.exp(-model.logit(test)))
    preds = test.select(*keys, pl.Series("p_up", p_up, dtype=pl.Float64), "vol")
    weights = forecast_to_weights(
        preds,
        target_vol_annual=target_vol_annual,
        periods_per_year=periods_per_year,
        max_leverage=max_leverage,
        allow_short=allow_short,
        rebalance_every=rebalance_every,
    )
    return preds.join(weights, on=keys, how="left").sort(keys)
