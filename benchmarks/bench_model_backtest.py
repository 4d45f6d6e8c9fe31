"""`backtest --model` against `serve --replay` on the same candles, same model, same costs.

The model is the default architecture (``TrainConfig()`` defaults: hybrid LSTM+Transformer,
conv, gradient boosting), trained one epoch on the first 3,000 bars of a real 5m file (speed
depends on the architecture, not on training length). Both run over the whole file:

* ``serve --replay FILE`` (``trading.service.serve_replay``): online features and one ONNX
  Runtime call per candle, rows written to the warehouse (the command as a user runs it);
* the same ``ServingLoop`` with writes off (its per-candle path alone);
* ``backtest --model`` (``trading.model_backtest.run_model``): batch features, batched ONNX
  Runtime over every window, then the loop bar by bar with the precomputed outputs.

One core: ONNX Runtime with one thread, and nothing else running in the process. The largest
equity difference between the backtest and the replay is recorded beside the speeds.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.results import record

CANDLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "candles" / "ETH_BTC-5m.feather"
SYMBOL = "ETH/BTC"


def _train_default(tmp: Path) -> Path:
    import torch

    from models.data import build_samples
    from models.export import export_onnx
    from models.training import TrainConfig, label_config, train_ensemble

    torch.set_num_threads(1)
    frame = (
        pl.read_ipc(CANDLES)
        .rename({"date": "ts"})
        .with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
        .with_columns(exchange=pl.lit("binance"), symbol=pl.lit(SYMBOL), timeframe=pl.lit("5m"))
    )
    cfg = TrainConfig(epochs=1, max_samples=3000, importance_repeats=0, progress=False, threads=1)
    samples = build_samples(
        frame.head(3000), window_len=cfg.window_len, label_config=label_config(cfg)
    )
    path = tmp / "default.onnx"
    export_onnx(train_ensemble(samples, cfg), path)
    return path


def main() -> None:
    from models.registry import promote, register_model
    from pipelines.features import FEATURE_SET_VERSION
    from trading.backtest import load_candle_file
    from trading.fallback import ModelManager
    from trading.loop import LoopConfig, ServingLoop
    from trading.market import Tick
    from trading.model_backtest import run_model
    from trading.service import serve_replay
    from warehouse import Settings, connect, migrate

    tmp = Path(tempfile.mkdtemp(prefix="bench-model-backtest-"))
    model = _train_default(tmp)
    settings = Settings(home=tmp / "home")
    con = connect(settings)
    migrate(con)
    record_ = register_model(
        con,
        settings,
        model,
        feature_set_version=FEATURE_SET_VERSION,
        training_snapshot_id=None,
        hyperparameters={},
        metrics={},
    )
    promote(con, settings, record_.model_id)
    con.close()
    candles = load_candle_file(CANDLES)
    n = len(candles)
    config = LoopConfig(exchange="binance", timeframe="5m", model_check_every_steps=60)

    started = time.perf_counter()
    serve_replay(settings, str(CANDLES), config=config, resume=False)
    serve_s = time.perf_counter() - started
    con = connect(settings, read_only=True)
    served_equity = np.array(
        [r[0] for r in con.execute("SELECT equity FROM equity ORDER BY ts").fetchall()]
    )
    con.close()

    manager = ModelManager(lambda: record_, FEATURE_SET_VERSION)
    loop = ServingLoop(
        dataclasses.replace(config, flush_every_steps=10**9),
        manager=manager,
        writer=None,
        home=tmp,
    )
    started = time.perf_counter()
    for i in range(n):
        bar = candles.bar(i)
        tick: object = Tick(bar.ts_ms + loop.step_ms, (bar,))
        loop.on_tick(tick)  # type: ignore[arg-type]
    loop_s = time.perf_counter() - started

    runs = [run_model(candles, record_, config) for _ in range(3)]  # first: ORT warm-up
    best = min(runs[1:], key=lambda r: r.inference_seconds + r.loop_seconds)
    model_s = best.inference_seconds + best.loop_seconds
    diff = float(np.abs(best.equity - served_equity).max()) if served_equity.size == n else None
    md = "\n".join(
        [
            "| path (1 core, ETH/BTC 5m, default model) | candles | seconds | candles/s |",
            "| --- | ---: | ---: | ---: |",
            f"| `serve --replay FILE` (writes on) | {n} | {serve_s:.2f} | {n / serve_s:,.0f} |",
            f"| serving loop, writes off | {n} | {loop_s:.2f} | {n / loop_s:,.0f} |",
            f"| `backtest --model` | {n} | {model_s:.2f} | {n / model_s:,.0f} |",
            f"| of which batch features + ONNX Runtime | {n} | {best.inference_seconds:.2f} | "
            f"{n / best.inference_seconds:,.0f} |",
            f"| of which the loop with precomputed outputs | {n} | {best.loop_seconds:.2f} | "
            f"{n / best.loop_seconds:,.0f} |",
        ]
    ) + (
        f"\n\n`backtest --model` / `serve --replay`: {serve_s / model_s:.1f}x faster "
        f"({loop_s / model_s:.1f}x against the loop without writes). "
        f"Largest |equity difference| against the replay: "
        f"{'n/a' if diff is None else f'{diff:.1e}'} (quote units, 10,000 start). The figures "
        "exclude the metrics, baselines and bootstrap that the command adds after the run."
    )
    load = os.getloadavg()
    md += (
        f" Load average while it ran: {load[0]:.1f} (1 min) on {os.cpu_count()} cores; "
        "other processes on the machine slow every row alike."
    )
    print(md)
    record("Backtest --model against serve --replay", md)


if __name__ == "__main__":
    main()
