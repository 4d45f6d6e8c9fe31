"""Order-book snapshots and public trades on every cycle of the warm collector, for the
symbols ``Settings.microstructure_symbols`` names (``pipelines.microstructure``): on the
simulated exchange, two cycles store each trade once and one snapshot a cycle; a cycle run
again at the same time stores nothing twice; the features of the candles see them."""

from __future__ import annotations

import duckdb
import numpy as np

from pipelines.collect import SourceOptions
from pipelines.follow import follow
from pipelines.simulated_exchange import MINUTE_MS, SimulatedExchange
from tests.pipelines.test_collect_follow import START_MS, Clock
from warehouse import Settings

LOOKBACK_DAYS = 0.01  # 14.4 minutes before the first cycle


def _run(lake: duckdb.DuckDBPyConnection, settings: Settings, clock: Clock, cycles: int) -> None:
    out = follow(
        lake, settings, SourceOptions(kind="simulated"), ["BTC/USDT", "ETH/USDT"], ["1m"],
        every_s=60, max_cycles=cycles, lookback_days=LOOKBACK_DAYS, clock=clock,
        sleep=clock.sleep,
    )  # fmt: skip
    assert all(c.error is None and not c.failed for c in out), [c.summary() for c in out]


def test_each_cycle_stores_the_book_and_new_trades_once(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    settings = settings.model_copy(update={"microstructure_symbols": ("BTC/USDT",)})
    clock = Clock()
    _run(lake, settings, clock, 2)
    end = clock.now  # the second cycle ran at START_MS + 1 minute
    since = START_MS - int(LOOKBACK_DAYS * 86_400_000)
    expected = SimulatedExchange().trade_arrays("BTC/USDT", since, end)
    stored = lake.execute(
        "SELECT trade_id, epoch_ms(ts) FROM trades WHERE symbol = 'BTC/USDT' ORDER BY ts, trade_id"
    ).fetchall()
    assert len(stored) == expected["id"].size > 100  # every trade, none twice
    assert sorted(int(i) for i, _ in stored) == sorted(expected["id"].tolist())
    books = lake.execute(
        "SELECT epoch_ms(ts), len(bid_prices) FROM order_book_snapshots WHERE symbol = 'BTC/USDT' "
        "ORDER BY ts"
    ).fetchall()
    assert books == [(START_MS, 20), (START_MS + MINUTE_MS, 20)]  # one a cycle, 20 levels
    # only the symbols the settings name
    assert lake.execute(
        "SELECT count(*) FROM trades WHERE symbol = 'ETH/USDT' UNION ALL "
        "SELECT count(*) FROM order_book_snapshots WHERE symbol = 'ETH/USDT'"
    ).fetchall() == [(0,), (0,)]
    # the features of the stored candles read them: trade flow on every candle; the order-book
    # imbalance only on the candle that closed after the first snapshot (cycle 2's, opened
    # 37 s before cycle 1 took it): the earlier candles closed before any snapshot existed
    flow = lake.execute(
        "SELECT count(tfbuy_1), count(*) FROM features WHERE symbol = 'BTC/USDT'"
    ).fetchone()
    assert flow is not None and flow[0] == flow[1] > 10
    with_book = lake.execute(
        "SELECT epoch_ms(ts) FROM features WHERE symbol = 'BTC/USDT' AND obimb IS NOT NULL"
    ).fetchall()
    assert with_book == [(START_MS - 37_000,)]
    # the same cycle again (the clock back one minute): nothing stored twice
    clock.now = START_MS + MINUTE_MS
    _run(lake, settings, clock, 1)
    again = lake.execute(
        "SELECT count(*), count(DISTINCT trade_id) FROM trades WHERE symbol = 'BTC/USDT' "
        "UNION ALL SELECT count(*), count(DISTINCT ts) FROM order_book_snapshots"
    ).fetchall()
    assert again == [(len(stored), len(stored)), (2, 2)]
    assert np.isfinite(expected["amount"]).all()
