"""Importing candle and trade files: freqtrade data directories, CSV and Parquet.

freqtrade names its files ``PAIR-TIMEFRAME[-CANDLETYPE].feather|json|parquet`` (candles, e.g.
``ETH_BTC-5m.feather``, ``BTC_USDT_USDT-1h-futures.feather``) and ``PAIR-trades.feather``
(public trades). ``ETH_BTC`` becomes the ccxt symbol ``ETH/BTC``, ``BTC_USDT_USDT`` becomes
``BTC/USDT:USDT``. Candle files hold ``date`` (the open time, UTC), open, high, low, close,
volume; a freqtrade ``.json`` file is a list of ``[ts_ms, open, high, low, close, volume]``.

Other CSV/Parquet files need OHLCV columns (any case) and a time column named one of
``date, timestamp, ts, time, open_time, datetime`` (numbers are epoch seconds or ms, text is
ISO 8601; naive text times are taken as UTC); the symbol and timeframe come from the file
name when it follows the freqtrade pattern, else from the caller, else the timeframe is
inferred as the most common spacing.

Rows are imported exactly as they are: nothing is filled, rounded or resampled. Exact
duplicate rows are dropped (and counted); two different rows for one open time are an error
naming the file and the time. Gaps (open times further apart than the timeframe) are
reported, never filled. Every error names the file, also one the parsers raise.

freqtrade's futures files are told apart by their candle type: ``-futures`` (and ``-spot``)
are candles of the traded contract; ``-mark`` files are mark-price candles (table
``mark_candles``) and ``-funding_rate`` files funding rates (table ``funding_rates``, the rate
is in ``open``), so neither collides with the contract's candles of the same symbol and
timeframe. ``-index`` and ``-premiumIndex`` files are refused with a message.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa

from pipelines.resample import TIMEFRAMES_MS, timeframe_ms
from pipelines.sources.base import CANDLE_SCHEMA, TRADE_SCHEMA, TS

if TYPE_CHECKING:
    import duckdb

    from pipelines.collect import SeriesStats
    from warehouse import Settings

FREQTRADE_NAME = re.compile(
    r"^(?P<pair>.+?)-(?P<kind>\d+[smhdwM]|trades)"
    r"(?:-(?P<candle_type>futures|mark|index|premiumIndex|funding_rate|spot))?"
    r"\.(?P<ext>feather|json|json\.gz|parquet|csv)$"
)
TIME_COLUMNS = ("date", "timestamp", "ts", "time", "open_time", "datetime")
OHLCV = ("open", "high", "low", "close", "volume")
SUPPORTED_SUFFIXES = (".feather", ".json", ".parquet", ".csv", ".arrow", ".ipc", ".json.gz")
TRADE_COLUMNS = ("timestamp", "id", "type", "side", "price", "amount", "cost")  # freqtrade order
# what a freqtrade candle type holds: only the traded contract's prices are candles
CANDLE_TYPE_KINDS: dict[str | None, str] = {
    None: "candles",
    "spot": "candles",
    "futures": "candles",
    "mark": "mark_candles",
    "funding_rate": "funding_rates",
    "index": "refused",
    "premiumIndex": "refused",
}
MARK_CANDLE_SCHEMA = pa.schema(
    [
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        *(pa.field(c, pa.float64(), nullable=False) for c in ("open", "high", "low", "close")),
        pa.field("volume", pa.float64()),  # exchanges publish no volume for the mark price
    ]
)
FUNDING_RATE_SCHEMA = pa.schema(
    [
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timeframe", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("funding_rate", pa.float64(), nullable=False),
    ]
)
# what parsers raise on a malformed file; re-raised as ImportError_ naming the file
PARSE_ERRORS = (
    ValueError,
    IndexError,
    TypeError,
    KeyError,
    OverflowError,
    OSError,
    pl.exceptions.PolarsError,
    pa.ArrowException,
)


class ImportError_(ValueError):
    """A file that cannot be imported; the message names the file and the problem."""


@dataclass(frozen=True)
class FileInfo:
    path: Path
    kind: str  # candles | trades | mark_candles | funding_rates | refused
    symbol: str | None
    timeframe: str | None
    candle_type: str | None = None  # freqtrade's: futures, mark, funding_rate, ...


@dataclass(frozen=True)
class ImportReport:
    path: str
    kind: str
    symbol: str
    timeframe: str | None
    rows: int
    first_ts: str | None
    last_ts: str | None
    duplicates_dropped: int
    gaps: int  # number of holes between consecutive candles
    missing_bars: int  # bars inside those holes (not filled)
    largest_gap_bars: int

    def summary(self) -> str:
        what = {
            "candles": f"{self.symbol} {self.timeframe}",
            "trades": f"{self.symbol} trades",
        }.get(self.kind, f"{self.symbol} {self.timeframe} {self.kind}")
        text = f"{Path(self.path).name}: {what}: {self.rows} rows {self.first_ts} .. {self.last_ts}"
        if self.kind == "candles":
            text += (
                f"; {self.gaps} gaps ({self.missing_bars} missing bars, "
                f"largest {self.largest_gap_bars})"
            )
        if self.duplicates_dropped:
            text += f"; {self.duplicates_dropped} duplicate rows dropped"
        return text


def pair_to_symbol(pair: str) -> str:
    """freqtrade's file pair (``ETH_BTC``, ``BTC_USDT_USDT``) to a ccxt symbol."""
    parts = pair.split("_")
    if len(parts) == 2:
        return f"{parts[0]}/{parts[1]}"
    if len(parts) == 3:
        return f"{parts[0]}/{parts[1]}:{parts[2]}"
    raise ImportError_(f"cannot read a symbol from the file pair {pair!r} (expected BASE_QUOTE)")


def describe(path: Path) -> FileInfo:
    m = FREQTRADE_NAME.match(path.name)
    if not m:
        return FileInfo(path, "candles", None, None)
    symbol = pair_to_symbol(m["pair"])
    if m["kind"] == "trades":
        return FileInfo(path, "trades", symbol, None)
    candle_type = m["candle_type"]
    return FileInfo(path, CANDLE_TYPE_KINDS[candle_type], symbol, m["kind"], candle_type)


_T = TypeVar("_T")


def _naming(path: Path, read: Callable[[], _T]) -> _T:
    """``read()``, with any parser error re-raised as an ImportError_ that names the file."""
    try:
        return read()
    except ImportError_:
        raise
    except PARSE_ERRORS as exc:
        raise ImportError_(f"{path}: cannot import: {type(exc).__name__}: {exc}") from exc


def discover(path: Path) -> list[FileInfo]:
    """The importable files at ``path`` (a file, or every supported file in a directory tree)."""
    path = Path(path)
    if not path.exists():
        raise ImportError_(f"{path}: no such file or directory")
    if path.is_file():
        return [describe(path)]
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUPPORTED_SUFFIXES)
    )
    return [describe(p) for p in files]


def _read_any(path: Path, *, trades: bool = False) -> pl.DataFrame:
    suffix = ".json" if path.name.lower().endswith(".json.gz") else path.suffix.lower()
    try:
        if suffix in (".feather", ".arrow", ".ipc"):
            import pyarrow.feather as feather

            frame = pl.from_arrow(feather.read_table(path))
            assert isinstance(frame, pl.DataFrame)
            return frame
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix == ".csv":
            return pl.read_csv(path, try_parse_dates=False, infer_schema_length=10_000)
        if suffix == ".json":
            raw = path.read_bytes()
            data = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
            if trades and isinstance(data, list) and data and isinstance(data[0], list):
                return pl.DataFrame(data, schema=list(TRADE_COLUMNS), orient="row", strict=False)
            if isinstance(data, list) and data and isinstance(data[0], list):
                arr = np.asarray(data, dtype=np.float64)
                if arr.ndim != 2 or arr.shape[1] < 6:
                    raise ImportError_(
                        f"{path}: a freqtrade candle row is [ts_ms, open, high, low, close, "
                        f"volume]; found rows of {arr.shape[-1] if arr.ndim else 0} value(s)"
                    )
                return pl.DataFrame(
                    {
                        "date": arr[:, 0].astype(np.int64),
                        **{c: arr[:, i + 1] for i, c in enumerate(OHLCV)},
                    }
                )
            return pl.DataFrame(data)
    except ImportError_:
        raise
    except PARSE_ERRORS as exc:
        raise ImportError_(f"{path}: cannot read: {exc}") from exc
    raise ImportError_(f"{path}: unsupported file type {suffix!r}")


def _time_column(df: pl.DataFrame, path: Path) -> pl.Series:
    lower = {c.lower(): c for c in df.columns}
    name = next((lower[c] for c in TIME_COLUMNS if c in lower), None)
    if name is None:
        raise ImportError_(
            f"{path}: no time column (one of {', '.join(TIME_COLUMNS)}) in {df.columns}"
        )
    col = df[name]
    if col.dtype == pl.String:
        parsed = col.str.to_datetime(time_unit="ms", strict=False, time_zone="UTC")
        if parsed.null_count() > col.null_count():
            bad = col.filter(parsed.is_null() & col.is_not_null())[0]
            raise ImportError_(f"{path}: column {name!r}: cannot parse time {bad!r}")
        col = parsed
    if col.dtype.is_numeric():
        values = col.cast(pl.Int64)
        top = int(values.abs().max() or 0) if values.len() else 0  # type: ignore[arg-type]
        col = pl.from_epoch(values, time_unit=epoch_unit(top)).dt.replace_time_zone("UTC")
    if not isinstance(col.dtype, pl.Datetime):
        raise ImportError_(f"{path}: column {name!r} has type {col.dtype}, not a time")
    if col.dtype.time_zone is None:
        col = col.dt.replace_time_zone("UTC")
    if col.null_count():
        raise ImportError_(f"{path}: column {name!r} has {col.null_count()} empty times")
    return col.dt.convert_time_zone("UTC").dt.cast_time_unit("ms").alias("ts")


def interval_ms(timeframe: str, path: Path) -> int:
    """Milliseconds in any ``<n>m|h|d|w`` interval (mark prices and funding come every 8h)."""
    m = re.fullmatch(r"([1-9][0-9]*)([mhdw])", timeframe)
    if m is None:
        raise ImportError_(f"{path}: {timeframe!r} is not an interval like 1h or 8h")
    return int(m[1]) * {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}[m[2]]


def epoch_unit(top: int) -> Literal["s", "ms", "us", "ns"]:
    """The unit of epoch numbers whose largest magnitude is ``top``: seconds below 1e11 (year
    5138), milliseconds below 1e14, microseconds below 1e17, else nanoseconds (pandas and
    numpy write datetime64[ns] as integers)."""
    if top < 10**11:
        return "s"
    if top < 10**14:
        return "ms"
    return "us" if top < 10**17 else "ns"


def _infer_timeframe(ts_ms: np.ndarray, path: Path) -> str:
    diffs = np.diff(np.unique(ts_ms))
    if diffs.size == 0:
        raise ImportError_(
            f"{path}: cannot infer the timeframe from {ts_ms.size} row(s); pass --timeframe"
        )
    values, counts = np.unique(diffs, return_counts=True)
    step = int(values[np.argmax(counts)])
    for name, ms in TIMEFRAMES_MS.items():
        if ms == step:
            return name
    raise ImportError_(
        f"{path}: most common spacing {step} ms is not a known timeframe; pass --timeframe"
    )


def gap_stats(ts_ms: np.ndarray, step_ms: int) -> tuple[int, int, int]:
    """(holes, missing bars, largest hole in bars) in sorted open times."""
    if ts_ms.size < 2:
        return 0, 0, 0
    missing = np.diff(ts_ms) // step_ms - 1
    holes = missing[missing > 0]
    return int(holes.size), int(holes.sum()), int(holes.max()) if holes.size else 0


def read_candles(
    path: Path, *, exchange: str, symbol: str | None = None, timeframe: str | None = None
) -> tuple[pa.Table, ImportReport]:
    """One candle file as a warehouse-schema table (sorted by time) and its report."""
    return _naming(
        Path(path), lambda: _read_candles(Path(path), exchange, symbol, timeframe, "candles")
    )


def read_mark_candles(
    path: Path, *, exchange: str, symbol: str | None = None, timeframe: str | None = None
) -> tuple[pa.Table, ImportReport]:
    """A freqtrade ``-mark`` file: mark-price candles for ``mark_candles`` (volume may be null)."""
    return _naming(
        Path(path), lambda: _read_candles(Path(path), exchange, symbol, timeframe, "mark_candles")
    )


def _read_candles(
    path: Path, exchange: str, symbol: str | None, timeframe: str | None, kind: str
) -> tuple[pa.Table, ImportReport]:
    info = describe(path)
    symbol = symbol or info.symbol
    if symbol is None:
        raise ImportError_(
            f"{path}: the file name does not say the symbol (PAIR-TIMEFRAME.ext); pass --symbol"
        )
    df = _read_any(path)
    lower = {c.lower(): c for c in df.columns}
    missing = [c for c in OHLCV if c not in lower]
    if missing:
        raise ImportError_(f"{path}: missing column(s) {', '.join(missing)}; found {df.columns}")
    ts = _time_column(df, path)
    frame = pl.DataFrame(
        [ts, *(df[lower[c]].cast(pl.Float64, strict=False).alias(c) for c in OHLCV)]
    )
    for c in OHLCV:
        if c == "volume" and kind == "mark_candles" and df[lower[c]].null_count() == df.height:
            continue  # freqtrade writes the mark price's volume as null
        bad = frame.filter(pl.col(c).is_null() & df[lower[c]].is_not_null())
        if bad.height:
            raise ImportError_(
                f"{path}: column {c!r} has a value that is not a number at {bad['ts'][0]}"
            )
    ts_ms = frame["ts"].dt.epoch("ms").to_numpy()
    timeframe = timeframe or info.timeframe or _infer_timeframe(ts_ms, path)
    # mark prices also come at the funding interval (8h), which no candle series uses
    step = timeframe_ms(timeframe) if kind == "candles" else interval_ms(timeframe, path)
    before = frame.height
    frame = frame.unique(maintain_order=True).sort("ts")
    duplicates = before - frame.height
    clash = frame.filter(pl.col("ts").is_duplicated())
    if clash.height:
        raise ImportError_(f"{path}: two different candles for open time {clash['ts'][0]}")
    off_grid = frame.filter(pl.col("ts").dt.epoch("ms") % step != 0)
    if off_grid.height:
        raise ImportError_(f"{path}: open time {off_grid['ts'][0]} is not on the {timeframe} grid")
    ts_ms = frame["ts"].dt.epoch("ms").to_numpy()
    holes, missing_bars, largest = gap_stats(ts_ms, step)
    n = frame.height
    table = pa.table(
        {
            "exchange": pa.array([exchange] * n, pa.string()),
            "symbol": pa.array([symbol] * n, pa.string()),
            "timeframe": pa.array([timeframe] * n, pa.string()),
            "ts": frame["ts"].to_arrow(),
            **{c: frame[c].to_arrow() for c in OHLCV},
        }
    ).cast(MARK_CANDLE_SCHEMA if kind == "mark_candles" else CANDLE_SCHEMA)
    report = ImportReport(
        path=str(path),
        kind=kind,
        symbol=symbol,
        timeframe=timeframe,
        rows=n,
        first_ts=str(frame["ts"][0]) if n else None,
        last_ts=str(frame["ts"][-1]) if n else None,
        duplicates_dropped=duplicates,
        gaps=holes,
        missing_bars=missing_bars,
        largest_gap_bars=largest,
    )
    return table, report


def read_funding_rates(
    path: Path, *, exchange: str, symbol: str | None = None, timeframe: str | None = None
) -> tuple[pa.Table, ImportReport]:
    """A freqtrade ``-funding_rate`` file (the rate in ``open``; or a ``funding_rate``/``rate``
    column) for ``funding_rates``. Times are kept as the exchange stamped them."""
    return _naming(Path(path), lambda: _read_funding_rates(Path(path), exchange, symbol, timeframe))


def _read_funding_rates(
    path: Path, exchange: str, symbol: str | None, timeframe: str | None
) -> tuple[pa.Table, ImportReport]:
    info = describe(path)
    symbol = symbol or info.symbol
    timeframe = timeframe or info.timeframe
    if symbol is None or timeframe is None:
        raise ImportError_(
            f"{path}: the file name does not say the symbol and funding interval "
            "(PAIR-8h-funding_rate.ext); pass --symbol and --timeframe"
        )
    df = _read_any(path)
    lower = {c.lower(): c for c in df.columns}
    names = ("funding_rate", "fundingrate", "rate", "open")
    rate_column = next((lower[c] for c in names if c in lower), None)
    if rate_column is None:
        raise ImportError_(
            f"{path}: no funding rate column (open, funding_rate or rate) in {df.columns}"
        )
    rate = df[rate_column].cast(pl.Float64, strict=False).alias("funding_rate")
    frame = pl.DataFrame([_time_column(df, path), rate])
    bad = frame.filter(~pl.col("funding_rate").is_finite() | pl.col("funding_rate").is_null())
    if bad.height:
        raise ImportError_(
            f"{path}: column {rate_column!r} has a rate that is not a finite number at "
            f"{bad['ts'][0]} ({bad['funding_rate'][0]})"
        )
    before = frame.height
    frame = frame.unique(maintain_order=True).sort("ts")
    clash = frame.filter(pl.col("ts").is_duplicated())
    if clash.height:
        raise ImportError_(f"{path}: two different funding rates at {clash['ts'][0]}")
    n = frame.height
    table = pa.table(
        {
            "exchange": pa.array([exchange] * n, pa.string()),
            "symbol": pa.array([symbol] * n, pa.string()),
            "timeframe": pa.array([timeframe] * n, pa.string()),
            "ts": frame["ts"].to_arrow(),
            "funding_rate": frame["funding_rate"].to_arrow(),
        }
    ).cast(FUNDING_RATE_SCHEMA)
    report = ImportReport(
        path=str(path),
        kind="funding_rates",
        symbol=symbol,
        timeframe=timeframe,
        rows=n,
        first_ts=str(frame["ts"][0]) if n else None,
        last_ts=str(frame["ts"][-1]) if n else None,
        duplicates_dropped=before - n,
        gaps=0,
        missing_bars=0,
        largest_gap_bars=0,
    )
    return table, report


def read_trades(
    path: Path, *, exchange: str, symbol: str | None = None
) -> tuple[pa.Table, ImportReport]:
    """A freqtrade trades file (timestamp ms, id, type, side, price, amount, cost)."""
    return _naming(Path(path), lambda: _read_trades(Path(path), exchange, symbol))


def _read_trades(path: Path, exchange: str, symbol: str | None) -> tuple[pa.Table, ImportReport]:
    symbol = symbol or describe(path).symbol
    if symbol is None:
        raise ImportError_(
            f"{path}: the file name does not say the symbol (PAIR-trades.ext); pass --symbol"
        )
    df = _read_any(path, trades=True)
    needed = ("timestamp", "id", "price", "amount")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ImportError_(
            f"{path}: missing trade column(s) {', '.join(missing)}; found {df.columns}"
        )
    before = df.height
    df = df.unique(subset=["id"], keep="first", maintain_order=True).sort("timestamp", "id")
    n = df.height
    ts = _time_column(df.select("timestamp"), path)
    table = pa.table(
        {
            "exchange": pa.array([exchange] * n, pa.string()),
            "symbol": pa.array([symbol] * n, pa.string()),
            "trade_id": df["id"].cast(pl.String).to_arrow(),
            "ts": ts.to_arrow(),
            "side": (
                df["side"].cast(pl.String)
                if "side" in df.columns
                else pl.Series([None] * n, dtype=pl.String)
            ).to_arrow(),
            "price": df["price"].cast(pl.Float64).to_arrow(),
            "amount": df["amount"].cast(pl.Float64).to_arrow(),
            "cost": (
                df["cost"].cast(pl.Float64) if "cost" in df.columns else df["price"] * df["amount"]
            ).to_arrow(),
        }
    ).cast(TRADE_SCHEMA)
    report = ImportReport(
        path=str(path),
        kind="trades",
        symbol=symbol,
        timeframe=None,
        rows=n,
        first_ts=str(ts[0]) if n else None,
        last_ts=str(ts[-1]) if n else None,
        duplicates_dropped=before - n,
        gaps=0,
        missing_bars=0,
        largest_gap_bars=0,
    )
    return table, report


def iter_import(
    path: Path,
    *,
    exchange: str,
    symbol: str | None = None,
    timeframe: str | None = None,
    failures: list[str] | None = None,
) -> Iterator[tuple[FileInfo, pa.Table, ImportReport]]:
    """Every importable file under ``path``: (what it is, its rows, its report).

    ``failures``: where a file that cannot be read is reported (its error names it), so one
    bad file of a directory does not stop the good ones; without it the error is raised."""
    readers = {
        "candles": read_candles,
        "mark_candles": read_mark_candles,
        "funding_rates": read_funding_rates,
    }
    for info in discover(path):
        try:
            if info.kind == "refused":
                raise ImportError_(
                    f"{info.path}: freqtrade {info.candle_type} candles are not imported "
                    "(a price index, not a traded series, and no table holds it)"
                )
            if info.kind == "trades":
                table, report = read_trades(info.path, exchange=exchange, symbol=symbol)
            else:
                table, report = readers[info.kind](
                    info.path, exchange=exchange, symbol=symbol, timeframe=timeframe
                )
        except ImportError_ as exc:
            if failures is None:
                raise
            failures.append(str(exc))
            continue
        yield info, table, report


SIDE_TABLES = ("mark_candles", "funding_rates")  # imported beside candles, gated (docs/futures.md)


def merge_side_tables(
    con: duckdb.DuckDBPyConnection,
    batches: list[tuple[str, pa.Table, ImportReport]],
    *,
    settings: Settings,
    source_kind: str = "file",
) -> list[SeriesStats]:
    """Gate and merge mark candles and funding rates into their own tables, each with its
    quality suite and quarantine (``expectations.gate``; idempotent: a re-import writes
    nothing new) and return one ``ingestion_runs`` entry per file. Their timeframe in
    ``ingestion_runs`` reads ``<interval> <table>`` (``8h funding_rates``), so it never shares a
    key with the contract's candles of the same interval."""
    from expectations.gate import gate_and_merge
    from pipelines.collect import SeriesStats
    from pipelines.futures_collect import written

    out: list[SeriesStats] = []
    for table_name, batch, report in batches:
        started = time.perf_counter()
        stats = SeriesStats(
            source_kind,
            str(batch["exchange"][0]) if batch.num_rows else "file",
            report.symbol,
            f"{report.timeframe} {table_name}",
            started_at=dt.datetime.now(dt.UTC),
        )
        stats.fetch.rows = batch.num_rows
        stats.fetch.requests = 1
        stats.fetch.duplicates_dropped = report.duplicates_dropped
        if batch.num_rows:
            ts = batch["ts"].cast(pa.int64()).to_numpy()
            stats.first_ts_ms, stats.last_ts_ms = int(ts[0]), int(ts[-1])
            stats.window_start_ms, stats.window_end_ms = int(ts[0]), int(ts[-1]) + 1
            result = gate_and_merge(con, table_name, batch, settings=settings)
            stats.rows_merged = result.rows_merged
            stats.rows_quarantined = result.rows_quarantined
            stats.warnings = list(result.warnings)
            stats.status = "ok" if result.success else "failed"
            new = written(con, result)
            stats.message = (
                f"{table_name}: {new} written, {result.rows_merged - new} unchanged, "
                f"{result.rows_quarantined} quarantined"
            )
        stats.finished_at = dt.datetime.now(dt.UTC)
        stats.seconds = time.perf_counter() - started
        out.append(stats)
    return out
