"""The online engine: every feature of one symbol updated in O(1) per closed candle.

It interprets the same graphs as the batch pipeline (:mod:`pipelines.features.spec`) with
the online operator forms of :mod:`pipelines.features.ops`. Higher timeframes are candles
resampled on the fly; their features change only when such a candle has closed, exactly as
the batch as-of join sees them. Order-book snapshots and trades are fed as they arrive
(``on_order_book``, ``on_trade``), each in O(1); events must arrive in time order. The side
groups' data (funding rates, mark candles, open interest, scored headlines: ``on_funding``,
``on_mark``, ``on_open_interest``, ``on_news``) may come in any order, before the bars they
count for (``pipelines.features.side``).
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipelines.features import ops
from pipelines.features.prune import plan
from pipelines.features.side import NO_SIDE_INPUTS, OnlineSideInputs
from pipelines.features.spec import (
    BASE_ONLY_INPUTS,
    MAX_CARRIED_GAP_BARS,
    ORDER_BOOK_LEVELS,
    REGIME_COLUMNS,
    SIDE_GROUPS,
    SIDE_INPUTS,
    TIMEFRAME_MS,
    Graph,
    base_graph,
)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _to_ms(ts: Any) -> int:
    if isinstance(ts, dt.datetime):
        if ts.tzinfo is None:
            raise ValueError(f"candle ts {ts} is naive; pass a tz-aware UTC datetime or epoch ms")
        return (ts - _EPOCH) // dt.timedelta(milliseconds=1)
    return int(ts)


class _CompiledGraph:
    """A graph's nodes as step functions over one value list (inputs first)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.index = {name: i for i, name in enumerate(graph.inputs)}
        for node in graph.nodes:
            self.index[node.name] = len(self.index)
        self.values: list[Any] = [None] * len(self.index)
        self.reset()

    def reset(self) -> None:
        steps: list[tuple[int, Callable[..., Any], tuple[int, ...]]] = []
        for node in self.graph.nodes:
            steps.append(
                (
                    self.index[node.name],
                    ops.online_step(node),
                    tuple(self.index[x] for x in node.inputs),
                )
            )
        self.steps = steps

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        v = self.values
        v[: len(inputs)] = inputs
        for out, fn, ins in self.steps:
            if len(ins) == 1:
                v[out] = fn(v[ins[0]])
            elif len(ins) == 2:
                v[out] = fn(v[ins[0]], v[ins[1]])
            else:
                v[out] = fn(*[v[i] for i in ins])
        return v


class _Timeframe:
    """Gap tracking + graph state of one timeframe's candle stream."""

    def __init__(self, graph: Graph, step_ms: int) -> None:
        self.graph = _CompiledGraph(graph)
        self.step_ms = step_ms
        self.last_ms: int | None = None
        self.gap_bars = 0

    def push(self, ts_ms: int, inputs: Sequence[Any]) -> list[Any]:
        if self.last_ms is not None:
            delta = ts_ms - self.last_ms
            if delta <= 0:
                raise ValueError(
                    f"candle at {ts_ms} ms is not after the previous one ({self.last_ms} ms)"
                )
            self.gap_bars = (delta + self.step_ms // 2) // self.step_ms - 1
            if self.gap_bars > MAX_CARRIED_GAP_BARS:
                self.graph.reset()
        self.last_ms = ts_ms
        return self.graph.run(inputs)


class _Resampler:
    """Builds higher-timeframe candles; emits one when it has closed."""

    def __init__(self, tf: str, base_ms: int, graph: Graph, features: Sequence[str]) -> None:
        self.tf = tf
        self.step_ms = TIMEFRAME_MS[tf]
        self.base_ms = base_ms
        self.bucket: int | None = None
        self.ohlcv: list[float] = [0.0] * 5
        self.stream = _Timeframe(graph, self.step_ms)
        out = self.stream.graph.index
        self.out_index = [out[name] for name in features]
        self.names = [f"{name}_{tf}" for name in features]
        self.current: list[Any] = [None] * len(self.names)

    def _close(self) -> None:
        assert self.bucket is not None
        values = self.stream.push(self.bucket, self.ohlcv)
        self.current = [values[i] for i in self.out_index]
        self.bucket = None

    def push(self, ts_ms: int, o: float, h: float, lo: float, c: float, v: float) -> None:
        bucket = ts_ms // self.step_ms * self.step_ms
        if self.bucket is not None and bucket != self.bucket:
            self._close()  # the previous bucket's last base candles were missing
        if self.bucket is None:
            self.bucket = bucket
            self.ohlcv = [o, h, lo, c, v]
        else:
            x = self.ohlcv
            if h > x[1]:
                x[1] = h
            if lo < x[2]:
                x[2] = lo
            x[3] = c
            x[4] += v
        if ts_ms + self.base_ms >= bucket + self.step_ms:
            self._close()


class OnlineFeatureEngine:
    """All features of one symbol/timeframe, updated per closed candle in O(1).

    ``update(candle)`` takes a mapping or object with ts (tz-aware datetime or epoch ms,
    the candle OPEN time), open, high, low, close, volume; it returns the features (a dict
    over ``columns``, order-book / trade features may be None) once every candle
    feature is warmed up, else None. ``last`` always holds the latest full dict and
    ``gap_bars`` the gap before the latest candle.

    ``columns`` (default: every column of :func:`feature_columns`): compute only these and
    what they depend on (``pipelines.features.prune.plan``), e.g. a model's selected
    features (``OnnxPredictor.info.selected_features``); the dicts then hold only them.
    By default the dicts also hold the regime labels (``REGIME_COLUMNS``; not model inputs,
    never waited for by ``update``).

    ``symbol``: the pair; with it the side groups among ``columns`` (funding, sentiment) are
    computed from the data fed through ``on_funding``, ``on_mark``, ``on_open_interest`` and
    ``on_news`` (ignored when no column reads it); without it they are null.
    """

    def __init__(
        self,
        timeframe: str = "1m",
        columns: Sequence[str] | None = None,
        *,
        symbol: str | None = None,
    ) -> None:
        if timeframe not in TIMEFRAME_MS:
            raise ValueError(f"unknown timeframe {timeframe!r}; known: {sorted(TIMEFRAME_MS)}")
        self.timeframe = timeframe
        self.step_ms = TIMEFRAME_MS[timeframe]
        self.plan = plan(columns)
        self.columns = list(self.plan.columns)
        labels = REGIME_COLUMNS if columns is None else ()  # in the dicts, never required
        graph = base_graph() if labels else self.plan.base
        self.base = _Timeframe(graph, self.step_ms)
        idx = self.base.graph.index
        base_outputs = [*self.plan.base_outputs, *labels]
        self._base_out = [idx[name] for name in base_outputs]
        self._base_names = base_outputs
        self._resamplers = [
            _Resampler(tf, self.step_ms, hgraph, names)
            for tf, (hgraph, names) in self.plan.higher.items()
            if TIMEFRAME_MS[tf] >= self.step_ms
        ]
        self._null_htf = [
            f"{name}_{tf}"
            for tf, (_, names) in self.plan.higher.items()
            if TIMEFRAME_MS[tf] < self.step_ms
            for name in names
        ]
        optional = _depends_on(graph, set(BASE_ONLY_INPUTS) | set(SIDE_INPUTS))
        groups = [g for g, names in SIDE_GROUPS.items() if set(names) & set(base_outputs)]
        self.side_groups = tuple(groups)
        self.side: OnlineSideInputs | None = None
        if groups and symbol is not None:  # without the symbol: null, as without their data
            self.side = OnlineSideInputs(symbol, timeframe, groups)
        self._required = [c for c in self.columns if c not in optional and c not in self._null_htf]
        self._snapshots: deque[tuple[int, float | None, float | None]] = deque(maxlen=16)
        self._trades: dict[int, list[float]] = {}
        self._seen_trade = False
        self.last: dict[str, float | None] = {}
        self.last_ts_ms: int | None = None

    @property
    def gap_bars(self) -> int:
        return self.base.gap_bars

    def on_order_book(
        self,
        ts: Any,
        bid_prices: Sequence[float],
        bid_sizes: Sequence[float],
        ask_prices: Sequence[float],
        ask_sizes: Sequence[float],
    ) -> None:
        """Record an order-book snapshot (O(levels)); candles use the last one before they close."""
        n = ORDER_BOOK_LEVELS
        bid = 0.0
        for s in bid_sizes[:n]:
            bid += s
        ask = 0.0
        for s in ask_sizes[:n]:
            ask += s
        imb = (bid - ask) / (bid + ask) if bid + ask > 0.0 else None
        spread = None
        if bid_prices and ask_prices and ask_prices[0] + bid_prices[0] > 0.0:
            a0, b0 = ask_prices[0], bid_prices[0]
            spread = (a0 - b0) / ((a0 + b0) / 2.0) * 10_000.0
        self._snapshots.append((_to_ms(ts), imb, spread))

    def on_trade(self, ts: Any, side: str, amount: float) -> None:
        """Add one public trade (side 'buy' or 'sell', base amount) to its candle's flow."""
        ts_ms = _to_ms(ts)
        bucket = ts_ms // self.step_ms * self.step_ms
        acc = self._trades.get(bucket)
        if acc is None:
            acc = self._trades[bucket] = [0.0, 0.0]
        side = side.lower()
        if side == "buy":
            acc[0] += amount
        elif side == "sell":
            acc[1] += amount
        self._seen_trade = True

    def on_funding(self, ts: Any, rate: float) -> None:
        """A funding rate of the perpetual (``ts``: as the exchange stamped it)."""
        if self.side is not None:
            self.side.on_funding(ts, rate)

    def on_mark(self, ts: Any, close: float) -> None:
        """A closed mark-price candle of this timeframe (``ts``: its open time)."""
        if self.side is not None:
            self.side.on_mark(ts, close)

    def on_open_interest(self, ts: Any, open_interest: float) -> None:
        if self.side is not None:
            self.side.on_open_interest(ts, open_interest)

    def on_news(self, ts: Any, score: float, symbols: Sequence[str]) -> None:
        """A scored headline (``symbols``: the assets it is tagged with)."""
        if self.side is not None:
            self.side.on_news(ts, score, symbols)

    def _order_book_at(self, close_ms: int) -> tuple[float | None, float | None]:
        for ts_ms, imb, spread in reversed(self._snapshots):
            if ts_ms < close_ms:
                return imb, spread
        return None, None

    def step(self, candle: Any) -> dict[str, float | None]:
        """Update with one closed candle and return every feature (None = not available)."""
        get = candle.__getitem__ if isinstance(candle, Mapping) else candle.__getattribute__
        ts_ms = _to_ms(get("ts"))
        o, h, lo, c, v = (float(get(k)) for k in ("open", "high", "low", "close", "volume"))
        imb, spread = self._order_book_at(ts_ms + self.step_ms)
        if self._seen_trade:
            acc = self._trades.pop(ts_ms, None)
            buy, sell = (acc[0], acc[1]) if acc else (0.0, 0.0)
            for old in [b for b in self._trades if b < ts_ms]:
                del self._trades[old]
        else:
            buy = sell = None  # type: ignore[assignment]
        side = NO_SIDE_INPUTS if self.side is None else self.side.at(ts_ms, c)
        values = self.base.push(ts_ms, (o, h, lo, c, v, imb, spread, buy, sell, ts_ms, *side))
        for r in self._resamplers:
            r.push(ts_ms, o, h, lo, c, v)
        out: dict[str, float | None] = dict(
            zip(self._base_names, [values[i] for i in self._base_out], strict=True)
        )
        for r in self._resamplers:
            out.update(zip(r.names, r.current, strict=True))
        for name in self._null_htf:
            out[name] = None
        self.last = out
        self.last_ts_ms = ts_ms
        return out

    def update(self, candle: Any) -> dict[str, float | None] | None:
        """``step``, but None while any candle feature is still warming up."""
        out = self.step(candle)
        for name in self._required:
            if out[name] is None:
                return None
        return out


def _depends_on(graph: Graph, inputs: set[str]) -> set[str]:
    tainted = set(inputs)
    for node in graph.nodes:
        if any(x in tainted for x in node.inputs):
            tainted.add(node.name)
    return tainted
