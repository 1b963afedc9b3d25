# Quick start: `make demo` then `make test`; each creates the virtual environment it needs.
VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
CONFIG ?= configs/demo.yaml
PY := $(VENV)/bin/python
LAB := $(VENV)/bin/crypto-lab
STAMP := $(VENV)/.installed

.PHONY: install lint demo test ui benchmarks clean-storage

# pip -qq: errors only (setuptools prints a 10-line notice on every editable install). The install also
# puts the `duckdb` command the README uses into $(VENV)/bin (the duckdb-cli package).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --quiet --upgrade pip
	$(PY) -m pip install --quiet --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Ingest and validate the demo experiment end to end on its persistent Dagster instance.
demo: install
	$(LAB) run --config configs/demo.yaml

# Static checks (CI runs them through `make test`): ruff lint and format, mypy over the package.
lint: install
	$(VENV)/bin/ruff check crypto_assets crypto_assets_tests benchmarks
	$(VENV)/bin/ruff format --check crypto_assets crypto_assets_tests benchmarks
	$(VENV)/bin/mypy

# The static checks, then the whole suite (unit, Dagster asset, local-exchange and real-data tests); no network.
test: lint
	$(PY) -m pytest -n 2 --dist loadgroup -q

# Dagster UI on the experiment's own instance (CONFIG=configs/csv.yaml make ui for another one).
ui: install
	$(LAB) dagster --config $(CONFIG) -- dev -w workspace.yaml

benchmarks: install
	$(PY) benchmarks/csv_to_bars.py
	$(PY) benchmarks/dagster_backfill.py
	$(PY) benchmarks/ccxt_ingest.py
	$(PY) benchmarks/features_throughput.py
	$(PY) benchmarks/env_throughput.py
	$(PY) benchmarks/forecaster_training.py
	@echo "backtest vs vectorbt needs its own environment: see benchmarks/backtest_vs_vectorbt.py"

clean-storage:
	rm -rf storage/*/
