"""Market data: the local Parquet store (DuckDB queries, versioned manifest, archive tier, news and
point-in-time fundamentals and macro) and the embedded sample."""

from hflite.data.sample import SAMPLE_DIR, ensure_sample, sample_series, sample_symbols
from hflite.data.store import (
    RELEASE_LAGS,
    ArchivedPartition,
    DataIntegrityError,
    DataNotFoundError,
    PartitionInfo,
    ReleaseLag,
    Repair,
    Store,
    StoreError,
    bars_key,
    fundamentals_key,
    known_at,
    news_key,
    render_partitions_table,
    series_key,
    table_key,
)

__all__ = [
    "RELEASE_LAGS",
    "SAMPLE_DIR",
    "ArchivedPartition",
    "DataIntegrityError",
    "DataNotFoundError",
    "PartitionInfo",
    "ReleaseLag",
    "Repair",
    "Store",
    "StoreError",
    "bars_key",
    "ensure_sample",
    "fundamentals_key",
    "known_at",
    "news_key",
    "render_partitions_table",
    "sample_series",
    "sample_symbols",
    "series_key",
    "table_key",
]
