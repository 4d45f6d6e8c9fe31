"""The simulated exchange: deterministic, realistic in the documented ways, fast, gate-clean."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipelines.simulated_exchange import (
    DAY_MS,
    DEFAULT_ORIGIN_MS,
    MINUTE_MS,
    RANGE,
    SimulatedExchange,
    SimulationConfig,
)
from pipelines.sources import SimulatedSource, fetch_candles, table_checksum
from tests.support.loopback import frozen_clock

START = DEFAULT_ORIGIN_MS


@pytest.fixture(scope="module")
def month() -> dict[str, np.ndarray]:
    return SimulatedExchange().candle_arrays("BTC/USDT", START, START + 30 * DAY_MS)


def test_deterministic_for_a_seed() -> None:
    a = SimulatedExchange(SimulationConfig(seed=11)).candles("ETH/USDT", START, START + 2 * DAY_MS)
    b = SimulatedExchange(SimulationConfig(seed=11)).candles("ETH/USDT", START, START + 2 * DAY_MS)
    c = SimulatedExchange(SimulationConfig(seed=12)).candles("ETH/USDT", START, START + 2 * DAY_MS)
    assert table_checksum(a) == table_checksum(b)
    assert table_checksum(a) != table_checksum(c)


@hsettings(max_examples=15, deadline=None)
@given(offset_min=st.integers(0, 3 * 1440), length_min=st.integers(1, 2 * 1440))
def test_any_window_equals_the_same_slice_of_the_full_history(
    offset_min: int, length_min: int
) -> None:
    """Determinism does not depend on what was asked before (fresh vs warmed instance)."""
    full = SimulatedExchange().candle_arrays("SOL/USDT", START, START + 5 * DAY_MS)
    since = START + offset_min * MINUTE_MS
    window = SimulatedExchange().candle_arrays("SOL/USDT", since, since + length_min * MINUTE_MS)
    sl = slice(offset_min, offset_min + length_min)
    for key in ("ts", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(window[key], full[key][sl])


def test_candles_are_consistent_and_continuous(month) -> None:
    assert np.all(month["high"] >= np.maximum(month["open"], month["close"]))
    assert np.all(month["low"] <= np.minimum(month["open"], month["close"]))
    assert np.all(month["low"] > 0) and np.all(month["volume"] > 0)
    np.testing.assert_allclose(month["open"][1:], month["close"][:-1])
    assert np.all(np.diff(month["ts"]) == MINUTE_MS)


def _autocorr(x: np.ndarray) -> float:
    return float(np.corrcoef(x[1:], x[:-1])[0, 1])


def test_stylised_facts(month) -> None:
    r = np.diff(np.log(month["close"]))
    kurtosis = float(((r - r.mean()) ** 4).mean() / r.var() ** 2)
    assert kurtosis > 6  # fat tails (normal: 3)
    assert _autocorr(np.abs(r)) > 0.1  # volatility clustering
    assert abs(_autocorr(r)) < 0.15  # returns themselves are only weakly predictable
    regime = month["regime"][1:]
    assert set(np.unique(month["regime"])) == {0, 1, 2}  # trend up, trend down, range
    trend_ac = _autocorr(r[regime != RANGE])
    range_ac = _autocorr(r[regime == RANGE])
    assert 0.03 < trend_ac < 0.2  # the documented momentum: real but modest
    assert abs(range_ac) < 0.03


def test_intraday_volume_seasonality(month) -> None:
    hour = (month["ts"] // 3_600_000) % 24
    by_hour = np.array([np.median(month["volume"][hour == h]) for h in range(24)])
    assert by_hour[14:17].mean() > 1.5 * by_hour[3:6].mean()


def test_order_book_spread_and_depth_follow_volatility(month) -> None:
    ex = SimulatedExchange()
    sigma = month["sigma"]
    calm = int(month["ts"][np.argmin(sigma[60:]) + 60]) + 30_000
    wild = int(month["ts"][np.argmax(sigma[60:]) + 60]) + 30_000
    books = [ex.order_book("BTC/USDT", t, depth=10) for t in (calm, wild)]
    spreads = [(b["ask_prices"][0] - b["bid_prices"][0]) / b["bid_prices"][0] for b in books]
    depth = [sum(b["bid_sizes"]) for b in books]
    assert spreads[1] > spreads[0] and depth[1] < depth[0]
    for b in books:
        assert np.all(np.diff(b["bid_prices"]) < 0) and np.all(np.diff(b["ask_prices"]) > 0)


def test_trades_carry_buy_sell_pressure_and_sum_to_volume() -> None:
    ex = SimulatedExchange()
    t = ex.trade_arrays("BTC/USDT", START, START + DAY_MS)
    c = ex.candle_arrays("BTC/USDT", START, START + DAY_MS)
    minute = (t["ts"] - START) // MINUTE_MS
    np.testing.assert_allclose(
        np.bincount(minute, weights=t["amount"], minlength=1440), c["volume"], rtol=1e-9
    )
    buy_share = np.bincount(minute, weights=t["is_buy"], minlength=1440) / np.bincount(
        minute, minlength=1440
    )
    up = c["close"] > c["open"]
    assert buy_share[up].mean() > 0.55 > 0.45 > buy_share[~up].mean()
    assert np.all(np.diff(t["ts"]) >= 0) and np.unique(t["id"]).size == t["id"].size


def test_source_never_returns_the_open_candle() -> None:
    source = SimulatedSource(clock=frozen_clock)
    table = fetch_candles(source, "BTC/USDT", "5m", frozen_clock() - DAY_MS, None)
    last_open = table["ts"].cast("int64").to_numpy()[-1]
    assert last_open + 5 * MINUTE_MS <= frozen_clock()
    assert np.all(np.diff(table["ts"].cast("int64").to_numpy()) == 5 * MINUTE_MS)


def test_simulated_candles_pass_the_quality_gate(lake, settings) -> None:
    from expectations.gate import gate_and_merge

    source = SimulatedSource(clock=frozen_clock)
    for timeframe in ("1m", "1h"):
        batch = fetch_candles(source, "ETH/USDT", timeframe, frozen_clock() - 3 * DAY_MS, None)
        result = gate_and_merge(lake, "candles", batch, settings=settings)
        assert result.success, result.message
        assert result.rows_quarantined == 0 and result.rows_merged == batch.num_rows
