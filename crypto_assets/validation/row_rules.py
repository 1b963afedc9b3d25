"""Row-level hard rules shared by every source and by bar validation.

Each rule returns the offending rows (0-based `row` in the frame as given) so a caller that knows
where the rows came from (a CSV file, an exchange response) can name the file and line.
"""

from __future__ import annotations

import polars as pl

PRICE_COLUMNS = ("open", "high", "low", "close")


def ohlc_violations(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows breaking: prices finite and > 0; volume finite and ≥ 0; low ≤ min(open, close);
    max(open, close) ≤ high. One output row per (row, broken rule), sorted by row."""
    indexed = frame.with_row_index("row")
    checks: list[tuple[str, pl.Expr, str]] = [
        *(
            (col, ~(pl.col(col).is_finite() & (pl.col(col) > 0)), f"{col} must be a finite price > 0")
            for col in PRICE_COLUMNS
        ),
        ("volume", ~(pl.col("volume").is_finite() & (pl.col("volume") >= 0)), "volume must be finite and >= 0"),
        ("low", pl.col("low") > pl.min_horizontal("open", "close"), "low must be <= min(open, close)"),
        ("high", pl.col("high") < pl.max_horizontal("open", "close"), "high must be >= max(open, close)"),
    ]
    parts = [
        indexed.filter(bad.fill_null(True)).select(
            "row",
            pl.lit(col).alias("column"),
            pl.lit(rule).alias("rule"),
            pl.col(col).cast(pl.Float64).alias("value"),
        )
        for col, bad, rule in checks
    ]
    return pl.concat(parts).sort("row", maintain_order=True)


def order_violations(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows whose `ts` repeats or goes backwards within the same symbol, in the frame's own order
    (a file's order matters: sorting first would hide an unsorted file)."""
    prev = pl.col("prev_ts")
    indexed = frame.with_row_index("row").with_columns(pl.col("ts").shift(1).over("symbol").alias("prev_ts"))
    return indexed.filter(pl.col("ts") <= prev).select(
        "row",
        pl.lit("ts").alias("column"),
        pl.when(pl.col("ts") == prev)
        .then(pl.lit("duplicate timestamp"))
        .otherwise(pl.lit("timestamp earlier than the previous row (unsorted)"))
        .alias("rule"),
        pl.col("ts").dt.epoch("ms").cast(pl.Float64).alias("value"),
    )
