"""Serving only the latest candles of a warehouse symbol (``last_candles``, as the pipeline's
serve step does): the candles before them warm the features first, so the champion decides
from the first served candle instead of the RSI fallback, and only the latest are served."""

from __future__ import annotations

from tests.trading.serve_support import (
    SYMBOL,
    candle_table,
    real_frame,
    register_champion,
    tiny_model,
)
from trading.loop import LoopConfig
from trading.service import serve_replay
from warehouse import Settings, upsert

EXCHANGE = "binance"


def test_latest_candles_are_served_by_the_champion_after_a_warm_up(
    settings: Settings,
    lake,  # type: ignore[no-untyped-def]
) -> None:
    history = real_frame(3000)
    upsert(lake, "candles", candle_table(history, EXCHANGE), settings=settings)
    model_id = register_champion(lake, settings, tiny_model())
    config = LoopConfig(account="warm", exchange=EXCHANGE, model_check_every_steps=60)

    summary = serve_replay(settings, SYMBOL, config=config, last_candles=40)

    assert summary.candles == 40
    served = [int(t) for t in history["ts"].dt.epoch("ms").to_list()[-40:]]
    equity = lake.execute(
        "SELECT epoch_ms(ts) FROM equity WHERE account = 'warm' ORDER BY ts"
    ).fetchall()
    assert [r[0] for r in equity] == served  # the warm-up candles made no decisions
    predictions = lake.execute(
        "SELECT model_id, count(*) FROM predictions WHERE symbol = ? GROUP BY 1", [SYMBOL]
    ).fetchall()
    assert predictions == [(model_id, 40)]  # the model from the first candle, no fallback
