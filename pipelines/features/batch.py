"""The polars batch pipeline: interprets the feature graph over a whole candle history."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from pipelines.features import ops
from pipelines.features.prune import plan
from pipelines.features.side import SideInputs, sentiment_inputs_many, side_inputs
from pipelines.features.spec import (
    FEATURE_SET_VERSION,
    HIGHER_TIMEFRAME_FEATURES,
    HIGHER_TIMEFRAMES,
    MAX_CARRIED_GAP_BARS,
    ORDER_BOOK_LEVELS,
    REGIME_COLUMNS,
    TIMEFRAME_MS,
    Graph,
    base_graph,
    higher_graph,
    stored_columns,
)

KEY_COLUMNS = ("exchange", "symbol", "timeframe", "ts")
CANDLE_COLUMNS = (*KEY_COLUMNS, "open", "high", "low", "close", "volume")
_SEG = "_seg"


class FeatureInputError(ValueError):
    """Input that the feature pipeline cannot use, with what and where."""


def timeframe_ms(timeframe: str) -> int:
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        raise FeatureInputError(
            f"unknown timeframe {timeframe!r}; known: {sorted(TIMEFRAME_MS)}"
        ) from None


def _levels(graph: Graph) -> list[list[int]]:
    depth: dict[str, int] = {name: 0 for name in graph.inputs}
    levels: list[list[int]] = []
    for i, node in enumerate(graph.nodes):
        missing = [x for x in node.inputs if x not in depth]
        if missing:
            raise ValueError(f"feature node {node.name!r} uses {missing} before they are defined")
        d = 1 + max((depth[x] for x in node.inputs), default=0)
        depth[node.name] = d
        while len(levels) < d:
            levels.append([])
        levels[d - 1].append(i)
    return levels


def evaluate_graph(frame: pl.LazyFrame, graph: Graph) -> pl.LazyFrame:
    """Add one column per node of ``graph`` (inputs and ``_seg`` must be columns)."""
    seg = pl.col(_SEG)
    for level in _levels(graph):
        exprs = []
        for i in level:
            node = graph.nodes[i]
            exprs.append(
                ops.batch_expr(node, [pl.col(x) for x in node.inputs], seg).alias(node.name)
            )
        frame = frame.with_columns(exprs)
    return frame


def _with_gaps(frame: pl.LazyFrame, step_ms: int) -> pl.LazyFrame:
    """``gap_bars`` (missing bars before each candle) and ``_seg`` (restarts after long gaps)."""
    delta = pl.col("_ts_ms") - pl.col("_ts_ms").shift(1)
    gap = ((delta + step_ms // 2) // step_ms - 1).fill_null(0).cast(pl.Int64)
    return frame.with_columns(gap.alias("gap_bars")).with_columns(
        (pl.col("gap_bars") > MAX_CARRIED_GAP_BARS).cum_sum().alias(_SEG)
    )


def _check_candles(candles: pl.DataFrame) -> tuple[str, int]:
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise FeatureInputError(f"candles: missing column(s) {missing}; got {candles.columns}")
    if candles.height == 0:
        return "", 0
    for col in ("exchange", "symbol", "timeframe"):
        values = candles.get_column(col).unique().to_list()
        if len(values) != 1:
            raise FeatureInputError(f"candles: build_features takes one {col}, got {values[:5]}")
    tf = str(candles.get_column("timeframe")[0])
    ts_ms = candles.get_column("ts").dt.epoch("ms")
    bad = (ts_ms.diff() <= 0).arg_true()
    if bad.len():
        i = int(bad[0])
        raise FeatureInputError(
            f"candles {candles['symbol'][0]} {tf}: ts not strictly increasing at row {i} "
            f"({candles['ts'][i]})"
        )
    for col in ("open", "high", "low", "close", "volume"):
        nulls = (
            candles.get_column(col).cast(pl.Float64).is_null()
            | candles.get_column(col).cast(pl.Float64).is_nan()
        )
        if nulls.any():
            i = int(nulls.arg_true()[0])
            raise FeatureInputError(
                f"candles {candles['symbol'][0]} {tf}: {col} is null/NaN at {candles['ts'][i]}"
            )
    return tf, timeframe_ms(tf)


def order_book_inputs(order_book: pl.DataFrame) -> pl.DataFrame:
    """Per snapshot: ``_ob_ms``, ``ob_imbalance`` (top levels), ``ob_spread_bps``."""
    n = ORDER_BOOK_LEVELS
    bid = pl.col("bid_sizes").list.head(n).list.sum()
    ask = pl.col("ask_sizes").list.head(n).list.sum()
    b0 = pl.col("bid_prices").list.first()
    a0 = pl.col("ask_prices").list.first()
    return (
        order_book.lazy()
        .select(
            pl.col("ts").dt.epoch("ms").alias("_ob_ms"),
            pl.when(bid + ask > 0.0).then((bid - ask) / (bid + ask)).alias("ob_imbalance"),
            pl.when((a0 + b0) > 0.0)
            .then((a0 - b0) / ((a0 + b0) / 2.0) * 10_000.0)
            .alias("ob_spread_bps"),
        )
        .sort("_ob_ms")
        .collect()
    )


def trade_inputs(trades: pl.DataFrame, step_ms: int) -> pl.DataFrame:
    """Per candle bucket: base volume bought (``trade_buy``) and sold (``trade_sell``)."""
    side = pl.col("side").cast(pl.String).str.to_lowercase()
    amount = pl.col("amount").cast(pl.Float64)
    return (
        trades.lazy()
        .with_columns((pl.col("ts").dt.epoch("ms") // step_ms * step_ms).alias("_ts_ms"))
        .group_by("_ts_ms")
        .agg(
            amount.filter(side == "buy").sum().alias("trade_buy"),
            amount.filter(side == "sell").sum().alias("trade_sell"),
        )
        .sort("_ts_ms")
        .collect()
    )


def _candidate_frame(
    candles: pl.DataFrame,
    step_ms: int,
    order_book: pl.DataFrame | None,
    trades: pl.DataFrame | None,
    side: SideInputs | None = None,
) -> pl.LazyFrame:
    frame = candles.lazy().with_columns(
        pl.col("ts").dt.epoch("ms").alias("_ts_ms"),
        *[pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")],
    )
    # the side groups' inputs (funding, sentiment), one row per candle in candles' order
    frame = pl.concat([frame, side_inputs(candles, side).drop("_ts_ms").lazy()], how="horizontal")
    if order_book is not None and order_book.height:
        obi = order_book_inputs(order_book)
        frame = (
            frame.with_columns((pl.col("_ts_ms") + step_ms - 1).alias("_last_ms"))
            .join_asof(obi.lazy(), left_on="_last_ms", right_on="_ob_ms", strategy="backward")
            .drop("_last_ms", "_ob_ms")
        )
    else:
        frame = frame.with_columns(
            pl.lit(None, pl.Float64).alias("ob_imbalance"),
            pl.lit(None, pl.Float64).alias("ob_spread_bps"),
        )
    if trades is not None and trades.height:
        tr = trade_inputs(trades, step_ms)
        first = int(tr.get_column("_ts_ms").min())  # type: ignore[arg-type]
        after_first = pl.col("_ts_ms") >= first
        frame = frame.join(tr.lazy(), on="_ts_ms", how="left", maintain_order="left").with_columns(
            pl.when(after_first).then(pl.col("trade_buy").fill_null(0.0)).alias("trade_buy"),
            pl.when(after_first).then(pl.col("trade_sell").fill_null(0.0)).alias("trade_sell"),
        )
    else:
        frame = frame.with_columns(
            pl.lit(None, pl.Float64).alias("trade_buy"),
            pl.lit(None, pl.Float64).alias("trade_sell"),
        )
    return frame


def resample(candles: pl.LazyFrame, step_ms: int) -> pl.LazyFrame:
    """Candles of a higher timeframe from base candles (``_ts_ms`` = bucket open time)."""
    return (
        candles.with_columns((pl.col("_ts_ms") // step_ms * step_ms).alias("_bucket"))
        .group_by("_bucket", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .rename({"_bucket": "_ts_ms"})
    )


def higher_timeframe_features(
    base: pl.LazyFrame,
    tf: str,
    graph: Graph | None = None,
    features: Sequence[str] = HIGHER_TIMEFRAME_FEATURES,
) -> pl.LazyFrame:
    """``features`` (default ``HIGHER_TIMEFRAME_FEATURES``) of ``tf`` with ``_avail_ms``: the
    time its candle closed. ``graph``: the higher graph (pruned to ``features``) to evaluate."""
    step = timeframe_ms(tf)
    frame = _with_gaps(resample(base, step), step)
    frame = evaluate_graph(frame, higher_graph() if graph is None else graph)
    return frame.select(
        (pl.col("_ts_ms") + step).alias("_avail_ms"),
        *[pl.col(name).alias(f"{name}_{tf}") for name in features],
    )


def build_features(
    candles: pl.DataFrame,
    *,
    order_book: pl.DataFrame | None = None,
    trades: pl.DataFrame | None = None,
    columns: Sequence[str] | None = None,
    side: SideInputs | None = None,
) -> pl.DataFrame:
    """All features of one symbol/timeframe's candles (sorted by ``ts``, no duplicates).

    Returns exchange, symbol, timeframe, ts, feature_set_version, gap_bars and every column of
    :func:`feature_columns`, then the regime labels (``REGIME_COLUMNS``: every column of
    :func:`stored_columns`); rows still warming up hold nulls. ``order_book`` (ts, bid_prices,
    bid_sizes, ask_prices, ask_sizes) and ``trades`` (ts, side, amount) are optional; without
    them the order-book / trade-flow features are null. ``side``: the series' funding and news
    data (``pipelines.features.side``); without it the funding and sentiment groups are null.
    ``columns``: compute only these (in
    ``feature_columns()`` order) and what they depend on (``pipelines.features.prune.plan``),
    e.g. a model's selected features.
    """
    tf, step_ms = _check_candles(candles)
    todo = plan(columns)
    labels = REGIME_COLUMNS if columns is None else ()  # every column: the regime labels too
    if candles.height == 0:
        return _empty(candles, (*todo.columns, *labels))
    base_frame = _with_gaps(_candidate_frame(candles, step_ms, order_book, trades, side), step_ms)
    frame = evaluate_graph(base_frame, base_graph() if labels else todo.base)
    frame = frame.with_columns((pl.col("_ts_ms") + step_ms).alias("_close_ms"))
    raw = base_frame.select("_ts_ms", "open", "high", "low", "close", "volume")
    for htf, (hgraph, names) in todo.higher.items():
        hstep = timeframe_ms(htf)
        if hstep < step_ms:
            frame = frame.with_columns(
                *[pl.lit(None, pl.Float64).alias(f"{name}_{htf}") for name in names]
            )
            continue
        frame = frame.join_asof(
            higher_timeframe_features(raw, htf, hgraph, names),
            left_on="_close_ms",
            right_on="_avail_ms",
            strategy="backward",
        ).drop("_avail_ms")
    return frame.select(
        *KEY_COLUMNS,
        pl.lit(FEATURE_SET_VERSION).alias("feature_set_version"),
        "gap_bars",
        *[pl.col(c).cast(pl.Float64) for c in (*todo.columns, *labels)],
    ).collect()


def _empty(candles: pl.DataFrame, columns: Sequence[str] | None = None) -> pl.DataFrame:
    schema: dict[str, pl.DataType | type[pl.DataType]] = {c: candles.schema[c] for c in KEY_COLUMNS}
    schema["feature_set_version"] = pl.String
    schema["gap_bars"] = pl.Int64
    schema.update({c: pl.Float64 for c in (stored_columns() if columns is None else columns)})
    return pl.DataFrame(schema=schema)


# ---------------------------------------------------------------------------- many series

_SID = "_sid"
_SEG_SPAN = 1 << 32  # segments of one series: far fewer than 2**32 (one per long gap)
_KEY_SPAN = 1 << 42  # epoch ms below 2**42 until the year 2109


def _with_gaps_many(frame: pl.LazyFrame, step_ms: int) -> pl.LazyFrame:
    """``_with_gaps`` per series: a segment never spans two series (every stateful operator
    runs ``.over(_seg)``, so a series' windows never see another series' rows)."""
    delta = pl.col("_ts_ms") - pl.col("_ts_ms").shift(1).over(_SID)
    gap = ((delta + step_ms // 2) // step_ms - 1).fill_null(0).cast(pl.Int64)
    return frame.with_columns(gap.alias("gap_bars")).with_columns(
        (
            pl.col(_SID).cast(pl.Int64) * _SEG_SPAN
            + (pl.col("gap_bars") > MAX_CARRIED_GAP_BARS).cum_sum().over(_SID)
        ).alias(_SEG)
    )


def _higher_many(candles: pl.LazyFrame, tf: str) -> pl.LazyFrame:
    """``higher_timeframe_features`` of resampled candles of many series (``_sid``, ``_ts_ms``
    = bucket open, OHLCV), keyed for the as-of join by series then availability time."""
    step = timeframe_ms(tf)
    frame = evaluate_graph(_with_gaps_many(candles.sort(_SID, "_ts_ms"), step), higher_graph())
    return frame.select(
        _SID,
        (pl.col(_SID).cast(pl.Int64) * _KEY_SPAN + pl.col("_ts_ms") + step).alias("_avail_key"),
        *[pl.col(name).alias(f"{name}_{tf}") for name in HIGHER_TIMEFRAME_FEATURES],
    )


def resample_many(candles: pl.LazyFrame, step_ms: int) -> pl.LazyFrame:
    """``resample`` per series (``_sid``)."""
    return (
        candles.with_columns((pl.col("_ts_ms") // step_ms * step_ms).alias("_bucket"))
        .group_by(_SID, "_bucket", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .rename({"_bucket": "_ts_ms"})
    )


def build_features_many(
    candles: pl.DataFrame,
    *,
    higher: dict[str, pl.DataFrame] | None = None,
    news: SideInputs | None = None,
) -> pl.DataFrame:
    """The features of many series of ONE timeframe in one polars pass: what
    :func:`build_features` gives for each series alone (a test holds them equal), without
    order-book or trade inputs (those series go through :func:`build_features`).

    ``candles``: exchange, symbol, timeframe, ts, OHLCV, sorted by (exchange, symbol, ts),
    each series strictly increasing in ts. ``higher`` (optional): per higher timeframe, its
    candles already resampled (exchange, symbol, ``_ts_ms`` = bucket open, OHLCV), e.g. by
    the warehouse over a longer history than ``candles`` holds: the incremental rebuild reads
    the base timeframe's warm-up only and lets DuckDB aggregate the hours the 1h features
    need (26,000 one-minute candles a series otherwise). ``news``: the headlines of the
    sentiment group (its other fields are not read: a series with funding data goes through
    :func:`build_features`).
    """
    if candles.height == 0:
        return _empty(candles)
    timeframes = candles.get_column("timeframe").unique().to_list()
    if len(timeframes) != 1:
        raise FeatureInputError(
            f"candles: build_features_many takes one timeframe, got {timeframes}"
        )
    tf = str(timeframes[0])
    step_ms = timeframe_ms(tf)
    keys = candles.select("exchange", "symbol").unique(maintain_order=True).with_row_index(_SID)
    ts_ms = pl.col("ts").dt.epoch("ms")
    base = candles.lazy().join(keys.lazy(), on=["exchange", "symbol"], maintain_order="left")
    bad = base.select(((ts_ms.diff().over(_SID)) <= 0).fill_null(False).any()).collect().item()
    if bad:
        raise FeatureInputError(f"candles {tf}: ts not strictly increasing within a series")
    base = base.with_columns(
        ts_ms.alias("_ts_ms"),
        *[pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")],
        pl.lit(None, pl.Float64).alias("ob_imbalance"),
        pl.lit(None, pl.Float64).alias("ob_spread_bps"),
        pl.lit(None, pl.Float64).alias("trade_buy"),
        pl.lit(None, pl.Float64).alias("trade_sell"),
    )
    side = sentiment_inputs_many(candles, news)
    base = pl.concat([base, side.lazy()], how="horizontal")
    base_frame = _with_gaps_many(base, step_ms)
    frame = evaluate_graph(base_frame, base_graph()).with_columns(
        (pl.col(_SID).cast(pl.Int64) * _KEY_SPAN + pl.col("_ts_ms") + step_ms).alias("_close_key")
    )
    raw = base_frame.select(_SID, "_ts_ms", "open", "high", "low", "close", "volume")
    for htf in HIGHER_TIMEFRAMES:
        hstep = timeframe_ms(htf)
        if hstep < step_ms:
            frame = frame.with_columns(
                *[
                    pl.lit(None, pl.Float64).alias(f"{name}_{htf}")
                    for name in HIGHER_TIMEFRAME_FEATURES
                ]
            )
            continue
        if higher is not None and htf in higher:
            resampled = (
                higher[htf]
                .lazy()
                .join(keys.lazy(), on=["exchange", "symbol"])
                .select(
                    _SID,
                    pl.col("_ts_ms").cast(pl.Int64),
                    *[
                        pl.col(c).cast(pl.Float64)
                        for c in ("open", "high", "low", "close", "volume")
                    ],
                )
            )
        else:
            resampled = resample_many(raw, hstep)
        frame = frame.join_asof(
            _higher_many(resampled, htf),
            left_on="_close_key",
            right_on="_avail_key",
            by=_SID,
            strategy="backward",
            check_sortedness=False,  # sorted by (series, time): the keys grow within each
        ).drop("_avail_key")
    return frame.select(
        *KEY_COLUMNS,
        pl.lit(FEATURE_SET_VERSION).alias("feature_set_version"),
        "gap_bars",
        *[pl.col(c).cast(pl.Float64) for c in stored_columns()],
    ).collect()
