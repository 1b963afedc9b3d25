"""crypto_assets: a crypto-first ML + deep-RL research workbench built as a Dagster asset graph.

The numerical core (config, sources, validation, storage) imports no Dagster; the Dagster wiring lives
in `crypto_assets.orchestration` and `crypto_assets.definitions`.
"""

__version__ = "0.1.0"
