"""Adaptive thresholds: bounded, mode by rolling accuracy, every change with a reason."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trading.thresholds import AdaptiveThresholds, ThresholdPolicy

POLICY = ThresholdPolicy()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 500)), min_size=1, max_size=40))
def test_thresholds_bounded_and_every_change_has_a_reason(
    updates: list[tuple[float, int]],
) -> None:
    t = AdaptiveThresholds(POLICY)
    for accuracy, resolved in updates:
        before = t.mode
        change = t.update(accuracy, resolved)
        cur = t.current
        for x in (cur.buy_fraction, cur.sell_fraction, cur.min_confidence):
            assert POLICY.floor <= x <= POLICY.ceiling
        if resolved < POLICY.min_resolved:
            assert t.mode == "base"
        elif accuracy > 0.6:
            assert t.mode == "aggressive"
        elif accuracy < 0.45:
            assert t.mode == "conservative"
        else:
            assert t.mode == "base"
        if t.mode != before:
            assert change is not None and change.old_mode == before and change.new_mode == t.mode
            assert f"{before} -> {t.mode}" in change.reason
            assert "accuracy" in change.reason or "resolved predictions <" in change.reason
        else:
            assert change is None


def test_aggressive_lowers_and_conservative_raises_the_bars() -> None:
    base = POLICY.thresholds("base")
    aggressive, conservative = POLICY.thresholds("aggressive"), POLICY.thresholds("conservative")
    assert aggressive.min_confidence < base.min_confidence < conservative.min_confidence
    assert aggressive.buy_fraction < base.buy_fraction < conservative.buy_fraction
