"""The ingestion schedule: each tick fetches exactly the bars missing within the catch-up horizon."""

from __future__ import annotations

import dagster as dg

from crypto_assets.config import ExperimentConfig
from crypto_assets.ingestion.coverage import catch_up_window
from crypto_assets.orchestration.assets.live import LIVE_MODEL_PREFIX
from crypto_assets.orchestration.assets.paper import PAPER_ASSET
from crypto_assets.orchestration.partitions import data_partitions
from crypto_assets.paths import experiment_root
from crypto_assets.timeframes import parse_duration, timeframe_delta

SCHEDULE_NAME = "ingest_missing_bars"
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")

# A few minutes past each bar's close so the exchange has published it.
_CRON_BY_TIMEFRAME = {
    "1m": "* * * * *",
    "5m": "1-59/5 * * * *",
    "15m": "2-59/15 * * * *",
    "30m": "2-59/30 * * * *",
    "1h": "2 * * * *",
    "4h": "2 */4 * * *",
    "1d": "5 0 * * *",
}


def build_ingest_schedule(
    experiment: ExperimentConfig, ingest_job: dg.UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    data = experiment.data
    # Live data only: on by default for exchange sources with an open end, off for fixed spans.
    live = data.source_kind == "ccxt" and data.end is None
    partitions = data_partitions(data)
    bar = timeframe_delta(data.timeframe)
    horizon = parse_duration(data.catch_up, "data.catch_up")

    @dg.schedule(
        name=SCHEDULE_NAME,
        cron_schedule=_CRON_BY_TIMEFRAME[data.timeframe],
        execution_timezone="UTC",
        job=ingest_job,
        default_status=dg.DefaultScheduleStatus.RUNNING if live else dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"Every {data.timeframe} bar: fetch exactly the bars missing from the last {data.catch_up} "
            "(data.catch_up) — holes and tails, across month boundaries — keep everything stored, report "
            "what could not be fetched (raw_ohlcv metadata), then re-validate those months. One run covers "
            "every month the horizon touches; the tick time is the run's `as_of`. Revised candles of closed "
            "months and holes older than the horizon are picked up by an explicit re-materialization "
            "(a full re-fetch), e.g. `crypto-lab dagster --config FILE -- asset materialize -m "
            "crypto_assets.definitions --select raw_ohlcv,bars,features --partition 2024-01-01`."
        ),
    )
    def ingest_missing_bars(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        now = context.scheduled_execution_time
        window = catch_up_window(data.start, data.end, data.timeframe, horizon, now)
        if window.is_empty:
            return dg.SkipReason(
                f"no closed bar of the data span within data.catch_up {data.catch_up} of {now:%Y-%m-%d %H:%M}"
            )
        known = set(partitions.get_partition_keys(current_time=now))
        keys = [key for key in window.months(bar) if key in known]
        if not keys:
            return dg.SkipReason(f"months {window.months(bar)} are outside the configured data span")
        as_of = now.isoformat()
        run_config = {
            "ops": {
                "raw_ohlcv": {"config": {"incremental": True, "as_of": as_of}},
                "bars": {"config": {"as_of": as_of}},
            }
        }
        run_key = f"catch-up@{now:%Y-%m-%dT%H:%M}"
        if len(keys) == 1:
            return dg.RunRequest(run_key=run_key, partition_key=keys[0], run_config=run_config)
        # Several months in ONE run (the data assets have single-run backfill policies): a range run.
        tags = dict(zip(RANGE_TAGS, (keys[0], keys[-1]), strict=True))
        return dg.RunRequest(run_key=run_key, run_config=run_config, tags=tags)

    return ingest_missing_bars


PAPER_SCHEDULE_NAME = "paper_trade"


def build_paper_schedule(
    experiment: ExperimentConfig, paper_job: dg.UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    """Every bar, a few minutes past its close: the current month's `paper_ledger` as of the tick (it trades every
    bar closed since its last run). Skips while the month has no live model yet (the `live` job trains it)."""
    data = experiment.data
    live = data.source_kind == "ccxt" and data.end is None
    partitions = data_partitions(data)
    artifacts = experiment_root(experiment) / "artifacts"
    slugs = [params.type.lower() for params in experiment.models.trained]

    @dg.schedule(
        name=PAPER_SCHEDULE_NAME,
        cron_schedule=_CRON_BY_TIMEFRAME[data.timeframe],
        execution_timezone="UTC",
        job=paper_job,
        default_status=dg.DefaultScheduleStatus.RUNNING if live else dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"Every {data.timeframe} bar: paper-trade the current month's live models on the bars closed by the "
            "tick (paper_ledger; a missed tick is caught up by the next one)."
        ),
    )
    def paper_trade(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        now = context.scheduled_execution_time
        keys = partitions.get_partition_keys(current_time=now)
        month = f"{now:%Y-%m}-01"
        if month not in keys:
            return dg.SkipReason(f"{month} is outside the configured data span")
        missing = [s for s in slugs if not (artifacts / f"{LIVE_MODEL_PREFIX}{s}" / month).is_dir()]
        if missing:
            return dg.SkipReason(f"no live model for {month} yet ({', '.join(missing)}): run the live job for {month}")
        return dg.RunRequest(
            run_key=f"paper@{now:%Y-%m-%dT%H:%M}",
            partition_key=month,
            run_config={"ops": {PAPER_ASSET: {"config": {"as_of": now.isoformat()}}}},
        )

    return paper_trade
