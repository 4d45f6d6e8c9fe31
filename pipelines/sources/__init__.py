"""Market data sources: one interface, three implementations.

``SimulatedSource`` (the embedded default), ``CcxtSource`` (any ccxt exchange) and
``FileSource`` (freqtrade directories, CSV, Parquet) all return the warehouse's Arrow schemas.

The implementations are imported on first use (``pipelines.sources.CcxtSource`` imports
ccxt, ``SimulatedSource`` scipy): a process that only imports files pays for neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipelines.sources.base import (
    CANDLE_SCHEMA,
    ORDER_BOOK_SCHEMA,
    TRADE_SCHEMA,
    FetchStats,
    RetryPolicy,
    Source,
    SourceError,
    candles_checksum,
    fetch_candles,
    table_checksum,
    wall_clock_ms,
)

if TYPE_CHECKING:
    from pipelines.sources.ccxt_source import CcxtSource
    from pipelines.sources.file import FileSource
    from pipelines.sources.simulated import SimulatedSource

_LAZY = {
    "CcxtSource": "pipelines.sources.ccxt_source",
    "FileSource": "pipelines.sources.file",
    "SimulatedSource": "pipelines.sources.simulated",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
