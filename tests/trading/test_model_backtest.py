"""`backtest --model`: batched features and inference, then the serving loop bar by bar.

The claims: the batch outputs are the loop's own (same windows, same fallback rules and
reasons); the run's signals, orders, fills and equity equal those ``serve --replay`` writes on
the same candles; the JSON carries the model's measures, and its IC is the one an outsider
recomputes from the ``--output`` file and the candles."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from models.registry import get_model
from tests.trading.serve_harness import MemoryRegistry, build_loop, real_ticks, rows
from tests.trading.serve_support import (
    SYMBOL,
    candle_table,
    candles,
    momentum_model,
    real_frame,
    register_champion,
    tiny_model,
)
from trading.evaluation import summarize
from trading.loop import LoopConfig
from trading.model_backtest import (
    batch_inference,
    label_config_of,
    load_range,
    resolve_model,
    run_model,
)
from trading.model_metrics import (
    block_bootstrap_ic,
    ece,
    log_loss,
    precision_recall,
    spearman,
    tradeable_returns,
)
from trading.service import serve_replay
from warehouse import Settings, upsert

EXCHANGE = "binance"


# ---------------------------------------------------------------- measures


def test_tradeable_return_is_next_open_to_open_h_bars_later() -> None:
    opens = np.array([10.0, 11.0, 12.0, 15.0, 9.0])
    r = tradeable_returns(opens, 2)
    # bar 0: open[3] / open[1] - 1; bar 1: open[4] / open[2] - 1; the rest run past the data
    assert r[:2].tolist() == [15.0 / 11.0 - 1.0, 9.0 / 12.0 - 1.0]
    assert np.isnan(r[2:]).all()


def test_spearman_and_its_block_bootstrap() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=3000)
    y = 0.3 * x + rng.normal(size=3000)
    y[::7] = 0.0  # ties, as flat bars give
    x[5] = np.nan  # dropped pairwise
    ok = np.isfinite(x)
    assert spearman(x, y) == pytest.approx(spearmanr(x[ok], y[ok]).statistic, abs=1e-12)
    lo, hi = block_bootstrap_ic(x, y, horizon_bars=5)
    assert lo < spearman(x, y) < hi
    assert lo > 0.1 and hi < 0.45
    noise_lo, noise_hi = block_bootstrap_ic(x, rng.normal(size=3000), horizon_bars=5)
    assert noise_lo < 0 < noise_hi


def test_calibration_measures_on_known_values() -> None:
    y = np.array([0, 1, 2, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.7, 0.2, 0.1]])
    assert log_loss(y, p) == pytest.approx(-(3 * math.log(0.7) + math.log(0.2)) / 4)
    # one bin (0.7): 3 of 4 right -> |0.75 - 0.7|
    assert ece(y, p) == pytest.approx(0.05)
    pr = precision_recall(y, p.argmax(axis=1))
    assert pr["precision_buy"] == 0.5 and pr["recall_buy"] == 1.0
    assert pr["recall_hold"] == 0.5 and pr["precision_sell"] == 1.0


def test_label_rule_comes_from_the_models_hyperparameters() -> None:
    rule = label_config_of({"horizon_bars": 7, "vol_window_bars": 30, "threshold_scale": 0.8}, 5)
    assert (rule.horizon_bars, rule.vol_window_bars, rule.threshold_scale) == (7, 30, 0.8)
    assert label_config_of({}, 4).horizon_bars == 4  # a hand-built model: its ONNX horizon


# ---------------------------------------------------------------- batch == the loop's own


@pytest.mark.parametrize("which", ["momentum", "tiny"])
def test_batch_inference_equals_the_loops_inference(tmp_path: Path, which: str) -> None:
    """The loop's predictions (online features, one ONNX call per bar) against the batch."""
    model = momentum_model(tmp_path / "m.onnx") if which == "momentum" else tiny_model()
    registry = MemoryRegistry()
    registry.promote(model, "m")
    loop = build_loop(LoopConfig(), tmp_path, registry)
    n = 600 if which == "momentum" else 2200  # the tiny model needs ~1,500 bars of warm-up
    for tick in real_ticks(n):
        loop.on_tick(tick)
    served = {r["ts"]: r for r in rows(loop, "predictions")}
    assert loop.manager.predictor is not None
    batch = batch_inference(candles(n), loop.manager.predictor, min_feature_quality=0.8)

    model_bars = [
        i for i, t in enumerate(batch.ts_ms) if served.get(int(t), {}).get("model_id") == "m"
    ]
    assert model_bars == np.flatnonzero(batch.has_model).tolist()
    assert 0 < len(model_bars) < n  # a warm-up in the fallback, then the model
    assert batch.fallback_reason[0] == "warm-up: window not complete"
    got = batch.probabilities[model_bars]
    want = np.array(
        [
            [served[int(batch.ts_ms[i])][k] for k in ("p_buy", "p_hold", "p_sell")]
            for i in model_bars
        ]
    )
    # exact, the LSTM ensemble too: OnnxPredictor runs a lone window as a padded pair, because
    # ONNX Runtime's batch-of-one kernels round differently in the last float32 bit
    assert np.abs(got - want).max() == 0.0


# ---------------------------------------------------------------- == serve --replay


def _warehouse_rows(lake: Any, table: str, columns: str) -> list[tuple[Any, ...]]:
    return lake.execute(f"SELECT {columns} FROM {table} ORDER BY ts, 1").fetchall()


def test_backtest_model_equals_serve_replay(settings: Settings, lake: Any, tmp_path: Path) -> None:
    """Same candles, same model, same costs: the signals, orders, fills and equity of the
    batched backtest equal what ``serve --replay`` stored, to 1e-9."""
    upsert(lake, "candles", candle_table(real_frame(1500), EXCHANGE), settings=settings)
    model_id = register_champion(lake, settings, momentum_model(tmp_path / "momentum.onnx"))
    config = LoopConfig(exchange=EXCHANGE, model_check_every_steps=60)
    serve_replay(settings, SYMBOL, config=config, resume=False)

    record = resolve_model(lake, "champion")
    assert record.model_id == model_id == get_model(lake, model_id).model_id
    bars, start = load_range(lake, SYMBOL, "1m", EXCHANGE)
    run = run_model(bars, record, config, start=start)

    signals = _warehouse_rows(lake, "signals", "epoch_ms(ts), signal, confidence, reason")
    assert [(int(t), s, r) for t, s, _, r in signals] == [
        (int(t), int(s), r) for t, s, r in zip(bars.ts_ms, run.signal, run.reason, strict=True)
    ]
    assert np.abs(np.array([c for _, _, c, _ in signals]) - run.confidence).max() <= 1e-9
    equity = _warehouse_rows(lake, "equity", "epoch_ms(ts), equity")
    assert [int(t) for t, _ in equity] == bars.ts_ms.tolist()
    assert np.abs(np.array([e for _, e in equity]) - run.equity).max() <= 1e-9
    order_cols = "client_order_id, side, order_type, amount, price, status, epoch_ms(ts)"
    stored = _warehouse_rows(lake, "orders", order_cols)
    ran = sorted(
        (
            o["client_order_id"],
            o["side"],
            o["order_type"],
            o["amount"],
            o["price"],
            o["status"],
            o["ts"],
        )
        for o in run.orders
    )
    assert stored and _same_rows(sorted(stored), ran)
    fill_cols = "fill_id, side, price, amount, fee, epoch_ms(ts)"
    fills = _warehouse_rows(lake, "fills", fill_cols)
    ran_fills = [
        (f["fill_id"], f["side"], f["price"], f["amount"], f["fee"], f["ts"]) for f in run.fills
    ]
    assert _same_rows(sorted(fills), sorted(ran_fills))
    # not vacuous: the model itself decided trades, and the backtest saw them as its own
    model_orders = [
        o
        for o in run.orders
        if run.reason[int(np.searchsorted(bars.ts_ms, o["ts"]))].startswith("model")
    ]
    assert model_orders and len(fills) >= 2
    assert run.result.trades


def _same_rows(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Equal row by row: strings and ints exactly, floats to 1e-9 (relative to 1)."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            if isinstance(x, float) or isinstance(y, float):
                if x is None or y is None or abs(float(x) - float(y)) > 1e-9 * max(1.0, abs(x)):
                    return False
            elif x != y:
                return False
    return True


# ---------------------------------------------------------------- the command on real files


def _store_file(lake: Any, settings: Settings, path: Path, symbol: str, tf: str) -> pl.DataFrame:
    frame = pl.read_ipc(path).rename({"date": "ts"})
    frame = frame.with_columns(
        pl.col("ts").dt.cast_time_unit("ms"),
        exchange=pl.lit(EXCHANGE),
        symbol=pl.lit(symbol),
        timeframe=pl.lit(tf),
    ).select("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
    upsert(lake, "candles", frame.to_arrow(), settings=settings)
    return frame


@pytest.fixture
def cli_home(settings: Settings, lake: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("TRADELOOP_HOME", str(settings.home))  # clears the settings cache
    return lake


def _cli(*args: str) -> Any:
    from flows.cli import app

    return CliRunner().invoke(app, ["backtest", *args])


def test_backtest_model_on_a_real_file(
    settings: Settings, cli_home: Any, candles_dir: Path, tmp_path: Path
) -> None:
    lake = cli_home
    frame = _store_file(lake, settings, candles_dir / "ETH_BTC-5m.feather", "ETH/BTC", "5m")
    register_champion(lake, settings, tiny_model())
    lake.close()
    out = tmp_path / "bars.csv"

    # the warehouse holds one series: no --symbol, --timeframe or --exchange needed
    res = _cli("--model", "champion", "-f", "json", "--output", str(out), "--no-report")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)

    signal_keys = set(summarize(run_model_result_stub()).keys())
    assert signal_keys <= set(summary)
    assert set(summary["baselines"]) == {"buy_and_hold", "rsi_rule", "flat", "majority_class"}
    for key in ("ic", "ic_ci_low", "ic_ci_high", "ece", "log_loss", "brier", "total_return"):
        assert isinstance(summary[key], float) and math.isfinite(summary[key]), key
    assert summary["ic_ci_low"] <= summary["ic"] <= summary["ic_ci_high"]
    for cls in ("buy", "hold", "sell"):
        for kind in ("precision", "recall"):
            value = summary[f"{kind}_{cls}"]
            assert value is None or 0.0 <= value <= 1.0
    assert summary["model_trades"] + summary["fallback_trades"] == summary["trades"]
    assert summary["model_bars"] > 0.9 * frame.height
    assert summary["in_sample_bars"] is None  # a hand-registered model has no test window
    # the stress scenarios replay the MODEL through the serving loop (not the RSI rule): the
    # undamaged scenario is the run itself
    stress = {row["scenario"]: row for row in summary["stress"]}
    assert set(stress) == {"baseline", "crash_30pct", "vol_x3", "illiquid_spread", "outage_gap"}
    assert stress["baseline"]["total_return"] == pytest.approx(summary["total_return"], abs=1e-12)
    assert stress["baseline"]["trades"] == summary["trades"]
    assert stress["outage_gap"]["bars"] < stress["baseline"]["bars"] == frame.height
    assert all(0 <= row["model_trades"] <= row["trades"] for row in stress.values())

    # the IC again, from the --output file and the candles alone
    bars = pl.read_csv(out, try_parse_dates=True)
    assert bars.columns == [
        "ts",
        "symbol",
        "p_buy",
        "p_hold",
        "p_sell",
        "confidence",
        "score",
        "signal",
        "reason",
    ]
    assert bars.height == frame.height
    opens = frame["open"].to_numpy()
    h = summary["horizon_bars"]
    realized = np.full(opens.size, np.nan)
    realized[: opens.size - h - 1] = opens[h + 1 :] / opens[1 : opens.size - h] - 1
    score = bars["score"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    ok = np.isfinite(score) & np.isfinite(realized)
    assert spearmanr(score[ok], realized[ok]).statistic == pytest.approx(summary["ic"], abs=1e-9)
    assert ok.sum() == summary["ic_bars"]

    # a --timerange decides from its start on, with the features warmed on the bars before
    res = _cli(
        "--model",
        "champion",
        "-f",
        "json",
        "--timerange",
        "2018-01-20:",
        "--no-report",
        "--output",
        str(tmp_path / "late.parquet"),
    )
    assert res.exit_code == 0, res.output
    late = pl.read_parquet(tmp_path / "late.parquet")
    assert late["ts"].min() == dt.datetime(2018, 1, 20, tzinfo=dt.UTC)
    assert late["p_buy"].null_count() == 0  # the model from the first decision bar


def run_model_result_stub() -> Any:
    """An empty-but-real BacktestResult: only its summary's keys are used."""
    from trading.backtest import BacktestResult

    return BacktestResult(
        "X/Y", "5m", np.array([0, 1]), np.array([1.0, 1.0]), np.zeros(2), [], [], 0.0, 0.0, 1.0
    )


def test_ambiguous_series_and_bad_options_are_usage_errors(
    settings: Settings, cli_home: Any, candles_dir: Path
) -> None:
    lake = cli_home
    _store_file(lake, settings, candles_dir / "ETH_BTC-5m.feather", "ETH/BTC", "5m")
    _store_file(lake, settings, candles_dir / "LTC_BTC-5m.feather", "LTC/BTC", "5m")
    lake.close()
    res = _cli("--model", "champion")
    assert res.exit_code == 2
    assert "ETH/BTC" in res.output and "LTC/BTC" in res.output and "--symbol" in res.output
    assert _cli("--model", "champion", "--signals", "x.csv").exit_code == 2
    assert _cli("--model", "champion", "--timerange", "nonsense").exit_code == 2
    # a named symbol, but no model registered: failed work, one line
    res = _cli("--model", "champion", "-s", "ETH/BTC")
    assert res.exit_code == 1 and "no champion" in res.output


def test_config_costs_reach_the_loop(tmp_path: Path) -> None:
    from trading.model_backtest import loop_config

    config = loop_config(0.002, None, LoopConfig(slippage_fraction=0.0007))
    assert (config.fees.taker_fraction, config.slippage_fraction) == (0.002, 0.0007)
    assert dataclasses.replace(config).fees.maker_fraction == 0.002
