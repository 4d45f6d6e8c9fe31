"""Following a growing warehouse symbol (``tradeloop serve --follow-every``): the loop stays in
process, each poll reads only the candles stored since the last one served, what was served is
saved before each wait, a restart resumes without serving a candle twice, and a failed read is
repeated from the same candle, not skipped."""

from __future__ import annotations

import json
import logging

import polars as pl
import pytest

from tests.trading.serve_support import SYMBOL, candle_table, real_frame
from trading.backtest import Candles
from trading.loop import LoopConfig
from trading.market import FollowMarket, read_replay_candles
from trading.service import serve_replay
from warehouse import Settings, Warehouse, upsert

EXCHANGE = "binance"
CONFIG = LoopConfig(account="follow", exchange=EXCHANGE, model_check_every_steps=60)


def _store(settings: Settings, frame: pl.DataFrame) -> None:
    """Candles written by another connection, as the collect flow's process would."""
    with Warehouse(settings).session() as con:
        upsert(con, "candles", candle_table(frame, EXCHANGE), settings=settings)


def _served(lake) -> list[int]:  # type: ignore[no-untyped-def]
    """The candles the loop served (one equity row each), as another connection sees them."""
    rows = lake.execute(
        "SELECT epoch_ms(ts) FROM equity WHERE account = 'follow' ORDER BY ts"
    ).fetchall()
    return [r[0] for r in rows]


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

    market = FollowMarket(read, "1m", 60.0, sleep=store_more, max_polls=4)
    served = [bar.ts_ms for tick in market.ticks() for bar in tick.bars]
    assert served == _epoch_ms(history)  # every candle once, in order
    # 300 + 100 + 100 + 100 rows read: re-reading the history every poll would be 1,800
    assert market.rows_read == 600 and market.read_failures == 0


def test_follow_serves_new_candles_and_a_restart_serves_none_twice(
    settings: Settings, lake
) -> None:  # type: ignore[no-untyped-def]
    history = real_frame(400)
    _store(settings, history.head(150))
    waits: list[float] = []

    def store_more(seconds: float) -> None:
        waits.append(seconds)
        _store(settings, history.head(150 + 50 * len(waits)))

    first = serve_replay(
        settings, SYMBOL, config=CONFIG, follow_every_s=30.0, sleep=store_more, max_candles=225
    )
    assert first.candles == 225 and waits == [30.0, 30.0]
    assert first.last_ts_ms == _epoch_ms(history)[224]

    # the process restarts: the loop resumes from its snapshot and follows on (25 candles are
    # stored already, 35 more arrive during its wait)
    again = serve_replay(
        settings, SYMBOL, config=CONFIG, follow_every_s=30.0, sleep=store_more, max_candles=60
    )
    assert again.resumed_from_ts_ms == first.last_ts_ms
    assert again.candles == 60 and again.last_ts_ms == _epoch_ms(history)[284]
    assert _served(lake) == _epoch_ms(history)[:285]  # none twice, none skipped


def test_a_failed_warehouse_read_is_repeated_and_served_rows_are_saved_before_waiting(
    settings: Settings,
    lake,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import trading.market as market_module

    history = real_frame(400)
    _store(settings, history.head(130))  # not a multiple of the loop's flush interval
    read_after: list[object] = []

    def flaky_read_candles(con, **window):  # type: ignore[no-untyped-def]
        read_after.append(window["after"])
        if len(read_after) == 2:  # the warehouse's own error: an unknown snapshot
            return real_read_candles(con, snapshot_id=999_999, **window)
        return real_read_candles(con, **window)

    real_read_candles = market_module.read_candles
    monkeypatch.setattr(market_module, "read_candles", flaky_read_candles)
    saved_at_wait: list[int] = []
    heartbeat = settings.home / "serve" / "follow.heartbeat"

    def store_more(seconds: float) -> None:
        saved_at_wait.append(len(_served(lake)))
        assert json.loads(heartbeat.read_text())["steps"] == 130
        _store(settings, history.head(130 + 100 * len(saved_at_wait)))

    with caplog.at_level(logging.ERROR, logger="tradeloop.serve"):
        summary = serve_replay(
            settings, SYMBOL, config=CONFIG, follow_every_s=30.0, sleep=store_more, max_candles=300
        )
    assert summary.candles == 300
    assert saved_at_wait == [130, 130]  # everything served was written before each wait
    cursor = read_after[1]
    assert read_after[2] == cursor  # the failed read repeated from the same candle
    assert any(
        "unreadable" in r.getMessage() and "snapshot 999999" in r.getMessage()
        for r in caplog.records
    )
    assert _served(lake) == _epoch_ms(history)[:300]  # none skipped, none twice
