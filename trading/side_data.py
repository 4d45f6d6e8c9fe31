"""Funding rates, mark candles, open interest and scored headlines in the serving loop: the
data of the side feature groups (``funding``, ``sentiment``; ``pipelines.features.side``).

They reach the loop the way order books and trades do (``trading.microstructure``): a market
attaches to each tick, per symbol, what became available since the previous tick
(``SideEvents.data``: ``(ts_ms, method, args)``, ``method`` naming the
``OnlineFeatureEngine`` call: ``on_funding``, ``on_mark``, ``on_open_interest``,
``on_news``). ``SideTimeline`` hands out what the warehouse stores (``serve`` replaying the
warehouse, ``backtest --model``), a value when it exists: a funding rate, an open-interest
value or a headline at its stamp, a mark candle at its close; the engine uses each only for
the bars it is as of (stamped before the bar's close), as the batch features do. Read only
when the champion reads one of these features (``reads_side_groups``).

A symbol keeps what it was fed (``SideMemory``) for as long as the features of its kept
candles can use it, so a new champion's engine, replaying those candles, computes the same
values (news over 8 days for the decayed score, funding and open interest over 3).

Imports neither torch nor Prefect.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.features.side import (
    FUNDING_LOOKBACK,
    NEWS_LOOKBACK,
    NEWS_SCORER,
    SideInputs,
    open_interest_period,
    read_side_inputs,
    side_events,
)
from pipelines.features.spec import SIDE_GROUPS
from pipelines.resample import timeframe_ms

SideEvent = tuple[int, str, tuple[Any, ...]]  # ts_ms, OnlineFeatureEngine method, its args
_MS = {"news": int(NEWS_LOOKBACK.total_seconds() * 1000)}
_FUNDING_MS = int(FUNDING_LOOKBACK.total_seconds() * 1000)


def reads_side_groups(columns: Iterable[str]) -> tuple[str, ...]:
    """The side groups (``funding``, ``sentiment``) with a feature among ``columns``."""
    wanted = set(columns)
    return tuple(g for g, names in SIDE_GROUPS.items() if wanted & set(names))


def feed(engine: Any, events: Iterable[SideEvent]) -> None:
    """``events`` to an ``OnlineFeatureEngine`` (any order: each counts for the bars closing
    after its stamp)."""
    for ts_ms, method, args in events:
        getattr(engine, method)(ts_ms, *args)


def _due_ms(event: SideEvent, step_ms: int) -> int:
    """The event is handed out for a bar closing at ``c`` when this is ``< c``: a value stamped
    before the close; a mark candle that closed by then (``open + step <= c``)."""
    ts_ms, method, _ = event
    return ts_ms + step_ms - 1 if method == "on_mark" else ts_ms


@dataclass
class SideTimeline:
    """One symbol's stored side data, handed out tick by tick: ``until(close_ms)`` returns the
    events that exist before a bar closing at ``close_ms`` is served (stamped before it; a
    mark candle closed by then) and were not handed out yet."""

    symbol: str
    inputs: SideInputs
    step_ms: int
    events: list[SideEvent] = field(init=False)
    _due: np.ndarray = field(init=False)
    _next: int = 0

    def __post_init__(self) -> None:
        events = side_events(self.inputs)
        due = np.asarray([_due_ms(e, self.step_ms) for e in events], dtype=np.int64)
        order = np.argsort(due, kind="stable")
        self.events = [events[i] for i in order]
        self._due = due[order]

    def reset(self) -> None:
        self._next = 0

    def until(self, close_ms: int) -> tuple[SideEvent, ...]:
        end = int(np.searchsorted(self._due, close_ms, side="left"))
        out = tuple(self.events[self._next : end])
        self._next = max(self._next, end)
        return out


def read_side_timeline(
    con: Any,
    exchange: str,
    symbol: str,
    timeframe: str,
    lo_ms: int,
    groups: Sequence[str] = tuple(SIDE_GROUPS),
) -> SideTimeline | None:
    """``symbol``'s stored funding and news data for its candles from ``lo_ms`` on (with the
    look-back the features need); None when the warehouse holds none."""
    import datetime as dt

    after = dt.datetime.fromtimestamp(lo_ms / 1000, tz=dt.UTC)
    side = read_side_inputs(
        con, exchange=exchange, symbol=symbol, timeframe=timeframe, after=after, groups=groups
    )
    if not side.groups:
        return None
    return SideTimeline(symbol, side, timeframe_ms(timeframe))


@dataclass
class SideMemory:
    """What a symbol's engine was fed, kept while the features of the symbol's last
    ``bars`` candles can use it (a new engine's replay)."""

    step_ms: int
    bars: int
    events: list[SideEvent] = field(default_factory=list)
    _prune_at: int = 1024  # pruned when this many are kept (then at twice what is left)

    def add(self, events: Iterable[SideEvent]) -> None:
        self.events.extend(events)

    def prune(self, now_ms: int) -> None:
        """Forget what no bar of the last ``bars`` (closing up to ``now_ms``) uses."""
        if len(self.events) < self._prune_at:
            return
        oldest_close = now_ms - self.bars * self.step_ms
        limits = {
            "on_news": oldest_close - _MS["news"],
            "on_funding": oldest_close - _FUNDING_MS,
            "on_open_interest": oldest_close - _FUNDING_MS,
            "on_mark": oldest_close - self.step_ms,
        }
        self.events = [e for e in self.events if e[0] >= limits[e[1]]]
        self._prune_at = max(1024, 2 * len(self.events))


@dataclass
class WarehouseSideFeed:
    """Live serving: each ``poll()`` reads the funding and news data the warehouse received
    since the previous poll (the futures collector's and ``tradeloop news fetch``'s writes,
    by ``ingested_at``, re-reading ``overlap_s`` back for writes that committed late) and
    returns it per symbol. Funding rates, mark candles and open interest read twice replace
    themselves in the engine; a headline is returned once (by source and id). The first poll
    returns what the coming bars' features can use (``read_side_inputs``' look-back)."""

    con: Any
    exchange: str
    timeframe: str
    symbols: Sequence[str]
    clock: Any  # () -> epoch seconds
    overlap_s: float = 120.0
    _cursor: float | None = None
    _seen: dict[tuple[str, str], float] = field(default_factory=dict)

    def poll(self) -> dict[str, tuple[SideEvent, ...]]:
        import datetime as dt

        now = float(self.clock())
        first = self._cursor is None
        since = dt.datetime.fromtimestamp(
            now - NEWS_LOOKBACK.total_seconds() if first else self._cursor - self.overlap_s,  # type: ignore[operator]
            tz=dt.UTC,
        )
        news = self._news(since, by_publication=first, now=now)
        out: dict[str, tuple[SideEvent, ...]] = {}
        for s in self.symbols:
            if first:
                funding = read_side_inputs(
                    self.con,
                    exchange=self.exchange,
                    symbol=s,
                    timeframe=self.timeframe,
                    after=dt.datetime.fromtimestamp(now, tz=dt.UTC),
                    groups=("funding",),
                )
            else:
                funding = _futures_ingested_since(self.con, self.exchange, s, self.timeframe, since)
            events = [*side_events(funding), *news]
            if events:
                out[s] = tuple(events)
        self._cursor = now
        forget = now - max(2 * self.overlap_s, 86_400.0)  # headlines seen in the last day
        for key in [k for k, t in self._seen.items() if t < forget]:
            del self._seen[key]
        return out

    def _news(self, since: Any, *, by_publication: bool, now: float) -> list[SideEvent]:
        """Scored headlines published (first poll) or scored since ``since``, each once."""
        column = "n.ts" if by_publication else "s.ingested_at"
        rows = self.con.execute(
            "SELECT n.source, n.id, n.ts, s.score, n.symbols FROM news n JOIN news_scores s "
            "ON s.source = n.source AND s.id = n.id AND s.scorer = ? "
            f"WHERE {column} >= ? ORDER BY n.ts, n.source, n.id",
            [NEWS_SCORER, since],
        ).fetchall()
        out: list[SideEvent] = []
        for source, id_, ts, score, symbols in rows:
            if (source, id_) in self._seen:
                continue
            self._seen[(source, id_)] = now
            out.append((_epoch_ms(ts), "on_news", (float(score), list(symbols))))
        return out


def _epoch_ms(ts: Any) -> int:
    return int(ts.timestamp() * 1000)


def _futures_ingested_since(
    con: Any, exchange: str, symbol: str, timeframe: str, since: Any
) -> SideInputs:
    """The funding rates, mark candles (``timeframe``) and open interest (the period
    ``read_side_inputs`` uses) of ``symbol`` written at or after ``since``."""
    import polars as pl

    def frame(sql: str, params: list[object]) -> pl.DataFrame | None:
        out = pl.from_arrow(con.execute(sql, params).fetch_arrow_table())
        assert isinstance(out, pl.DataFrame)
        return out if out.height else None

    key: list[object] = [exchange, symbol, since]
    period = open_interest_period(con, exchange, symbol, timeframe)
    return SideInputs(
        funding=frame(
            "SELECT ts, funding_rate FROM funding_rates WHERE exchange = ? AND symbol = ? "
            "AND ingested_at >= ? ORDER BY ts",
            key,
        ),
        mark=frame(
            "SELECT ts, close FROM mark_candles WHERE exchange = ? AND symbol = ? AND "
            "ingested_at >= ? AND timeframe = ? ORDER BY ts",
            [*key, timeframe],
        ),
        open_interest=None
        if period is None
        else frame(
            "SELECT ts, open_interest FROM open_interest WHERE exchange = ? AND symbol = ? AND "
            "ingested_at >= ? AND timeframe = ? ORDER BY ts",
            [*key, period],
        ),
    )
