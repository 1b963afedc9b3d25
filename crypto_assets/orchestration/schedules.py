"""Incremental ingestion: refresh the current month's partition with only the bars not yet stored."""

from __future__ import annotations

import dagster as dg

from crypto_assets.config import ExperimentConfig
from crypto_assets.orchestration.partitions import data_partitions
from crypto_assets.timeframes import timeframe_delta

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
    # Live data only: on by default for exchange sources with an open end, off for fixed spans.
    live = experiment.data.source_kind == "ccxt" and experiment.data.end is None
    partitions = data_partitions(experiment.data)
    bar = timeframe_delta(experiment.data.timeframe)

    @dg.schedule(
        name="ingest_current_month",
        cron_schedule=_CRON_BY_TIMEFRAME[experiment.data.timeframe],
        execution_timezone="UTC",
        job=ingest_job,
        default_status=dg.DefaultScheduleStatus.RUNNING if live else dg.DefaultScheduleStatus.STOPPED,
        description=f"Every {experiment.data.timeframe} bar: fetch only new bars of the current month, then re-validate it.",
    )
    def ingest_current_month(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        now = context.scheduled_execution_time
        # The month of the newest closed bar: on the first tick of a month that is still the old one.
        key = (now - bar).strftime("%Y-%m-01")
        if key not in partitions.get_partition_keys(current_time=now):
            return dg.SkipReason(f"month {key} is outside the configured data span")
        return dg.RunRequest(
            run_key=f"{key}@{context.scheduled_execution_time:%Y-%m-%dT%H:%M}",
            partition_key=key,
            run_config=dg.RunConfig(ops={"raw_ohlcv": {"config": {"incremental": True}}}),
        )

    return ingest_current_month
