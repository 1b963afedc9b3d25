"""OHLCV sources (synthetic, CSV archive, ccxt exchange), all producing `RAW_SCHEMA` frames."""
