"""The `report` asset: the experiment's self-contained HTML dashboard (crypto_assets.dashboard, DESIGN.md §6.5).

    kpis, regime_kpis, walk_forward_equity / walk_forward_trades [, stress_kpis, sweep, paper_ledger] ─► report

It reads what the warehouse holds when it runs, so it is in the `reports` job and again in the `stress`, `sweeps`
and `paper` jobs (after stress_kpis, the sweep, paper_ledger) when the experiment has them: the page then gains
that section.
"""
# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

from collections.abc import Iterator, Sequence

import dagster as dg
import polars as pl

from crypto_assets.config import ExperimentConfig
from crypto_assets.orchestration.metadata import table_metadata

REPORT_DEPS = ("walk_forward_equity", "walk_forward_trades", "kpis", "regime_kpis")


def build_dashboard_asset(experiment: ExperimentConfig, after: Sequence[dg.AssetsDefinition]) -> dg.AssetsDefinition:
    """`report`, downstream of the report tables and of the `after` assets (stress, sweep, paper ledger: those the
    experiment has)."""
    deps: list[str | dg.AssetKey] = [*REPORT_DEPS, *(key for asset in after for key in asset.keys)]

    @dg.asset(
        deps=deps,
        output_required=False,
        group_name="reports",
        kinds={"html", "plotly"},
        description=(
            "One self-contained HTML dashboard (plotly.js inlined, no network at view time): stitched equity and "
            "drawdown with fold boundaries, KPIs with the verdict, per-fold Sharpe, monthly returns, regimes, "
            "costs and capacity, trades, training curves, calibration, and stress / sweep / paper where present."
        ),
    )
    def report(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        from crypto_assets.dashboard import MissingTableError, dashboard, dashboard_path, from_config, write_page

        try:
            data = from_config(experiment)
            page = dashboard(data)
        except MissingTableError as exc:
            # nothing to show yet (e.g. a paper run before any reports or ledger row): no page, and no failure of
            # the paper / sweep run it follows; the reports job always has its tables by then
            context.log.warning(f"no dashboard written: {exc}")
            return
        path = write_page(page, dashboard_path(data.root))
        sections = pl.DataFrame({"section": list(page.sections), "charts": list(page.sections.values())})
        yield dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "url": dg.MetadataValue.url(path.as_uri()),
                "bytes": path.stat().st_size,
                "charts": page.charts,
                "sections": table_metadata(sections),
            }
        )

    return report
