"""Order-book snapshots and public trades collected on every cycle, for the symbols that ask.

Which symbols: ``Settings.microstructure_symbols`` (``TRADELOOP_MICROSTRUCTURE_SYMBOLS``, a
list of symbols; ``*`` = every symbol collected), or every symbol of a run started with
``tradeloop collect --trades`` / ``--order-book`` (see ``enabled``). Each cycle of the warm
collector (``pipelines.follow.run_cycle``) stores, for each such symbol,

* one order-book snapshot (the top 20 levels, stamped with the exchange's time),
* the public trades since the last one stored (resume per symbol; the first cycle starts
  ``lookback`` before now),

through the quality gate in one call per table (``pipelines.oneshot.collect_extras``, trades
from ``last_trade_ms`` on), BEFORE the cycle's candles are written and its features updated:
a reader that sees a candle sees its trades, and the features of the candles that just
closed use them. Writes are upserts on the
tables' keys (snapshot: exchange, symbol, ts; trade: exchange, symbol, trade_id): a cycle run
again, or a trade page fetched twice, stores nothing twice.

The one-shot collect takes the same symbols (``flows.collect``), through
``pipelines.oneshot.collect_extras``.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from warehouse import Settings

ALL = "*"


def enabled(settings: Settings, symbols: Iterable[str], *, flag: bool = False) -> list[str]:
    """The symbols of ``symbols`` whose order book and trades are collected: all of them with
    ``flag`` (a run's ``--trades`` / ``--order-book``), else those the settings name."""
    wanted = set(settings.microstructure_symbols)
    return [s for s in dict.fromkeys(symbols) if flag or ALL in wanted or s in wanted]


def last_trade_ms(con: duckdb.DuckDBPyConnection, exchange: str) -> dict[str, int]:
    """Per symbol: the time of its newest stored trade (epoch ms)."""
    rows = con.execute(
        "SELECT symbol, epoch_ms(max(ts)) FROM trades WHERE exchange = ? GROUP BY ALL",
        [exchange],
    ).fetchall()
    return {str(s): int(ms) for s, ms in rows if ms is not None}
