"""Column contracts: the raw frame every source produces (checked with pandera) and the `bars` table.

Pandera (polars backend) checks the WHOLE frame: column presence, exact dtypes (so `ts` must be
`Datetime("us", "UTC")`: a naive or non-UTC timestamp fails) and non-null values in every column.
Measured on 148k rows (3 symbols × 5 years of 1h bars): ~4 ms, so there is no need to sample.
Pandera's non-null check on float columns also rejects NaN (a missing value, whatever polars calls
it); infinities and non-positive prices are the `ohlc_consistency` rule's business.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from crypto_assets.sources.base import RAW_SCHEMA
from crypto_assets.validation.report import SAMPLE_ROWS, RuleResult

FLAG_SCHEMA: dict[str, pl.DataType] = {
    "is_filled": pl.Boolean(),  # a bar the exchange never published, forward-filled (gap_policy ffill)
    "is_wick_outlier": pl.Boolean(),  # a lone wick far beyond trailing volatility and the other symbols'
    "is_illiquid": pl.Boolean(),  # the bar's symbol-day traded too little (dollar volume / Amihud)
}
BARS_SCHEMA: dict[str, pl.DataType] = {**RAW_SCHEMA, **FLAG_SCHEMA}
BARS_COLUMNS: list[str] = list(BARS_SCHEMA)

# strict=False: extra columns are tolerated here and dropped from `bars`; the output never carries them.
RAW_PANDERA_SCHEMA = pa.DataFrameSchema(
    {name: pa.Column(dtype, nullable=False) for name, dtype in RAW_SCHEMA.items()},
    name="raw_ohlcv",
    strict=False,
)
SCHEMA_SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "column": pl.String(),
    "check": pl.String(),
    "failure_case": pl.String(),
    "row": pl.Int64(),
}


def check_schema(raw: pl.DataFrame) -> RuleResult:
    """Rule `schema` (error): columns present, dtypes exact, no nulls, validated lazily so every
    failure is collected. Samples: (column, check, failure_case, row); `row` is null for
    frame-level failures such as a missing column or a wrong dtype."""
    try:
        RAW_PANDERA_SCHEMA.validate(raw, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        samples = cases.select(
            # frame-level failures (a missing column) name the schema as "column": name the column instead
            pl.when(pl.col("schema_context") == "DataFrameSchema")
            .then(pl.col("failure_case").cast(pl.String))
            .otherwise(pl.col("column").cast(pl.String))
            .alias("column"),
            pl.col("check").cast(pl.String),
            pl.col("failure_case").cast(pl.String),
            pl.col("index").cast(pl.Int64).alias("row"),
        )
        summary = samples.group_by("column", "check", maintain_order=True).len()
        parts = [f"{c}: {chk} ×{n}" if n > 1 else f"{c}: {chk}" for c, chk, n in summary.iter_rows()]
        return RuleResult(
            name="schema",
            passed=False,
            severity="error",
            message=f"{len(samples)} schema failure(s) — " + "; ".join(parts),
            failures=len(samples),
            samples=samples.head(SAMPLE_ROWS),
        )
    return RuleResult(
        name="schema",
        passed=True,
        severity="error",
        message=f"{raw.height} rows; columns, dtypes and non-null values as RAW_SCHEMA",
        failures=0,
        samples=pl.DataFrame(schema=SCHEMA_SAMPLE_SCHEMA),
    )
