"""The dashboard in a real headless browser: Debian's Chromium (never a downloaded one) driven by playwright loads
the `report` asset's HTML of a tiny experiment run end to end (ingest, folds, reports and stress jobs) from disk,
with every request that is not `file:` aborted and recorded. Asserted: no such request, no console or page error,
every chart div holds a rendered plotly SVG with data. Screenshots go to `$CRYPTO_TEST_ARTIFACTS` (default
`storage/test-artifacts/`, git-ignored). Without the browser the test skips, except under CI (`CI` set): it fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from crypto_assets.cli import main
from crypto_assets.config import load_config
from crypto_assets.orchestration.definitions import FOLDS_JOB, INGEST_JOB, REPORTS_JOB, STRESS_JOB, build_definitions
from crypto_assets.paths import experiment_root
from crypto_assets.stress import replay
from crypto_assets_tests.tiny import TINY_MODELS

CHROMIUM = Path(os.environ.get("CRYPTO_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# One tiny forecaster (its loss curves and forecasts feed the training and calibration sections) and an ensemble of it.
MODELS = {
    "families": TINY_MODELS["families"][:1],
    "ensemble": [{"type": TINY_MODELS["families"][0]["type"], "weight": 1.0}],
}
FOLDS = ["2024-03-01", "2024-04-01"]
RANGE = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-04-01"}
STAND_IN = "crypto_assets_tests.test_stress_replay:crash_path"  # a cheap crash generator (real ones: own tests)
EXPECTED_SECTIONS = [
    "equity",
    "kpis",
    "fold_sharpe",
    "monthly",
    "regimes",
    "costs",
    "trades",
    "training",
    "calibration",
    "stress",
]
CHARTS_JS = """() => [...document.querySelectorAll('.plotly-graph-div')].map(div => ({
    id: div.id,
    svgs: div.querySelectorAll('svg.main-svg').length,
    traces: (div._fullData || []).length,
    drawn: div.querySelectorAll('.cartesianlayer .trace, .cartesianlayer .hm image').length,
    width: div.getBoundingClientRect().width,
}))"""


def artifacts_dir() -> Path:
    root = os.environ.get("CRYPTO_TEST_ARTIFACTS") or str(
        Path(__file__).resolve().parents[1] / "storage" / "test-artifacts"
    )
    out = Path(root) / "dashboard"
    out.mkdir(parents=True, exist_ok=True)
    return out


def require_browser() -> Any:
    """playwright's sync API, or skip (fail under CI) naming what is missing."""
    problem = None
    if not CHROMIUM.is_file():
        problem = f"no Chromium at {CHROMIUM} (Debian package `chromium`; .ci/run installs it with apt)"
    try:
        from playwright import sync_api
    except ImportError as exc:
        problem = f"playwright is not installed ({exc})"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"{problem}: the browser test must run under CI")
        pytest.skip(problem)
    return sync_api


@dataclass
class Visit:
    """What happened while a page was open: requests aborted (not `file:`), console errors, page errors."""

    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    charts: list[dict[str, Any]] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = require_browser()
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,  # a fresh user-data-dir: nothing from an earlier session
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        yield context
        context.close()


def visit(browser: Any, path: Path, screenshot: str) -> Visit:
    seen = Visit()
    page = browser.new_page()

    def route(route: Any) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            seen.blocked.append(route.request.url)
            route.abort()

    page.route("**/*", route)
    page.on("console", lambda message: seen.console_errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: seen.page_errors.append(str(error)))
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_timeout(300)  # plotly draws synchronously on load; let late errors surface
    seen.charts = page.evaluate(CHARTS_JS)
    seen.sections = page.evaluate("() => [...document.querySelectorAll('section')].map(s => s.id)")
    out = artifacts_dir()
    page.screenshot(path=str(out / f"{screenshot}.png"), full_page=True)
    for section in seen.sections:
        page.locator(f"section#{section}").screenshot(path=str(out / f"{screenshot}-{section}.png"))
    page.close()
    return seen


def write_config(tmp_path: Path, name: str) -> Path:
    raw = {
        "experiment": {"name": name, "gpu_id": None, "seed": 3, "storage_dir": str(tmp_path / "storage")},
        "data": {
            "tickers": ["BTC/USDT", "ETH/USDT"],
            "timeframe": "1h",
            "source": "synthetic",
            "start": "2024-01-01",
            "end": "2024-04-30",
        },
        "walk_forward": {"train_months": 2, "test_months": 1, "label_horizon": 12},
        "baselines": ["buy_and_hold_btc", "trend_following"],
        "models": MODELS,
        "stress": {"enabled": True, "seeds": [0], "paths_per_seed": 1},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A tiny experiment through every job in process; the `report` materializations' metadata per job."""
    tmp_path = tmp_path_factory.mktemp("dashboard")
    config_path = write_config(tmp_path, "dash")
    defs = build_definitions(load_config(config_path))
    reports: dict[str, dict[str, Any]] = {}
    with pytest.MonkeyPatch.context() as patch, dg.DagsterInstance.ephemeral() as instance:
        patch.setitem(replay.SCENARIOS, "crash_bootstrap", STAND_IN)
        patch.setitem(replay.SCENARIOS, "panic", STAND_IN)
        assert defs.resolve_job_def(INGEST_JOB).execute_in_process(instance=instance, tags=RANGE).success
        for fold in FOLDS:
            assert defs.resolve_job_def(FOLDS_JOB).execute_in_process(instance=instance, partition_key=fold).success
        for job in (REPORTS_JOB, STRESS_JOB):
            result = defs.resolve_job_def(job).execute_in_process(instance=instance)
            assert result.success
            (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("report")]
            reports[job] = {k: v.value for k, v in event.materialization.metadata.items()}
    return config_path, reports


def test_report_asset_writes_the_dashboard_and_the_stress_job_adds_its_section(
    experiment: tuple[Path, dict[str, dict[str, Any]]],
) -> None:
    config_path, reports = experiment
    path = experiment_root(load_config(config_path)) / "reports" / "dashboard.html"
    for meta in reports.values():
        assert meta["path"] == str(path) and meta["url"] == path.as_uri()
    sections = {job: [record.data["section"] for record in meta["sections"].records] for job, meta in reports.items()}
    assert sections[REPORTS_JOB] == [s for s in EXPECTED_SECTIONS if s != "stress"]  # the stress job had not run
    assert sections[STRESS_JOB] == EXPECTED_SECTIONS
    assert reports[STRESS_JOB]["bytes"] == path.stat().st_size


def test_dashboard_renders_offline_in_chromium(
    experiment: tuple[Path, dict[str, dict[str, Any]]], browser: Any
) -> None:
    _, reports = experiment
    seen = visit(browser, Path(reports[STRESS_JOB]["path"]), "dashboard")
    assert seen.blocked == []
    assert seen.console_errors == [] and seen.page_errors == []
    assert seen.sections == EXPECTED_SECTIONS
    assert len(seen.charts) == reports[STRESS_JOB]["charts"] > len(EXPECTED_SECTIONS) - 3  # kpis, trades: tables
    for chart in seen.charts:
        assert chart["svgs"] > 0 and chart["traces"] > 0 and chart["drawn"] > 0 and chart["width"] > 300, chart


def test_compare_page_renders_offline_in_chromium(
    experiment: tuple[Path, dict[str, dict[str, Any]]], browser: Any, tmp_path: Path
) -> None:
    config_path, _ = experiment
    # a second experiment: a copy of the first under another name (an experiment folder reads its own files)
    raw = yaml.safe_load(config_path.read_text())
    raw["experiment"]["name"] = "dash_copy"
    copy_path = config_path.with_name("dash_copy.yaml")
    copy_path.write_text(yaml.safe_dump(raw))
    root = experiment_root(load_config(config_path))
    shutil.copytree(root, root.with_name("dash_copy"), dirs_exist_ok=True)
    out = tmp_path / "compare.html"
    assert main(["report", "--compare", str(config_path), str(copy_path), "--out", str(out)]) == 0
    seen = visit(browser, out, "compare")
    assert seen.blocked == [] and seen.console_errors == [] and seen.page_errors == []
    assert seen.sections == ["equity", "kpis", "fold_sharpe"]
    assert [chart["id"] for chart in seen.charts] == ["chart-equity-0", "chart-fold_sharpe-0"]
    assert all(chart["svgs"] and chart["drawn"] for chart in seen.charts)
    # one equity chart: an equity and a drawdown line for every strategy of both experiments
    strategies = len(raw["baselines"]) + len(MODELS["families"]) + 1  # + the ensemble
    assert seen.charts[0]["traces"] == 2 * 2 * strategies
    assert "dash_copy/buy_and_hold_btc" in out.read_text()


def test_a_network_request_would_be_caught(browser: Any, tmp_path: Path) -> None:
    """The guard itself: a page that loads a script from a CDN is seen (and the script never arrives)."""
    page = tmp_path / "cdn.html"
    page.write_text(
        '<!DOCTYPE html><html><head><script src="https://cdn.plot.ly/plotly-2.0.0.min.js"></script></head>'
        "<body><script>Plotly.newPlot('x', [])</script></body></html>"
    )
    seen = visit(browser, page, "cdn-guard")
    assert seen.blocked == ["https://cdn.plot.ly/plotly-2.0.0.min.js"]
    assert any("Plotly is not defined" in error for error in seen.page_errors)
