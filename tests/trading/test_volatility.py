"""The volatility model of stops and sizing (issue 17, item 4).

Claims: a forecast at bar t uses no bar after t (property test) and its online form equals the
batch one; on the real 5m files EWMA/GARCH, fitted on the first half, beat realized sigma out of
sample on the second (QLIKE, block-bootstrap CI), and the parameters do not depend on the
scored half; the choice falls back to realized sigma when nothing is shown to beat it; and the
serving loop (the path of ``serve`` and ``backtest --model``) places its stops at
``stop_loss_vol_mult x`` the chosen forecaster's sigma."""

from __future__ import annotations

import dataclasses
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.features import load_candles
from tests.trading.serve_harness import build_loop
from trading.backtest import Candles, load_candle_file
from trading.broker import PaperBroker
from trading.decide import PrecomputedBar
from trading.decision import RsiRule, Thresholds, rolling_volatility
from trading.loop import LoopConfig
from trading.loop_config import with_volatility_choices
from trading.market import Tick
from trading.report import write_report
from trading.state import broker_to_dict
from trading.thresholds import ThresholdPolicy
from trading.volatility import (
    HISTORY_BARS,
    EwmaVol,
    Garch11,
    RealizedVol,
    VolatilityChoice,
    VolatilityForecaster,
    choose_forecaster,
)
from warehouse import Settings, upsert

FORECASTERS: tuple[VolatilityForecaster, ...] = (
    RealizedVol(5),
    EwmaVol(0.9),
    Garch11(1e-6, 0.1, 0.85),
)


@settings(max_examples=60, deadline=None)
@given(
    returns=st.lists(st.floats(-0.05, 0.05, allow_nan=False), min_size=40, max_size=120),
    future=st.lists(st.floats(-0.2, 0.2, allow_nan=False), min_size=1, max_size=40),
    cut=st.integers(25, 39),
    horizon=st.integers(1, 12),
)
def test_a_forecast_never_depends_on_later_bars(
    returns: list[float], future: list[float], cut: int, horizon: int
) -> None:
    close = 100.0 * np.exp(np.cumsum([0.0, *returns]))
    other = close.copy()
    tail = other[cut] * np.exp(np.cumsum(future))
    other = np.concatenate([other[: cut + 1], tail])  # bars after `cut` replaced (and resized)
    for f in FORECASTERS:
        a = f.sigma(close, horizon)[: cut + 1]
        b = f.sigma(other, horizon)[: cut + 1]
        np.testing.assert_array_equal(a, b, err_msg=f.describe())
        assert np.isfinite(a[-1]) and a[-1] >= 0, f.describe()


def test_online_forecasts_equal_the_batch_ones(eth_btc: Candles) -> None:
    close = eth_btc.close[:800]
    for f in FORECASTERS:
        online = f.online(5)
        got = np.array([online.update(float(c)) for c in close])
        want = f.sigma(close, 5)
        assert np.array_equal(np.isnan(got), np.isnan(want)), f.describe()
        np.testing.assert_allclose(got, want, rtol=1e-9, err_msg=f.describe())


@pytest.mark.parametrize("name", ["ETH_BTC-5m", "LTC_BTC-5m"])
def test_out_of_sample_comparison_on_real_files(candles_dir: Path, name: str) -> None:
    close = load_candle_file(candles_dir / f"{name}.feather").close
    choice = choose_forecaster(close, horizon=5)
    base, *candidates = choice.scores
    assert [s.name for s in choice.scores] == ["realized", "ewma", "garch11"]
    split = close.size // 2
    # scored on the second half after an h-bar purge, every forecaster on the same bars
    assert {s.bars for s in choice.scores} == {close.size - split - 2 * 5}
    assert base.qlike_diff == 0.0 and math.isnan(base.qlike_diff_ci_low)
    # measured (benchmarks/RESULTS.md): both files' EWMA and GARCH beat realized 20-bar sigma
    # with a CI below zero; the winner has the lowest QLIKE of those that beat it
    assert choice.name in ("ewma", "garch11")
    winner = next(s for s in candidates if s.name == choice.name)
    assert winner.qlike_diff_ci_low <= winner.qlike_diff < winner.qlike_diff_ci_high < 0.0
    assert winner.qlike == min(s.qlike for s in candidates if s.beats_baseline)
    assert choice.reason.startswith("beat realized sigma out of sample")
    # the parameters come from the first half only: another second half, the same model
    damaged = close.copy()
    damaged[split:] = damaged[split] * np.exp(
        np.cumsum(np.random.default_rng(0).normal(0, 0.02, close.size - split))
    )
    again = choose_forecaster(damaged, horizon=5)
    fitted = {type(m).__name__ for m in (choice.forecaster, again.forecaster)}
    assert again.scores[1].description == choice.scores[1].description  # EWMA's lambda
    assert again.scores[2].description == choice.scores[2].description  # GARCH's parameters
    assert fitted <= {"EwmaVol", "Garch11", "RealizedVol"}


def test_falls_back_to_realized_sigma_when_nothing_is_shown_to_beat_it(eth_btc: Candles) -> None:
    short = choose_forecaster(eth_btc.close[:900], horizon=5)
    assert short.forecaster == RealizedVol(20) and short.scores == ()
    assert short.reason.startswith("fallback: 900 bars of history")
    # enough bars to fit, too few later bars for a block-bootstrap CI (two blocks of 10 h):
    # not shown to beat the baseline, so the baseline it is, with the scores kept
    no_ci = choose_forecaster(eth_btc.close[:1200], horizon=40, min_bars=1000)
    assert no_ci.forecaster == RealizedVol(20)
    assert len(no_ci.scores) == 3 and not any(s.beats_baseline for s in no_ci.scores)
    assert no_ci.reason.startswith("fallback: no forecaster beat realized sigma")


# ---------------------------------------------------------------- stops in the serving loop

HISTORY = 3000  # bars the choice is made on
SERVED = 700  # bars then served (RSI fallback decides: no model)


def _stop_fractions(candles: Candles, choice: VolatilityChoice, tmp_path: Path) -> list[tuple]:
    """Serve ``SERVED`` bars after ``HISTORY`` through the loop with ``choice``; the stop-loss
    and take-profit fractions of every entry order, with the bar it was decided at."""
    symbol = candles.symbol
    config = LoopConfig(
        timeframe=candles.timeframe,
        volatility={symbol: choice},
        default_horizon_bars=5,
        # a narrow RSI band and no confidence gate: the fallback rule enters often
        rsi=RsiRule(lower=45.0, upper=55.0),
        thresholds=ThresholdPolicy(base=Thresholds(0.45, 0.45, min_confidence=0.0), floor=0.0),
    )
    loop = build_loop(config, tmp_path)
    broker = loop.broker
    assert isinstance(broker, PaperBroker)
    step_ms = loop.step_ms
    out = []
    for i in range(HISTORY, HISTORY + SERVED):
        bar = candles.bar(i)
        tick = Tick(bar.ts_ms + step_ms, (bar,))
        pre = PrecomputedBar.fallback("no model")
        loop.on_tick(tick, precomputed={symbol: pre})  # type: ignore[arg-type]
        for o in broker_to_dict(broker)["pending"]:  # submitted at this bar's close
            if o["stop_loss_fraction"] is not None:
                out.append((i - HISTORY, o["stop_loss_fraction"], o["take_profit_fraction"]))
    return out


def _check_stops(candles: Candles, choice: VolatilityChoice, tmp_path: Path) -> list[tuple]:
    limits = LoopConfig().limits
    assert limits.stop_loss_vol_mult and limits.take_profit_vol_mult
    served = candles.close[HISTORY : HISTORY + SERVED]
    sigma = choice.forecaster.sigma(served, choice.horizon)  # the loop saw these bars only
    orders = _stop_fractions(candles, choice, tmp_path)
    assert len(orders) >= 3, "the RSI rule should enter a few times in 700 bars"
    for k, sl, tp in orders:
        assert sl == pytest.approx(limits.stop_loss_vol_mult * sigma[k], rel=1e-9)
        assert tp == pytest.approx(limits.take_profit_vol_mult * sigma[k], rel=1e-9)
    return orders


def test_stops_use_the_forecaster_that_beat_realized_sigma(
    eth_btc: Candles, tmp_path: Path
) -> None:
    choice = choose_forecaster(eth_btc.close[:HISTORY], horizon=5)
    assert choice.name != "realized", choice.describe()
    orders = _check_stops(eth_btc, choice, tmp_path)
    # and they are not where realized sigma would have put them
    realized = rolling_volatility(eth_btc.close[HISTORY : HISTORY + SERVED], 20)
    mult = LoopConfig().limits.stop_loss_vol_mult
    assert mult is not None
    off = [abs(sl - mult * realized[k]) / sl for k, sl, _ in orders if np.isfinite(realized[k])]
    assert len(off) == len(orders) and np.median(off) > 0.05


def test_stops_fall_back_to_realized_sigma(eth_btc: Candles, tmp_path: Path) -> None:
    fallback = choose_forecaster(eth_btc.close[HISTORY - 900 : HISTORY], horizon=5)
    assert fallback.forecaster == RealizedVol(20)
    _check_stops(eth_btc, fallback, tmp_path)
    # a config without a choice is the same baseline
    config = LoopConfig(volatility_window=20)
    assert config.volatility_choice(eth_btc.symbol).forecaster == RealizedVol(20)
    assert dataclasses.replace(config, volatility={"X": fallback}).volatility_choice("X") == (
        fallback
    )


# ---------------------------------------------------------------- serve and backtest --model


def test_the_choice_reads_only_stored_candles_before_the_first_decision(
    settings: Settings, lake: Any, candles_dir: Path, eth_btc: Candles
) -> None:
    """``with_volatility_choices`` (what ``serve`` and ``backtest --model`` call) chooses on
    the stored candles before the first decided bar, whatever is stored after it."""
    frame = load_candles(candles_dir / "ETH_BTC-5m.feather", "ETH/BTC", "5m")
    upsert(lake, "candles", frame.to_arrow(), settings=settings)
    config = LoopConfig(exchange="binance", timeframe="5m")
    first = 4500  # more than HISTORY_BARS stored before it: the latest 4,000 are read
    chosen = with_volatility_choices(
        config, lake, ["ETH/BTC"], before_ms=int(eth_btc.ts_ms[first])
    ).volatility_choice("ETH/BTC")
    want = choose_forecaster(eth_btc.close[first - HISTORY_BARS : first], horizon=5)
    assert chosen == want and chosen.name != "realized"
    assert chosen.horizon == config.default_horizon_bars
    none = with_volatility_choices(config, lake, ["ETH/BTC"], before_ms=None)
    assert none.volatility_choice("ETH/BTC").forecaster == RealizedVol(config.volatility_window)


def test_the_report_says_which_sigma_was_used(tmp_path: Path, eth_btc: Candles) -> None:
    choice = choose_forecaster(eth_btc.close[:HISTORY], horizon=5)
    summary = {
        "symbol": "ETH/BTC",
        "timeframe": "5m",
        "strategy": "model m1",
        "bars": 10,
        "baselines": {},
        "sigma": choice.describe(),
        "volatility": choice.to_dict(),
    }
    html_path, json_path = write_report("vol", summary, {}, tmp_path)
    page = html_path.read_text()
    assert "Stops, take-profit and confidence sizing used" in page
    assert html.escape(choice.describe(), quote=False) in page
    assert "Volatility forecasters, out of sample" in page
    assert json.loads(json_path.read_text())["summary"]["volatility"]["forecaster"] == (choice.name)
