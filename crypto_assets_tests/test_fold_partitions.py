"""Fold partitions are exactly the walk-forward folds (issue 9 item 4, DESIGN.md §1).

The fold partition keys must equal the folds the stitched run uses (`fold_keys`), for every step and for
fixed and open-ended spans; each fold must read exactly its train + test months through Dagster's own
mapping code; a fold must be able to depend on the previous fold (fine-tuning); off-grid windows are refused.
"""

# No `from __future__ import annotations`: Dagster reads the test asset's annotations.
import datetime as dt
import itertools
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from crypto_assets.config import ConfigError, ExperimentConfig, load_config, parse_config
from crypto_assets.config.schema import FOLD_STEP_MONTHS, DataSection
from crypto_assets.folds import FoldSpec, add_months, fold_keys, fold_window_for_key, fold_windows, stitch_months
from crypto_assets.ingestion.scope import data_end_exclusive, experiment_fold_spec
from crypto_assets.orchestration.definitions import build_definitions
from crypto_assets.orchestration.partitions import (
    check_fold_grid,
    data_partitions,
    fold_cron,
    fold_partitions,
    fold_test_mapping,
    fold_window_mapping,
    previous_fold_mapping,
)
from crypto_assets.paths import experiment_root
from crypto_assets.storage.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[1]

# (train, test, step): every allowed step, overlapping (test > step) and tiled (test == step) test windows
GRIDS = [(24, 3, 1), (6, 2, 1), (6, 2, 2), (8, 4, 2), (24, 3, 3), (12, 6, 3), (8, 4, 4), (12, 6, 6), (24, 12, 12)]
# data starts in different months, so the fold grid has every phase; one starts mid-month
STARTS = [dt.date(2020, 1, 1), dt.date(2020, 2, 15), dt.date(2021, 5, 1), dt.date(2019, 12, 31)]


def data_section(start: dt.date, end: dt.date | None) -> DataSection:
    return DataSection(tickers=["BTC/USDT"], start=start, end=end)


def months_in(start: dt.datetime, end: dt.datetime) -> list[str]:
    """Month keys of [start, end) (month starts)."""
    out, month = [], start.date()
    while month < end.date():
        out.append(month.strftime("%Y-%m-%d"))
        month = add_months(month, 1)
    return out


def upstream_keys(
    mapping: dg.PartitionMapping,
    downstream: dg.PartitionsDefinition,
    upstream: dg.PartitionsDefinition,
    key: str,
    now: dt.datetime | None = None,
) -> tuple[list[str], list[str]]:
    """(mapped upstream keys, required but nonexistent keys) of one downstream key, by Dagster's own code."""
    result = mapping.get_upstream_mapped_partitions_result_for_partitions(
        downstream.subset_with_partition_keys([key]), downstream, upstream, current_time=now
    )
    return list(result.partitions_subset.get_partition_keys()), list(
        result.required_but_nonexistent_subset.get_partition_keys()
    )


# ---------------------------------------------------------------- keys = stitched folds


@pytest.mark.parametrize(("train", "test", "step"), GRIDS)
@pytest.mark.parametrize("start", STARTS)
def test_fixed_span_keys_are_the_stitched_folds(train: int, test: int, step: int, start: dt.date) -> None:
    spec = FoldSpec(train_months=train, test_months=test, step_months=step)
    for end in (dt.date(2025, 10, 31), dt.date(2025, 11, 15), dt.date(2026, 2, 28)):  # closed / open last month
        data = data_section(start, end)
        keys = fold_partitions(data, spec).get_partition_keys()
        expected = fold_keys(data.start, data_end_exclusive(data), spec)
        assert keys == expected, (start, end)
        assert len(keys) >= 2  # at least two folds, so the grid is exercised
        # the stitched run trades each month once over exactly these folds
        windows = [fold_window_for_key(k, spec) for k in keys]
        assert list(stitch_months(windows, step)) == keys
        assert windows[-1].test_end.date() <= data_end_exclusive(data)


@pytest.mark.parametrize(("train", "test", "step"), GRIDS)
@pytest.mark.parametrize("start", STARTS[:3])
def test_open_ended_keys_are_the_closed_folds(train: int, test: int, step: int, start: dt.date) -> None:
    """data.end null: the newest fold is the one whose test window has fully closed by `now`."""
    spec = FoldSpec(train_months=train, test_months=test, step_months=step)
    partitions = fold_partitions(data_section(start, None), spec)
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    seen: set[int] = set()
    while now < dt.datetime(2026, 1, 1, tzinfo=dt.UTC):
        # a month's first instant, the next morning and the month's last hour
        for moment in (now, now + dt.timedelta(hours=5), now + dt.timedelta(days=27, hours=23)):
            keys = partitions.get_partition_keys(current_time=moment)
            assert keys == fold_keys(start, moment, spec), moment
            seen.add(len(keys))
        now = dt.datetime.combine(add_months(now.date(), 1), dt.time(), tzinfo=dt.UTC)
    assert len(seen) >= 2  # folds appeared over the two years


def test_a_fold_appears_when_its_last_test_month_closes() -> None:
    spec = FoldSpec(train_months=6, test_months=4, step_months=2)
    partitions = fold_partitions(data_section(dt.date(2023, 1, 1), None), spec)
    # fold 2023-11-01 tests Nov..Feb: not a partition before March 1st, one from then on
    before = partitions.get_partition_keys(current_time=dt.datetime(2024, 2, 29, 23, tzinfo=dt.UTC))
    after = partitions.get_partition_keys(current_time=dt.datetime(2024, 3, 1, tzinfo=dt.UTC))
    assert before == ["2023-07-01", "2023-09-01"]
    assert after == ["2023-07-01", "2023-09-01", "2023-11-01"]


@pytest.mark.parametrize("step", [1, 2, 3])
def test_span_shorter_than_one_fold_has_no_fold_partition(step: int) -> None:
    spec = FoldSpec(train_months=6, test_months=3 if step == 3 else 2, step_months=step)
    data = data_section(dt.date(2023, 1, 1), dt.date(2023, 8, 20))  # 6 train months + an unclosed August
    assert fold_keys(data.start, data_end_exclusive(data), spec) == []
    assert fold_partitions(data, spec).get_partition_keys() == []


def test_demo_and_csv_configs_keep_their_fold_keys() -> None:
    demo = load_config(ROOT / "configs" / "demo.yaml")
    keys = fold_partitions(demo.data, experiment_fold_spec(demo)).get_partition_keys()
    assert keys == ["2023-07-01", "2023-09-01", "2023-11-01", "2024-01-01", "2024-03-01", "2024-05-01"]
    csv = load_config(ROOT / "configs" / "csv.yaml")  # 24/3/3 over 2020-01..2025-10: a fold every quarter
    keys = fold_partitions(csv.data, experiment_fold_spec(csv)).get_partition_keys()
    assert len(keys) == 15 and keys[0] == "2022-01-01" and keys[-1] == "2025-07-01"
    assert all(dt.date.fromisoformat(k).month in (1, 4, 7, 10) for k in keys)
    for name in ("full.yaml", "binance.yaml"):  # step 1: still one fold per month
        config = load_config(ROOT / "configs" / name)
        assert config.walk_forward.step_months == 1


def test_fold_cron_lists_the_grid_months() -> None:
    assert fold_cron(dt.date(2023, 7, 1), 1) == "0 0 1 * *"
    assert fold_cron(dt.date(2023, 7, 1), 2) == "0 0 1 1,3,5,7,9,11 *"
    assert fold_cron(dt.date(2023, 8, 1), 2) == "0 0 1 2,4,6,8,10,12 *"
    assert fold_cron(dt.date(2022, 2, 1), 3) == "0 0 1 2,5,8,11 *"
    assert fold_cron(dt.date(2022, 12, 1), 4) == "0 0 1 4,8,12 *"
    assert fold_cron(dt.date(2022, 3, 1), 12) == "0 0 1 3 *"


# ---------------------------------------------------------------- mappings


@pytest.mark.parametrize(("train", "test", "step"), GRIDS)
def test_fold_reads_exactly_its_train_and_test_months(train: int, test: int, step: int) -> None:
    """Offsets count in fold partitions (steps) even though the upstream is monthly."""
    spec = FoldSpec(train_months=train, test_months=test, step_months=step)
    data = data_section(dt.date(2020, 2, 1), dt.date(2025, 10, 31))
    folds, months, mapping = fold_partitions(data, spec), data_partitions(data), fold_window_mapping(spec)
    keys = folds.get_partition_keys()
    for key in keys:
        window = fold_window_for_key(key, spec)
        mapped, nonexistent = upstream_keys(mapping, folds, months, key)
        assert mapped == months_in(window.train_start, window.test_end), key
        assert len(mapped) == train + test
        assert nonexistent == []
    # the first fold's train window starts exactly at the first data month, the newest ends at the last
    first_mapped, _ = upstream_keys(mapping, folds, months, keys[0])
    last_mapped, _ = upstream_keys(mapping, folds, months, keys[-1])
    assert first_mapped[0] == months.get_first_partition_key()
    assert last_mapped[-1] <= months.get_last_partition_key()  # type: ignore[operator]


def test_fold_mapping_open_ended_demo_like() -> None:
    spec = FoldSpec(train_months=6, test_months=2, step_months=2)
    data = data_section(dt.date(2023, 1, 1), None)
    now = dt.datetime(2024, 7, 10, tzinfo=dt.UTC)
    folds, months = fold_partitions(data, spec), data_partitions(data)
    keys = folds.get_partition_keys(current_time=now)
    assert keys == ["2023-07-01", "2023-09-01", "2023-11-01", "2024-01-01", "2024-03-01", "2024-05-01"]
    mapped, nonexistent = upstream_keys(fold_window_mapping(spec), folds, months, "2024-05-01", now)
    assert mapped == months_in(dt.datetime(2023, 11, 1, tzinfo=dt.UTC), dt.datetime(2024, 7, 1, tzinfo=dt.UTC))
    assert nonexistent == []


@pytest.mark.parametrize(
    ("test", "step", "lookback", "before"), [(2, 2, 1, 2), (2, 2, 3, 4), (3, 3, 1, 3), (3, 1, 2, 2)]
)
def test_fold_test_mapping_reads_the_test_window_and_whole_steps_before(
    test: int, step: int, lookback: int, before: int
) -> None:
    spec = FoldSpec(train_months=12, test_months=test, step_months=step)
    data = data_section(dt.date(2020, 1, 1), dt.date(2023, 12, 31))
    folds, months = fold_partitions(data, spec), data_partitions(data)
    for key in folds.get_partition_keys():
        window = fold_window_for_key(key, spec)
        mapped, _ = upstream_keys(fold_test_mapping(spec, lookback), folds, months, key)
        start = dt.datetime.combine(add_months(window.test_start.date(), -before), dt.time(), tzinfo=dt.UTC)
        assert mapped == months_in(start, window.test_end), key


def test_month_feeds_exactly_the_folds_that_read_it() -> None:
    """The reverse direction (what the UI marks stale when a month changes)."""
    spec = FoldSpec(train_months=6, test_months=2, step_months=2)
    data = data_section(dt.date(2023, 1, 1), dt.date(2024, 6, 30))
    folds, months = fold_partitions(data, spec), data_partitions(data)
    downstream = fold_window_mapping(spec).get_downstream_partitions_for_partitions(
        months.subset_with_partition_keys(["2023-08-01"]), months, folds
    )
    windows = fold_windows(data.start, data_end_exclusive(data), spec)
    readers = [w.key for w in windows if "2023-08-01" in months_in(w.start, w.end)]
    assert list(downstream.get_partition_keys()) == readers == ["2023-07-01", "2023-09-01", "2023-11-01", "2024-01-01"]


@pytest.mark.parametrize(("train", "test", "step"), [(6, 2, 1), (6, 2, 2), (24, 3, 3), (12, 6, 6)])
def test_previous_fold_mapping(train: int, test: int, step: int) -> None:
    """Fold k → fold k−1 on the fold partitions (fine-tuning); the first fold maps to nothing, without error."""
    spec = FoldSpec(train_months=train, test_months=test, step_months=step)
    folds = fold_partitions(data_section(dt.date(2020, 1, 1), dt.date(2025, 10, 31)), spec)
    keys, mapping = folds.get_partition_keys(), previous_fold_mapping()
    assert upstream_keys(mapping, folds, folds, keys[0]) == ([], [])
    for previous, key in itertools.pairwise(keys):
        assert upstream_keys(mapping, folds, folds, key) == ([previous], [])
        after = mapping.get_downstream_partitions_for_partitions(
            folds.subset_with_partition_keys([previous]), folds, folds
        )
        assert list(after.get_partition_keys()) == [key]


def test_a_fold_asset_can_depend_on_its_own_previous_fold(tmp_path: Path) -> None:
    """A self-dependent fold asset (a model fine-tuned from the previous fold's) loads fold k−1's output."""
    spec = FoldSpec(train_months=6, test_months=2, step_months=2)
    folds = fold_partitions(data_section(dt.date(2023, 1, 1), dt.date(2024, 6, 30)), spec)

    @dg.asset(partitions_def=folds, ins={"chain": dg.AssetIn(partition_mapping=previous_fold_mapping())})
    def chain(context: dg.AssetExecutionContext, chain: list[str] | None) -> list[str]:
        return [*(chain or []), context.partition_key]

    io = dg.FilesystemIOManager(base_dir=str(tmp_path))
    for key in folds.get_partition_keys()[:3]:
        assert dg.materialize([chain], partition_key=key, resources={"io_manager": io}).success
    result = dg.materialize([chain], partition_key="2024-01-01", resources={"io_manager": io})
    assert result.output_for_node("chain") == ["2023-07-01", "2023-09-01", "2023-11-01", "2024-01-01"]


# ---------------------------------------------------------------- validation


def demo_raw(**walk_forward: int) -> dict[str, object]:
    """A minimal config with the demo's span and walk-forward windows, overridden by `walk_forward`."""
    return {
        "experiment": {"name": "grid"},
        "data": {"tickers": ["BTC/USDT"], "start": "2023-01-01", "end": "2024-06-30"},
        "walk_forward": {"train_months": 6, "test_months": 2, "step_months": 2, **walk_forward},
    }


@pytest.mark.parametrize("step", [5, 7, 8, 9, 10, 11, 24])
def test_config_refuses_a_step_that_does_not_divide_a_year(step: int) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(demo_raw(step_months=step, train_months=4 * step, test_months=step))
    message = str(err.value)
    assert "walk_forward.step_months" in message
    assert "must be one of 1, 2, 3, 4, 6, 12" in message


@pytest.mark.parametrize(
    ("walk_forward", "key", "hint"),
    [
        ({"train_months": 7, "test_months": 2, "step_months": 2}, "train_months (7)", "e.g. 6 or 8"),
        ({"train_months": 6, "test_months": 3, "step_months": 2}, "test_months (3)", "e.g. 2 or 4"),
        ({"train_months": 6, "test_months": 1, "step_months": 2}, "test_months (1)", "e.g. 2"),
        ({"train_months": 24, "test_months": 4, "step_months": 3}, "test_months (4)", "e.g. 3 or 6"),
        ({"train_months": 10, "test_months": 6, "step_months": 6}, "train_months (10)", "e.g. 6 or 12"),
    ],
)
def test_config_refuses_windows_that_are_not_whole_steps(walk_forward: dict[str, int], key: str, hint: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(demo_raw(**walk_forward))
    message = str(err.value)
    assert f"{key} must be a multiple of step_months ({walk_forward['step_months']}), {hint}" in message


@pytest.mark.parametrize("step", FOLD_STEP_MONTHS)
def test_config_accepts_every_grid(step: int) -> None:
    config = parse_config(demo_raw(step_months=step, train_months=2 * step, test_months=step))
    assert config.walk_forward.step_months == step


def test_partitions_refuse_an_off_grid_spec_built_in_code() -> None:
    """FoldSpec itself allows any windows (stitching works for them); fold partitions cannot."""
    spec = FoldSpec(train_months=12, test_months=3, step_months=2)
    data = data_section(dt.date(2020, 1, 1), dt.date(2024, 12, 31))
    with pytest.raises(ValueError, match=r"test_months \(3\) must be a multiple of step_months \(2\)"):
        fold_partitions(data, spec)
    with pytest.raises(ValueError, match="test_months"):
        fold_window_mapping(spec)
    with pytest.raises(ValueError, match=r"step_months \(5\) must be one of 1, 2, 3, 4, 6, 12"):
        check_fold_grid(FoldSpec(train_months=10, test_months=5, step_months=5))


# ---------------------------------------------------------------- the experiment's graph


def step2_experiment(tmp_path: Path) -> ExperimentConfig:
    """A year of data, 2 train + 2 test months every 2 months: folds 2024-03, -05, -07, -09, -11."""
    return parse_config(
        {
            "experiment": {"name": "step2", "gpu_id": None, "storage_dir": str(tmp_path / "storage")},
            "data": {"tickers": ["BTC/USDT"], "start": "2024-01-01", "end": "2024-12-31"},
            "walk_forward": {"train_months": 2, "test_months": 2, "step_months": 2, "label_horizon": 12},
        }
    )


STEP2_FOLDS = ["2024-03-01", "2024-05-01", "2024-07-01", "2024-09-01", "2024-11-01"]


def test_definitions_fold_assets_are_on_the_fold_grid(tmp_path: Path) -> None:
    """In the experiment's own graph: every fold asset's keys are the stitched folds, and fold_dataset reads
    exactly its train + test months of features."""
    config = step2_experiment(tmp_path)
    graph = build_definitions(config).resolve_asset_graph()
    fold_assets = [key for key in graph.get_all_asset_keys() if graph.get(key).partitions_def is not None]
    data = config.data
    spec = experiment_fold_spec(config)
    assert fold_keys(data.start, data_end_exclusive(data), spec) == STEP2_FOLDS
    on_grid = 0
    for key in fold_assets:
        keys = graph.get(key).partitions_def.get_partition_keys()  # type: ignore[union-attr]
        if keys != STEP2_FOLDS:  # the monthly data assets
            assert keys == months_in(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
            continue
        on_grid += 1
    assert on_grid >= 4  # fold_dataset, baselines, models, backtest, ...
    child = dg.AssetKey("fold_dataset")
    for fold in STEP2_FOLDS:
        window = fold_window_for_key(fold, spec)
        parents = graph.get_parent_partition_keys_for_child(fold, dg.AssetKey("features"), child)
        assert sorted(parents.partitions_subset.get_partition_keys()) == months_in(window.train_start, window.test_end)


def test_reports_need_every_fold(tmp_path: Path) -> None:
    """Every fold partition is a fold of the stitched run, so a report reads all of them: a fold never run
    fails the load naming it instead of leaving it out of the tables (the old reports read what was stored)."""
    config = step2_experiment(tmp_path)
    defs = build_definitions(config)
    warehouse = Warehouse(experiment_root(config))

    def backtest_rows(fold: str) -> pl.DataFrame:
        ts = [dt.datetime.fromisoformat(fold).replace(tzinfo=dt.UTC) + dt.timedelta(hours=h) for h in range(3)]
        return pl.DataFrame({"strategy": "s", "ts": ts, "return": [0.01, -0.02, 0.005], "fold": fold})

    def run_trials() -> dg.ExecuteInProcessResult:
        return dg.materialize(
            list(defs.assets or []),  # type: ignore[arg-type]
            selection=[dg.AssetKey("trials")],
            resources=defs.resources,
            raise_on_error=False,
        )

    # The stitched run the trials registry records (a strategy the config defines).
    stitched = backtest_rows(STEP2_FOLDS[0]).with_columns(strategy=pl.lit(config.baselines[0])).drop("fold")
    warehouse.write_partition("walk_forward_equity", stitched)
    warehouse.write_partitions(
        "backtest", {f: backtest_rows(f) for f in STEP2_FOLDS if f != "2024-07-01"}, key_column="fold"
    )
    failed = run_trials()
    assert not failed.success
    errors = [
        str(event.step_failure_data.error and event.step_failure_data.error.to_string())
        for event in failed.get_step_failure_events()
    ]
    assert any("no stored partition 2024-07-01" in message for message in errors), errors
    warehouse.write_partitions("backtest", {"2024-07-01": backtest_rows("2024-07-01")}, key_column="fold")
    assert run_trials().success
    trials = warehouse.read_table("trials")
    assert trials is not None and trials["strategy"].to_list() == [config.baselines[0]]
