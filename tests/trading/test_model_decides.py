"""The model decides (issue 19): the real ensemble, trained on a synthetic market whose next
moves are readable from its features, places trades through `serve --replay` and through
`backtest --model`; the same ensemble trained on a market with no edge worth the costs places
none, and the reasons name the rule that decided.

The edge market trends in runs: each 1m bar moves 0.4 % in the direction of the run, and a run
ends with probability 1/20 a bar, so the last bars' returns (features) say where the next five
go, by far more than the 0.32 % round trip. The no-edge market is a random walk of 0.25 % bars:
five-bar moves as large, but nothing in the past says which way."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from models.registry import promote, register_model
from models.walk_forward import train_window
from tests.support.models import TINY
from trading.loop import LoopConfig
from trading.model_backtest import model_backtest
from trading.service import serve_replay
from warehouse import Settings, connect, migrate, upsert

pytestmark = pytest.mark.slow  # two real trainings, serve and a backtest each: ~3 min

SYMBOL = "SYN/USD"
BARS = 3600
TRAIN_BARS = 2400
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def synthetic_candles(*, edge: bool, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    if edge:
        flips = rng.random(BARS) < 1 / 20
        direction = np.where(np.cumsum(flips) % 2 == 0, 1.0, -1.0)
        log_moves = direction * 0.004 + rng.normal(0.0, 0.0005, BARS)
    else:
        log_moves = rng.normal(0.0, 0.0025, BARS)
    close = 100.0 * np.exp(np.cumsum(log_moves))
    open_ = np.concatenate(([100.0], close[:-1]))
    spread = np.abs(rng.normal(0.0, 0.0003, BARS)) * close
    return pl.DataFrame(
        {
            "exchange": ["synthetic"] * BARS,
            "symbol": [SYMBOL] * BARS,
            "timeframe": ["1m"] * BARS,
            "ts": [START + dt.timedelta(minutes=i) for i in range(BARS)],
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.uniform(5.0, 15.0, BARS),
        }
    ).with_columns(pl.col("ts").dt.cast_time_unit("ms"))


def _market(tmp_path: Path, *, edge: bool) -> tuple[Settings, Any, pl.DataFrame]:
    settings = Settings(home=tmp_path / ("edge" if edge else "flat"))
    con = connect(settings)
    migrate(con)
    frame = synthetic_candles(edge=edge, seed=11 if edge else 12)
    upsert(con, "candles", frame.to_arrow(), settings=settings)
    record = train_window(
        frame.head(TRAIN_BARS), TINY.model_copy(update={"epochs": 3}), tmp_path, "m"
    )
    registered = register_model(
        con,
        settings,
        record.onnx_path,
        feature_set_version=record.feature_set_version,
        training_snapshot_id=None,
        hyperparameters=record.hyperparameters,
        metrics={},
    )
    promote(con, settings, registered.model_id)
    return settings, con, frame


def _served_model_orders(con: Any) -> list[str]:
    """The reasons of the signals that sent an entry or exit, for bars the model decided."""
    return [
        r[0]
        for r in con.execute(
            "SELECT s.reason FROM orders o JOIN signals s ON s.ts = o.ts AND s.symbol = o.symbol "
            "WHERE o.order_type <> 'stop' ORDER BY o.ts"
        ).fetchall()
    ]


@pytest.mark.parametrize("edge", [True, False], ids=["edge", "no-edge"])
def test_the_model_trades_its_edge_and_only_its_edge(tmp_path: Path, edge: bool) -> None:
    settings, con, frame = _market(tmp_path, edge=edge)
    config = LoopConfig.from_settings(settings, exchange="synthetic", model_check_every_steps=60)
    last = BARS - TRAIN_BARS
    served = serve_replay(settings, SYMBOL, config=config, last_candles=last, resume=False)
    assert served.candles == last
    reasons = _served_model_orders(con)
    model_orders = [r for r in reasons if r.startswith("model: ")]
    test_start_ms = int(frame["ts"][TRAIN_BARS].timestamp() * 1000)
    summary = model_backtest(
        con,
        symbol=SYMBOL,
        timeframe="1m",
        exchange="synthetic",
        start_ms=test_start_ms,
        config=config,
    )
    assert summary["bars"] == last
    signals = con.execute("SELECT reason FROM signals").fetchall()
    rules = {r[0].split(";")[0].split(" (")[0] for r in signals}
    if edge:
        assert len(model_orders) >= 4, reasons  # serve: the model itself opened and closed
        assert all(r.startswith(("model: buy", "model: sell")) for r in model_orders)
        assert summary["model_trades"] >= 2, summary  # backtest --model: the same decisions
        assert summary["ic"] > 0.3 and summary["ic_ci_low"] > 0.0
        assert summary["total_return"] > summary["baselines"]["flat"]["total_return"]
    else:
        assert model_orders == [], model_orders
        assert summary["model_trades"] == 0, summary
        # the model saw the bars, and a named rule of its own held it back each time
        held = ("model: edge below cost", "model: hold class", "model: confidence below gate")
        assert any(r.startswith(held) for r in rules), rules
    assert all(
        r.startswith(("model: ", "fallback: ", "protection: ", "kill switch: ")) for r in rules
    )
    con.close()
