"""Live and replayed candles pass the gate's candle rules before the serving loop uses them.

Before: one NaN close in a replay left RSI ``nan`` and the model's window incomplete for good
(features carry the NaN on), so the loop decided by nothing but "feature quality" fallbacks
until a restart. Now the bad candle is dropped, stored as a ``data`` event and counted in the
run's summary, and the model predicts again within one window."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from tests.trading.serve_harness import BIG, MemoryRegistry, build_loop, rows
from tests.trading.serve_support import momentum_model, tiny_model
from trading.backtest import Candles
from trading.domain import Bar
from trading.loop import LoopConfig, ServingLoop, run
from trading.market import ReplayMarket, Tick, read_replay_candles

ETH_BTC = "ETH/BTC"
WINDOW = 12  # the models' window_len


def _real(path: Path, n: int, bad: dict[int, dict[str, float]]) -> Candles:
    """The last ``n`` real candles of ``path``, with ``bad`` values put in at some positions."""
    c = read_replay_candles(str(path), last=n)
    fields = ("open", "high", "low", "close", "volume")
    arrays = {f: np.array(getattr(c, f), dtype=np.float64) for f in fields}
    ts = np.array(c.ts_ms, dtype=np.int64)
    for i, values in bad.items():
        for field, value in values.items():
            if field == "ts_ms":
                ts[i] = int(value)
            else:
                arrays[field][i] = value
    return Candles(c.symbol, c.timeframe, ts, *(arrays[f] for f in fields))


def _serve(model: Path, candles: Candles, home: Path) -> tuple[ServingLoop, LoopConfig]:
    """The loop after a replay of ``candles``, its rows kept in ``loop.batch``."""
    registry = MemoryRegistry()
    registry.promote(model, model.stem)
    cfg = LoopConfig(timeframe=candles.timeframe, flush_every_steps=BIG)
    loop = build_loop(cfg, home, registry)
    for tick in ReplayMarket([candles]).ticks():
        loop.on_tick(tick)
    return loop, cfg


def _model_ts(loop: ServingLoop, symbol: str) -> list[int]:
    return [r["ts"] for r in rows(loop, "predictions", symbol) if r["model_id"] != "rsi_fallback"]


@pytest.mark.parametrize(
    ("which", "file", "symbol", "n"),
    [
        ("momentum", "ETH_BTC-5m.feather", "ETH/BTC", 600),  # logret_1 of the last bar
        # trained on this pair's 1m; its daily features need about 1,440 bars of warm-up
        pytest.param(
            "tiny", "UNITTEST_BTC-1m.feather", "UNITTEST/BTC", 1900, marks=pytest.mark.slow
        ),
    ],
)
def test_nan_close_in_a_replay_the_model_predicts_again_within_one_window(
    which: str, file: str, symbol: str, n: int, candles_dir: Path, tmp_path: Path
) -> None:
    at = n - 200
    candles = _real(candles_dir / file, n, {at: {"close": math.nan}})
    model = momentum_model(tmp_path / "momentum.onnx") if which == "momentum" else tiny_model()
    loop, cfg = _serve(model, candles, tmp_path)
    ts = [int(t) for t in candles.ts_ms]
    predicted = _model_ts(loop, symbol)
    assert any(ts[at - 20] <= t < ts[at] for t in predicted)  # the model served before
    assert ts[at] not in predicted  # the bad candle got no decision at all
    after = [t for t in predicted if t > ts[at]]
    assert after, "the model never predicted again after the NaN candle"
    assert after[0] <= ts[at + WINDOW], (after[0], ts[at])  # within one window
    s = loop.symbols[symbol]
    assert math.isfinite(s.rsi_value) and math.isfinite(s.sigma)
    assert loop.candles_dropped == 1
    (event,) = [e for e in loop.events if e[1] == "data"]
    assert event[0] == ts[at] and event[2] == symbol
    assert "candle dropped: not_null: close is missing" in event[3]
    stored = [r for r in loop.batch.tables["loop_events"].values() if r["kind"] == "data"]
    assert len(stored) == 1
    # every other candle was decided: signals for all of them, none for the dropped one
    signals = [r["ts"] for r in rows(loop, "signals", symbol)]
    assert signals == ts[:at] + ts[at + 1 :]
    # the run's summary (what `serve` reports) counts it
    summary = run(build_loop(cfg, tmp_path / "again"), ReplayMarket([candles]))
    assert summary.candles_dropped == 1 and summary.candles == len(ts)


BAD_ROWS = {
    100: {"high": 0.0},  # high below low (and not > 0)
    120: {"low": -1.0},
    140: {"close": math.inf},
    160: {"ts_ms": "off_grid"},
    180: {"ts_ms": "repeat"},  # not after the last accepted candle
    200: {"volume": math.nan},
    220: {"low": 10.0},  # ETH/BTC trades near 0.1: low above high
}


def test_every_kind_of_bad_candle_is_dropped_and_the_loop_carries_on(
    candles_dir: Path, tmp_path: Path
) -> None:
    base = read_replay_candles(str(candles_dir / "ETH_BTC-5m.feather"), last=260)
    bad: dict[int, dict[str, float]] = {}
    for i, change in BAD_ROWS.items():
        if change.get("ts_ms") == "off_grid":
            bad[i] = {"ts_ms": float(base.ts_ms[i] + 7_000)}
        elif change.get("ts_ms") == "repeat":
            bad[i] = {"ts_ms": float(base.ts_ms[i - 1] - 300_000)}  # older than the last one
        else:
            bad[i] = dict(change)
    candles = _real(candles_dir / "ETH_BTC-5m.feather", 260, bad)
    registry = MemoryRegistry()
    registry.promote(momentum_model(tmp_path / "m.onnx"), "m")
    loop = build_loop(LoopConfig(timeframe="5m", flush_every_steps=BIG), tmp_path, registry)
    for i, ts in enumerate(candles.ts_ms):  # one tick a candle, in file order (not sorted)
        bar = Bar(
            ETH_BTC,
            int(ts),
            *(float(getattr(candles, f)[i]) for f in ("open", "high", "low", "close", "volume")),
        )
        loop.on_tick(Tick(int(ts) + 300_000, (bar,)))
    dropped = loop.candles_dropped
    reasons = [e[3] for e in loop.events if e[1] == "data"]
    assert dropped == len(BAD_ROWS) == len(reasons), reasons
    for rule in ("ohlc_consistent", "price_positive", "finite", "ts_aligned", "ts_increasing"):
        assert any(rule in r for r in reasons), (rule, reasons)
    assert any("volume is missing" in r for r in reasons)
    s = loop.symbols[ETH_BTC]
    assert math.isfinite(s.rsi_value)
    last = [int(t) for t in candles.ts_ms][-WINDOW:]
    assert set(last) <= set(_model_ts(loop, ETH_BTC))  # the model decides the last window


def test_a_candle_from_the_future_or_still_open_is_dropped(tmp_path: Path) -> None:
    """Judged against the loop's (wall) clock, with the gate's 5 s of tolerated skew."""
    minute = int(time.time()) // 60 * 60_000
    now_s = minute / 1000 + 30.0  # half-way through the current minute (the loop's clock)
    cfg = LoopConfig(timeframe="1m", flush_every_steps=BIG)
    loop = build_loop(cfg, tmp_path, clock=lambda: now_s)
    closed = Bar("X/Y", minute - 120_000, 1.0, 1.1, 0.9, 1.0, 1.0)
    still_open = Bar("X/Y", minute, 1.0, 1.1, 0.9, 1.0, 1.0)  # closes in 30 s
    future = Bar("X/Y", minute + 600_000, 1.0, 1.1, 0.9, 1.0, 1.0)
    for bar in (closed, still_open, future):
        loop.on_tick(Tick(bar.ts_ms + 60_000, (bar,)))
    assert loop.last_ts_ms == closed.ts_ms
    kinds = [e[3].split(": ")[1] for e in loop.events if e[1] == "data"]
    assert kinds == ["candle_closed", "ts_not_future"]


def test_a_nan_candle_in_a_replayed_file_a_followed_file_and_a_polled_source(
    candles_dir: Path, tmp_path: Path
) -> None:
    """The markets hand the candle on and the loop drops it. Before, ``Candles.from_frame``
    refused the read: ``serve --replay FILE`` served nothing ("bad close=nan at row 150"), a
    followed source was "unreadable" at every poll for good, and a live poll raised."""
    import polars as pl

    from pipelines.sources import FileSource
    from trading.market import FollowMarket, PollingMarket

    frame = pl.read_ipc(candles_dir / "ETH_BTC-5m.feather").tail(300)
    nan_at = pl.int_range(pl.len()) == 150
    frame = frame.with_columns(
        pl.when(nan_at).then(math.nan).otherwise(pl.col("close")).alias("close")
    )
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "ETH_BTC-5m.feather"
    frame.write_ipc(path)
    cfg = LoopConfig(timeframe="5m", flush_every_steps=BIG)

    replayed = read_replay_candles(str(path))
    assert len(replayed) == 300 and math.isnan(replayed.close[150])
    follow = FollowMarket(
        lambda after, up_to: read_replay_candles(str(path), after_ts_ms=after, up_to_ts_ms=up_to),
        "5m",
        poll_interval_s=0.01,
        sleep=lambda _: None,
        max_polls=2,
    )
    first = int(replayed.ts_ms[0])
    polled = PollingMarket(
        FileSource(folder, name="binance"), [ETH_BTC], "5m", first, sleep=lambda _: None
    )
    polled.max_polls = 1
    for name, market in (
        ("replay", ReplayMarket([replayed])),
        ("follow", follow),
        ("poll", polled),
    ):
        loop = build_loop(cfg, tmp_path / name)
        summary = run(loop, market)
        assert (summary.candles, summary.candles_dropped) == (300, 1), name
        assert loop.last_ts_ms == int(replayed.ts_ms[-1]), name
        assert math.isfinite(loop.symbols[ETH_BTC].rsi_value), name
    assert follow.read_failures == 0


def test_the_warm_up_of_a_restart_drops_a_bad_candle_too(candles_dir: Path, tmp_path: Path) -> None:
    """History replayed after a restart feeds the same state: a NaN there poisoned it as well.
    The warm-up writes nothing, so the candle is counted but stores no event."""
    candles = _real(candles_dir / "ETH_BTC-5m.feather", 200, {100: {"close": math.nan}})
    loop = build_loop(LoopConfig(timeframe="5m", flush_every_steps=BIG), tmp_path)
    for tick in ReplayMarket([candles]).ticks():
        loop.warm(tick)
    s = loop.symbols[ETH_BTC]
    assert loop.candles_dropped == 1 and not [e for e in loop.events if e[1] == "data"]
    assert math.isfinite(s.rsi_value) and math.isfinite(s.sigma)
    assert s.last_ts_ms == int(candles.ts_ms[-1]) and s.rows == 199
