"""Broker, decision, signal-file, metrics and stress components on real data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.backtest import BacktestConfig, SignalSeries, run_event_driven
from trading.broker import BookSnapshot, FixedSlippage, OrderBookSlippage, PaperBroker
from trading.decision import (
    OnlineRSI,
    OnlineVolatility,
    ProbabilityDecider,
    Thresholds,
    rolling_volatility,
    rsi,
    signals_from_probabilities,
)
from trading.domain import Bar, FeeModel, Order
from trading.metrics import deflated_sharpe, performance, probabilistic_sharpe
from trading.risk import RiskLimits
from trading.signals_io import SignalFileError, align_signals, read_signal_file
from trading.stress import run_stress


def test_order_book_walk_and_client_ids() -> None:
    book = BookSnapshot(1000, (99.0, 98.0), (1.0, 5.0), (101.0, 102.0, 103.0), (1.0, 2.0, 1.0))
    broker = PaperBroker(FeeModel(0.0, 0.001), OrderBookSlippage({"X/Y": [book]}))
    broker.submit(Order("a-1", "X/Y", "buy", 2.5, created_ts_ms=1000))
    with pytest.raises(ValueError, match="duplicate client_order_id"):
        broker.submit(Order("a-1", "X/Y", "buy", 1.0))
    assert broker.order_status("a-1") == "open"
    (fill,) = broker.process_bar(Bar("X/Y", 2000, 200.0, 210.0, 190.0, 205.0), 1e9)
    vwap = (1 * 101.0 + 1.5 * 102.0) / 2.5  # walked two ask levels
    assert fill.price == pytest.approx(200.0 * (1 + (vwap / 100.0 - 1)), rel=1e-12)
    assert fill.fee == pytest.approx(2.5 * fill.price * 0.001, rel=1e-12)
    assert broker.order_status("a-1") == "filled"
    broker.submit(Order("a-2", "X/Y", "sell", 10.0))  # more than the 6 units of bids
    (part,) = broker.process_bar(Bar("X/Y", 3000, 200.0, 210.0, 190.0, 205.0), 0.0)
    assert part.amount == 6.0


def test_order_book_slippage_falls_back_without_a_book() -> None:
    """The serving loop's paper fills: the book when there is one at or before the fill, else
    the fixed slippage (``ServingLoop``'s default broker)."""
    book = BookSnapshot(1000, (99.0,), (5.0,), (101.0,), (5.0,))
    slippage = OrderBookSlippage({"X/Y": [book]}, FixedSlippage(0.002))
    assert slippage.fraction("X/Y", "buy", 1.0, 500) == (0.002, 1.0)  # before the snapshot
    assert slippage.fraction("Z/Y", "sell", 1.0, 2000) == (0.002, 1.0)  # a symbol without one
    assert slippage.fraction("X/Y", "buy", 1.0, 2000) == pytest.approx((0.01, 1.0))  # half spread


def test_no_fill_before_the_next_bar() -> None:
    broker = PaperBroker(FeeModel())
    bar = Bar("X/Y", 0, 10.0, 11.0, 9.0, 10.5)
    assert broker.process_bar(bar, 100.0) == []
    broker.submit(Order("b-1", "X/Y", "buy", 1.0))
    (fill,) = broker.process_bar(Bar("X/Y", 60_000, 12.0, 12.5, 11.0, 12.2), 100.0)
    assert (fill.ts_ms, fill.price) == (60_000, 12.0)  # the next bar's open


def test_online_forms_equal_batch(eth_btc) -> None:  # type: ignore[no-untyped-def]
    close = eth_btc.close[:2000]
    online, vol = OnlineRSI(14), OnlineVolatility(20)
    got = np.array([online.update(float(x)) for x in close])
    got_vol = np.array([vol.update(float(x)) for x in close])
    np.testing.assert_allclose(got, rsi(close, 14), rtol=1e-9, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(got_vol, rolling_volatility(close, 20), rtol=1e-9, equal_nan=True)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(*[st.floats(0.01, 1.0)] * 3), min_size=1, max_size=60))
def test_probability_decider_online_equals_batch(rows: list[tuple[float, float, float]]) -> None:
    p = np.array(rows)
    p = p / p.sum(axis=1, keepdims=True)
    th = Thresholds(0.4, 0.4, 0.45)
    batch = signals_from_probabilities(p, None, th)
    dec = ProbabilityDecider(th)
    online = [dec.update(tuple(map(float, r))).signal for r in p]
    assert batch.tolist() == online


HEAD = "ts,symbol,signal\n"


def test_signal_file_errors_name_row_and_column(tmp_path: Path) -> None:
    cases = {
        HEAD + "2018-01-10T05:00:00Z,ETH/BTC,1\n2018-01-10T05:05:00Z,ETH/BTC,x\n": (
            "row 1 (line 3), column 'signal': 'x' is not a number"
        ),
        "ts,symbol,signal\n2018-01-10 05:00:00,ETH/BTC,1\n": "row 0 (line 2), column 'ts'",
        "ts,symbol,signal,size\n2018-01-10T05:00:00Z,ETH/BTC,1,1.5\n": "column 'size'",
        "ts,symbol\n2018-01-10T05:00:00Z,ETH/BTC\n": "missing column(s) ['signal']",
        "ts,symbol,signal\n1515560400000,ETH/BTC,1\n1515560400000,ETH/BTC,0\n": "duplicate",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"s{i}.csv"
        path.write_text(text)
        with pytest.raises(
            SignalFileError,
            match=message.replace("(", r"\(")
            .replace(")", r"\)")
            .replace("[", r"\[")
            .replace("]", r"\]"),
        ):
            read_signal_file(path)


def test_signal_acts_at_next_open_and_is_carried(eth_btc, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c = eth_btc.slice(0, 30)
    ts = pl.Series(c.ts_ms).cast(pl.Datetime("ms", "UTC"))
    pl.DataFrame({"ts": ts[[5, 12]], "symbol": ["ETH/BTC"] * 2, "signal": [1, 0]}).write_parquet(
        tmp_path / "s.parquet"
    )
    sig = align_signals(read_signal_file(tmp_path / "s.parquet"), c)
    assert sig.signal.tolist() == [0] * 5 + [1] * 7 + [0] * 18
    r = run_event_driven(c, sig, BacktestConfig(fees=FeeModel(0, 0)))
    assert [(f.ts_ms, f.price) for f in r.fills] == [
        (c.ts_ms[6], c.open[6]),
        (c.ts_ms[13], c.open[13]),
    ]


@settings(max_examples=25, deadline=None)
@given(k=st.integers(20, 150))
def test_no_look_ahead_future_prices_do_not_change_the_past(eth_btc, k: int) -> None:  # type: ignore[no-untyped-def]
    """Damaging every bar after k changes nothing up to k's close."""
    c = eth_btc.slice(0, 160)
    from dataclasses import replace as dc_replace

    wild = dc_replace(
        c,
        close=np.concatenate([c.close[: k + 1], c.close[k + 1 :] * 3]),
        open=np.concatenate([c.open[: k + 1], c.open[k + 1 :] * 3]),
        high=np.concatenate([c.high[: k + 1], c.high[k + 1 :] * 3]),
        low=np.concatenate([c.low[: k + 1], c.low[k + 1 :] * 0.3]),
    )
    from trading.decision import rsi_rule_signals

    cfg = BacktestConfig(limits=RiskLimits(stop_loss_vol_mult=2.0))
    a = run_event_driven(c, SignalSeries.of(rsi_rule_signals(c.close)), cfg)
    b = run_event_driven(wild, SignalSeries.of(rsi_rule_signals(wild.close)), cfg)
    assert a.equity[: k + 1].tolist() == b.equity[: k + 1].tolist()


def test_sharpe_honesty(eth_btc) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    r = rng.normal(0.001, 0.01, 2000)
    one, ten, many, thousand = (deflated_sharpe(r, n) for n in (1, 10, 100, 1000))
    assert probabilistic_sharpe(r) == pytest.approx(one)
    assert 0 < thousand < many < ten < one < 1  # more configurations tried -> less convincing
    eq = 1000 * np.cumprod(1 + r)
    perf = performance(
        eq,
        initial_cash=1000,
        timeframe="5m",
        trades=[],
        units=np.ones(2000),
        fees_paid=0.0,
        traded_notional=0.0,
    )
    assert perf.sharpe_ci_low < perf.sharpe < perf.sharpe_ci_high
    assert perf.max_drawdown < 0 and perf.exposure == 1.0
    assert math.isclose(perf.total_return, eq[-1] / 1000 - 1)


def test_stress_crash_hits_drawdown_and_risk_controls(eth_btc) -> None:  # type: ignore[no-untyped-def]
    c = eth_btc.slice(0, 1500)
    hold = lambda d: SignalSeries.of(np.ones(len(d)))  # noqa: E731
    plain = {r["scenario"]: r for r in run_stress(c, hold, BacktestConfig())}
    assert plain["crash_30pct"]["max_drawdown"] <= plain["baseline"]["max_drawdown"] - 0.15
    assert plain["crash_30pct"]["worst_bar_return"] == pytest.approx(-0.3, abs=0.01)
    assert plain["outage_gap"]["bars"] == 1440
    guarded = BacktestConfig(limits=RiskLimits(max_drawdown_fraction=0.25))
    rows = {r["scenario"]: r for r in run_stress(c, hold, guarded)}
    assert rows["crash_30pct"]["kill_switch_fired"] and not rows["baseline"]["kill_switch_fired"]
    wide = BacktestConfig(slippage_fraction=0.0001)
    alt = lambda d: SignalSeries.of((np.arange(len(d)) // 10) % 2)  # noqa: E731
    illiquid = {r["scenario"]: r for r in run_stress(c, alt, wide)}
    assert illiquid["illiquid_spread"]["total_return"] < illiquid["baseline"]["total_return"]


def test_limit_order_pays_maker_fee_at_its_price() -> None:
    broker = PaperBroker(FeeModel(maker_fraction=0.0002, taker_fraction=0.001))
    broker.submit(Order("l-1", "X/Y", "buy", 2.0, order_type="limit", price=9.5))
    assert broker.process_bar(Bar("X/Y", 0, 10.0, 10.5, 9.6, 10.0), 1e6) == []  # not reached
    (fill,) = broker.process_bar(Bar("X/Y", 60_000, 10.0, 10.2, 9.4, 9.8), 1e6)
    assert (fill.price, fill.fee) == (9.5, 2.0 * 9.5 * 0.0002)


def test_confidence_sizing_and_total_exposure_limit() -> None:
    from trading.domain import Decision
    from trading.portfolio import Portfolio
    from trading.risk import RiskState, plan_orders

    limits = RiskLimits(
        max_position_fraction=0.6,
        max_total_exposure_fraction=0.8,
        min_confidence=0.6,
        confidence_sizing=True,
        min_size_scale=0.25,
    )
    book = Portfolio(cash=1000.0)
    state = RiskState()
    weak = plan_orders(
        Decision(1, 0.5),
        symbol="A/B",
        ts_ms=0,
        close=10.0,
        volatility_fraction=0.01,
        portfolio=book,
        state=state,
        limits=limits,
    )
    assert weak.orders == () and "confidence" in weak.note
    a = plan_orders(
        Decision(1, 0.8),
        symbol="A/B",
        ts_ms=0,
        close=10.0,
        volatility_fraction=0.01,
        portfolio=book,
        state=state,
        limits=limits,
    )
    scale = 0.25 + 0.75 * (0.8 - 0.6) / 0.4  # 0.625
    assert a.orders[0].amount == pytest.approx(0.6 * scale * 1000.0 / 10.0)  # 37.5 units
    # hold 0.6 of equity in A/B: only 0.2 is left for C/D under the 0.8 total limit
    from trading.domain import Position

    book.positions["A/B"] = Position("A/B", 60.0, 10.0, 0, 0.0)
    book.cash = 400.0
    book.mark("A/B", 10.0)
    b = plan_orders(
        Decision(1, 1.0),
        symbol="C/D",
        ts_ms=0,
        close=5.0,
        volatility_fraction=0.01,
        portfolio=book,
        state=state,
        limits=limits,
    )
    assert b.orders[0].amount == pytest.approx(0.2 * 1000.0 / 5.0)
    assert a.orders[0].client_order_id != b.orders[0].client_order_id


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(*[st.floats(0.01, 1.0)] * 3, st.floats(0.0, 1.0)), min_size=1, max_size=40)
)
def test_model_rule_without_an_edge_estimate_is_the_probability_rule(
    rows: list[tuple[float, float, float, float]],
) -> None:
    """``model_event`` adds reasons and the edge rule; without per-class returns it decides as
    ``ProbabilityDecider`` does, and each reason names the rule that decided."""
    from trading.decision import model_event

    th = Thresholds(0.4, 0.4, 0.45)
    dec = ProbabilityDecider(th)
    target = 0
    for a, b, c, conf in rows:
        p = (a / (a + b + c), b / (a + b + c), c / (a + b + c))
        event, reason = model_event(p, conf, th, target=target)
        target = target if event is None else event
        assert dec.update(p, conf).signal == target
        if conf < th.min_confidence:
            assert reason.startswith("model: confidence below gate")
        elif event is not None:
            assert reason == ("model: buy" if event == 1 else "model: sell")
        else:
            assert reason.startswith(("model: hold class", "model: below threshold"))


def test_edge_rule_needs_the_expected_return_past_the_cost_and_still_exits() -> None:
    from trading.decision import model_event

    th = Thresholds(0.4, 0.4, 0.5)
    buy, sell = (0.8, 0.1, 0.1), (0.1, 0.1, 0.8)
    assert model_event(buy, 0.8, th, expected_return=0.004, round_trip_cost=0.003) == (
        1,
        "model: buy",
    )
    event, why = model_event(buy, 0.8, th, expected_return=0.002, round_trip_cost=0.003)
    assert event is None and why.startswith("model: edge below cost")
    # a buy too weak for a long still leaves a short (flat), it does not keep it
    event, _ = model_event(
        buy, 0.8, th, expected_return=0.002, round_trip_cost=0.003, allow_short=True, target=-1
    )
    assert event == 0
    # without shorts a sell only exits: no edge needed; with shorts it needs -E[r] > cost
    assert model_event(sell, 0.8, th, expected_return=-0.001, round_trip_cost=0.003)[0] == -1
    event, why = model_event(
        sell, 0.8, th, expected_return=-0.001, round_trip_cost=0.003, allow_short=True
    )
    assert event is None and why.startswith("model: edge below cost")
