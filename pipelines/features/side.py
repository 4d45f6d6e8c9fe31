"""The side groups' inputs (``funding``, ``sentiment``): other tables as of each bar's close.

The feature spec (:mod:`pipelines.features.spec`) has one ``copy`` node per side feature,
whose input ``side_<name>`` comes from here, in batch and online alike:

* ``funding`` (``FUNDING_FEATURES``): :mod:`pipelines.futures_features` over the series' own
  rows of ``funding_rates``, ``mark_candles`` (the series' timeframe) and ``open_interest``
  (one statistics period: the series' timeframe when stored, else the shortest stored);
* ``sentiment`` (``SENTIMENT_FEATURES``): :mod:`pipelines.news.features` over the scored
  headlines (``news`` + ``news_scores``, one scorer): per symbol (tagged with the pair's base
  asset) and market-wide. A window without a headline has a mean of 0.0 (neutral; its count
  of 0 tells it apart), where ``pipelines.news.features`` leaves it null: a model input
  null whenever an hour passes without news would keep a model off most bars. The whole
  group is null for a bar closing at or before the first scored headline (no news collected
  yet is not "no news"), like trade flow before the first trade.

Every value for the bar opening at ``t`` uses only what was stamped before its close
``t + timeframe``. Without the data the inputs are null, so are the features, and
``models.data.assemble_samples`` leaves all-null columns out of a model's inputs.

:func:`side_inputs` (batch) and :class:`OnlineSideInputs` (events as they come) agree to
1e-9 (tests/pipelines/features/test_side_groups.py); :func:`read_side_inputs` reads a series'
side data from the warehouse (at a DuckLake snapshot for training).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl

from pipelines.features.spec import (
    FUNDING_FEATURES,
    SENTIMENT_FEATURES,
    SIDE_FEATURES,
    SIDE_GROUPS,
    SIDE_INPUTS,
)
from pipelines.resample import timeframe_ms

# pipelines.futures_features and pipelines.news are imported where used: the news package
# imports the simulated exchange (scipy, about a second), which a candle-only series, and
# every process importing pipelines.features, does not need.

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DAY_MS = 86_400_000
# How far before a window the side data is read: three 8h funding rates, the open interest
# before the first one, and the headlines the decayed score still weighs (32 half-lives of
# 6 h: a weight below 3e-10).
FUNDING_LOOKBACK = dt.timedelta(days=3)
NEWS_LOOKBACK = dt.timedelta(days=8)
NEWS_SCORER = "vader"


@dataclass(frozen=True)
class SideInputs:
    """One series' side data (any of them None: that group's features are null).

    ``funding``: ts, funding_rate; ``mark``: ts, close (mark candles of the series'
    timeframe); ``open_interest``: ts, open_interest; ``news``: ts, score, symbols (scored
    headlines, every asset). ``ts`` as UTC datetimes or epoch ms. ``news_first_ms``: the time
    of the first scored headline in the warehouse when ``news`` was read from a later time
    (else the first of ``news``)."""

    funding: pl.DataFrame | None = None
    mark: pl.DataFrame | None = None
    open_interest: pl.DataFrame | None = None
    news: pl.DataFrame | None = None
    news_first_ms: int | None = None

    @property
    def has_funding(self) -> bool:
        return any(
            f is not None and f.height for f in (self.funding, self.mark, self.open_interest)
        )

    @property
    def has_news(self) -> bool:
        return self.news is not None and self.news.filter(pl.col("score").is_not_null()).height > 0

    @property
    def groups(self) -> tuple[str, ...]:
        """The side groups this data feeds."""
        return tuple(
            g for g, ok in (("funding", self.has_funding), ("sentiment", self.has_news)) if ok
        )


def _ms(ts: Any) -> int:
    if isinstance(ts, dt.datetime):
        if ts.tzinfo is None:
            raise ValueError(f"side inputs: time {ts} is naive; pass a tz-aware UTC datetime")
        return (ts - _EPOCH) // dt.timedelta(milliseconds=1)
    return int(ts)


def _nulls(height: int, names: Sequence[str]) -> list[pl.Series]:
    # a Python list of None per column cost 0.25 s in a 10-day, 100-symbol backfill
    return [pl.Series(f"side_{n}", dtype=pl.Float64).extend_constant(None, height) for n in names]


def side_inputs(candles: pl.DataFrame, side: SideInputs | None) -> pl.DataFrame:
    """``_ts_ms`` (the candle's open, epoch ms) and every ``SIDE_INPUTS`` column, one row per
    candle of ``candles`` (one series: symbol, timeframe, ts, close; sorted by ts)."""
    n = candles.height
    ts_ms = candles.get_column("ts").dt.epoch("ms").alias("_ts_ms")
    cols: list[pl.Series] = [ts_ms]
    if side is None or not n:
        return pl.DataFrame([*cols, *_nulls(n, SIDE_FEATURES)])
    tf = str(candles.get_column("timeframe")[0])
    if side.has_funding:
        from pipelines.futures_features import futures_features

        fut = futures_features(
            candles.select("ts", "close"),
            tf,
            funding=side.funding,
            mark=side.mark,
            open_interest=side.open_interest,
        )
        cols += [fut.get_column(f).cast(pl.Float64).alias(f"side_{f}") for f in FUNDING_FEATURES]
    else:
        cols += _nulls(n, FUNDING_FEATURES)
    cols += _sentiment(candles, side)
    return pl.DataFrame(cols)


def _sentiment(candles: pl.DataFrame, side: SideInputs) -> list[pl.Series]:
    """The sentiment inputs of ``candles`` (any series: news_features takes many)."""
    n = candles.height
    if not side.has_news:
        return _nulls(n, SENTIMENT_FEATURES)
    assert side.news is not None
    news = side.news.filter(pl.col("score").is_not_null())
    if news.schema["ts"] != pl.Datetime("ms", "UTC"):
        news = news.with_columns(
            (
                pl.col("ts").cast(pl.Datetime("ms", "UTC"))
                if news.schema["ts"].is_temporal()
                else pl.from_epoch(pl.col("ts"), time_unit="ms").dt.replace_time_zone("UTC")
            ).alias("ts")
        )
    first = side.news_first_ms
    if first is None:
        first = int(news.get_column("ts").dt.epoch("ms").min())  # type: ignore[arg-type]
    from pipelines.news.features import news_features

    feats = news_features(candles.select("symbol", "timeframe", "ts"), news)
    steps = {t: timeframe_ms(t) for t in candles.get_column("timeframe").unique().to_list()}
    close = pl.col("ts").dt.epoch("ms") + pl.col("timeframe").replace_strict(
        steps, return_dtype=pl.Int64
    )
    after_first = feats.select(close > first).to_series()
    return [
        feats.select(pl.when(after_first).then(_neutral(pl.col(c).cast(pl.Float64), c)))
        .to_series()
        .alias(f"side_{c}")
        for c in SENTIMENT_FEATURES
    ]


_MEANS = frozenset(c for c in SENTIMENT_FEATURES if "_mean_" in c)


def _neutral(value: pl.Expr, column: str) -> pl.Expr:
    """A window mean without a headline is 0.0 (its count is 0)."""
    return value.fill_null(0.0) if column in _MEANS else value


def sentiment_inputs_many(candles: pl.DataFrame, side: SideInputs | None) -> pl.DataFrame:
    """The ``SIDE_INPUTS`` columns for candles of many series (funding null: a series with
    futures data goes through :func:`side_inputs`), rows in ``candles``' order."""
    n = candles.height
    cols = _nulls(n, FUNDING_FEATURES)
    cols += _sentiment(candles, side) if side is not None else _nulls(n, SENTIMENT_FEATURES)
    return pl.DataFrame(cols)


class OnlineSideInputs:
    """The side inputs of one symbol, online: feed funding rates, mark candles, open interest
    and scored headlines as they arrive (any order, before the bars they count for), then
    ``at(ts_ms, close)`` for each closed bar in time order. ``groups``: compute only these
    (others stay None)."""

    def __init__(
        self, symbol: str, timeframe: str, groups: Sequence[str] = tuple(SIDE_GROUPS)
    ) -> None:
        unknown = sorted(set(groups) - set(SIDE_GROUPS))
        if unknown:
            raise ValueError(f"side groups {unknown} unknown; known: {list(SIDE_GROUPS)}")
        self.groups = tuple(groups)
        self.step_ms = timeframe_ms(timeframe)
        self._futures: Any = None
        self._news: Any = None
        if "funding" in groups:
            from pipelines.futures_features import OnlineFuturesFeatures

            self._futures = OnlineFuturesFeatures(timeframe)
        if "sentiment" in groups:
            from pipelines.news.features import OnlineNewsFeatures

            self._news = OnlineNewsFeatures(symbol)
        self._first_news: int | None = None
        self._none: dict[str, float | int | None] = dict.fromkeys(SIDE_FEATURES)

    def on_funding(self, ts: Any, rate: float) -> None:
        if self._futures is not None:
            self._futures.on_funding(_ms(ts), float(rate))

    def on_mark(self, ts: Any, close: float) -> None:
        """A mark candle of the series' timeframe (``ts``: its open time)."""
        if self._futures is not None:
            self._futures.on_mark(_ms(ts), float(close))

    def on_open_interest(self, ts: Any, open_interest: float) -> None:
        if self._futures is not None:
            self._futures.on_open_interest(_ms(ts), float(open_interest))

    def on_news(self, ts: Any, score: float, symbols: Sequence[str]) -> None:
        if self._news is None:
            return
        ts_ms = _ms(ts)
        self._news.on_news(ts_ms, score, tuple(symbols))
        if self._first_news is None or ts_ms < self._first_news:
            self._first_news = ts_ms

    def at(self, ts_ms: int, close: float) -> tuple[float | int | None, ...]:
        """The ``SIDE_INPUTS`` values of the bar opening at ``ts_ms`` (closed), in order."""
        out = dict(self._none)
        if self._futures is not None:
            out.update(self._futures.on_candle(ts_ms, close))
        if self._news is not None:
            close_ms = ts_ms + self.step_ms
            news = self._news.at_close(close_ms)
            if self._first_news is not None and self._first_news < close_ms:
                out.update(news)
                for c in _MEANS:
                    if out[c] is None:
                        out[c] = 0.0  # no headline in the window (count 0)
        return tuple(out[name] for name in SIDE_FEATURES)


NO_SIDE_INPUTS: tuple[None, ...] = (None,) * len(SIDE_INPUTS)


def scored_news(items: Sequence[Any], scorer: Any) -> pl.DataFrame:
    """``SideInputs.news`` (ts, score, symbols) of ``pipelines.news.NewsItem`` s scored by a
    ``SentimentScorer`` on what ``pipelines.news.ingest`` scores (``NewsItem.text``), without
    the warehouse (simulations, benchmarks)."""
    scores = scorer.score([i.text for i in items])
    return pl.DataFrame(
        {"ts": [i.ts for i in items], "score": scores, "symbols": [list(i.symbols) for i in items]},
        schema={"ts": pl.Datetime("us", "UTC"), "score": pl.Float64, "symbols": pl.List(pl.String)},
    )


# ------------------------------------------------------------------------------ warehouse
def _at(table: str, snapshot_id: int | None) -> str:
    return table if snapshot_id is None else f"{table} AT (VERSION => {int(snapshot_id)})"


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> pl.DataFrame:
    out = pl.from_arrow(con.execute(sql, params).fetch_arrow_table())
    assert isinstance(out, pl.DataFrame)
    return out


def open_interest_period(
    con: duckdb.DuckDBPyConnection,
    exchange: str,
    symbol: str,
    timeframe: str,
    snapshot_id: int | None = None,
) -> str | None:
    """The open-interest period a series' features use: its own timeframe when stored, else
    the shortest stored (None: no open interest)."""
    periods = [
        str(p)
        for (p,) in con.execute(
            f"SELECT DISTINCT timeframe FROM {_at('open_interest', snapshot_id)} "
            "WHERE exchange = ? AND symbol = ?",
            [exchange, symbol],
        ).fetchall()
    ]
    if not periods:
        return None
    return timeframe if timeframe in periods else min(periods, key=timeframe_ms)


def read_side_inputs(
    con: duckdb.DuckDBPyConnection,
    *,
    exchange: str,
    symbol: str,
    timeframe: str,
    after: dt.datetime | None = None,
    snapshot_id: int | None = None,
    groups: Sequence[str] = tuple(SIDE_GROUPS),
) -> SideInputs:
    """The side data the features of ``exchange``/``symbol``/``timeframe`` candles from
    ``after`` on (None: all) need, at DuckLake ``snapshot_id`` (None: now); only ``groups``."""
    funding = mark = oi = news = None
    news_first: int | None = None
    if "funding" in groups:
        lower = (after - FUNDING_LOOKBACK) if after is not None else _EPOCH
        key: list[object] = [exchange, symbol, lower]
        funding = _frame(
            con,
            f"SELECT ts, funding_rate FROM {_at('funding_rates', snapshot_id)} "
            "WHERE exchange = ? AND symbol = ? AND ts >= ? ORDER BY ts",
            key,
        )
        mark = _frame(
            con,
            f"SELECT ts, close FROM {_at('mark_candles', snapshot_id)} WHERE exchange = ? AND "
            "symbol = ? AND ts >= ? AND timeframe = ? ORDER BY ts",
            [*key, timeframe],
        )
        period = open_interest_period(con, exchange, symbol, timeframe, snapshot_id)
        if period is not None:
            oi = _frame(
                con,
                f"SELECT ts, open_interest FROM {_at('open_interest', snapshot_id)} WHERE "
                "exchange = ? AND symbol = ? AND ts >= ? AND timeframe = ? ORDER BY ts",
                [*key, period],
            )
    if "sentiment" in groups:
        news_sql = (
            f"FROM (SELECT * FROM {_at('news', snapshot_id)}) n "
            f"JOIN (SELECT * FROM {_at('news_scores', snapshot_id)}) s "
            "ON s.source = n.source AND s.id = n.id AND s.scorer = ?"
        )
        row = con.execute(f"SELECT min(n.ts) {news_sql}", [NEWS_SCORER]).fetchone()
        if row and row[0] is not None:
            news_first = _ms(row[0])
            lower = (after - NEWS_LOOKBACK) if after is not None else _EPOCH
            news = _frame(
                con,
                f"SELECT n.ts, s.score, n.symbols {news_sql} WHERE n.ts >= ? "
                "ORDER BY n.ts, n.source, n.id",
                [NEWS_SCORER, lower],
            )
    return SideInputs(
        funding=funding if funding is not None and funding.height else None,
        mark=mark if mark is not None and mark.height else None,
        open_interest=oi if oi is not None and oi.height else None,
        news=news if news is not None and news.height else None,
        news_first_ms=news_first,
    )


def side_events(side: SideInputs) -> list[tuple[int, str, tuple[Any, ...]]]:
    """``side`` as online events (ts_ms, kind, args), in time order: ``kind`` names the
    :class:`OnlineSideInputs` method (``on_funding``, ``on_mark``, ...)."""
    out: list[tuple[int, str, tuple[Any, ...]]] = []
    for frame, kind, cols in (
        (side.funding, "on_funding", ("funding_rate",)),
        (side.mark, "on_mark", ("close",)),
        (side.open_interest, "on_open_interest", ("open_interest",)),
        (side.news, "on_news", ("score", "symbols")),
    ):
        if frame is None:
            continue
        if kind == "on_news":
            frame = frame.filter(pl.col("score").is_not_null())
        for ts, *values in frame.select("ts", *cols).iter_rows():
            out.append((_ms(ts), kind, tuple(values)))
    out.sort(key=lambda e: e[0])
    return out
