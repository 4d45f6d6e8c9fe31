"""Incremental rebuild of the warehouse ``features`` table for one exchange/symbol/timeframe.

Only candles newer than the last stored feature row (of the current feature-set version) are
computed, reading back just enough history to warm every window up: the warm-up of each
timeframe graph is derived from the spec (sum of windows along the longest path; recursive
operators count the bars after which their seed weighs less than ``SEED_WEIGHT``), and the
read starts on an hour boundary so higher-timeframe candles are whole. The result equals a
full rebuild (to rounding: recursive indicators forget the seed geometrically).

The write step is a parameter (``merge``): by default a plain ``warehouse.upsert``; the
``features`` flow passes ``expectations.feature_gate.gate_features``, which writes rows that
fail the feature suite to ``quarantine`` instead of ``features`` (counted in
``RebuildResult.rows_quarantined``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import polars as pl

from pipelines.features.batch import build_features, timeframe_ms
from pipelines.features.spec import (
    FEATURE_SET_VERSION,
    HIGHER_TIMEFRAMES,
    Graph,
    base_graph,
    higher_graph,
)
from pipelines.progress import Progress, current
from warehouse import Settings, WriteResult, upsert

SEED_WEIGHT = 1e-13
_ALIGN_MS = 3_600_000


@dataclass(frozen=True)
class RebuildResult:
    exchange: str
    symbol: str
    timeframe: str
    mode: str  # "full" | "incremental" | "up to date"
    candles_read: int
    rows_computed: int
    write: WriteResult
    rows_quarantined: int = 0  # computed rows that failed the feature suite (not written)


FeatureMerge = Callable[[duckdb.DuckDBPyConnection, pl.DataFrame], tuple[WriteResult, int]]


def upsert_features(settings: Settings) -> FeatureMerge:
    """A merge step that writes every computed row through ``warehouse.upsert``."""

    def merge(con: duckdb.DuckDBPyConnection, features: pl.DataFrame) -> tuple[WriteResult, int]:
        return upsert(con, "features", features.to_arrow(), settings=settings), 0

    return merge


def warmup_bars(graph: Graph) -> int:
    """Bars of history after which every node of ``graph`` no longer depends on older data."""
    need: dict[str, int] = {name: 0 for name in graph.inputs}
    for node in graph.nodes:
        base = max((need[x] for x in node.inputs), default=0)
        n = node.window or 0
        if node.op in ("ema", "wilder"):
            alpha = 2.0 / (n + 1.0) if node.op == "ema" else 1.0 / n
            n += math.ceil(math.log(SEED_WEIGHT) / math.log(1.0 - alpha))
        need[node.name] = base + n
    return max(need.values(), default=0)


def history_start_ms(first_new_ms: int, timeframe: str) -> int:
    """The earliest candle open time the features of ``first_new_ms`` onward depend on."""
    step = timeframe_ms(timeframe)
    start = first_new_ms - warmup_bars(base_graph()) * step
    higher = warmup_bars(higher_graph())
    for tf in HIGHER_TIMEFRAMES:
        h = timeframe_ms(tf)
        if h >= step:
            start = min(start, first_new_ms // h * h - (higher + 1) * h)
    return start // _ALIGN_MS * _ALIGN_MS


def list_series(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    """Every (exchange, symbol, timeframe) that has candles."""
    rows = con.execute(
        "SELECT DISTINCT exchange, symbol, timeframe FROM candles ORDER BY ALL"
    ).fetchall()
    return [(str(e), str(s), str(t)) for e, s, t in rows]


def _read(con: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> pl.DataFrame:
    return pl.from_arrow(con.execute(sql, params).fetch_arrow_table())  # type: ignore[return-value]


def rebuild_features(
    con: duckdb.DuckDBPyConnection,
    *,
    exchange: str,
    symbol: str,
    timeframe: str,
    settings: Settings,
    full: bool = False,
    merge: FeatureMerge | None = None,
    progress: Progress | None = None,
) -> RebuildResult:
    """Compute and upsert the features of candles not yet featurised (all of them if ``full``).

    ``merge(con, features)`` writes the computed rows and returns (write, rows quarantined);
    default: ``upsert_features`` (no checks). ``progress`` advances by one series when done."""
    progress = progress if progress is not None else current()
    step = timeframe_ms(timeframe)
    key = [exchange, symbol, timeframe]
    last = None
    if not full:
        row = con.execute(
            "SELECT max(ts) FROM features WHERE exchange = ? AND symbol = ? AND timeframe = ? "
            "AND feature_set_version = ?",
            [*key, FEATURE_SET_VERSION],
        ).fetchone()
        last = row[0] if row else None
        stale = con.execute(
            "SELECT count(*) FROM features WHERE exchange = ? AND symbol = ? AND timeframe = ? "
            "AND feature_set_version <> ?",
            [*key, FEATURE_SET_VERSION],
        ).fetchone()
        if stale and stale[0]:
            last = None  # another feature-set version is stored: recompute everything
    since: dt.datetime | None = None
    if last is not None:
        nxt = con.execute(
            "SELECT min(ts) FROM candles WHERE exchange = ? AND symbol = ? AND timeframe = ? AND "
            "ts > ?",
            [*key, last],
        ).fetchone()
        if not nxt or nxt[0] is None:
            empty = WriteResult("features", 0, 0, 0, 0)
            progress.advance()
            return RebuildResult(exchange, symbol, timeframe, "up to date", 0, 0, empty)
        first_new_ms = int(nxt[0].timestamp() * 1000)
        since = dt.datetime.fromtimestamp(
            history_start_ms(first_new_ms, timeframe) / 1000, tz=dt.UTC
        )
    lower = since or dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    candles = _read(
        con,
        "SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume FROM candles "
        "WHERE exchange = ? AND symbol = ? AND timeframe = ? AND ts >= ? ORDER BY ts",
        [*key, lower],
    )
    # Order book and trades of the same span (plus one candle before it for the as-of join).
    ob = _read(
        con,
        "SELECT ts, bid_prices, bid_sizes, ask_prices, ask_sizes FROM order_book_snapshots "
        "WHERE exchange = ? AND symbol = ? AND ts >= ? ORDER BY ts",
        [exchange, symbol, lower - dt.timedelta(milliseconds=step)],
    )
    trades = _read(
        con,
        "SELECT ts, side, amount FROM trades WHERE exchange = ? AND symbol = ? AND ts >= ? ORDER "
        "BY ts",
        [exchange, symbol, lower],
    )
    features = build_features(
        candles, order_book=ob if ob.height else None, trades=trades if trades.height else None
    )
    if last is not None:
        features = features.filter(pl.col("ts") > last)
    write, quarantined = (merge or upsert_features(settings))(con, features)
    mode = "incremental" if last is not None else "full"
    progress.advance()
    return RebuildResult(
        exchange, symbol, timeframe, mode, candles.height, features.height, write, quarantined
    )
