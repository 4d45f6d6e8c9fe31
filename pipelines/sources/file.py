"""Candle and trade files (freqtrade directories, CSV, Parquet) as a source."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.resample import resample_arrow
from pipelines.sources.base import CANDLE_SCHEMA, TRADE_SCHEMA, TS, FetchStats, SourceError

if TYPE_CHECKING:
    from pipelines.importers import ImportReport


@dataclass
class FileSource:
    """Serves what the files under ``path`` hold; 1m files also give 5m/15m/1h by resampling."""

    path: Path
    name: str = "file"
    symbol: str | None = None
    timeframe: str | None = None
    reports: list[ImportReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # files of a directory that failed
    # mark candles and funding rates: (table, rows, report), merged beside the candles
    side_tables: list[tuple[str, pa.Table, ImportReport]] = field(default_factory=list)
    _duplicates: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)
    _candles: dict[tuple[str, str], pa.Table] = field(default_factory=dict, repr=False)
    _trades: dict[str, pa.Table] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from pipelines.importers import iter_import  # importers import this package

        directory = Path(self.path).is_dir()
        for info, table, report in iter_import(
            Path(self.path),
            exchange=self.name,
            symbol=self.symbol,
            timeframe=self.timeframe,
            failures=self.failures if directory else None,
        ):
            self.reports.append(report)
            if info.kind == "trades":
                self._trades[report.symbol] = table
                self._duplicates[(report.symbol, "trades")] = report.duplicates_dropped
            elif info.kind == "candles":
                assert report.timeframe is not None
                self._candles[(report.symbol, report.timeframe)] = table
                self._duplicates[(report.symbol, report.timeframe)] = report.duplicates_dropped
            else:
                self.side_tables.append((info.kind, table, report))

    @property
    def series(self) -> list[tuple[str, str]]:
        return sorted(self._candles)

    @property
    def trade_symbols(self) -> list[str]:
        return sorted(self._trades)

    def _table(self, symbol: str, timeframe: str) -> pa.Table:
        if (symbol, timeframe) in self._candles:
            return self._candles[(symbol, timeframe)]
        if (symbol, "1m") in self._candles:
            return resample_arrow(self._candles[(symbol, "1m")], timeframe)
        raise SourceError(
            f"no {timeframe} candles for {symbol} under {self.path} (have {self.series})"
        )

    def iter_candles(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int,
        until_ms: int | None,
        *,
        stats: FetchStats | None = None,
    ) -> Iterator[pa.Table]:
        table = self._table(symbol, timeframe)
        ts = table["ts"]
        mask = pc.greater_equal(ts, pa.scalar(since_ms, TS))
        if until_ms is not None:
            mask = pc.and_(mask, pc.less(ts, pa.scalar(until_ms, TS)))
        out = table.filter(mask).cast(CANDLE_SCHEMA)
        if stats is not None:
            # the file's exact duplicate rows, counted once for the series (ingestion_runs)
            stats.duplicates_dropped += self._duplicates.pop((symbol, timeframe), 0)
            stats.requests += 1
            stats.pages += 1
            stats.rows += out.num_rows
        if out.num_rows:
            yield out

    def fetch_order_book(self, symbol: str, *, depth: int = 20) -> pa.Table:
        raise SourceError(f"files hold no order books ({self.path})")

    def fetch_trades(
        self, symbol: str, since_ms: int, until_ms: int | None, *, stats: FetchStats | None = None
    ) -> pa.Table:
        if symbol not in self._trades:
            return TRADE_SCHEMA.empty_table()
        table = self._trades[symbol]
        if stats is not None:
            stats.duplicates_dropped += self._duplicates.pop((symbol, "trades"), 0)
        mask = pc.greater_equal(table["ts"], pa.scalar(since_ms, TS))
        if until_ms is not None:
            mask = pc.and_(mask, pc.less(table["ts"], pa.scalar(until_ms, TS)))
        out = table.filter(mask)
        if stats is not None:  # rows_fetched of ingestion_runs (was 0 for trade files)
            stats.requests += 1
            stats.rows += out.num_rows
        return out

    def close(self) -> None:
        return None
