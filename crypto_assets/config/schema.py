"""Typed, strict experiment configuration (DESIGN.md §3.1).

Every model forbids unknown keys; `load_config` turns pydantic's errors into messages that name the
key path, the rule broken and the allowed keys or values.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import InitErrorDetails, PydanticCustomError

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
    min_dsr: Annotated[float, Field(ge=0, le=1)] = 0.95
    """... and its deflated Sharpe (over the experiment's trials registry; PSR when it holds one trial) is at
    least this probability (DESIGN §3.4)."""


OMIT_AT_DEFAULT_KEY = "omit_at_default"
OMIT_AT_DEFAULT: JsonDict = {OMIT_AT_DEFAULT_KEY: True}
"""`Field(json_schema_extra=OMIT_AT_DEFAULT)`: a family parameter added later, left out of dumps at its default."""


class FamilyParams(StrictModel):
    """Base of every model family's parameters: one entry of `models.families`, validated by the class the
    family registered for its `type` (crypto_assets.families). Subclasses add their hyper-parameters."""

    type: str
    """The family's registered config type (`LSTM_Attn`, `CNN_LSTM`, `PPO_Agent`, ...)."""
    stacked: ClassVar[bool] = False
    """True for a family that learns from other families' out-of-sample predictions (`Meta_Learner`) instead of
    fold data: it has its own fold assets and is not in `ModelsSection.trained`."""
    retrain: Annotated[Literal["full", "fine_tune"], Field(json_schema_extra=OMIT_AT_DEFAULT)] = "full"
    """`full`: every fold trains from scratch. `fine_tune`: fold k starts from fold k−1's trained model and trains
    `fine_tune_fraction` of the full budget (the first fold trains in full); the folds then run in order. Only
    families that can warm-start accept it."""
    fine_tune_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Share of the full training budget a fine-tuned fold trains (epochs of a forecaster, timesteps of an agent)."""
    n_seeds: Annotated[int, Field(ge=1, le=64, json_schema_extra=OMIT_AT_DEFAULT)] = 1
    """Seeds trained per fold. Seed index 0 is the family's strategy (its KPIs); the others are trained, stored
    and backtested for the `seed_dispersion` report only. Not part of `strategy_dump` (it changes no trained
    strategy, so no configuration id of the trials registry); part of the dump, so the config survives JSON."""

    @property
    def slug(self) -> str:
        """The name of the family everywhere after the config: assets `model_<slug>`, KPI strategy `<slug>`."""
        return self.type.lower()

    def strategy_dump(self) -> dict[str, Any]:
        """The parameters that define the family's strategy (its trials-registry definition): the dump without
        `n_seeds`, which only adds seeds beside the strategy."""
        data: dict[str, Any] = self.model_dump(mode="json")
        data.pop("n_seeds", None)
        return data

    @property
    def observed_families(self) -> dict[str, list[str]]:
        """Other families whose fold models this one reads as inputs, by the key that lists them (a hybrid agent's
        `state_forecasters`); the experiment must train them."""
        return {}

    @property
    def member_types(self) -> list[str]:
        """The families a stacked family learns from (none for a family trained on fold data)."""
        return []

    @model_validator(mode="after")
    def _can_fine_tune(self) -> FamilyParams:
        if self.retrain == "fine_tune":
            from crypto_assets.families.registry import get_family, registered_types  # lazy: imports the families

            if not get_family(self.type).can_warm_start:
                able = [t for t in registered_types() if get_family(t).can_warm_start]
                raise ValueError(
                    f"retrain: fine_tune: {self.type} cannot warm-start from the previous fold's model "
                    f"(families that can: {', '.join(able)}); use retrain: full"
                )
        return self

    @model_serializer(mode="wrap")
    def _dump_without_default_training_plan(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Fields added after configurations were first recorded (marked OMIT_AT_DEFAULT) are left out of dumps at
        # their defaults, and `fine_tune_fraction` whenever nothing fine-tunes, so those configurations keep their
        # configuration ids (trials registry) and code versions.
        data = handler(self)
        if isinstance(data, dict):
            for name, info in type(self).model_fields.items():
                extra = info.json_schema_extra
                omit = isinstance(extra, dict) and bool(extra.get(OMIT_AT_DEFAULT_KEY))
                if omit and getattr(self, name) == info.get_default(call_default_factory=True):
                    data.pop(name, None)
            if self.retrain == "full":
                data.pop("fine_tune_fraction", None)
        return data


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
        on_folds = [f for f in self.families if not f.stacked]
        return [*on_folds, *(default_params(m.type) for m in self.ensemble if m.type not in listed)]

    @property
    def stacked(self) -> list[FamilyParams]:
        """The stacked families `families` lists (trained on the out-of-sample predictions of `trained` ones)."""
        return [f for f in self.families if f.stacked]

    @model_validator(mode="after")
    def _stacked_members(self) -> ModelsSection:
        trained = [p.type for p in self.trained]
        for i, family in enumerate(self.families):
            missing = [m for m in family.member_types if m not in trained]
            if missing:
                message = f"{missing} are not trained by this experiment (trained: {', '.join(trained)})"
                # a ValidationError keeps the entry's key path (models.families[i].members) in the loader's message
                error: InitErrorDetails = {
                    "type": PydanticCustomError("untrained_member", message),
                    "loc": ("families", i, "members"),
                    "input": family.member_types,
                }
                raise ValidationError.from_exception_data("ModelsSection", [error])
        return self

    @model_validator(mode="after")
    def _observed_families_trained(self) -> ModelsSection:
        trained = [p.type for p in self.trained]
        for i, family in enumerate(self.families):
            for key, types in family.observed_families.items():
                missing = [t for t in types if t not in trained]
                if missing:
                    message = f"{missing} are not trained by this experiment (trained: {', '.join(trained)})"
                    error: InitErrorDetails = {
                        "type": PydanticCustomError("untrained_observed_family", message),
                        "loc": ("families", i, key),
                        "input": types,
                    }
                    raise ValidationError.from_exception_data("ModelsSection", [error])
        return self

    def params_of(self, family_type: str) -> FamilyParams:
        """The parameters `family_type` trains with (KeyError when the experiment does not train it)."""
        for params in self.trained:
            if params.type == family_type:
                return params
        raise KeyError(f"the experiment does not train {family_type!r}")


class CrashWindow(StrictModel):
    """One historical crash window in whole UTC days: the bars whose open time is in
    [`start` 00:00, `end` + 1 day 00:00)."""

    start: CalendarDate
    end: CalendarDate
    """Last day of the window (inclusive)."""

    @model_validator(mode="after")
    def _ordered(self) -> CrashWindow:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) must not be before start ({self.start})")
        return self

    @property
    def label(self) -> str:
        return f"{self.start}..{self.end}"


class CrashBootstrapSection(StrictModel):
    """Scenario (a) of `stress` (DESIGN.md §6.3): stationary block bootstrap of historical crash windows
    (crypto_assets.stress.bootstrap). Each path is `calm_length` of a calm bullish stretch, then
    `crash_length` resampled from one crash window (paths take the windows in turn)."""

    enabled: bool = True
    windows: Annotated[list[CrashWindow], Field(min_length=1, max_length=20)] = [
        CrashWindow(start=dt.date(2021, 5, 5), end=dt.date(2021, 5, 25)),  # May 2021: China mining ban, -50% BTC
        CrashWindow(start=dt.date(2022, 11, 5), end=dt.date(2022, 11, 22)),  # FTX collapse
    ]
    """Crash windows resampled from the experiment's own bars. Windows entirely outside the bars are skipped; when
    none is inside (the synthetic demo), the `fallback_windows` worst drawdown windows stand in."""
    calm_length: Duration = "7d"
    """The calm stretch before the crash: bull first, so strategies meet a switch from bull to bear."""
    crash_length: Duration = "14d"
    """The resampled crash after the calm stretch (may be longer than a window: the bootstrap draws on)."""
    calm_resample: bool = True
    """True: the calm stretch is itself a stationary bootstrap of the calmest bullish window (every path gets
    another one); False: a plain copy of that window (every path starts the same)."""
    min_block: Duration = "6h"
    """Floor of the mean block length (rounded up to whole bars, at least 1): the data-driven estimate can be
    ~1 bar for nearly uncorrelated returns, which would shred the hours-long liquidation cascades."""
    fallback_windows: Annotated[int, Field(ge=1, le=20)] = 2
    """k: how many of the experiment's worst drawdown windows (equal-weight index, non-overlapping, as long as
    the longest configured window) stand in when no configured window lies inside the bars."""
    min_coverage: Annotated[float, Field(gt=0, le=1)] = 0.9
    """A symbol takes part in a window when it has bars on at least this fraction of the window's grid (else it
    gets no rows on that window's paths); a window inside the bars where no symbol does, or whose bars common to
    its symbols fall below it, is an error (a partly covered window would silently be a different crash)."""


class PanicSection(StrictModel):
    """Scenario (b) of `stress` (DESIGN.md §6.3): Franke-Westerhoff herding market with a stop-loss cascade
    (crypto_assets.stress.abm).

    The behavioural parameters are the published estimates of Franke & Westerhoff (2012, "Structural
    stochastic volatility in asset pricing dynamics: estimation and model contest", JEDC 36(8), 1193-1211),
    model DCA-HPM (discrete choice, herding + predisposition + misalignment), estimated on daily S&P 500
    returns by the method of simulated moments; μ and β are the values they fix, not estimate. The model runs
    in model units (log price, one step = one day) and is mapped onto each symbol's own daily volatility."""

    enabled: bool = True
    horizon: Duration = "90d"
    """Length of every path (from the bar after the experiment's last bar)."""
    # --- Franke & Westerhoff (2012), DCA-HPM estimates (their Table of estimates; μ, β fixed there) ---
    phi: Annotated[float, Field(ge=0, le=10)] = 0.12
    """φ: fundamentalists' demand per unit of log misalignment, d_f = φ(p* − p) + ε_f."""
    chi: Annotated[float, Field(ge=0, le=10)] = 1.50
    """χ: chartists' demand per unit of the last day's log price change, d_c = χ(p_t − p_{t−1}) + ε_c."""
    sigma_f: Annotated[float, Field(ge=0, le=100)] = 0.758
    """σ_f: std of the fundamentalists' demand noise ε_f."""
    sigma_c: Annotated[float, Field(ge=0, le=100)] = 2.087
    """σ_c: std of the chartists' demand noise ε_c (σ_c > σ_f: chartist-dominated spells are the volatile ones,
    FW's 'structural stochastic volatility')."""
    alpha_0: Annotated[float, Field(ge=-100, le=100)] = -0.327
    """α_0: predisposition (a negative value is a bias towards chartism)."""
    alpha_n: Annotated[float, Field(ge=-100, le=100)] = 1.79
    """α_n: herding, weight of the majority index n_f − n_c in the attractiveness of fundamentalism."""
    alpha_p: Annotated[float, Field(ge=-1000, le=1000)] = 18.43
    """α_p: misalignment, weight of (p − p*)²: far from the fundamental value, fundamentalism attracts."""
    beta: Annotated[float, Field(gt=0, le=100)] = 1.0
    """β: intensity of choice of the logit switching n_f = 1 / (1 + exp(−β a)) (fixed to 1 by FW)."""
    mu: Annotated[float, Field(gt=0, le=1)] = 0.01
    """μ: market maker's price reaction to excess demand, p_{t+1} = p_t + μ(n_f d_f + n_c d_c) (fixed by FW)."""
    # --- sub-stepping, calibration to the experiment's bars ---
    substeps_per_bar: Annotated[int, Field(ge=1, le=64)] = 4
    """Model sub-steps inside one bar (their path gives the bar's high and low). A model day has
    bars_per_day × substeps_per_bar sub-steps k; drift terms are scaled by 1/k and the noise by √(1/k), so a
    day of sub-steps has FW's daily conditional mean and variance (an Euler scheme of the daily map)."""
    burn_in_days: Annotated[int, Field(ge=0, le=10_000)] = 250
    """Model days simulated and dropped before each path, so it starts from a draw of the stationary regime mix
    instead of FW's arbitrary initial state."""
    vol_multiplier: Annotated[float, Field(gt=0, le=10)] = 1.0
    """Each symbol's daily log-return volatility = this × its realised daily volatility in the experiment's bars
    (the model's unit is scaled to it, so per-symbol vol ratios are the real ones)."""
    # --- stop-loss / liquidation cascade ---
    stop_book_fraction: Annotated[float, Field(ge=0, le=20)] = 1.0
    """Size of each symbol's book of resting sell stops, as a fraction of its daily volume (0 = no stops).
    Crypto liquidation days reach this order: 19 May 2021 saw ~$8-9bn of futures liquidations."""
    stop_levels: Annotated[int, Field(ge=1, le=200)] = 20
    """The book is split equally over this many levels, evenly spaced in log distance below the trailing high."""
    stop_min_distance: Annotated[float, Field(gt=0, le=100)] = 0.5
    """Log distance below the trailing high of the nearest level, in the symbol's daily volatilities (of the FW
    part; stops set by volatility, like ATR stops): 0.5 is about 1.5 % for BTC, 3 % for SOL."""
    stop_max_distance: Annotated[float, Field(gt=0, le=100)] = 7.5
    """... and of the farthest level (about 25 % below the high for BTC)."""
    stop_trail_days: Annotated[float, Field(gt=0, le=365)] = 7.0
    """Time constant (days) at which the trailing high decays towards the price after a fall; a fired level is
    placed again (the book refills) once the price is stop_min_distance above where it now sits."""
    stop_impact_y: Annotated[float, Field(ge=0, le=10)] = 1.0
    """Y of the square-root law Δlog p = −Y σ √(Q/V) of a fired level of size Q (σ the prevailing daily vol, V the
    daily volume); Y is of order 1 (Tóth et al. 2011, Phys. Rev. X 1, 021006; Bouchaud 2010)."""
    stop_permanent_share: Annotated[float, Field(ge=0, le=1)] = 2 / 3
    """Share of a stop jump that is permanent (it moves the fundamental value too); the rest rebounds. About 2/3 of
    a metaorder's peak impact stays (Moro et al. 2009, Phys. Rev. E 80, 066102; Bouchaud, Farmer & Lillo 2009)."""
    stop_rebound_days: Annotated[float, Field(gt=0, le=365)] = 1.0
    """Half-life (days) of the transient share of stop impact (liquidity refills, dip buyers)."""
    # --- liquidity (per-bar engine cost multipliers) and the high-vol bear label ---
    liquidity_halflife: Duration = "1d"
    """Half-life of the EWMAs of realised variance and fired stop volume behind the multipliers."""
    depth_k: Annotated[float, Field(ge=0, le=100)] = 5.0
    """impact_mult = 1 + depth_k × EWMA(fired stop volume / normal bar volume): stops eat the book's depth."""
    max_multiplier: Annotated[float, Field(ge=1, le=1000)] = 20.0
    """Cap of spread_mult and impact_mult. spread_mult = realised / normal volatility (≥ 1): spreads scale with
    volatility (Wyart, Bouchaud et al. 2008, Quant. Finance 8(1))."""
    bear_drawdown: Annotated[float, Field(gt=0, lt=1)] = 0.10
    """high_vol_bear: the equal-weight market's drawdown from its running high exceeds this ..."""
    bear_vol_window: Duration = "1d"
    """... and its realised volatility over this trailing window is above the path's median."""

    @model_validator(mode="after")
    def _levels_ordered(self) -> PanicSection:
        if self.stop_min_distance >= self.stop_max_distance:
            raise ValueError(
                f"stop_min_distance ({self.stop_min_distance}) must be below stop_max_distance ({self.stop_max_distance})"
            )
        return self


class StressSection(StrictModel):
    """Synthetic crash stress tests: every trained strategy and baseline replayed on generated paths
    (crypto_assets.stress, DESIGN.md §6.3)."""

    enabled: bool = False
    """Whether the experiment has the `stress` job (and `crypto-lab run` its stress stage, after the reports). Off
    unless asked for: every trained strategy of every fold replayed on every path takes minutes on a real
    experiment."""
    crash_bootstrap: CrashBootstrapSection = CrashBootstrapSection()
    panic: PanicSection = PanicSection()
    seeds: Annotated[list[Annotated[int, Field(ge=0, le=2**32 - 1)]], Field(min_length=1, max_length=100)] = [0, 1, 2]
    """Path seeds per scenario; each generator stream is derived from (experiment seed, scenario, this seed), so the
    same seeds give the same paths and a seed added later leaves the others unchanged."""
    paths_per_seed: Annotated[int, Field(ge=1, le=1000)] = 4
    """Paths generated per scenario and seed (default: 3 seeds × 4 = 12 paths per scenario)."""
    tolerance: Annotated[float, Field(ge=0, le=1)] = 0.05
    """The `stress_kpis` check warns when a strategy's P(MaxDD > constraints.max_drawdown) over a scenario's paths
    (and, for trained families, over the replayed folds) exceeds this."""
    folds: Literal["all", "last"] | Annotated[list[CalendarDate], Field(min_length=1)] = "all"
    """Whose trained strategies are replayed: `all` folds' artifacts, the `last` fold's only (the most recent
    models), or a list of fold keys (first day of a test window, e.g. `[2024-05-01]`). Baselines are rules and
    replay once per path."""

    @property
    def enabled_scenarios(self) -> list[str]:
        """The scenario sections switched on, in config order (also the generators' registry names); none when
        stress is off."""
        if not self.enabled:
            return []
        return [name for name in ("crash_bootstrap", "panic") if getattr(self, name).enabled]


class SweepRange(StrictModel):
    """A numeric search range `{low, high, log}`: integers when the parameter is an integer, else floats."""

    low: int | float
    high: int | float
    log: bool = False
    """Sample uniformly in log space (learning rates, weight decay); needs low > 0."""

    @model_validator(mode="after")
    def _ordered(self) -> SweepRange:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got {self.low}")
        return self


class SweepChoices(StrictModel):
    """A categorical search dimension `{choices: [...]}` (numbers, strings, booleans or lists, e.g. `net_arch`)."""

    choices: Annotated[list[int | float | str | bool | list[int]], Field(min_length=1)]


class SweepResources(StrictModel):
    """Ray resources one trial holds; fractional GPUs (e.g. 0.25) let small models share one card."""

    cpu: Annotated[float, Field(gt=0, le=1024)] = 1.0
    gpu: Annotated[float, Field(ge=0, le=64)] = 0.0


class SweepEarlyStopping(StrictModel):
    """Median rule on fold results: after a fold, a trial whose mean fold Sharpe so far is below the median of the
    earlier trials' at the same fold is pruned (it counts in the registry's N, not in its Sharpe variance / PBO)."""

    enabled: bool = True
    warmup_folds: Annotated[int, Field(ge=1, le=1000)] = 1
    """Folds every trial evaluates before it may be pruned."""
    min_trials: Annotated[int, Field(ge=1, le=10_000)] = 2
    """Earlier trials needed at a fold before the median there is trusted."""


class SweepSection(StrictModel):
    """A hyper-parameter sweep of one family on Ray with Optuna's TPE sampler (crypto_assets.sweeps, DESIGN §6.4):
    every trial is walk-forward evaluated on the folds before the holdout, recorded in the trials registry and the
    `sweep` table; the chosen configuration is then evaluated on the holdout months alone."""

    family: Annotated[str, AfterValidator(_registered_type)]
    """The family swept (a registered type); unswept parameters are its `models.families` entry or defaults."""
    space: Annotated[dict[str, SweepRange | SweepChoices], Field(min_length=1)]
    """Parameter → `{low, high, log}` or `{choices: [...]}`; names and values are checked against the family's
    parameter class."""
    n_trials: Annotated[int, Field(ge=1, le=100_000)] = 20
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 2
    """Trials asked from the sampler (and run on Ray) at once; results are told in trial order (reproducible)."""
    resources_per_trial: SweepResources = SweepResources()
    early_stopping: SweepEarlyStopping = SweepEarlyStopping()
    holdout_months: Annotated[int, Field(ge=0, le=120)] = 0
    """Newest months left out of the objective: folds testing in them evaluate only the chosen configuration."""
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    """Sampler seed; null = the experiment seed."""

    @model_validator(mode="after")
    def _space_fits_family(self) -> SweepSection:
        from crypto_assets.sweeps.space import check_space  # lazy: it consults the families registry

        check_space(self.family, self.space)
        return self


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
    sweep: SweepSection | None = None
    """A hyper-parameter sweep (its own `sweep` job); none unless configured."""

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
