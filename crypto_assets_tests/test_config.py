"""Strict experiment config: the user's example validates unchanged; typos name key path and allowed values."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from crypto_assets.cli import main
from crypto_assets.config import ConfigError, config_hash, load_config, parse_config, section_hash

PROJECT_ROOT = Path(__file__).resolve().parents[1]

USER_EXAMPLE = """\
experiment:
  name: "Crypto_Hybrid_V1"
  gpu_id: 0 # RTX 4090
data:
  tickers: ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
  timeframe: "1h"
  source: "binance_historical"
constraints:
  max_drawdown: 0.20
  min_sharpe: 1.0
models:
  ensemble:
    - type: "LSTM_Attn"
      weight: 0.4
    - type: "PPO_Agent"
      weight: 0.6
"""


def _with(**changes: object) -> dict:
    raw = yaml.safe_load(USER_EXAMPLE)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def test_user_example_validates_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "example.yaml"
    path.write_text(USER_EXAMPLE)
    config = load_config(path)
    assert config.experiment.name == "Crypto_Hybrid_V1"
    assert config.experiment.gpu_id == 0
    assert config.data.source_kind == "ccxt" and config.data.exchange_id == "binance"
    assert [m.type for m in config.models.ensemble] == ["LSTM_Attn", "PPO_Agent"]
    assert config.experiment.seed == 42  # documented default


@pytest.mark.parametrize("name", ["demo.yaml", "csv.yaml", "binance.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    config = load_config(PROJECT_ROOT / "configs" / name)
    assert config.experiment.name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (_with(experiment__gpuid=1), ["experiment.gpuid: unknown key", "allowed keys here: name, gpu_id, seed"]),
        (_with(data__timeframe="2h"), ["data.timeframe", "'1m', '5m', '15m', '30m', '1h', '4h' or '1d'", "'2h'"]),
        (_with(data__source="nasdaq"), ["data.source", "allowed: synthetic, csv, ccxt, binance_historical"]),
        (_with(data__tickers=["btcusdt"]), ["data.tickers", "BASE/QUOTE"]),
        (_with(constraints__max_drawdown=1.5), ["constraints.max_drawdown", "less than or equal to 1"]),
        (_with(constraints__min_sharpe="high"), ["constraints.min_sharpe", "valid number"]),
        (_with(experiment__gpu_id=-1), ["experiment.gpu_id"]),
        (_with(models__ensemble=[{"type": "LSTM_Attn", "weight": 0.5}]), ["models.ensemble", "sum to 1"]),
        (
            _with(models__ensemble=[{"type": "LSTM", "weight": 1.0}]),
            ["models.ensemble[0].type", "unknown model family 'LSTM'; registered: LSTM_Attn, CNN_LSTM, PPO_Agent"],
        ),
        (
            _with(models__families=[{"type": "LSTM", "hidden": 8}]),
            ["models.families[0].type", "unknown model family 'LSTM'; registered: LSTM_Attn, CNN_LSTM, PPO_Agent"],
        ),
        (
            _with(models__families=[{"type": "PPO_Agent", "net_arch": [8], "hiden": 8}]),
            [
                "models.families[0].hiden: unknown key",
                "allowed keys here: type, retrain, fine_tune_fraction, n_seeds, total_timesteps",
            ],
        ),
        (_with(models__families=[{"hidden": 8}]), ["models.families[0].type: required key is missing"]),
        (
            _with(models__families=[{"type": "CNN_LSTM"}, {"type": "CNN_LSTM", "hidden": 4}]),
            ["models.families: families lists a type twice"],
        ),
        (_with(models__lstm_attn={"hidden": 8}), ["models.lstm_attn: unknown key", "families, ensemble, sizing"]),
        (
            _with(models__ensemble=[{"type": "LSTM_Attn", "weight": 1.0, "lr": 1}]),
            ["models.ensemble[0].lr: unknown key", "allowed keys here: type, weight"],
        ),
        (
            _with(data__synthetic={"garch_alpha": 0.2, "garch_beta": 0.85}),
            ["data.synthetic", "garch_alpha + garch_beta must be < 1"],
        ),
        (_with(data__source="csv"), ["needs data.csv_dir"]),
        (_with(data__start="2024-01-01", data__end="2023-01-01"), ["end (2023-01-01) is before start (2024-01-01)"]),
        (_with(validation__gap_policy="drop"), ["validation.gap_policy", "'fail', 'flag' or 'ffill'"]),
        ({"data": {"tickers": ["BTC/USDT"]}}, ["experiment: required key is missing"]),
        (
            _with(surprise={"a": 1}),
            [
                "surprise: unknown key",
                "allowed keys here: experiment, data, validation, features, walk_forward, costs, baselines, baseline_settings, constraints, models",
            ],
        ),
    ],
)
def test_bad_values_name_key_and_rule(raw: dict, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "exp.yaml")
    message = str(info.value)
    assert message.startswith("exp.yaml: invalid experiment config")
    for fragment in expected:
        assert fragment in message, message


def test_duplicate_keys_and_bad_yaml_are_rejected(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text(USER_EXAMPLE + "experiment:\n  name: other\n")
    with pytest.raises(ConfigError, match="duplicate key 'experiment'"):
        load_config(dup)
    broken = tmp_path / "broken.yaml"
    broken.write_text("experiment: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_hashes_track_sections() -> None:
    base = parse_config(_with())
    other_model = parse_config(_with(constraints__min_sharpe=2.0))
    assert config_hash(base) != config_hash(other_model)
    assert section_hash(base, "data") == section_hash(other_model, "data")
    other_data = parse_config(_with(data__timeframe="15m"))
    assert section_hash(base, "data") != section_hash(other_data, "data")


def test_validate_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate-config", str(PROJECT_ROOT / "configs" / "demo.yaml")]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(USER_EXAMPLE.replace('timeframe: "1h"', 'timeframe: "1hour"'))
    with pytest.raises(SystemExit) as info:
        main(["validate-config", str(bad)])
    assert info.value.code == 2
    assert "data.timeframe" in capsys.readouterr().err


def test_cost_section_maps_onto_the_engine_cost_model() -> None:
    from crypto_assets.backtest import CostModel
    from crypto_assets.families import Context

    config = parse_config(_with())
    assert Context.from_experiment(config).cost_model() == CostModel()  # the 1h defaults 24h / 7d are 24 / 168 bars


def test_families_are_validated_by_their_own_parameter_classes() -> None:
    """`models.families` entries are the families' own classes (no mirror); ensemble members not listed there
    train with their family's defaults, and nothing else is trained."""
    from crypto_assets.agents.ppo import PPOParams
    from crypto_assets.models import ForecasterParams

    config = parse_config(
        _with(models__families=[{"type": "CNN_LSTM", "hidden": 8}, {"type": "PPO_Agent", "net_arch": [16, 8]}])
    )
    trained = config.models.trained
    assert [p.type for p in trained] == ["CNN_LSTM", "PPO_Agent", "LSTM_Attn"]  # LSTM_Attn: ensemble member only
    assert trained[0] == ForecasterParams(type="CNN_LSTM", hidden=8) and trained[0].arch == "cnn_lstm"
    assert isinstance(trained[1], PPOParams) and trained[1].net_arch == [16, 8]
    assert trained[2] == ForecasterParams()  # every default
    assert [p.slug for p in trained] == ["cnn_lstm", "ppo_agent", "lstm_attn"]
    # every field of the concrete class is dumped, so code versions change with any hyper-parameter
    assert config.models.model_dump()["families"][1]["net_arch"] == [16, 8]
    assert parse_config(_with()).models.trained == [ForecasterParams(), PPOParams()]


def test_impossible_date_names_file_key_and_line(tmp_path: Path) -> None:
    """PyYAML's timestamp constructor raises a bare ValueError on 2024-02-30; the loader reports it instead."""
    path = tmp_path / "exp.yaml"
    source = '  source: "binance_historical"\n'
    path.write_text(USER_EXAMPLE.replace(source, source + "  end: 2024-02-30\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid experiment config (1 problem(s))"), message
    assert "line 8, data.end: 2024-02-30 is not a calendar date (day is out of range for month)" in message


def _minimal(experiment: str = "", data: str = "", rest: str = "", tickers: str = '["BTC/USDT"]') -> str:
    """A small valid config; `experiment` / `data` lines go after line 2 / line 4, `rest` at the end."""
    return f'experiment:\n  name: "x"\n{experiment}data:\n  tickers: {tickers}\n{data}{rest}'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            _minimal(experiment="  gpu_id: true\n"),
            ["line 3, experiment.gpu_id: Input should be a valid integer", "booleans in YAML"],
        ),
        (
            _minimal(experiment="  gpu_id: 1.0\n"),
            ["line 3, experiment.gpu_id", "expected an integer >= 0, or null", "decimal point"],
        ),
        (
            _minimal(experiment='  seed: "7"\n'),
            ["line 3, experiment.seed: Input should be a valid integer", "without quotes"],
        ),
        (
            _minimal(tickers='"BTC/USDT"'),
            ["line 4, data.tickers: Input should be a valid list", 'write a list, e.g. ["BTC/USDT"]'],
        ),
        (
            _minimal(rest="models:\n  families:\n    - type: LSTM_Attn\n      max_epochs: 6.0\n"),
            ["line 8, models.families[0].max_epochs: Input should be a valid integer", "an integer >= 1 and <= 10000"],
        ),
        (
            _minimal(rest="models:\n  families:\n    - type: CNN_LSTM\n      revin: 1\n"),
            ["line 8, models.families[0].revin: Input should be a valid boolean", "true or false"],
        ),
        (
            _minimal(rest='costs:\n  taker_fee: "0.001"\n'),
            ["line 6, costs.taker_fee: Input should be a valid number", "without quotes"],
        ),
        (
            _minimal().replace('name: "x"', "name: 2024"),
            ["line 2, experiment.name: Input should be a valid string", "quote it"],
        ),
        (
            _minimal(data="  start: 2024-01-05 00:00:00\n"),
            ["line 5, data.start: a date without a time is required (YYYY-MM-DD)"],
        ),
        (_minimal(data='  start: "2024-01-05T00:00:00Z"\n'), ["line 5, data.start: a date is written YYYY-MM-DD"]),
    ],
    ids=[
        "gpu_id-bool",
        "gpu_id-float",
        "seed-quoted",
        "tickers-string",
        "max_epochs-float",
        "revin-int",
        "taker_fee-quoted",
        "name-int",
        "start-datetime",
        "start-quoted-datetime",
    ],
)
def test_type_coercions_are_rejected(tmp_path: Path, text: str, expected: list[str]) -> None:
    """Strict types: pydantic's lax mode turned each of these into a plausible value silently."""
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "(1 problem(s))" in message, message
    for fragment in expected:
        assert fragment in message, message


def test_strict_types_keep_ints_for_numbers_and_quoted_iso_dates(tmp_path: Path) -> None:
    """An integer is a valid float (`taker_fee: 0`); a date may be quoted (yaml.safe_dump quotes it) but only
    as YYYY-MM-DD: pydantic's lax mode took "2024-01-05T00:00:00Z" and dropped the time."""
    path = tmp_path / "exp.yaml"
    dates = '  source: "binance_historical"\n  start: "2021-03-01"\n  end: 2021-12-31\n'
    costs = "costs:\n  taker_fee: 0\n  max_leverage: 2\n"
    text = USER_EXAMPLE.replace('  source: "binance_historical"\n', dates) + costs
    path.write_text(text)
    config = load_config(path)
    assert config.costs.taker_fee == 0.0 and isinstance(config.costs.taker_fee, float)
    assert config.costs.max_leverage == 2.0
    assert (config.data.start, config.data.end) == (dt.date(2021, 3, 1), dt.date(2021, 12, 31))
    path.write_text(text.replace('start: "2021-03-01"', 'start: "2021-03-01T00:00:00Z"'))
    with pytest.raises(ConfigError, match=r"line 8, data.start: a date is written YYYY-MM-DD"):
        load_config(path)


def test_every_problem_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    text = USER_EXAMPLE.replace("  gpu_id: 0 # RTX 4090\n", "  gpu_id: 0\n  gpuid: 1\n")
    path.write_text(text.replace("weight: 0.6", "weight: 0.7"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "line 4, experiment.gpuid: unknown key; allowed keys here: name, gpu_id, seed" in message
    assert "line 13, models.ensemble: ensemble weights must sum to 1" in message


def test_dagster_cli_through_crypto_lab_is_quiet(tmp_path: Path) -> None:
    """The README's `crypto-lab dagster -- asset materialize` printed a SupersessionWarning and ~40 DEBUG
    events per partition; `dagster dev` also warned about the project's dagster.yaml in the current folder."""
    import os
    import subprocess
    import sys

    config = tmp_path / "quiet.yaml"
    config.write_text(
        f'experiment:\n  name: "quiet"\n  gpu_id: null\n  storage_dir: "{tmp_path / "storage"}"\n'
        'data:\n  tickers: ["BTC/USDT"]\n  start: 2024-01-01\n  end: 2024-01-31\n'
    )
    lab = str(Path(sys.executable).parent / "crypto-lab")
    command = [lab, "dagster", "--config", str(config), "--", "asset", "materialize", "-m", "crypto_assets.definitions"]
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "CRYPTO_ASSETS_CONFIG", "PYTHONWARNINGS")}
    ran = subprocess.run(
        [*command, "--select", "raw_ohlcv", "--partition", "2024-01-01"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output
    assert " - dagster - INFO - " in output and "744 bars fetched" in output  # INFO still shows
    assert "SupersessionWarning" not in output and " - DEBUG - " not in output, output
    assert len(output.strip().splitlines()) <= 5, output  # raw_ohlcv + bars printed 41 lines before
    assert not (PROJECT_ROOT / "dagster.yaml").exists()  # `dagster dev` would warn that DAGSTER_HOME ignores it
