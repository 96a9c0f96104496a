"""Market data: the local Parquet store (DuckDB queries, versioned manifest) and the embedded sample."""

from hflite.data.sample import SAMPLE_DIR, ensure_sample, sample_series, sample_symbols
from hflite.data.store import (
    DataNotFoundError,
    PartitionInfo,
    Store,
    bars_key,
    render_partitions_table,
    series_key,
    table_key,
)

__all__ = [
    "SAMPLE_DIR",
    "DataNotFoundError",
    "PartitionInfo",
    "Store",
    "bars_key",
    "ensure_sample",
    "render_partitions_table",
    "sample_series",
    "sample_symbols",
    "series_key",
    "table_key",
]
