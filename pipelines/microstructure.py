"""Order-book snapshots and public trades collected on every cycle, for the symbols that ask.

Which symbols: ``Settings.microstructure_symbols`` (``TRADELOOP_MICROSTRUCTURE_SYMBOLS``, a
list of symbols; ``*`` = every symbol collected), or every symbol of a run started with
``tradeloop collect --trades`` / ``--order-book`` (see ``enabled``). Each cycle of the warm
collector (``pipelines.follow.run_cycle``) stores, for each such symbol,

* one order-book snapshot (the top 20 levels, stamped with the exchange's time),
* the public trades since the last one stored (resume per symbol; the first cycle starts
  ``lookback`` before now),

through the quality gate in one call per table, BEFORE the cycle's features are updated, so
the features of the candles that just closed see their trades. Writes are upserts on the
tables' keys (snapshot: exchange, symbol, ts; trade: exchange, symbol, trade_id): a cycle run
again, or a trade page fetched twice, stores nothing twice.

The one-shot collect takes the same symbols (``flows.collect``), through
``pipelines.oneshot.collect_extras``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import duckdb

from expectations.gate import GatePolicy, GateResult
from pipelines.collect import SeriesStats
from pipelines.follow import FetchPool
from pipelines.oneshot import collect_extras
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


def collect_microstructure(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    pool: FetchPool,
    *,
    run_id: str,
    source_kind: str,
    since_ms: int,
    trades: Sequence[str] = (),
    order_book: Sequence[str] = (),
    policy: GatePolicy | None = None,
) -> tuple[list[SeriesStats], list[GateResult]]:
    """One snapshot per symbol of ``order_book`` and the new trades of each symbol of
    ``trades`` (from its last stored trade, inclusive: the upsert keeps what is stored; else
    from ``since_ms``), each table through ONE gate call. Returns the stats and gate results."""
    return collect_extras(
        con, settings, pool, run_id=run_id, source_kind=source_kind, since_ms=since_ms,
        until_ms=None, trades=trades, order_book=order_book, policy=policy,
        trades_since=last_trade_ms(con, pool.name) if trades else None,
    )  # fmt: skip
