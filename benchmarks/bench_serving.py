"""Serving benchmark: tick-to-decision latency, ONNX Runtime vs the same model in torch eager
(one thread, same process, same ticks), and loop throughput with 100 symbols batched.

Tick-to-decision = online features for the new candle + model inference on the window +
confidence/threshold decision, per closed candle of one symbol. The model is the default
architecture (``TrainConfig()`` defaults: hybrid LSTM+Transformer, conv, gradient boosting),
trained briefly on real candles (latency depends on the architecture, not on training length).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.results import record

CANDLES = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "candles" / "UNITTEST_BTC-1m.feather"
)
SYMBOL = "UNITTEST/BTC"


def _frame() -> pl.DataFrame:
    f = (
        pl.read_ipc(CANDLES)
        .rename({"date": "ts"})
        .with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
    )
    return f.with_columns(exchange=pl.lit("binance"), symbol=pl.lit(SYMBOL), timeframe=pl.lit("1m"))


def _latency_row(path: str, micros: np.ndarray) -> str:
    p50, p99 = np.percentile(micros, 50), np.percentile(micros, 99)
    return f"| {path} | {micros.size} | {p50:.0f} | {p99:.0f} | {micros.mean():.0f} |"


def main() -> None:
    import torch

    from models.data import build_samples
    from models.export import export_onnx
    from models.runtime import OnnxPredictor
    from models.training import TrainConfig, label_config, train_ensemble
    from pipelines.features import FEATURE_SET_VERSION, OnlineFeatureEngine, feature_columns
    from trading.decision import ProbabilityDecider, Thresholds

    torch.set_num_threads(1)
    frame = _frame()
    cfg = TrainConfig(epochs=1, max_samples=3000, importance_repeats=0, progress=False, threads=1)
    samples = build_samples(
        frame.head(8000), window_len=cfg.window_len, label_config=label_config(cfg)
    )
    ensemble = train_ensemble(samples, cfg)
    tmp = Path(tempfile.mkdtemp())
    export_onnx(ensemble, tmp / "default.onnx")
    ort = OnnxPredictor.load(tmp / "default.onnx", FEATURE_SET_VERSION, threads=1)
    cols = feature_columns()
    sel = [cols.index(c) for c in samples.feature_columns]
    L = cfg.window_len

    # replay the rest of the data through the online engine, timing both paths per tick
    engine = OnlineFeatureEngine("1m")
    rows: list[np.ndarray] = []
    t_ort: list[float] = []
    t_eager: list[float] = []
    decider_a = ProbabilityDecider(Thresholds())
    decider_b = ProbabilityDecider(Thresholds())
    max_diff = 0.0
    ticks = frame.tail(4500).iter_rows(named=True)
    for i, c in enumerate(ticks):
        t0 = time.perf_counter_ns()
        feats = engine.step(c)
        row = np.array([np.nan if feats.get(k) is None else feats[k] for k in cols], np.float32)
        rows.append(row)
        t_feat = time.perf_counter_ns() - t0
        if i < 3000 or len(rows) < L:
            continue
        w = np.stack(rows[-L:])[None]
        if not np.isfinite(w[:, :, sel]).all():
            continue
        t1 = time.perf_counter_ns()
        p = ort.predict(w)
        decider_a.update(tuple(float(x) for x in p.probabilities[0]), float(p.confidence[0]))  # type: ignore[arg-type]
        t_ort.append((t_feat + time.perf_counter_ns() - t1) / 1000)
        t2 = time.perf_counter_ns()
        with torch.inference_mode():
            probs, conf = ensemble.predict(w[:, :, sel])
        decider_b.update(tuple(float(x) for x in probs[0]), float(conf[0]))  # type: ignore[arg-type]
        t_eager.append((t_feat + time.perf_counter_ns() - t2) / 1000)
        max_diff = max(max_diff, float(np.abs(probs - p.probabilities).max()))

    a, b = np.array(t_ort), np.array(t_eager)
    table = [
        "| path (1 thread) | ticks | p50 µs | p99 µs | mean µs |",
        "| --- | ---: | ---: | ---: | ---: |",
        _latency_row("ONNX Runtime", a),
        _latency_row("torch eager", b),
    ]
    ratio50 = np.percentile(b, 50) / np.percentile(a, 50)
    ratio99 = np.percentile(b, 99) / np.percentile(a, 99)

    # loop throughput, 100 symbols, batched inference in one ORT call per tick
    from trading.backtest import Candles
    from trading.fallback import ModelManager
    from trading.loop import LoopConfig, ServingLoop
    from trading.market import ReplayMarket

    base = frame.tail(2600)
    candles = [Candles.from_frame(base, f"S{k:03d}/BTC", "1m") for k in range(100)]
    manager = ModelManager(lambda: None, FEATURE_SET_VERSION)
    manager.predictor, manager.model_id, manager.generation = ort, "bench", 1
    manager.last_seen = "bench"
    loop = ServingLoop(
        LoopConfig(model_check_every_steps=10**9), manager=manager, writer=None, home=tmp
    )
    market = ReplayMarket(candles)
    ticks_list = list(market.ticks())
    for t in ticks_list[:2300]:
        loop.warm(t)
    start = time.perf_counter()
    n = 0
    step_us = []
    for t in ticks_list[2300:]:
        t0 = time.perf_counter_ns()
        loop.on_tick(t)
        step_us.append((time.perf_counter_ns() - t0) / 1000)
        n += len(t.bars)
    elapsed = time.perf_counter() - start
    inf = loop.latency.summary()["inference"]
    steps = np.asarray(step_us)
    md = "\n".join(table) + (
        f"\n\nDefault model ({', '.join(cfg.members)}, window {L}), features + inference + "
        f"decision per tick, same ticks and same process. "
        f"Eager/ORT: p50 {ratio50:.1f}x, p99 {ratio99:.1f}x. "
        f"Max |p_ort - p_torch| = {max_diff:.1e}.\n\n"
        f"Loop throughput, 100 symbols, one batched ORT call per tick (writes off): "
        f"{n} candles in {elapsed:.2f} s = {n / elapsed:,.0f} candles/s; batched inference "
        f"p50 {inf['p50_us']:.0f} µs, p99 {inf['p99_us']:.0f} µs per 100-symbol batch. "
        f"Whole 100-symbol step (100 feature updates, one batched inference, 100 decisions and "
        f"paper orders; {steps.size} steps): p50 {np.percentile(steps, 50) / 1000:.2f} ms, "
        f"p99 {np.percentile(steps, 99) / 1000:.2f} ms."
    )
    print(md)
    record("Serving: tick-to-decision and loop throughput", md)


if __name__ == "__main__":
    main()
