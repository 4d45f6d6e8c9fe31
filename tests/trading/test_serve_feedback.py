"""Fallback switching, the retrain trigger's cooldown and the confidence formula of the serving
loop (issue 9, items 3, 6, 7), on real 1m candles with real ONNX Runtime models."""

from __future__ import annotations

import dataclasses
import math
from itertools import groupby
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.trading.serve_harness import (
    INDEX,
    TICKS,
    MemoryRegistry,
    build_loop,
    events,
    renamed,
    rows,
    run_ticks,
    static_batch_model,
)
from tests.trading.serve_support import SYMBOL, constant_model
from trading.confidence import ConfidencePolicy, score
from trading.fallback import FALLBACK_ID
from trading.feedback import Feedback, FeedbackConfig, Pending
from trading.loop import LoopConfig, ServingLoop
from trading.market import Tick

CONFIG = LoopConfig(model_check_every_steps=50)


@pytest.fixture(scope="module")
def buy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return constant_model(tmp_path_factory.mktemp("m") / "buy.onnx", (0.9, 0.05, 0.05), 0.95)


def _segments(loop: ServingLoop, symbol: str = SYMBOL) -> list[tuple[str, int]]:
    """Runs of the model id in the symbol's predictions: (model id, first candle)."""
    preds = rows(loop, "predictions", symbol)
    out = []
    for mid, group in groupby(preds, key=lambda r: r["model_id"]):
        out.append((mid, INDEX[next(group)["ts"]]))
    return out


# ---------------------------------------------------------------- fallback


def test_fallback_on_onnx_runtime_error_and_back(buy_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A champion exported with a fixed batch dimension of 1 runs while one symbol trades; when a
    # second symbol's window completes, the batched call fails inside ONNX Runtime.
    model = static_batch_model(tmp_path / "static.onnx", buy_model)
    mid = model.stem  # run_ticks promotes it under its file's stem
    second = "UNITTEST2/BTC"
    ticks = [
        Tick(t.now_ms, (t.bars[0], renamed(t, second)) if 150 <= i < 300 else t.bars)
        for i, t in enumerate(TICKS[:400])
    ]
    loop = run_ticks(CONFIG, model, tmp_path, ticks)

    segs = _segments(loop)
    assert [m for m, _ in segs] == [FALLBACK_ID, mid, FALLBACK_ID, mid]
    (_, warm), (_, model_from), (_, error_at), (_, back_at) = segs
    assert 150 < error_at < 300 and back_at == 300  # the error lasts while both symbols trade
    down = events(loop, "fallback", "model -> fallback: ONNX Runtime error")
    assert [(INDEX[e[0]], e[2]) for e in down] == [(error_at, SYMBOL)]
    assert "InvalidArgument" in down[0][3]
    up = [(INDEX[e[0]], e[2]) for e in events(loop, "fallback", "fallback -> model")]
    assert up == [(model_from, SYMBOL), (back_at, SYMBOL)]
    # the second symbol never got a model prediction: it decided by the RSI rule throughout
    assert {r["model_id"] for r in rows(loop, "predictions", second)} == {FALLBACK_ID}
    stored = [r for r in loop.batch.tables["loop_events"].values() if r["kind"] == "fallback"]
    assert sum("ONNX Runtime error" in r["message"] for r in stored) == 1
    assert len(rows(loop, "signals")) == 400  # a decision for every candle


def test_fallback_on_low_feature_quality_and_back(buy_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The exchange skips 10 candles (more than the 5 a feature window carries): every window
    # restarts, the model's inputs are missing until they are warm again.
    mid = buy_model.stem  # run_ticks promotes it under its file's stem
    ticks = TICKS[:200] + TICKS[210:400]
    loop = run_ticks(CONFIG, buy_model, tmp_path, ticks)

    segs = _segments(loop)
    assert [m for m, _ in segs] == [FALLBACK_ID, mid, FALLBACK_ID, mid]
    (_, _), (_, model_from), (_, low_at), (_, back_at) = segs
    assert low_at == 210  # the first candle after the gap
    down = events(loop, "fallback", "model -> fallback: feature quality")
    assert [(INDEX[e[0]], e[2]) for e in down] == [(210, SYMBOL)]
    assert "missing inputs" in down[0][3]
    up = [INDEX[e[0]] for e in events(loop, "fallback", "fallback -> model")]
    assert up == [model_from, back_at]
    assert back_at - low_at == model_from  # warm again after as many candles as at the start


# ---------------------------------------------------------------- retrain trigger


def _wrong(fb: Feedback, i: int, *, right: bool = False) -> None:
    """One model prediction "buy" resolved on the next candle: right (up) or wrong (down)."""
    fb.add(Pending(SYMBOL, i, "m", "buy", 1.0, 0.001, 1, 1, True))
    fb.on_bar(SYMBOL, 1.01 if right else 0.99)


def test_retrain_is_requested_at_most_once_per_cooldown() -> None:
    clock = {"s": 0.0}
    calls: list[str] = []
    cfg = FeedbackConfig(min_resolved=50, patience=20, cooldown_s=3600.0)
    fb = Feedback(cfg, on_degraded=calls.append, clock=lambda: clock["s"])
    fired = []
    for i in range(1, 301):  # one resolution a minute, every one wrong
        clock["s"] = 60.0 * i
        _wrong(fb, i)
        if fb.check_degradation():
            fired.append(i)
    # 50 resolutions, then 20 in a row below 0.45 -> the 69th; then once per 60 minutes
    assert fired == [69, 129, 189, 249]
    assert len(calls) == 4 and fb.triggers == 4
    assert all("rolling accuracy 0.000 < 0.45" in c for c in calls)

    # a restart within the cooldown does not ask again
    restored = Feedback(cfg, on_degraded=calls.append, clock=lambda: clock["s"])
    restored.load(fb.to_dict())
    for i in range(301, 309):  # 249 + 60 = 309 is the next allowed minute
        clock["s"] = 60.0 * i
        _wrong(restored, i)
        assert restored.check_degradation() is None
    clock["s"] = 60.0 * 309
    _wrong(restored, 309)
    assert restored.check_degradation() is not None and len(calls) == 5

    # recovered accuracy: the streak ends, no request even after the cooldown
    fb2 = Feedback(cfg, on_degraded=calls.append, clock=lambda: clock["s"])
    for i in range(1, 400):
        clock["s"] = 60.0 * i
        _wrong(fb2, i, right=i % 2 == 0)  # accuracy 0.5
        assert fb2.check_degradation() is None


def test_loop_requests_retraining_at_most_once_per_cooldown(buy_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    now = {"ms": 0}
    calls: list[tuple[int, str]] = []
    cfg = dataclasses.replace(
        CONFIG, feedback=FeedbackConfig(min_resolved=30, patience=5, cooldown_s=1800.0)
    )
    registry = MemoryRegistry()
    registry.promote(buy_model, "buy")  # always "buy": sustained degradation
    loop = build_loop(
        cfg,
        tmp_path,
        registry,
        on_retrain=lambda why: calls.append((now["ms"], why)),
        clock=lambda: now["ms"] / 1000.0,  # the market's clock
    )
    for t in TICKS:
        now["ms"] = t.now_ms
        loop.on_tick(t)
    times = [c[0] for c in calls]
    assert len(times) >= 4
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 1_800_000  # never twice within the cooldown
    assert max(gaps) <= 1_800_000 + 60_000  # and asked again as soon as it ends
    requested = events(loop, "retrain", "retraining requested")
    assert [e[3] for e in requested] == [f"retraining requested: {c[1]}" for c in calls]
    stored = [r for r in loop.batch.tables["loop_events"].values() if r["kind"] == "retrain"]
    assert len(stored) == len(calls)


# ---------------------------------------------------------------- confidence

POLICY = ConfidencePolicy()
unit = st.floats(0.0, 1.0)
sigmas = st.floats(1e-6, 1e-1)


def _value(
    m: float, s: float, ref: float, present: float = 1.0, gap: int = 0, hits: int = 0, n: int = 0
) -> float:
    return score(
        m,
        sigma=s,
        sigma_ref=ref,
        present_fraction=present,
        gap_bars=gap,
        hits=hits,
        resolved=n,
        policy=POLICY,
    ).value


@st.composite
def hits_n(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(0, 300))
    return draw(st.integers(0, n)), n


@settings(max_examples=300, deadline=None)
@given(
    m=st.floats(-1.0, 2.0),
    s=st.floats(0.0, 1.0) | st.just(math.nan),
    ref=st.floats(0.0, 1.0) | st.just(math.nan),
    present=st.floats(-0.5, 1.5),
    gap=st.integers(-2, 20),
    hn=hits_n(),
)
def test_confidence_is_bounded_and_follows_the_documented_formula(  # type: ignore[no-untyped-def]
    m, s, ref, present, gap, hn
) -> None:
    hits, n = hn
    v = _value(m, s, ref, present, gap, hits, n)
    assert 0.0 <= v <= 1.0
    # README: model x min(1, ref/s)^0.5 x present x (1 - gap/5) x min(1, acc_shrunk / 0.5),
    # acc shrunk toward 0.5 by 20 pseudo-predictions (inputs clipped to their ranges)
    vol = min(1.0, ref / s) ** 0.5 if s > 0 and ref > 0 else 1.0
    quality = min(max(present, 0.0), 1.0) * (1 - min(max(gap, 0), 5) / 5)
    acc = min(1.0, ((hits + 10) / (n + 20)) / 0.5)
    expected = min(max(m, 0.0), 1.0) * vol * quality * acc
    assert v == pytest.approx(expected, rel=1e-12, abs=1e-15)


@settings(max_examples=200, deadline=None)
@given(m=unit, s1=sigmas, s2=sigmas, ref=sigmas)
def test_confidence_is_lowered_by_volatility(m, s1, s2, ref) -> None:  # type: ignore[no-untyped-def]
    lo, hi = sorted((s1, s2))
    assert _value(m, hi, ref) <= _value(m, lo, ref)
    if hi <= ref:  # a calm or normal market keeps the model's confidence
        assert _value(m, hi, ref) == pytest.approx(m)
    else:  # more volatile than usual: sqrt(ref / sigma)
        assert _value(m, hi, ref) == pytest.approx(m * math.sqrt(ref / hi))


@settings(max_examples=200, deadline=None)
@given(m=st.floats(0.01, 1.0), p1=unit, p2=unit, g1=st.integers(0, 8), g2=st.integers(0, 8))
def test_confidence_is_lowered_by_missing_or_stale_inputs(m, p1, p2, g1, g2) -> None:  # type: ignore[no-untyped-def]
    (plo, phi), (glo, ghi) = sorted((p1, p2)), sorted((g1, g2))
    ref = 0.01
    assert _value(m, ref, ref, plo, glo) <= _value(m, ref, ref, phi, glo)
    assert _value(m, ref, ref, phi, ghi) <= _value(m, ref, ref, phi, glo)
    assert _value(m, ref, ref, 1.0, 0) == pytest.approx(m)  # complete and fresh: untouched
    assert _value(m, ref, ref, 1.0, 5) == 0.0  # 5 bars carried: no trust at all
    if plo < phi:
        assert _value(m, ref, ref, plo, 0) < _value(m, ref, ref, phi, 0)


@settings(max_examples=200, deadline=None)
@given(m=st.floats(0.01, 1.0), hn=hits_n(), extra=st.integers(1, 50))
def test_confidence_is_weighted_by_rolling_accuracy(m, hn, extra) -> None:  # type: ignore[no-untyped-def]
    hits, n = hn
    ref = 0.01
    with_more_hits = _value(m, ref, ref, hits=min(hits + extra, n), n=n)
    assert with_more_hits >= _value(m, ref, ref, hits=hits, n=n)
    acc = (hits + 10) / (n + 20)
    if acc >= 0.5:  # at least as good as the reference: full confidence
        assert _value(m, ref, ref, hits=hits, n=n) == pytest.approx(m)
    else:  # worse: scaled down in proportion
        assert _value(m, ref, ref, hits=hits, n=n) == pytest.approx(m * acc / 0.5)
    # no history: the prior keeps the confidence; a long record of misses nearly zeroes it
    assert _value(m, ref, ref, hits=0, n=0) == pytest.approx(m)
    assert _value(m, ref, ref, hits=0, n=300) == pytest.approx(m * (10 / 320) / 0.5)
