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

from pipelines.features.batch import build_features, build_features_many, timeframe_ms
from pipelines.features.side import read_side_inputs
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
    side = read_side_inputs(
        con, exchange=exchange, symbol=symbol, timeframe=timeframe, after=since
    )  # funding and news as of each close (pipelines.features.side)
    features = build_features(
        candles,
        order_book=ob if ob.height else None,
        trades=trades if trades.height else None,
        side=side if side.groups else None,
    )
    if last is not None:
        features = features.filter(pl.col("ts") > last)
    write, quarantined = (merge or upsert_features(settings))(con, features)
    mode = "incremental" if last is not None else "full"
    progress.advance()
    return RebuildResult(
        exchange, symbol, timeframe, mode, candles.height, features.height, write, quarantined
    )


# ---------------------------------------------------------------------------- many series

Series = tuple[str, str, str]  # exchange, symbol, timeframe


@dataclass(frozen=True)
class ManyRebuildResult:
    """One incremental pass over many series (``rebuild_features_many``)."""

    modes: dict[Series, str]  # "incremental" | "full" | "up to date", per series
    candles_read: int  # base-timeframe candles read into polars (higher ones come aggregated)
    rows_computed: int
    write: WriteResult  # the one write of every series' new rows
    rows_quarantined: int = 0


_FROM_START = 0  # "first new candle" of a series without features: read all of it


def _lower(first_new: int, lower: int) -> int:
    return _FROM_START if first_new == _FROM_START else lower


def _ms_ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _register(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> None:
    con.register(name, frame.to_arrow())


def _plan(
    con: duckdb.DuckDBPyConnection, series: list[Series]
) -> tuple[dict[Series, int], list[Series], list[Series]]:
    """Per series: the open time of its first candle without features (incremental), or
    whether it needs a full rebuild (no features, or another feature-set version stored)."""
    keys = pl.DataFrame(series, schema=["exchange", "symbol", "timeframe"], orient="row")
    _register(con, "_tl_many_keys", keys)
    try:
        stored = con.execute(
            "SELECT k.exchange, k.symbol, k.timeframe, "
            "max(f.ts) FILTER (WHERE f.feature_set_version = ?), "
            "count(f.ts) FILTER (WHERE f.feature_set_version <> ?) "
            "FROM _tl_many_keys k LEFT JOIN features f USING (exchange, symbol, timeframe) "
            "GROUP BY ALL",
            [FEATURE_SET_VERSION, FEATURE_SET_VERSION],
        ).fetchall()
        full = [(e, s, t) for e, s, t, last, stale in stored if last is None or stale]
        lasts = pl.DataFrame(
            [(e, s, t, last) for e, s, t, last, stale in stored if last is not None and not stale],
            schema={
                "exchange": pl.String,
                "symbol": pl.String,
                "timeframe": pl.String,
                "last": pl.Datetime("us", "UTC"),
            },
            orient="row",
        )
        _register(con, "_tl_many_lasts", lasts)
        try:
            first_new = con.execute(
                "SELECT l.exchange, l.symbol, l.timeframe, min(c.ts) FROM _tl_many_lasts l "
                "JOIN candles c USING (exchange, symbol, timeframe) WHERE c.ts > l.last "
                "GROUP BY ALL"
            ).fetchall()
        finally:
            con.unregister("_tl_many_lasts")
    finally:
        con.unregister("_tl_many_keys")
    pending = {(e, s, t): int(ts.timestamp() * 1000) for e, s, t, ts in first_new}
    current = [k for k in series if k not in pending and k not in full]
    return pending, full, current


def _with_side_data(con: duckdb.DuckDBPyConnection, bounds: pl.DataFrame) -> set[tuple[str, str]]:
    """(exchange, symbol) pairs with order-book snapshots, trades or perpetual-futures data
    (funding rates, mark candles, open interest) in their window: their features need those
    inputs, which only the one-series build takes."""
    _register(con, "_tl_many_bounds", bounds)
    try:
        rows = con.execute(
            "SELECT DISTINCT b.exchange, b.symbol FROM _tl_many_bounds b JOIN "
            "order_book_snapshots o USING (exchange, symbol) WHERE o.ts >= b.lower "
            "UNION SELECT DISTINCT b.exchange, b.symbol FROM _tl_many_bounds b JOIN trades t "
            "USING (exchange, symbol) WHERE t.ts >= b.lower "
            + "".join(
                "UNION SELECT DISTINCT b.exchange, b.symbol FROM _tl_many_bounds b JOIN "
                f"{table} x USING (exchange, symbol) WHERE x.ts >= b.lower "
                for table in ("funding_rates", "mark_candles", "open_interest")
            )
        ).fetchall()
    finally:
        con.unregister("_tl_many_bounds")
    return {(str(e), str(s)) for e, s in rows}


def _read_many(
    con: duckdb.DuckDBPyConnection, bounds: pl.DataFrame, timeframe: str
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """The base candles from each series' base warm-up start, and per higher timeframe its
    candles aggregated by DuckDB from the longer warm-up start (whole hours)."""
    _register(con, "_tl_many_bounds", bounds)
    try:
        candles = _read(
            con,
            "SELECT c.exchange, c.symbol, c.timeframe, c.ts, c.open, c.high, c.low, c.close, "
            "c.volume FROM candles c JOIN _tl_many_bounds b USING (exchange, symbol, timeframe) "
            "WHERE c.ts >= b.base_lower ORDER BY c.exchange, c.symbol, c.ts",
            [],
        )
        higher: dict[str, pl.DataFrame] = {}
        step = timeframe_ms(timeframe)
        for tf in HIGHER_TIMEFRAMES:
            h = timeframe_ms(tf)
            if h < step:
                continue
            higher[tf] = _read(
                con,
                f"SELECT c.exchange, c.symbol, epoch_ms(c.ts) // {h} * {h} AS _ts_ms, "
                "arg_min(c.open, c.ts) AS open, max(c.high) AS high, min(c.low) AS low, "
                "arg_max(c.close, c.ts) AS close, sum(c.volume) AS volume "
                "FROM candles c JOIN _tl_many_bounds b USING (exchange, symbol, timeframe) "
                "WHERE c.ts >= b.lower GROUP BY ALL ORDER BY 1, 2, 3",
                [],
            )
    finally:
        con.unregister("_tl_many_bounds")
    return candles, higher


def _from_first_new(features: pl.DataFrame, first_new: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``features`` at or after their series' ``first_new`` (series absent from
    ``first_new`` keep none). The thresholds are joined to the key columns only: joined to the
    whole frame (120+ columns) the join copied all of them, 8.5 s of a 30-day, 100-symbol
    backfill whose rows are all new."""
    keep = (
        features.select("exchange", "symbol", "ts")
        .join(first_new, on=["exchange", "symbol"], how="left", maintain_order="left")
        .select((pl.col("ts") >= pl.col("first_new")).fill_null(False))
        .to_series()
    )
    return features if keep.all() else features.filter(keep)


def rebuild_features_many(
    con: duckdb.DuckDBPyConnection,
    series: list[Series],
    *,
    settings: Settings,
    merge: FeatureMerge | None = None,
) -> ManyRebuildResult:
    """Bring the features of every series in ``series`` up to date in one pass.

    Series with features stored are updated incrementally, all of one timeframe together
    (``build_features_many``): the base warm-up is read as candles, the higher timeframes'
    warm-up (hundreds of hours) comes aggregated by DuckDB, and only rows after each series'
    last feature row are kept. The computed rows of every series are written by ONE ``merge``.
    A series without features (or with another feature-set version) is computed from its
    first candle in the same pass. Series with order-book or trade data go through
    :func:`rebuild_features` one at a time (``build_features_many`` takes candles only).
    """
    modes: dict[Series, str] = {}
    pending, full, current = _plan(con, list(dict.fromkeys(series)))
    modes.update({k: "up to date" for k in current})
    computed: list[pl.DataFrame] = []
    read = 0
    base_warmup = warmup_bars(base_graph())
    by_tf: dict[str, list[Series]] = {}
    # a series without features is computed from its first candle in the same pass (a full
    # rebuild: every row written, rows of another feature-set version replaced by key)
    starts = {**pending, **dict.fromkeys(full, _FROM_START)}
    for key in starts:
        by_tf.setdefault(key[2], []).append(key)
    one_by_one: list[Series] = []
    for timeframe, keys in by_tf.items():
        step = timeframe_ms(timeframe)
        bounds = pl.DataFrame(
            [
                (
                    e,
                    s,
                    t,
                    _ms_ts(_lower(starts[(e, s, t)], history_start_ms(starts[(e, s, t)], t))),
                    _ms_ts(_lower(starts[(e, s, t)], starts[(e, s, t)] - base_warmup * step)),
                    _ms_ts(starts[(e, s, t)]),
                )
                for e, s, t in keys
            ],
            schema={
                "exchange": pl.String,
                "symbol": pl.String,
                "timeframe": pl.String,
                "lower": pl.Datetime("us", "UTC"),
                "base_lower": pl.Datetime("us", "UTC"),
                "first_new": pl.Datetime("us", "UTC"),
            },
            orient="row",
        )
        side = _with_side_data(con, bounds)
        if side:
            one_by_one += [k for k in keys if (k[0], k[1]) in side]
            bounds = bounds.filter(
                ~pl.struct("exchange", "symbol").is_in(
                    [{"exchange": e, "symbol": s} for e, s in side]
                )
            )
        if bounds.height == 0:
            continue
        candles, higher = _read_many(con, bounds, timeframe)
        read += candles.height
        earliest = bounds.get_column("base_lower").min()
        news = read_side_inputs(
            con,
            exchange="",
            symbol="",
            timeframe=timeframe,
            after=earliest,  # type: ignore[arg-type]
            groups=("sentiment",),
        )  # the headlines are every series' (market-wide)
        features = build_features_many(candles, higher=higher, news=news if news.groups else None)
        first_new = bounds.select("exchange", "symbol", pl.col("first_new").dt.cast_time_unit("ms"))
        computed.append(_from_first_new(features, first_new))
        modes.update({(e, s, t): "full" if (e, s, t) in full else "incremental" for e, s, t in
            bounds.select("exchange", "symbol", "timeframe").iter_rows()})  # fmt: skip
    rows = pl.concat(computed) if computed else None
    if rows is not None and rows.height:
        write, quarantined = (merge or upsert_features(settings))(con, rows)
    else:
        write, quarantined = WriteResult("features", 0, 0, 0, 0), 0
    computed_rows = rows.height if rows is not None else 0
    for e, s, t in one_by_one:
        one = rebuild_features(
            con, exchange=e, symbol=s, timeframe=t, settings=settings, merge=merge
        )
        modes[(e, s, t)] = one.mode
        read += one.candles_read
        computed_rows += one.rows_computed
        quarantined += one.rows_quarantined
        write = WriteResult(
            "features",
            write.rows_in + one.write.rows_in,
            write.inserted + one.write.inserted,
            write.replaced + one.write.replaced,
            write.unchanged + one.write.unchanged,
        )
    return ManyRebuildResult(modes, read, computed_rows, write, quarantined)
