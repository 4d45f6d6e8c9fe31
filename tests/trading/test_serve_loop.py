"""Must-show tests of the serving loop (issue 9) on real 1m candles with real ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from models.runtime import OnnxPredictor
from pipelines.features import FEATURE_SET_VERSION, build_features, feature_columns
from tests.trading.serve_support import (
    SYMBOL,
    candles,
    make_loop,
    real_frame,
    register_champion,
    replay_market,
    table_rows,
    tiny_model,
)
from trading.backtest import BacktestConfig, run_event_driven
from trading.confidence import VolatilityReference, score
from trading.decide import class_forward_returns
from trading.decision import OnlineRSI, OnlineVolatility, Thresholds, model_event, rsi_event
from trading.domain import Decision
from trading.feedback import Feedback, Pending
from trading.loop import LoopConfig, run
from trading.protections import ProtectionConfig
from trading.risk import RiskLimits
from trading.thresholds import AdaptiveThresholds, ThresholdPolicy
from warehouse import Settings

ROWS = 1900

# Low bars so the tiny model trades; protections off so the loop equals a plain backtest.
EQ_CONFIG = LoopConfig(
    thresholds=ThresholdPolicy(base=Thresholds(0.34, 0.34, 0.0), min_resolved=30),
    protections=ProtectionConfig.off(),
    limits=RiskLimits(
        max_position_fraction=0.5,
        confidence_sizing=True,
        min_confidence=0.0,
        stop_loss_vol_mult=3.0,
        take_profit_vol_mult=6.0,
    ),
    flush_every_steps=100,
    model_check_every_steps=25,
)


def _replay(settings: Settings, lake, config: LoopConfig = EQ_CONFIG, rows: int = ROWS):  # type: ignore[no-untyped-def]
    loop, con = make_loop(settings, config, lookup_con=lake)
    market = replay_market(rows)
    summary = run(loop, market)
    loop.writer.close()
    return loop, summary


def _backtest_decider(config: LoopConfig, model: Path, rows: int):  # type: ignore[no-untyped-def]
    """The same model decisions from BATCH features and ONE batched inference, fed to the
    backtest engineer's event-driven engine. The rules are the decision module's own
    (``model_event``: gate, classes, thresholds, edge; ``rsi_event``: the gated fallback); the
    plumbing around them (features, windows, confidence inputs, feedback) is rebuilt here."""
    frame = real_frame(rows)
    feats = build_features(
        frame.with_columns(
            exchange=pl.lit("binance"), symbol=pl.lit(SYMBOL), timeframe=pl.lit("1m")
        )
    ).sort("ts")
    values = feats.select(feature_columns()).cast(pl.Float32).to_numpy()
    pred = OnnxPredictor.load(model, FEATURE_SET_VERSION)
    L, used = pred.info.window_len, pred.used_index
    ok = [i for i in range(L - 1, rows) if np.isfinite(values[i - L + 1 : i + 1][:, used]).all()]
    p = pred.predict(np.stack([values[i - L + 1 : i + 1] for i in ok]))
    by_index = {
        i: (p.probabilities[k], float(p.confidence[k]), float(np.isfinite(values[i, used]).mean()))
        for k, i in enumerate(ok)
    }
    fb = Feedback(config.feedback)
    th = AdaptiveThresholds(config.thresholds)
    returns = class_forward_returns(pred.info)  # the edge rule applies when the model has them
    target = {"model": 0, "rsi": 0}
    vol, lvol = (
        OnlineVolatility(config.volatility_window),
        OnlineVolatility(config.feedback.vol_window_bars),
    )
    ref = VolatilityReference(config.confidence.reference_alpha)
    gaps = feats["gap_bars"].to_numpy()

    rsi = OnlineRSI(config.rsi.period)

    def decide(bar):  # type: ignore[no-untyped-def]
        i = bar.index
        sigma = vol.update(bar.close)
        lsig = lvol.update(bar.close)
        ref.update(sigma)
        value = rsi.update(bar.close)
        if fb.on_bar(SYMBOL, bar.close):
            th.update(fb.accuracy, fb.resolved)
        event, rsi_conf, _ = rsi_event(value, config.rsi, th.current.min_confidence)
        if event is not None:
            target["rsi"] = event
        if i not in by_index:
            return Decision(target["rsi"], rsi_conf, config.fallback_size_fraction)
        probs, conf, present = by_index[i]
        parts = score(
            conf,
            sigma=sigma,
            sigma_ref=ref.value,
            present_fraction=present,
            gap_bars=int(gaps[i] or 0),
            hits=fb.hits,
            resolved=fb.resolved,
            policy=config.confidence,
        )
        p3 = (float(probs[0]), float(probs[1]), float(probs[2]))
        edge = None if returns is None else sum(a * b for a, b in zip(p3, returns, strict=True))
        event, _ = model_event(
            p3,
            parts.value,
            th.current,
            expected_return=edge,
            round_trip_cost=config.costs.round_trip,
            target=target["model"],
        )
        if event is not None:
            target["model"] = event
        d = Decision(target["model"], parts.value)
        fb.add(
            Pending(
                SYMBOL,
                bar.ts_ms,
                "m",
                ["buy", "hold", "sell"][int(np.argmax(probs))],
                bar.close,
                fb.threshold(lsig, 5),
                5,
                5,
                True,
            )
        )
        return d

    return decide


def test_replay_is_deterministic_and_matches_event_driven_backtest(
    settings, lake, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    model = tiny_model()
    register_champion(lake, settings, model)
    loop1, s1 = _replay(settings, lake)
    rows1 = {
        t: table_rows(lake, t, "1, 2, 3, 4, 5")
        for t in ("predictions", "signals", "orders", "fills", "equity")
    }
    # second run on a fresh warehouse with the same model
    settings2 = Settings(home=tmp_path / "home2")
    from warehouse import connect, migrate

    lake2 = connect(settings2)
    migrate(lake2)
    register_champion(lake2, settings2, model)
    loop2, s2 = _replay(settings2, lake2)
    rows2 = {t: table_rows(lake2, t, "1, 2, 3, 4, 5") for t in rows1}
    for t in rows1:
        assert rows1[t] == rows2[t], t
    assert len(rows1["predictions"]) > ROWS // 2
    assert sum(x[4] != "rsi_fallback" for x in rows1["predictions"]) > 150
    assert len(loop1.state.portfolio.trades) >= 2, "the replay should trade"

    bt = run_event_driven(
        candles(ROWS),
        _backtest_decider(EQ_CONFIG, model, ROWS),
        BacktestConfig(
            EQ_CONFIG.initial_cash,
            EQ_CONFIG.fees,
            EQ_CONFIG.slippage_fraction,
            EQ_CONFIG.limits,
            EQ_CONFIG.volatility_window,
            "paper",
        ),
    )
    assert [(t.entry_ts_ms, t.exit_ts_ms, t.direction, t.exit_reason) for t in bt.trades] == [
        (t.entry_ts_ms, t.exit_ts_ms, t.direction, t.exit_reason)
        for t in loop1.state.portfolio.trades
    ]
    np.testing.assert_allclose(
        [t.pnl for t in bt.trades], [t.pnl for t in loop1.state.portfolio.trades], rtol=1e-6
    )
    assert abs(bt.equity[-1] - s1.equity) < 1e-6 * s1.equity
