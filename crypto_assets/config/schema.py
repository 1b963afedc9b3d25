"""Typed, strict experiment configuration (DESIGN.md §3.1).

Every model forbids unknown keys; `load_config` turns pydantic's errors into messages that name the
key path, the rule broken and the allowed keys or values.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SerializeAsAny,
    ValidationInfo,
    field_validator,
    model_validator,
)

from crypto_assets.timeframes import TIMEFRAMES, duration_bars, parse_duration

Timeframe = Literal["1m", "5m", "15m", "30m", "1h", "4h", "1d"]
assert set(Timeframe.__args__) == set(TIMEFRAMES)  # type: ignore[attr-defined]

# Sources the project implements itself; any other value must be a ccxt exchange id.
BUILTIN_SOURCES = ("synthetic", "csv", "ccxt")
# Aliases kept for the user's original example: `binance_historical` means ccxt `binance`.
SOURCE_ALIASES = {"binance_historical": "binance"}
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,15}/[A-Z0-9]{2,10}$")


class StrictModel(BaseModel):
    """Unknown keys are errors, and types are strict: YAML's `true` is not the integer 1, `"7"` is not 7,
    `6.0` is not 6 and `"BTC/USDT"` is not a list (pydantic's lax mode would silently coerce all four).
    An integer is still a valid number (`taker_fee: 0`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)


ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _calendar_date(value: object) -> object:
    """YAML makes an unquoted `2024-01-31` a date; a quoted `"2024-01-31"` (what `yaml.safe_dump` writes,
    and what anyone quoting every value writes) means the same day, so it is accepted too, in exactly
    this form. A date-time is refused: its time would be dropped silently."""
    if isinstance(value, dt.datetime):
        raise ValueError(f"a date without a time is required (YYYY-MM-DD), e.g. {value.date().isoformat()}")
    if isinstance(value, str):
        if not ISO_DATE.match(value):
            raise ValueError("a date is written YYYY-MM-DD, e.g. 2024-01-31")
        try:
            return dt.date.fromisoformat(value)
        except ValueError as exc:  # the loader keeps impossible dates such as 2024-02-30 as text
            raise ValueError(f"{value} is not a calendar date ({exc})") from None
    return value


CalendarDate = Annotated[dt.date, BeforeValidator(_calendar_date)]
"""A day, written YYYY-MM-DD in YAML (quoted or not)."""


def _duration(value: object) -> object:
    """A span written with its unit (`24h`, `7d`); a bare number is refused: it would silently mean bars of
    whatever timeframe the experiment has. The loader puts the key path in front of the message."""
    try:
        parse_duration(value, "@")  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix("@ ")) from None
    return value


Duration = Annotated[str, BeforeValidator(_duration)]
"""A duration string: a whole number and a unit m, h, d or w (`90m`, `24h`, `30d`, `2w`), converted to bars of
the experiment's timeframe (it must be a whole number of them), so 5m, 15m and 1h runs mean the same span."""


class ExperimentSection(StrictModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    """Experiment name; its storage lives under `<storage_dir>/<name>/`."""
    gpu_id: Annotated[int, Field(ge=0)] | None = 0
    """CUDA device index (`cuda:N`); falls back to CPU with a warning when absent. `null` forces CPU."""
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 42
    """Root seed: every random stream derives from (seed, asset, partition)."""
    storage_dir: str = "storage"
    """Root of everything runs write; relative paths resolve against the project root."""
    capital: Annotated[float, Field(gt=0, le=1e12)] = 100_000.0
    """Starting value in quote currency (USDT) of every backtest, stitched run and RL environment. Impact and
    the participation cap depend on absolute size: a 1-unit portfolio would make them vanish (DESIGN.md §3.3)."""


class DefectsSection(StrictModel):
    """Seeded data defects the synthetic source can inject, so validation has something real to catch (all
    off by default). Rates are Poisson rates per year of bars; each defect is drawn from its own random
    stream, so turning one on never moves the prices, volumes or other defects."""

    maintenance_gaps_per_year: Annotated[float, Field(ge=0, le=52)] = 0.0
    """Exchange maintenance: a few consecutive bars (mean 1.5 h, at most 12 h) missing for every symbol at
    once, as in Binance's archives."""
    wick_artifacts_per_year: Annotated[float, Field(ge=0, le=365)] = 0.0
    """Per symbol: a lone spike in one bar's high or low, 30-60 × the bar's volatility (a log move of at
    most 1) that no other symbol shares."""
    illiquid_days_per_year: Annotated[float, Field(ge=0, le=365)] = 0.0
    """Per symbol: a UTC day whose volume collapses to 0.01-0.1% of normal."""

    @property
    def any(self) -> bool:
        return bool(self.maintenance_gaps_per_year or self.wick_artifacts_per_year or self.illiquid_days_per_year)


class SyntheticSection(StrictModel):
    """Parameters of the synthetic market model (see `crypto_assets.sources.synthetic`)."""

    annual_vol: Annotated[float, Field(gt=0, le=5)] = 0.65
    """Long-run annualised volatility of the market factor (BTC-like ≈ 0.6-0.8)."""
    idio_vol_ratio: Annotated[float, Field(ge=0, le=3)] = 0.6
    """Idiosyncratic volatility of each symbol as a multiple of the factor's."""
    market_beta: Annotated[float, Field(ge=0, le=3)] = 1.0
    """Mean loading of each symbol on the market factor (symbols get 1, 1.2, 1.4 ... × this)."""
    t_dof: Annotated[float, Field(gt=2, le=100)] = 4.0
    """Student-t degrees of freedom of the shocks (fat tails; lower = fatter)."""
    garch_alpha: Annotated[float, Field(ge=0, lt=1)] = 0.08
    garch_beta: Annotated[float, Field(ge=0, lt=1)] = 0.90
    """GARCH(1,1) volatility clustering; alpha + beta < 1 keeps variance stationary."""
    regime_mean_days: Annotated[float, Field(gt=0, le=3650)] = 45.0
    """Mean duration of a bull / bear / chop regime (Markov switching)."""
    bull_drift: Annotated[float, Field(ge=-5, le=5)] = 1.5
    bear_drift: Annotated[float, Field(ge=-5, le=5)] = -0.6
    chop_drift: Annotated[float, Field(ge=-5, le=5)] = 0.0
    """Annualised log drift of the market factor in each regime (with the crash defaults the
    long-run log drift is about +0.08 a year: crypto-like, not a free lunch)."""
    crash_rate_per_year: Annotated[float, Field(ge=0, le=50)] = 1.0
    """Poisson rate of crash episodes."""
    crash_depth: Annotated[float, Field(gt=0, lt=0.95)] = 0.2
    """Mean peak-to-trough loss of a crash episode (fraction)."""
    crash_days: Annotated[float, Field(gt=0, le=60)] = 3.0
    """Mean duration of a crash episode."""
    start_price: Annotated[float, Field(gt=0)] = 20000.0
    """Price of the first symbol at the first bar; the others start at a fixed fraction of it."""
    base_volume: Annotated[float, Field(gt=0)] = 1000.0
    """Median base-asset volume per hour of the first symbol in calm markets."""
    defects: DefectsSection = DefectsSection()
    """Injected data defects (maintenance gaps, wick artifacts, illiquid days); none by default."""

    @model_validator(mode="after")
    def _stationary(self) -> SyntheticSection:
        if self.garch_alpha + self.garch_beta >= 1:
            raise ValueError(
                "garch_alpha + garch_beta must be < 1 (stationary variance), "
                f"got {self.garch_alpha} + {self.garch_beta}"
            )
        return self


class CcxtSection(StrictModel):
    rate_limit_ms: Annotated[int, Field(ge=0)] | None = None
    """Minimum delay between requests; `null` uses the exchange's own rate limit."""
    page_limit: Annotated[int, Field(ge=1, le=5000)] = 1000
    """Bars asked for per request (Binance serves at most 1000)."""
    max_retries: Annotated[int, Field(ge=0, le=20)] = 5
    """Retries on 429, 5xx and time-outs before the partition fails."""
    backoff_s: Annotated[float, Field(ge=0, le=600)] = 1.0
    """First back-off delay; doubles on each retry, or waits the server's Retry-After if longer."""
    timeout_ms: Annotated[int, Field(ge=100, le=600_000)] = 30_000
    """Per-request time-out."""


class DataSection(StrictModel):
    tickers: Annotated[list[str], Field(min_length=1, max_length=500)]
    """Symbols as `BASE/QUOTE`, e.g. `BTC/USDT`."""
    timeframe: Timeframe = "1h"
    source: str = "synthetic"
    """`synthetic`, `csv`, `ccxt`, or a ccxt exchange id (`binance_historical` = ccxt `binance`)."""
    exchange: str | None = None
    """ccxt exchange id for `source: ccxt` (default `binance`)."""
    api_url: str | None = None
    """Replaces the exchange's REST base URL (regional endpoints, proxies, a local test exchange)."""
    start: CalendarDate = dt.date(2020, 1, 1)
    """First day of data (UTC); partitions start at its month."""
    end: CalendarDate | None = None
    """Last day of data (UTC, inclusive); `null` = up to now, the current month being a partition."""
    csv_dir: str | None = None
    """Archive folder for `source: csv`; relative paths resolve against the project root."""
    synthetic: SyntheticSection = SyntheticSection()
    ccxt: CcxtSection = CcxtSection()
    catch_up: str = "7d"
    """How far back each scheduled ingestion tick looks for missing bars (holes and tails, across
    months), as a duration ('36h', '7d'); older holes need an explicit re-materialization."""

    @field_validator("catch_up")
    @classmethod
    def _catch_up(cls, value: str) -> str:
        from crypto_assets.timeframes import parse_duration

        parse_duration(value, "data.catch_up")  # raises naming the key and the accepted units
        return value

    @field_validator("tickers")
    @classmethod
    def _symbols(cls, tickers: list[str]) -> list[str]:
        for i, symbol in enumerate(tickers):
            if not SYMBOL_PATTERN.match(symbol):
                raise ValueError(f"tickers[{i}] = {symbol!r} is not an upper-case BASE/QUOTE symbol like 'BTC/USDT'")
        if len(set(tickers)) != len(tickers):
            raise ValueError(f"tickers contain duplicates: {tickers}")
        return tickers

    @field_validator("source")
    @classmethod
    def _source(cls, source: str) -> str:
        if source in BUILTIN_SOURCES or source in SOURCE_ALIASES:
            return source
        import ccxt  # deferred: ccxt takes ~0.5 s to import

        if source in ccxt.exchanges:
            return source
        raise ValueError(
            f"unknown source {source!r}; allowed: {', '.join(BUILTIN_SOURCES + tuple(SOURCE_ALIASES))} "
            "or a ccxt exchange id (e.g. binance, kraken, okx)"
        )

    @field_validator("exchange")
    @classmethod
    def _exchange(cls, exchange: str | None) -> str | None:
        if exchange is None:
            return None
        import ccxt

        if exchange not in ccxt.exchanges:
            raise ValueError(f"unknown ccxt exchange id {exchange!r} (see ccxt.exchanges)")
        return exchange

    @model_validator(mode="after")
    def _consistent(self) -> DataSection:
        if self.end is not None and self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        if self.source == "csv" and not self.csv_dir:
            raise ValueError("source 'csv' needs data.csv_dir (the archive folder)")
        if self.exchange is not None and self.source_kind != "ccxt":
            raise ValueError(f"data.exchange is only used with a ccxt source, not {self.source!r}")
        if self.api_url is not None and self.source_kind != "ccxt":
            raise ValueError(f"data.api_url is only used with a ccxt source, not {self.source!r}")
        return self

    @property
    def source_kind(self) -> Literal["synthetic", "csv", "ccxt"]:
        return self.source if self.source in ("synthetic", "csv") else "ccxt"  # type: ignore[return-value]

    @property
    def exchange_id(self) -> str:
        """The ccxt exchange id this config fetches from."""
        if self.source == "ccxt":
            return self.exchange or "binance"
        return SOURCE_ALIASES.get(self.source, self.source)


class ValidationSection(StrictModel):
    gap_policy: Literal["fail", "flag", "ffill"] = "ffill"
    """Missing bars: `fail` the partition, `flag` them (listed, not filled), or `ffill` them with the
    previous close as OHLC, zero volume and `is_filled = true`."""
    wick_vol_window: Annotated[int, Field(ge=10, le=10_000)] = 168
    """Bars of trailing close-to-close returns used as the volatility yardstick for wicks."""
    wick_k: Annotated[float, Field(gt=0)] = 12.0
    """A wick longer than `wick_k` × trailing σ × price is suspicious ..."""
    wick_cross_k: Annotated[float, Field(gt=0)] = 4.0
    """... and an outlier only if it is also `wick_cross_k` × longer (in σ units) than the median
    wick of the other symbols at the same bar (a market-wide move is real, a lone spike an artifact)."""
    min_daily_dollar_volume: Annotated[float, Field(ge=0)] = 1_000_000.0
    """A symbol-day trading less (close × volume summed, quote currency) is flagged illiquid."""
    max_amihud: Annotated[float, Field(gt=0)] = 1e-7
    """A symbol-day whose Amihud illiquidity (mean |return| / dollar volume per bar) exceeds this is
    flagged illiquid."""


class FeaturesSection(StrictModel):
    lookback_days: Annotated[int, Field(ge=0, le=366)] = 30
    """Days of earlier bars read to warm up each month's indicators (exponential smoothers, windows);
    only the month's own rows are emitted."""


FOLD_STEP_MONTHS = (1, 2, 3, 4, 6, 12)
"""Allowed `walk_forward.step_months`: the divisors of 12, so the fold months are the same every year and the
fold partitions can be a cron of those months (crypto_assets.orchestration.partitions.fold_partitions)."""


def _multiples_near(value: int, step: int) -> str:
    """`e.g. 6 or 8` for (7, 2): the nearest valid values, for the error message."""
    below, above = value // step * step, (value // step + 1) * step
    return f"e.g. {below} or {above}" if below > 0 else f"e.g. {above}"


def fold_grid_problems(train_months: int, test_months: int, step_months: int) -> list[str]:
    """Why these walk-forward windows cannot be fold partitions (empty list: they can).

    Only real folds are partition keys (DESIGN.md §1): a fold partition is `step_months` long, and a
    fold's train and test windows are read through offsets counted in whole partitions, so both must
    be whole steps. The config validator and the partitions layer share this one rule."""
    if step_months not in FOLD_STEP_MONTHS:
        allowed = ", ".join(map(str, FOLD_STEP_MONTHS))
        why = "fold months must repeat every year, because the fold partitions are a yearly calendar of those months"
        return [f"step_months ({step_months}) must be one of {allowed}: {why}"]
    return [
        f"{name} ({value}) must be a multiple of step_months ({step_months}), {_multiples_near(value, step_months)}: "
        "a fold partition is step_months long and its train and test windows are whole steps"
        for name, value in (("train_months", train_months), ("test_months", test_months))
        if value % step_months
    ]


class WalkForwardSection(StrictModel):
    train_months: Annotated[int, Field(ge=1, le=240)] = 24
    """Months before each test window that a fold trains on; a multiple of `step_months`."""
    test_months: Annotated[int, Field(ge=1, le=60)] = 3
    """Months in each fold's test window; a multiple of `step_months` (so never fewer: no month goes untraded)."""
    step_months: Annotated[int, Field(ge=1, le=60)] = 1
    """Folds start every `step_months` (1, 2, 3, 4, 6 or 12); walk-forward equity trades each fold's first
    `step_months`. Only these folds are fold partitions."""
    label_horizon: Annotated[int, Field(ge=1, le=10_000)] = 24
    """Bars ahead of the forward-return / direction labels."""
    purge_bars: Annotated[int, Field(ge=0, le=100_000)] | None = None
    """Bars dropped from the end of each train window (labels look ahead); null = label_horizon."""

    @field_validator("step_months")
    @classmethod
    def _step_months(cls, step: int) -> int:
        # Checked on the field itself so the message points at `walk_forward.step_months` and its line.
        problems = fold_grid_problems(step, step, step)
        if problems:
            raise ValueError(problems[0])
        return step

    @model_validator(mode="after")
    def _step(self) -> WalkForwardSection:
        problems = fold_grid_problems(self.train_months, self.test_months, self.step_months)
        if problems:
            raise ValueError("; ".join(problems))
        if self.purge_bars is not None and self.purge_bars < self.label_horizon:
            raise ValueError(
                f"purge_bars ({self.purge_bars}) must be >= label_horizon ({self.label_horizon}): "
                "the last train labels would look into the test window"
            )
        return self

    @property
    def purge(self) -> int:
        return self.label_horizon if self.purge_bars is None else self.purge_bars


class CostsSection(StrictModel):
    """The backtest cost model (DESIGN.md §3.3); rates are fractions (0.001 = 10 bp)."""

    fee_side: Literal["taker", "maker"] = "taker"
    taker_fee: Annotated[float, Field(ge=0, le=0.1)] = 0.001
    maker_fee: Annotated[float, Field(ge=0, le=0.1)] = 0.001
    half_spread: Annotated[float, Field(ge=0, le=0.1)] = 0.0001
    vol_k: Annotated[float, Field(ge=0, le=10)] = 0.02
    """Slippage per unit of σ (std, ddof 1, of the close-to-close returns in `vol_window` up to the decision bar)."""
    vol_window: Duration = "24h"
    """Span of the returns in σ, at least 2 bars (`24h`: 24 bars at 1h, 96 at 15m)."""
    adv_window: Duration = "7d"
    """Span of the trailing mean dollar volume ADV = mean(volume × close) per bar, up to and including the decision
    bar, that impact divides by. `7d`: a whole week (weekend lull and intraday cycle in their right proportions),
    recent enough to follow crypto's volume regimes, and only a week of history needed before a fold."""
    impact_k: Annotated[float, Field(ge=0, le=100)] = 0.5
    """Square-root impact on the filled notional: impact_k × σ × √(|filled| / ADV)."""
    max_participation: Annotated[float, Field(gt=0, le=1)] | None = 0.05
    """Fills capped at this fraction of the execution bar's dollar volume (volume × open: the fill's capacity);
    the rest is cancelled and reported; null = no cap."""
    allow_short: bool = False
    max_leverage: Annotated[float, Field(gt=0, le=10)] = 1.0
    funding_rate_8h: Annotated[float, Field(ge=0, le=0.1)] = 0.0
    """Funding / borrow per 8 h on short notional and on long notional beyond equity (borrowed)."""


BaselineName = Literal["buy_and_hold_btc", "equal_weight", "trend_following", "vol_targeted_trend"]


class BaselineSettings(StrictModel):
    """Lookbacks and schedule of the rule-based baselines (crypto_assets.baselines.rules), as durations."""

    rebalance_every: Duration = "1d"
    """equal_weight, trend_following, vol_targeted_trend: full target vector every this long (trend ones also
    trade in between when a signal changes)."""
    trend_fast: Duration = "10d"
    """Fast SMA of the trend baselines."""
    trend_slow: Duration = "50d"
    """Slow SMA of the trend baselines (longer than trend_fast)."""
    vol_window: Duration = "30d"
    """Trailing window of the returns behind the inverse-vol sleeves and the volatility target."""
    target_vol: Annotated[float, Field(gt=0, le=10)] = 0.4
    """vol_targeted_trend: annualised volatility target of the portfolio."""

    @model_validator(mode="after")
    def _fast_before_slow(self) -> BaselineSettings:
        if parse_duration(self.trend_fast) >= parse_duration(self.trend_slow):
            raise ValueError(f"trend_fast ({self.trend_fast}) must be shorter than trend_slow ({self.trend_slow})")
        return self


class ConstraintsSection(StrictModel):
    max_drawdown: Annotated[float, Field(gt=0, le=1)] = 0.20
    """A strategy passes if its max drawdown (fraction) is at most this."""
    min_sharpe: Annotated[float, Field(ge=-10, le=100)] = 1.0
    """... and its annualised Sharpe is at least this."""


class FamilyParams(StrictModel):
    """Base of every model family's parameters: one entry of `models.families`, validated by the class the
    family registered for its `type` (crypto_assets.families). Subclasses add their hyper-parameters."""

    type: str
    """The family's registered config type (`LSTM_Attn`, `CNN_LSTM`, `PPO_Agent`, ...)."""

    @property
    def slug(self) -> str:
        """The name of the family everywhere after the config: assets `model_<slug>`, KPI strategy `<slug>`."""
        return self.type.lower()


def _family_params(value: object) -> FamilyParams:
    """Dispatch one `models.families` entry to its family's parameter class (a discriminated union on `type`
    whose members are whatever is registered when the config is validated, so a family registered later, e.g.
    in a test module, is accepted without touching this file)."""
    from crypto_assets.families.registry import validate_params  # lazy: the registry imports the families

    return validate_params(value)


FamilyEntry = Annotated[SerializeAsAny[FamilyParams], PlainValidator(_family_params)]
"""A family's parameters; dumps with every field of the concrete class (code versions hash them)."""


def _registered_type(value: str) -> str:
    from crypto_assets.families.registry import registered_types

    types = registered_types()
    if value not in types:
        raise ValueError(f"unknown model family {value!r}; registered: {', '.join(types)}")
    return value


class EnsembleMember(StrictModel):
    type: Annotated[str, AfterValidator(_registered_type)]
    """A registered family type (`LSTM_Attn`, `CNN_LSTM`, `PPO_Agent`, ...)."""
    weight: Annotated[float, Field(gt=0, le=1)]


class SizingSection(StrictModel):
    """From a forecast (P(up) = p, volatility σ̂) to a target weight: edge = 2p − 1, weight = edge ×
    target σ / σ̂, long-only unless costs.allow_short, gross capped by costs.max_leverage."""

    target_vol_annual: Annotated[float, Field(gt=0, le=10)] = 0.4
    rebalance_every: Annotated[int, Field(ge=1, le=10_000)] | None = None
    """Bars between orders; null = the label horizon (the forecasts' own horizon)."""


class ModelsSection(StrictModel):
    families: list[FamilyEntry] = []
    """The model families to train and their parameters, e.g. `[{type: LSTM_Attn, hidden: 32}, {type: PPO_Agent,
    total_timesteps: 20480}]`; each entry is validated by the class its family registered for `type`."""
    ensemble: Annotated[list[EnsembleMember], Field(min_length=1)] = [
        # built unvalidated here (the registry imports this module); validate_default checks them on use
        EnsembleMember.model_construct(type="LSTM_Attn", weight=0.4),
        EnsembleMember.model_construct(type="PPO_Agent", weight=0.6),
    ]
    """Soft-voting members (weights sum to 1); each member is also trained and evaluated on its own, with its
    `families` entry or, when it has none, its family's defaults."""
    sizing: SizingSection = SizingSection()
    """Shared forecast-to-weight sizing of the forecasting families."""

    @field_validator("families")
    @classmethod
    def _distinct(cls, families: list[FamilyParams]) -> list[FamilyParams]:
        types = [f.type for f in families]
        if len(set(types)) != len(types):
            raise ValueError(f"families lists a type twice: {types}")
        return families

    @field_validator("ensemble")
    @classmethod
    def _weights(cls, members: list[EnsembleMember]) -> list[EnsembleMember]:
        total = sum(m.weight for m in members)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"ensemble weights must sum to 1, got {total:g}")
        types = [m.type for m in members]
        if len(set(types)) != len(types):
            raise ValueError(f"ensemble lists a model type twice: {types}")
        return members

    @property
    def trained(self) -> list[FamilyParams]:
        """Every family the experiment trains: `families` as listed, then ensemble members not listed there,
        with their family's defaults. Nothing else is trained."""
        from crypto_assets.families.registry import default_params

        listed = {f.type for f in self.families}
        return [*self.families, *(default_params(m.type) for m in self.ensemble if m.type not in listed)]

    def params_of(self, family_type: str) -> FamilyParams:
        """The parameters `family_type` trains with (KeyError when the experiment does not train it)."""
        for params in self.trained:
            if params.type == family_type:
                return params
        raise KeyError(f"the experiment does not train {family_type!r}")


class CrashBootstrapSection(StrictModel):
    """Scenario (a) of `stress` (DESIGN.md §6.3): stationary block bootstrap of historical crash windows
    (crypto_assets.stress.bootstrap)."""

    enabled: bool = True


class PanicSection(StrictModel):
    """Scenario (b) of `stress` (DESIGN.md §6.3): Franke-Westerhoff herding market with a stop-loss cascade
    (crypto_assets.stress.abm)."""

    enabled: bool = True


class StressSection(StrictModel):
    """Synthetic crash stress tests: every trained strategy and baseline replayed on generated paths
    (crypto_assets.stress, DESIGN.md §6.3)."""

    crash_bootstrap: CrashBootstrapSection = CrashBootstrapSection()
    panic: PanicSection = PanicSection()


class ExperimentConfig(StrictModel):
    """One experiment: the root of the YAML file."""

    experiment: ExperimentSection
    data: DataSection
    validation: ValidationSection = ValidationSection()
    features: FeaturesSection = FeaturesSection()
    walk_forward: WalkForwardSection = WalkForwardSection()
    costs: CostsSection = CostsSection()
    baselines: list[BaselineName] = ["buy_and_hold_btc", "equal_weight", "trend_following", "vol_targeted_trend"]
    """Rule-based strategies evaluated next to the models."""
    baseline_settings: BaselineSettings = BaselineSettings()
    """Their lookbacks (durations) and volatility target."""
    constraints: ConstraintsSection = ConstraintsSection()
    models: ModelsSection = Field(default_factory=ModelsSection)  # a factory: its defaults consult the registry
    stress: StressSection = StressSection()
    """Crash stress tests of every strategy (scenarios, seeds, paths, the drawdown check's tolerance)."""

    @field_validator("costs", "baseline_settings")
    @classmethod
    def _whole_bars(cls, section: CostsSection | BaselineSettings, info: ValidationInfo) -> StrictModel:
        """Every duration of the section is a whole number of bars of data.timeframe (σ needs 2 or more)."""
        data = info.data.get("data")
        if data is None:  # data itself failed: that error is reported already
            return section
        for key in ("vol_window", "adv_window", "rebalance_every", "trend_fast", "trend_slow"):
            if key in type(section).model_fields:
                bars = duration_bars(getattr(section, key), data.timeframe, f"{info.field_name}.{key}")
                if info.field_name == "costs" and key == "vol_window" and bars < 2:
                    raise ValueError(
                        f"costs.vol_window = {section.vol_window!r} is {bars} bar of {data.timeframe}: σ needs at "
                        "least 2 returns"
                    )
        return section
