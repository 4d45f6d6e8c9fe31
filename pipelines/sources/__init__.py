"""Market data sources: one interface, three implementations.

``SimulatedSource`` (the embedded default), ``CcxtSource`` (any ccxt exchange) and
``FileSource`` (freqtrade directories, CSV, Parquet) all return the warehouse's Arrow schemas.
"""

from pipelines.sources.base import (
    CANDLE_SCHEMA,
    ORDER_BOOK_SCHEMA,
    TRADE_SCHEMA,
    FetchStats,
    Source,
    SourceError,
    candles_checksum,
    fetch_candles,
    table_checksum,
    wall_clock_ms,
)
from pipelines.sources.ccxt_source import CcxtSource, RetryPolicy
from pipelines.sources.file import FileSource
from pipelines.sources.simulated import SimulatedSource

__all__ = [
    "CANDLE_SCHEMA",
    "ORDER_BOOK_SCHEMA",
    "TRADE_SCHEMA",
    "CcxtSource",
    "FetchStats",
    "FileSource",
    "RetryPolicy",
    "SimulatedSource",
    "Source",
    "SourceError",
    "candles_checksum",
    "fetch_candles",
    "table_checksum",
    "wall_clock_ms",
]
