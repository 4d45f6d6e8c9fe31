"""Order-book snapshots and public trades for training, read beside the candles.

``read_microstructure`` reads, AT the same DuckLake snapshot as the candles, the snapshots and
trades of each series' window (from one candle before its first open to its last close).
They are used for a series only when they COVER its window: the first snapshot (trade) at
most ``1 - MIN_COVERAGE`` of the window after its start and the last one at most that much
before its end. A symbol whose book was switched on yesterday, in a 30-day window, keeps its
order-book columns null: else only the last day's samples would have finite windows and the
model would train on them alone. The features join them as of each candle's close, never a
later one (``pipelines.features.batch.build_features``: the last snapshot with ts before the
close, the trades with ts inside the candle).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import duckdb
import polars as pl

from pipelines.features.side import SideInputs
from pipelines.resample import timeframe_ms

log = logging.getLogger(__name__)

MIN_COVERAGE = 0.9
BOOK_COLUMNS = ("ts", "bid_prices", "bid_sizes", "ask_prices", "ask_sizes")
TRADE_COLUMNS = ("ts", "side", "amount")
_KEYS = ("exchange", "symbol")


@dataclass(frozen=True)
class SeriesInputs:
    """One exchange/symbol/timeframe's candles and its order book and trades (None: none
    that cover its window), and its funding and news data (``models.side_data``)."""

    candles: pl.DataFrame
    order_book: pl.DataFrame | None = None
    trades: pl.DataFrame | None = None
    side: SideInputs | None = None


def _bounds(candles: pl.DataFrame) -> pl.DataFrame:
    """Per (exchange, symbol): the window's first open and last close (epoch ms)."""
    step = pl.col("timeframe").map_elements(timeframe_ms, return_dtype=pl.Int64)
    return (
        candles.lazy()
        .with_columns(pl.col("ts").dt.epoch("ms").alias("_ms"), step.alias("_step"))
        .group_by(*_KEYS)
        .agg(
            (pl.col("_ms").min() - pl.col("_step").max()).alias("lo"),
            (pl.col("_ms").max() + pl.col("_step").max()).alias("hi"),
        )
        .collect()
    )


def _covering(frame: pl.DataFrame, bounds: pl.DataFrame, what: str) -> pl.DataFrame | None:
    """The rows of the series whose rows cover their window (module docs); None if none."""
    if frame.height == 0:
        return None
    spans = (
        frame.group_by(*_KEYS)
        .agg(
            pl.col("ts").dt.epoch("ms").min().alias("first"),
            pl.col("ts").dt.epoch("ms").max().alias("last"),
        )
        .join(bounds, on=list(_KEYS))
    )
    slack = (pl.col("hi") - pl.col("lo")) * (1.0 - MIN_COVERAGE)
    ok = spans.filter(
        (pl.col("first") <= pl.col("lo") + slack) & (pl.col("last") >= pl.col("hi") - slack)
    )
    for e, s, first, last, lo, hi in spans.join(ok, on=list(_KEYS), how="anti").iter_rows():
        log.info(
            "%s %s: %s from %d to %d ms do not cover the training window %d-%d ms "
            "(at least %.0f %%): left out",
            e, s, what, first, last, lo, hi, 100 * MIN_COVERAGE,
        )  # fmt: skip
    kept = frame.join(ok.select(*_KEYS), on=list(_KEYS), how="semi")
    return kept if kept.height else None


def read_microstructure(
    con: duckdb.DuckDBPyConnection, candles: pl.DataFrame, snapshot_id: int | None
) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """(order-book snapshots, trades) of ``candles``' series that cover their windows, as of
    ``snapshot_id`` (None: now), each with exchange and symbol columns, sorted by time."""
    if candles.height == 0:
        return None, None
    bounds = _bounds(candles)
    at = "" if snapshot_id is None else f" AT (VERSION => {int(snapshot_id)})"
    con.register("_tl_micro_bounds", bounds.to_arrow())
    try:
        out = []
        for table, columns in (
            ("order_book_snapshots", BOOK_COLUMNS),
            ("trades", TRADE_COLUMNS),
        ):
            cols = ", ".join(f"t.{c}" for c in (*_KEYS, *columns))
            frame = pl.from_arrow(
                con.execute(
                    f"SELECT {cols} FROM (SELECT * FROM {table}{at}) t JOIN _tl_micro_bounds b "
                    "USING (exchange, symbol) WHERE epoch_ms(t.ts) >= b.lo "
                    "AND epoch_ms(t.ts) < b.hi ORDER BY t.exchange, t.symbol, t.ts"
                ).fetch_arrow_table()
            )
            assert isinstance(frame, pl.DataFrame)
            out.append(_covering(frame, bounds, table))
    finally:
        con.unregister("_tl_micro_bounds")
    return out[0], out[1]


def _of(frame: pl.DataFrame | None, exchange: str, symbol: str) -> pl.DataFrame | None:
    if frame is None:
        return None
    part = frame.filter((pl.col("exchange") == exchange) & (pl.col("symbol") == symbol))
    return part.drop(*_KEYS) if part.height else None


def series_inputs(
    series: list[pl.DataFrame],
    order_book: pl.DataFrame | None,
    trades: pl.DataFrame | None,
    side: Mapping[tuple[str, str, str], SideInputs] | None = None,
) -> list[SeriesInputs]:
    """Each series of ``series`` (one exchange/symbol/timeframe each) with its own order book
    and trades, and its funding and news data from ``side`` (by exchange, symbol, timeframe)."""
    out = []
    for candles in series:
        if candles.height == 0 or not {"exchange", "symbol"} <= set(candles.columns):
            out.append(SeriesInputs(candles))
            continue
        e, s = str(candles["exchange"][0]), str(candles["symbol"][0])
        t = str(candles["timeframe"][0]) if "timeframe" in candles.columns else ""
        data = side.get((e, s, t)) if side else None
        out.append(SeriesInputs(candles, _of(order_book, e, s), _of(trades, e, s), data))
    return out
