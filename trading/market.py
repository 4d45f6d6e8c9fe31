"""Market input of the serving loop: ticks of closed candles across symbols.

* ``ReplayMarket``: candles from a file (any format ``tradeloop import`` reads) or from the
  warehouse, replayed in time order at maximum speed (``speed=None``) or accelerated
  (``speed=60`` plays one 1m candle per second).
* ``FollowMarket``: a replay source followed as it grows (``tradeloop serve --follow-every``):
  what it holds, then only its new candles, read every poll from the last one served.
* ``PollingMarket``: any ``pipelines.sources`` Source (ccxt against a real exchange or the
  loopback server, the simulated exchange) polled for newly CLOSED candles. A failing poll
  (exchange outage) is an alert, never a loss: the per-symbol cursor only moves past candles
  that were received, so the next successful poll fetches what was missed.

A ``Tick`` carries the candles that closed since the previous tick (at most one per symbol and
open time), the market clock, and alerts.

The markets do not judge candle values (``served_candles``): the serving loop checks each
candle with the quality gate's rules and drops only a bad one (``expectations.candle_check``).
``Candles.from_frame`` refused a whole read for one NaN: a replay served nothing, a followed
source stalled at the candle for good, a live poll raised out of the loop.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from pipelines.resample import timeframe_ms
from pipelines.sources.base import Source, SourceError, wall_clock_ms
from trading.backtest import Candles
from trading.domain import Bar
from trading.microstructure import SideEvents, Timeline, poll_side
from warehouse.errors import WarehouseError
from warehouse.readers import read_candles

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
logger = logging.getLogger("tradeloop.serve")


@dataclass(frozen=True)
class Tick:
    now_ms: int
    bars: tuple[Bar, ...]
    alerts: tuple[str, ...] = ()
    # order books and trades received since the previous tick, per symbol
    # (``trading.microstructure``): fed to the features before ``bars``
    side: tuple[SideEvents, ...] = ()


def _bar(c: Candles, i: int) -> Bar:
    return Bar(
        c.symbol,
        int(c.ts_ms[i]),
        float(c.open[i]),
        float(c.high[i]),
        float(c.low[i]),
        float(c.close[i]),
        float(c.volume[i]),
        -1,
    )


def served_candles(frame: pl.DataFrame, symbol: str, timeframe: str) -> Candles:
    """``frame``'s candles as the source holds them, for the serving loop: time-ordered, one per
    open time (the first; the loop would drop a repeat anyway), values NOT judged (NaN, <= 0,
    high < low pass through to the loop's candle checks, which drop and count them)."""
    if "ts" not in frame.columns and "date" in frame.columns:
        frame = frame.rename({"date": "ts"})
    prices = ("open", "high", "low", "close", "volume")
    missing = [c for c in ("ts", *prices) if c not in frame.columns]
    if missing:
        raise ValueError(f"candles for {symbol}: missing column(s) {missing}")
    frame = (
        frame.filter(pl.col("ts").is_not_null())
        .unique(subset="ts", keep="first", maintain_order=True)
        .sort("ts")
    )
    ts = frame["ts"]
    ts_ms = ts.dt.epoch("ms") if isinstance(ts.dtype, pl.Datetime) else ts.cast(pl.Int64)
    arrays = {
        c: frame[c].cast(pl.Float64, strict=False).fill_null(math.nan).to_numpy() for c in prices
    }
    return Candles(symbol, timeframe, ts_ms.to_numpy().astype(np.int64), **arrays)


def read_replay_candles(
    source: str,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    exchange: str = "simulated",
    timeframe: str | None = None,
    symbol: str | None = None,
    last: int | None = None,
    after_ts_ms: int | None = None,
    up_to_ts_ms: int | None = None,
) -> Candles:
    """A candle file's candles, or one warehouse symbol's (``source`` = a symbol like BTC/USDT)
    stored under ``exchange``, opened after ``after_ts_ms`` (exclusive) and up to
    ``up_to_ts_ms`` (inclusive); ``last``: only the latest ``last`` of those. Possibly none.

    A warehouse symbol's window is read in SQL, so following a growing symbol reads only its
    new rows; a file is read whole and then cut (a file has no index to seek by time)."""
    path = Path(source)
    if path.exists():
        from pipelines.importers import read_candles as read_candle_file

        table, _ = read_candle_file(path, exchange=exchange, symbol=symbol, timeframe=timeframe)
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        sym = str(frame["symbol"][0]) if frame.height else (symbol or path.stem)
        tf = str(frame["timeframe"][0]) if frame.height else (timeframe or "1m")
        ts_ms = pl.col("ts").dt.epoch("ms")
        if after_ts_ms is not None:
            frame = frame.filter(ts_ms > after_ts_ms)
        if up_to_ts_ms is not None:
            frame = frame.filter(ts_ms <= up_to_ts_ms)
        if last is not None:
            frame = frame.sort("ts").tail(last)
        return served_candles(frame, sym, tf)
    if con is None:
        raise FileNotFoundError(f"replay source {source!r}: no such file, and no warehouse given")
    tf = timeframe or "1m"
    frame = pl.from_arrow(
        read_candles(
            con,
            symbols=[source],
            timeframe=tf,
            exchange=exchange,
            after=None if after_ts_ms is None else _utc(after_ts_ms),
            before=None if up_to_ts_ms is None else _utc(up_to_ts_ms + 1),
            last=last,
        )
    )
    assert isinstance(frame, pl.DataFrame)
    return served_candles(frame, source, tf)


def require_candles(candles: Candles, source: str, exchange: str) -> Candles:
    """``candles`` read from ``source``, or an error that names the source when it held none."""
    if len(candles):
        return candles
    if Path(source).exists():
        raise ValueError(f"replay source {source!r}: the file holds no candles")
    raise FileNotFoundError(
        f"replay source {source!r}: no such file and no {candles.timeframe} candles for "
        f"symbol {source!r} on {exchange!r} in the warehouse"
    )


def _utc(ts_ms: int) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=ts_ms)


@dataclass
class ReplayMarket:
    candles: Sequence[Candles]
    speed: float | None = None  # None: as fast as possible; x: x times real time
    sleep: Callable[[float], None] = time.sleep
    max_ticks: int | None = None
    # per symbol: its stored order books and trades, handed out with its candles
    side: dict[str, Timeline] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.candles:
            raise ValueError("ReplayMarket: no candles")
        tfs = {c.timeframe for c in self.candles}
        if len(tfs) != 1:
            raise ValueError(f"ReplayMarket: one timeframe at a time, got {sorted(tfs)}")
        self.timeframe = tfs.pop()
        self.step_ms = timeframe_ms(self.timeframe)
        self.symbols = [c.symbol for c in self.candles]
        all_ts = np.unique(np.concatenate([c.ts_ms for c in self.candles]))
        self.times = all_ts

    def ticks(self, *, after_ts_ms: int | None = None) -> Iterator[Tick]:
        idx = [0] * len(self.candles)
        if after_ts_ms is not None:
            idx = [int(np.searchsorted(c.ts_ms, after_ts_ms, side="right")) for c in self.candles]
        times = self.times if after_ts_ms is None else self.times[self.times > after_ts_ms]
        for timeline in self.side.values():
            timeline.reset()
            if after_ts_ms is not None:  # served before: fed to the features by history()
                timeline.until(after_ts_ms + self.step_ms)
        count = 0
        for ts in times:
            if self.max_ticks is not None and count >= self.max_ticks:
                return
            bars = []
            for k, c in enumerate(self.candles):
                i = idx[k]
                if i < len(c) and c.ts_ms[i] == ts:
                    bars.append(_bar(c, i))
                    idx[k] = i + 1
            if self.speed is not None and count > 0:
                self.sleep(self.step_ms / 1000.0 / self.speed)
            count += 1  # noqa: SIM113
            close = int(ts) + self.step_ms
            side = tuple(t.until(close) for t in self.side.values())
            yield Tick(close, tuple(bars), side=side)

    def history(self, up_to_ts_ms: int) -> Iterator[Tick]:
        """The ticks up to and including ``up_to_ts_ms`` (to re-warm state after a restart)."""
        for t in ReplayMarket(self.candles, side=self.side).ticks():
            if t.bars[0].ts_ms > up_to_ts_ms:
                return
            yield t


ReadCandles = Callable[[int | None, int | None], Candles]


@dataclass
class FollowMarket:
    """A replay source followed as it grows (the long-running paper loop): the candles it
    holds, then every ``poll_interval_s`` only those opened after the last one served.

    ``read(after_ts_ms, up_to_ts_ms)`` returns the source's candles in that window (after:
    exclusive, up to: inclusive, None: open). The loop stays in this process, so a poll costs
    the new rows, not the history. An unreadable source (a warehouse being migrated, a file
    being rewritten) is logged and read again from the same cursor at the next poll: nothing
    is skipped. ``rows_read`` counts every candle read, to show that. ``on_idle`` runs before
    each wait (the serving loop saves what it served: rows, snapshot, heartbeat).

    ``clock`` (ms): the market's time of each tick, and a poll that brought no candle yields
    an empty tick at that time, so the loop's stale-data alert sees a source that stopped
    growing (``serve --follow-every`` passes the wall clock). None: a tick is stamped with its
    candle's close time and an empty poll yields nothing (a replay of history).

    ``side_read(lo_ms, hi_ms)``: the source's order books and trades stamped in that window
    (``trading.microstructure.Timeline``; None: none). Each poll reads those from the end of
    the previous poll's window to its last new candle's close and hands them out with the
    candles, each with the first one that closes after it (as ``ReplayMarket``)."""

    read: ReadCandles
    timeframe: str
    poll_interval_s: float
    sleep: Callable[[float], None] = time.sleep
    on_idle: Callable[[], None] | None = None
    max_polls: int | None = None
    name: str = "replay"
    clock: Callable[[], int] | None = None
    rows_read: int = 0
    read_failures: int = 0
    side_read: Callable[[int, int], Timeline | None] | None = None
    side_until_ms: int | None = None  # where the next side read starts

    def __post_init__(self) -> None:
        if self.poll_interval_s <= 0:
            raise ValueError(
                f"FollowMarket: poll_interval_s must be > 0, got {self.poll_interval_s}"
            )
        self.step_ms = timeframe_ms(self.timeframe)

    def ticks(self, *, after_ts_ms: int | None = None) -> Iterator[Tick]:
        cursor = after_ts_ms
        polls = 0
        while self.max_polls is None or polls < self.max_polls:
            if polls:
                if self.on_idle is not None:
                    self.on_idle()
                self.sleep(self.poll_interval_s)
            polls += 1
            try:
                candles = self.read(cursor, None)
                side = self._side(candles)
            except (OSError, ValueError, WarehouseError, duckdb.Error) as exc:
                self.read_failures += 1
                logger.error(
                    f"{self.name}: unreadable ({exc}); next read in {self.poll_interval_s:g} s "
                    f"from cursor {cursor}"
                )
                continue
            self.rows_read += len(candles)
            if len(candles) == 0 and cursor is None:
                logger.warning(
                    f"{self.name}: no candles yet; next read in {self.poll_interval_s:g} s"
                )
            for i in range(len(candles)):
                cursor = int(candles.ts_ms[i])
                now = self.clock() if self.clock is not None else cursor + self.step_ms
                events = (side.until(cursor + self.step_ms),) if side is not None else ()
                yield Tick(now, (_bar(candles, i),), side=events)
            if len(candles) == 0 and self.clock is not None:
                yield Tick(self.clock(), ())  # time passes without a candle

    def _side(self, candles: Candles) -> Timeline | None:
        """The order books and trades that come with ``candles`` (``side_read``)."""
        if self.side_read is None or len(candles) == 0:
            return None
        lo = self.side_until_ms
        if lo is None:
            lo = int(candles.ts_ms[0]) - self.step_ms
        hi = int(candles.ts_ms[-1]) + self.step_ms
        side = self.side_read(lo, hi)
        self.side_until_ms = hi  # read: the next poll's window starts here
        return side

    def history(self, up_to_ts_ms: int) -> Iterator[Tick]:
        """The ticks up to and including ``up_to_ts_ms`` (to re-warm state after a restart)."""
        candles = self.read(None, up_to_ts_ms)
        side = self._side(candles)
        yield from ReplayMarket([candles], side={} if side is None else {side.symbol: side}).ticks()


@dataclass
class PollingMarket:
    """Poll ``source`` for closed candles of ``symbols`` from ``since_ms`` on."""

    source: Source
    symbols: Sequence[str]
    timeframe: str
    since_ms: int
    clock: Callable[[], int] = wall_clock_ms
    sleep: Callable[[float], None] = time.sleep
    poll_interval_s: float = 1.0
    max_polls: int | None = None
    cursor: dict[str, int] = field(default_factory=dict)
    outages: int = 0
    # symbols whose order book (one snapshot a poll) and new trades each poll also fetches
    side_symbols: Sequence[str] = ()
    trade_cursor: dict[str, int] = field(default_factory=dict)
    # funding and news data the warehouse received since the last poll, per symbol
    # (trading.side_data.WarehouseSideFeed.poll); None: not read
    side_data: Callable[[], dict[str, tuple[Any, ...]]] | None = None

    def __post_init__(self) -> None:
        self.step_ms = timeframe_ms(self.timeframe)
        for s in self.symbols:
            self.cursor.setdefault(s, self.since_ms)

    def poll(self) -> Tick:
        now = self.clock()
        alerts: list[str] = []
        bars: list[Bar] = []
        side: list[SideEvents] = []
        for s in self.symbols:
            try:
                for page in self.source.iter_candles(s, self.timeframe, self.cursor[s], None):
                    frame = pl.from_arrow(page)
                    assert isinstance(frame, pl.DataFrame)
                    c = served_candles(frame, s, self.timeframe)
                    for i in range(len(c)):
                        if c.ts_ms[i] >= self.cursor[s]:
                            bars.append(_bar(c, i))
                            self.cursor[s] = int(c.ts_ms[i]) + self.step_ms
            except SourceError as exc:
                self.outages += 1
                alerts.append(
                    f"exchange outage for {s}: {exc}; will retry from cursor {self.cursor[s]}"
                )
            if s in self.side_symbols:
                start = self.trade_cursor.get(s, self.since_ms)
                try:
                    events, self.trade_cursor[s] = poll_side(self.source, s, start)
                    side.append(events)
                except SourceError as exc:
                    alerts.append(f"order book / trades of {s} not fetched: {exc}")
        if self.side_data is not None:
            try:
                side += [SideEvents(s, data=events) for s, events in self.side_data().items()]
            except (duckdb.Error, WarehouseError) as exc:
                alerts.append(f"funding / news data not read from the warehouse: {exc}")
        bars.sort(key=lambda b: (b.ts_ms, b.symbol))
        return Tick(now, tuple(bars), tuple(alerts), tuple(side))

    def ticks(self, *, after_ts_ms: int | None = None) -> Iterator[Tick]:
        if after_ts_ms is not None:
            for s in self.symbols:
                self.cursor[s] = max(self.cursor[s], after_ts_ms + self.step_ms)
        polls = 0
        while self.max_polls is None or polls < self.max_polls:
            tick = self.poll()
            polls += 1
            # one tick per candle open time, in order
            by_ts: dict[int, list[Bar]] = {}
            for b in tick.bars:
                by_ts.setdefault(b.ts_ms, []).append(b)
            if not by_ts:
                yield Tick(tick.now_ms, (), tick.alerts, tick.side)
            for k, ts in enumerate(sorted(by_ts)):
                first = k == 0
                yield Tick(
                    tick.now_ms,
                    tuple(by_ts[ts]),
                    tick.alerts if first else (),
                    tick.side if first else (),
                )
            self.sleep(self.poll_interval_s)
