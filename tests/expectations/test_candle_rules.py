"""``expectations.candle_check``: one candle judged by the gate's own candle suite.

The property: on random candles, ``check_candle`` accepts exactly the rows the real gate
(``gate_and_merge``, Great Expectations) merges. Each candle is its own series, so the
batch-only rules (key, extreme returns, gaps) do not interfere."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from expectations.candle_check import BATCH_ONLY_RULES, _compile, check_candle, compiled_rules
from expectations.gate import GatePolicy, gate_and_merge
from expectations.specs import ExpectationDef, candle_suite, flag
from warehouse import Settings

NOW = dt.datetime(2026, 6, 1, 12, 0, 7, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
TF_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}
_ids = itertools.count()


@dataclass(frozen=True)
class C:
    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


def good(ts_ms: int = NOW_MS // 60_000 * 60_000 - 3_600_000) -> C:
    return C(ts_ms, 1.0, 1.2, 0.9, 1.1, 5.0)


# ---------------------------------------------------------------- the rules, one by one


@pytest.mark.parametrize(
    ("candle", "rule"),
    [
        (good(), None),
        (C(good().ts_ms, 1.0, 1.2, 0.9, math.nan, 5.0), "not_null"),
        (C(good().ts_ms, 1.0, math.inf, 0.9, 1.1, 5.0), "finite"),
        (C(good().ts_ms, -1.0, 1.2, -2.0, 1.1, 5.0), "price_positive"),
        (C(good().ts_ms, 1.0, 1.2, 0.9, 1.1, -1.0), "non_negative"),
        (C(good().ts_ms, 1.0, 0.8, 0.9, 0.85, 5.0), "ohlc_consistent"),  # high < low
        (C(good().ts_ms, 1.3, 1.2, 0.9, 1.1, 5.0), "ohlc_consistent"),  # open above high
        (C(good().ts_ms, 1.0, 1.2, 0.9, 0.8, 5.0), "ohlc_consistent"),  # close below low
        (C(good().ts_ms + 1, 1.0, 1.2, 0.9, 1.1, 5.0), "ts_aligned"),
        (C(NOW_MS // 60_000 * 60_000 + 600_000, 1.0, 1.2, 0.9, 1.1, 5.0), "ts_not_future"),
        (C(NOW_MS // 60_000 * 60_000, 1.0, 1.2, 0.9, 1.1, 5.0), "candle_closed"),  # still open
    ],
)
def test_each_rule(candle: C, rule: str | None) -> None:
    why = check_candle(candle, "1m", None, NOW_MS)
    assert (why.split(":")[0] if why else None) == rule, why


def test_after_the_last_accepted_candle_only() -> None:
    c = good()
    assert check_candle(c, "1m", c.ts_ms - 60_000, NOW_MS) is None
    for last in (c.ts_ms, c.ts_ms + 60_000):
        why = check_candle(c, "1m", last, NOW_MS)
        assert why is not None and why.startswith("ts_increasing") and str(last) in why


def test_the_skew_and_unclosed_candles_follow_the_policy() -> None:
    open_now = C(NOW_MS // 60_000 * 60_000, 1.0, 1.2, 0.9, 1.1, 5.0)
    lenient = GatePolicy(reject_unclosed_candles=False)
    assert check_candle(open_now, "1m", None, NOW_MS, policy=lenient) is None
    close_ms = open_now.ts_ms + 60_000  # 5 s of tolerated skew: 6 s before the close is open
    assert check_candle(open_now, "1m", None, close_ms - 6_000) is not None
    assert check_candle(open_now, "1m", None, close_ms - 5_000) is None


def test_every_refusing_rule_of_the_suite_is_evaluated() -> None:
    """Each critical/hold candle rule has a single-candle form, or is batch-only by name: a
    rule added to the suite without one fails here (and at the loop's first candle)."""
    for policy in (GatePolicy(), GatePolicy(extreme_return_action="quarantine")):
        evaluated = {d.rule for d, _ in compiled_rules(policy)}
        refusing = {d.rule for d in candle_suite(policy) if d.severity != "warning"}
        assert refusing - evaluated <= BATCH_ONLY_RULES
        assert {
            "not_null",
            "finite",
            "price_positive",
            "ohlc_consistent",
            "ts_aligned",
        } <= evaluated
        assert {"ts_not_future", "ts_increasing", "candle_closed"} <= evaluated
    unknown: ExpectationDef = flag("moon_phase_ok", "moon_phase", "the moon is wrong")
    with pytest.raises(ValueError, match="moon_phase"):
        _compile(unknown)


# ---------------------------------------------------------------- the property

BAD_VALUES = [math.nan, math.inf, -math.inf, 0.0, -1.0, -0.0, 5e-324]


@st.composite
def candles(draw: st.DrawFn) -> tuple[str, C]:
    tf = draw(st.sampled_from(sorted(TF_MS)))
    step = TF_MS[tf]
    base = NOW_MS // step * step
    ts = base + step * draw(st.integers(min_value=-4, max_value=3))
    ts += draw(st.sampled_from([0, 0, 0, 1, 5_000, -4_000, step // 2]))
    low = draw(st.floats(min_value=0.01, max_value=100.0))
    high = low + draw(st.sampled_from([0.0, 0.5, 3.0]))
    values = {
        "open": draw(st.sampled_from([low, high, (low + high) / 2])),
        "high": high,
        "low": low,
        "close": draw(st.sampled_from([low, high, (low + high) / 3 + low / 2])),
        "volume": draw(st.sampled_from([0.0, 1.0, 1e6])),
    }
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        column = draw(st.sampled_from(sorted(values)))
        values[column] = draw(
            st.one_of(st.sampled_from(BAD_VALUES), st.floats(allow_nan=True, allow_infinity=True))
        )
    return tf, C(ts, **values)


def _gate_accepts(
    lake: duckdb.DuckDBPyConnection, settings: Settings, drawn: list[tuple[str, C]]
) -> list[bool]:
    symbols = [f"R{next(_ids)}/USDT" for _ in drawn]
    batch = pa.table(
        {
            "exchange": pa.array(["binance"] * len(drawn)),
            "symbol": pa.array(symbols),
            "timeframe": pa.array([tf for tf, _ in drawn]),
            "ts": pa.array([c.ts_ms for _, c in drawn], pa.timestamp("ms", tz="UTC")),
            **{
                col: pa.array([getattr(c, col) for _, c in drawn], pa.float64())
                for col in ("open", "high", "low", "close", "volume")
            },
        }
    )
    gate_and_merge(
        lake, "candles", batch, settings=settings, policy=GatePolicy(max_bad_fraction=1.0), now=NOW
    )
    merged = {r[0] for r in lake.execute("SELECT symbol FROM candles").fetchall()}
    return [s in merged for s in symbols]


@hsettings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a shrink costs a GX call a step
)
@given(drawn=st.lists(candles(), min_size=1, max_size=40))
def test_check_candle_accepts_exactly_what_the_gate_merges(
    lake: duckdb.DuckDBPyConnection, settings: Settings, drawn: list[tuple[str, C]]
) -> None:
    gate = _gate_accepts(lake, settings, drawn)
    mine = [check_candle(c, tf, None, NOW_MS) is None for tf, c in drawn]
    differ = [(tf, c, g) for (tf, c), g, m in zip(drawn, gate, mine, strict=True) if g != m]
    assert not differ, differ
