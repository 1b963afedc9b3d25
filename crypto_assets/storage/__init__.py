"""Per-experiment warehouse: Parquet per partition, DuckDB views over the files."""
