"""The serving loop computes the features its champion reads, and only those (issue 17 item 2):
each symbol's online engine is pruned to the model's selected set, its values equal the full
engine's, and a new champion that reads other features gets an engine warmed up from the
candles the symbol kept (no fallback, no gap in its window)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.features import OnlineFeatureEngine, feature_columns
from tests.trading.serve_harness import TICKS, MemoryRegistry, build_loop
from tests.trading.serve_support import SYMBOL, constant_model
from trading.loop import LoopConfig

CONFIG = LoopConfig(account="selected", model_check_every_steps=1)
FIRST = ["logret_1", "rvol_10", "mom_10"]
SECOND = ["logret_5", "rvol_30", "accel_5"]


def _full_values(ticks: int) -> dict[str, list[float]]:
    """Every feature of the first ``ticks`` candles, from the full engine."""
    engine = OnlineFeatureEngine("1m")
    out: dict[str, list[float]] = {c: [] for c in feature_columns()}
    for tick in TICKS[:ticks]:
        (bar,) = tick.bars
        row = engine.step(
            {"ts": bar.ts_ms, "open": bar.open, "high": bar.high, "low": bar.low,
             "close": bar.close, "volume": bar.volume}
        )  # fmt: skip
        for c in out:
            value = row.get(c)
            out[c].append(np.nan if value is None else float(value))
    return out


def _window_of(loop, columns: list[str], length: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    window = loop.symbols[SYMBOL].window(length)
    assert window is not None
    index = [loop.columns.index(c) for c in columns]
    return np.asarray(window[:, index], dtype=np.float64)


def test_the_loop_computes_only_the_champions_features_and_swaps_to_anothers(
    tmp_path: Path,
) -> None:
    registry = MemoryRegistry()
    registry.promote(constant_model(tmp_path / "a.onnx", (0.2, 0.6, 0.2), 0.9, selected=FIRST), "a")
    loop = build_loop(CONFIG, tmp_path, registry)
    half = 300
    for tick in TICKS[:half]:
        loop.on_tick(tick)
    state = loop.symbols[SYMBOL]
    engine_columns = set(state.engine.columns)
    assert engine_columns == set(FIRST), state.engine.columns
    assert len(engine_columns) < len(feature_columns())
    full = _full_values(len(TICKS))
    # the pruned engine's values are the full engine's; the columns it skips stay NaN
    got = _window_of(loop, FIRST, 12)
    want = np.array([full[c][half - 12 : half] for c in FIRST]).T
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # float32 window
    assert np.isnan(_window_of(loop, SECOND, 12)).all()
    # the RSI rule while the window warms up, then the champion
    assert {r["model_id"] for r in loop.batch.tables["predictions"].values()} == {
        "rsi_fallback",
        "a",
    }

    # a new champion reading other features: the engine is rebuilt from the kept candles
    registry.promote(
        constant_model(tmp_path / "b.onnx", (0.2, 0.6, 0.2), 0.9, selected=SECOND), "b"
    )
    for tick in TICKS[half:]:
        loop.on_tick(tick)
    state = loop.symbols[SYMBOL]
    assert set(state.engine.columns) == set(SECOND)
    n = len(TICKS)
    got = _window_of(loop, SECOND, 12)
    want = np.array([full[c][n - 12 : n] for c in SECOND]).T
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert np.isnan(_window_of(loop, FIRST, 12)).all()
    # every bar after the swap was predicted by the new champion: its window was warm at once
    swapped_at = TICKS[half].bars[0].ts_ms
    after = [r for r in loop.batch.tables["predictions"].values() if r["ts"] >= swapped_at]
    assert len(after) == n - half
    assert {r["model_id"] for r in after} == {"b"}
