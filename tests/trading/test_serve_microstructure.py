"""A model trained with order-book and trade-flow features serves with them (issue 15 item 1).

The simulated exchange's candles, a snapshot in every minute and its public trades are stored
in a real warehouse; training reads the snapshots and trades beside the candles (as of each
close) and the model's inputs hold the order-book and trade-flow columns; its ONNX export
equals the trained ensemble; the serving loop, replaying the stored candles WITH the stored
snapshots and trades (``trading.service.stored_side``), feeds them to its online engine
(``on_order_book``, ``on_trade``): every feature the model reads equals the batch value to
1e-9, the model (not the fallback) decides with the probabilities ``backtest --model``'s batch
path computes from the same stored data, and the bar's costs use the book's spread. The live
loop's market polls a snapshot and the new trades through the real ccxt client.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from models import retraining
from models.data import load_candles
from models.training import train_ensemble
from pipelines.features import build_features
from pipelines.loopback import LoopbackExchange, LoopbackServer
from pipelines.simulated_exchange import DEFAULT_ORIGIN_MS, MINUTE_MS, SimulatedExchange
from pipelines.sources.simulated import SimulatedSource
from tests.support.loopback import NOW_MS, ccxt_source
from tests.support.models import TINY
from tests.trading.serve_harness import assert_online_equals_batch, replay_stored
from trading.broker import OrderBookSlippage
from trading.market import PollingMarket
from trading.microstructure import half_spread_fraction
from trading.model_backtest import batch_inference
from warehouse import Settings, upsert

SYMBOL = "BTC/USDT"
BARS = 1_800  # 30 hours of 1m: the 1h features warm up after ~16
START_MS = DEFAULT_ORIGIN_MS + 2 * 86_400_000
END_MS = START_MS + BARS * MINUTE_MS
BOOK_COLUMNS = ("obimb", "spreadbps", "obimbmom_5", "obimbdev_20", "obimb_lag5")
TRADE_COLUMNS = ("tfbuy_1", "tfimb_1", "tfbuy_10", "tfimb_10")


def _store(lake: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Candles, one 20-level snapshot 30 s into every minute, and every public trade."""
    now = [END_MS]
    source = SimulatedSource(clock=lambda: now[0])
    candles = pa.concat_tables(list(source.iter_candles(SYMBOL, "1m", START_MS, END_MS)))
    books = []
    for minute in range(START_MS, END_MS, MINUTE_MS):
        now[0] = minute + 30_000
        books.append(source.fetch_order_book(SYMBOL))
    now[0] = END_MS
    trades = source.fetch_trades(SYMBOL, START_MS, END_MS)
    upsert(lake, "candles", candles, settings=settings)
    upsert(lake, "order_book_snapshots", pa.concat_tables(books), settings=settings)
    upsert(lake, "trades", trades, settings=settings)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_model_trained_with_book_and_trades_serves_with_them(
    lake: duckdb.DuckDBPyConnection, settings: Settings, tmp_path: Path
) -> None:
    _store(lake, settings)
    # training: the snapshots and trades come with the candles and are in the model's inputs
    batch = load_candles(lake, symbols=[SYMBOL], timeframe="1m", days=None, exchange="simulated")
    assert batch.order_book is not None and batch.order_book.height == BARS
    assert batch.trades is not None and batch.trades.height > 10 * BARS
    config = TINY.model_copy(update={"feature_selection": False, "input_groups": None})
    samples = retraining.prepare_samples(batch, config)
    for column in (*BOOK_COLUMNS, *TRADE_COLUMNS):
        assert column in samples.feature_columns, column
    ensemble = train_ensemble(samples, config)
    assert set(BOOK_COLUMNS + TRADE_COLUMNS) <= set(ensemble.selected_features)
    # the groups it reads, in the registry's hyperparameters and the ONNX metadata
    groups = ["candles", "multi-timeframe", "order book/trades"]
    assert ensemble.hyperparameters()["feature_groups"] == groups
    # ONNX Runtime vs the trained ensemble on the test window (raises over 1e-5)
    exported, parity = retraining.export(ensemble, samples, tmp_path)
    assert parity <= retraining.PARITY_MAX_ABS

    # serving: the stored candles replayed with the stored snapshots and trades
    loop, candles, side, online = replay_stored(lake, exported.path, "micro", SYMBOL, tmp_path)
    assert len(online) == BARS
    state = loop.symbols[SYMBOL]
    read = state.engine.columns
    assert set(BOOK_COLUMNS + TRADE_COLUMNS) <= set(read)
    # online == batch (the same snapshots and trades as of each close), to 1e-9
    order_book, trades = side[SYMBOL].frames()
    want = build_features(batch.frame, order_book=order_book, trades=trades)
    assert_online_equals_batch(online, read, want)
    # the model decided (after its window filled), and its inputs had book and trade values
    served = {
        int(r["ts"]): r["p_buy"]
        for r in loop.batch.tables["predictions"].values()
        if r["model_id"] == "micro"
    }
    assert len(served) > 200  # every bar once the 1h features (ema_26 of hours) are warm
    # backtest --model's path (batch features with the same stored book and trades, then ONNX
    # Runtime on every window) gives the probabilities the loop served bar by bar
    predictor = loop.manager.predictor
    assert predictor is not None
    assert json.loads(predictor.info.metadata["tradeloop.feature_groups"]) == groups
    inference = batch_inference(candles, predictor, min_feature_quality=0.0, side=side[SYMBOL])
    index = {int(t): i for i, t in enumerate(inference.ts_ms)}
    batch_p = np.array([inference.probabilities[index[t], 0] for t in served])
    np.testing.assert_allclose(batch_p, list(served.values()), rtol=0, atol=1e-5)
    assert np.isfinite(online[-1]["obimb"]) and np.isfinite(online[-1]["tfbuy_10"])  # type: ignore[arg-type]
    # the bar's costs: the latest book's half spread; paper fills walk the book
    last = candles.bar(len(candles) - 1)
    costs = loop._costs(state, last)
    assert costs is not None and state.book is not None
    assert costs.half_spread_fraction == half_spread_fraction(state.book) > 0
    slippage = loop.broker.slippage  # type: ignore[attr-defined]
    assert isinstance(slippage, OrderBookSlippage)
    assert slippage.snapshots[SYMBOL][-1] is state.book


def test_the_live_market_polls_a_book_and_the_new_trades_through_ccxt() -> None:
    """``PollingMarket`` (the live loop's market) with ``side_symbols``: each poll fetches one
    order-book snapshot and the trades since the previous poll through the real ccxt client
    against the loopback exchange, every trade once over two polls, in time order."""
    now = [NOW_MS]
    server = LoopbackServer(LoopbackExchange(symbols=[SYMBOL], clock=lambda: now[0])).start()
    since = NOW_MS - NOW_MS % MINUTE_MS - 3 * MINUTE_MS

    def next_minute(_seconds: float) -> None:
        now[0] += MINUTE_MS

    try:
        market = PollingMarket(
            ccxt_source(server), [SYMBOL], "1m", since_ms=since, clock=lambda: now[0],
            sleep=next_minute, max_polls=2, side_symbols=[SYMBOL],
        )  # fmt: skip
        ticks = list(market.ticks())
    finally:
        server.stop()
    events = [side for tick in ticks for side in tick.side]
    books = [b for e in events for b in e.books]
    assert [b.ts_ms for b in books] == [NOW_MS, NOW_MS + MINUTE_MS]
    want = SimulatedExchange().order_book(SYMBOL, NOW_MS, depth=20)
    assert list(books[0].bid_prices) == want["bid_prices"]
    trades = [t for e in events for t in e.trades]
    expected = SimulatedExchange().trade_arrays(SYMBOL, since, NOW_MS + MINUTE_MS)
    assert len(trades) > 40
    assert [t[0] for t in trades] == expected["ts"].tolist()  # each once, in time order
    assert [t[2] for t in trades] == expected["amount"].tolist()
    assert [t[1] == "buy" for t in trades] == expected["is_buy"].tolist()
