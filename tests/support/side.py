"""Side data (funding rates, mark candles, open interest, scored headlines) for the tests of
the funding and sentiment feature groups: the simulated perpetual and its news, and the real
XRP/USDT:USDT files, as frames and as warehouse rows."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from pipelines.features import OnlineFeatureEngine
from pipelines.features.side import SideInputs, scored_news, side_events
from pipelines.simulated_exchange import DEFAULT_ORIGIN_MS, SimulatedExchange
from pipelines.simulated_futures import simulated_futures
from warehouse import Settings, upsert

CONTRACT = "BTC/USDT:USDT"
UNDERLYING = "BTC/USDT"
FUTURES_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "futures"
XRP = "XRP/USDT:USDT"
DAY_MS = 86_400_000


@dataclass(frozen=True)
class SimulatedPerpetual:
    """The contract's candles (the underlying's trade candles under the contract's symbol), its
    mark candles, funding rates and open interest as warehouse rows, and scored headlines."""

    candles: pl.DataFrame  # warehouse candle schema
    mark: pa.Table
    funding: pa.Table
    open_interest: pa.Table
    news: pl.DataFrame  # ts, score, symbols (as read_side_inputs reads them)

    def side(self) -> SideInputs:
        def frame(table: pa.Table, *columns: str) -> pl.DataFrame:
            out = pl.from_arrow(table.select(["ts", *columns]))
            assert isinstance(out, pl.DataFrame)
            return out

        return SideInputs(
            funding=frame(self.funding, "funding_rate"),
            mark=frame(self.mark, "close"),
            open_interest=frame(self.open_interest, "open_interest"),
            news=self.news,
        )


def simulated_perpetual(
    days: int = 6, timeframe: str = "1h", start_day: int = 3
) -> SimulatedPerpetual:
    """``days`` of the simulated ``BTC/USDT:USDT`` from ``start_day`` days after the simulated
    exchange's origin, with headlines about BTC and ETH scored by VADER."""
    from pipelines.news import SimulatedNewsSource, VaderScorer

    ex = SimulatedExchange()
    since = DEFAULT_ORIGIN_MS + start_day * DAY_MS
    until = since + days * DAY_MS
    candles = pl.from_arrow(ex.candles(UNDERLYING, since, until, timeframe=timeframe))
    assert isinstance(candles, pl.DataFrame)
    candles = candles.with_columns(pl.lit(CONTRACT).alias("symbol")).select(
        "exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"
    )
    items = SimulatedNewsSource(ex, [UNDERLYING, "ETH/BTC"], since - DAY_MS, until).fetch()
    news = scored_news(items, VaderScorer())
    return SimulatedPerpetual(
        candles=candles,
        mark=simulated_futures(ex, CONTRACT, "mark_candles", since, until, timeframe=timeframe),
        funding=simulated_futures(ex, CONTRACT, "funding_rates", since - DAY_MS, until),
        open_interest=simulated_futures(ex, CONTRACT, "open_interest", since, until),
        news=news,
    )


def store_futures(
    con: duckdb.DuckDBPyConnection, settings: Settings, p: SimulatedPerpetual
) -> None:
    """The perpetual's mark candles, funding rates and open interest into their tables."""
    for table, rows in (
        ("mark_candles", p.mark),
        ("funding_rates", p.funding),
        ("open_interest", p.open_interest),
    ):
        upsert(con, table, rows, settings=settings)


def online_rows(
    candles: pl.DataFrame,
    side: SideInputs,
    *,
    columns: list[str] | None = None,
    seed: int = 0,
) -> list[dict[str, float | None]]:
    """The online engine's features for each candle, fed every side event first, in a random
    order (the engine takes them in any order, before the bars they count for)."""
    symbol, timeframe = str(candles["symbol"][0]), str(candles["timeframe"][0])
    engine = OnlineFeatureEngine(timeframe, columns=columns, symbol=symbol)
    events = side_events(side)
    random.Random(seed).shuffle(events)
    for ts_ms, kind, args in events:
        getattr(engine, kind)(ts_ms, *args)  # on_funding, on_mark, on_open_interest, on_news
    return [engine.step(row) for row in candles.iter_rows(named=True)]
