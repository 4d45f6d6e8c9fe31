"""Following a growing warehouse symbol (``tradeloop serve --follow-every``): the loop stays in
process, each poll reads only the candles stored since the last one served, a restart resumes
without serving a candle twice, and an unreadable source is read again, not skipped."""

from __future__ import annotations

import logging

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from tests.trading.serve_support import SYMBOL, candles, real_frame
from trading.backtest import Candles
from trading.loop import LoopConfig
from trading.market import FollowMarket, read_replay_candles
from trading.service import serve_replay
from warehouse import Settings, connect, upsert

EXCHANGE = "binance"
CONFIG = LoopConfig(account="follow", exchange=EXCHANGE, model_check_every_steps=60)


def _candle_table(frame: pl.DataFrame) -> pa.Table:
    table = (
        frame.with_columns(exchange=pl.lit(EXCHANGE), symbol=pl.lit(SYMBOL), timeframe=pl.lit("1m"))
        .select("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
        .to_arrow()
    )
    return table.set_column(3, "ts", table["ts"].cast(pa.timestamp("ms", tz="UTC")))


def _store(settings: Settings, frame: pl.DataFrame) -> None:
    """Candles written by another connection, as the collect flow's process would."""
    con = connect(settings)
    try:
        upsert(con, "candles", _candle_table(frame), settings=settings)
    finally:
        con.close()


def _epoch_ms(frame: pl.DataFrame) -> list[int]:
    return [int(t) for t in frame["ts"].dt.epoch("ms").to_list()]


def test_each_poll_reads_only_the_candles_stored_since(settings: Settings, lake) -> None:  # type: ignore[no-untyped-def]
    history = real_frame(600)
    _store(settings, history.head(300))
    stored_rows = [300]

    def store_more(seconds: float) -> None:  # 100 candles land while the market waits
        stored_rows[0] += 100
        _store(settings, history.head(stored_rows[0]))

    def read(after_ts_ms: int | None, up_to_ts_ms: int | None) -> Candles:
        return read_replay_candles(
            SYMBOL, con=lake, exchange=EXCHANGE, after_ts_ms=after_ts_ms, up_to_ts_ms=up_to_ts_ms
        )

    market = FollowMarket(read, 60.0, sleep=store_more, max_polls=4)
    served = [bar.ts_ms for tick in market.ticks() for bar in tick.bars]
    assert served == _epoch_ms(history)  # every candle once, in order
    # 300 + 100 + 100 + 100 rows read: re-reading the history every poll would be 1,800
    assert market.rows_read == 600 and market.read_failures == 0


def test_follow_serves_new_candles_and_a_restart_serves_none_twice(
    settings: Settings, lake
) -> None:  # type: ignore[no-untyped-def]
    history = real_frame(700)
    _store(settings, history.head(300))
    waits: list[float] = []

    def store_more(seconds: float) -> None:
        waits.append(seconds)
        _store(settings, history.head(300 + 100 * len(waits)))

    first = serve_replay(
        settings, SYMBOL, config=CONFIG, follow_every_s=30.0, sleep=store_more, max_candles=450
    )
    assert first.candles == 450 and waits == [30.0, 30.0]
    assert first.last_ts_ms == _epoch_ms(history)[449]

    # the process restarts: the loop resumes from its snapshot and follows on
    again = serve_replay(
        settings, SYMBOL, config=CONFIG, follow_every_s=30.0, sleep=store_more, max_candles=200
    )
    assert again.resumed_from_ts_ms == first.last_ts_ms
    assert again.candles == 200 and again.last_ts_ms == _epoch_ms(history)[649]
    con = connect(settings, read_only=True)
    try:
        served = [
            r[0]
            for r in con.execute(
                "SELECT epoch_ms(ts) FROM equity WHERE account = 'follow' ORDER BY ts"
            ).fetchall()
        ]
    finally:
        con.close()
    assert served == _epoch_ms(history)[:650]  # none twice, none skipped


def _window(c: Candles, after_ts_ms: int | None, rows: int) -> Candles:
    """``c``'s first ``rows`` candles, those opened after ``after_ts_ms``."""
    keep = np.arange(len(c)) < rows
    if after_ts_ms is not None:
        keep &= c.ts_ms > after_ts_ms
    columns = (c.ts_ms, c.open, c.high, c.low, c.close, c.volume)
    return Candles(c.symbol, c.timeframe, *(x[keep] for x in columns))


def test_an_unreadable_source_is_read_again_from_the_same_cursor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    whole = candles(50)
    cursors: list[int | None] = []

    def read(after_ts_ms: int | None, up_to_ts_ms: int | None) -> Candles:
        cursors.append(after_ts_ms)
        if len(cursors) == 2:
            raise duckdb.IOException("catalog locked (injected)")
        return _window(whole, after_ts_ms, 30 if len(cursors) == 1 else 50)

    market = FollowMarket(read, 5.0, sleep=lambda s: None, max_polls=3, name="replay X")
    with caplog.at_level(logging.ERROR, logger="tradeloop.serve"):
        served = [bar.ts_ms for tick in market.ticks() for bar in tick.bars]
    assert served == [int(t) for t in whole.ts_ms]  # the 20 after the failure too, once
    last_served = int(whole.ts_ms[29])
    assert cursors == [None, last_served, last_served]  # the failed read repeated, same cursor
    assert market.read_failures == 1 and market.rows_read == 50
    assert any("replay X: unreadable" in r.getMessage() for r in caplog.records)
