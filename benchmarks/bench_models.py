"""Models: training throughput, export time, single-sample latency ORT vs torch eager (1 thread),
and the int8 dynamic quantization trade-off, all on the real UNITTEST/BTC 1m candles."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmarks.results import record
from models.data import build_samples
from models.export import OPSET, export_onnx, quantize_int8
from models.metrics import classification_report
from models.runtime import OnnxPredictor
from models.training import TrainConfig, TrainedEnsemble, label_config, train_ensemble

DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "candles" / "UNITTEST_BTC-1m.feather"
)
CALLS = 2000


def _percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = np.array(samples_s) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _latency(fn, windows: np.ndarray) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    for i in range(50):
        fn(windows[i % len(windows)][None])
    times = []
    for i in range(CALLS):
        x = windows[i % len(windows)][None]
        started = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - started)
    return _percentiles(times)


def _hybrid_only(ensemble: TrainedEnsemble) -> TrainedEnsemble:
    return TrainedEnsemble(
        **{
            **ensemble.__dict__,
            "members": [ensemble.members[0]],
            "weights": np.array([1.0], np.float32),
        }
    )


def main() -> None:
    torch.set_num_threads(1)
    candles = pl.read_ipc(DATA).rename({"date": "ts"})
    candles = candles.with_columns(
        exchange=pl.lit("binance"), symbol=pl.lit("UNITTEST/BTC"), timeframe=pl.lit("1m")
    ).select("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
    config = TrainConfig(epochs=3, patience=3, importance_repeats=0, progress=False, threads=1)
    samples = build_samples(
        candles, window_len=config.window_len, label_config=label_config(config)
    )

    started = time.perf_counter()
    ensemble = train_ensemble(samples, config)
    total_s = time.perf_counter() - started
    assert ensemble.test is not None

    with tempfile.TemporaryDirectory() as tmp:
        full = export_onnx(ensemble, Path(tmp) / "ensemble.onnx")
        hybrid = export_onnx(_hybrid_only(ensemble), Path(tmp) / "hybrid.onnx")
        quant_path = quantize_int8(hybrid.path, Path(tmp) / "hybrid.int8.onnx")
        version = ensemble.feature_set_version
        ort_full = OnnxPredictor.load(full.path, version)
        ort_hybrid = OnnxPredictor.load(hybrid.path, version)
        ort_int8 = OnnxPredictor.load(quant_path, version)

        test = samples.last(int(len(samples) * config.test_fraction))
        full_windows = test.full_windows()
        model = ensemble.members[0].model.eval()
        index = ensemble.input_index
        mean, inv_std = (
            torch.from_numpy(ensemble.scaler.mean),
            torch.from_numpy(1.0 / ensemble.scaler.std),
        )

        def torch_eager(x: np.ndarray) -> None:
            with torch.inference_mode():
                z = (torch.from_numpy(x[:, :, index]) - mean) * inv_std
                logits, _ = model(z)
                torch.softmax(logits, dim=1)

        own = test.windows
        torch_p50, torch_p99 = _latency(torch_eager, own)
        ort_p50, ort_p99 = _latency(ort_hybrid.predict, full_windows)
        full_p50, full_p99 = _latency(ort_full.predict, full_windows)
        int8_p50, int8_p99 = _latency(ort_int8.predict, full_windows)

        fp32 = ort_hybrid.predict(full_windows)
        int8 = ort_int8.predict(full_windows)
        acc32 = classification_report(test.labels, fp32.probabilities).accuracy
        acc8 = classification_report(test.labels, int8.probabilities).accuracy
        agree = float((fp32.probabilities.argmax(1) == int8.probabilities.argmax(1)).mean())
        size32, size8 = hybrid.path.stat().st_size, quant_path.stat().st_size

    rows = "\n".join(
        f"| {m.name} | {m.samples_per_s:,.0f} | {m.train_seconds:.1f} | {len(m.history)} |"
        for m in ensemble.members
    )
    t = ensemble.test
    markdown = f"""
Real data: UNITTEST/BTC 1m ({len(samples):,} labelled windows of {config.window_len} x
{len(ensemble.input_columns)} features), default `TrainConfig` (d_model 32, BiLSTM 32, 1
Transformer layer), at most 3 epochs, torch and ONNX Runtime on 1 thread.

Training throughput (samples processed per second, all epochs; gbm: samples x boosting rounds):

| member | samples/s | seconds | epochs/rounds |
| --- | --- | --- | --- |
{rows}

Whole `train_ensemble` (split, scaler, 3 members, reports): {total_s:.1f} s.
Out of sample (last 15%, {t.samples:,} samples): accuracy {t.accuracy:.3f} vs majority-class
baseline {t.baseline_accuracy:.3f}; macro F1 {t.f1_macro:.3f} vs baseline {t.baseline_f1_macro:.3f}.

Export (opset {OPSET}): ensemble graph (hybrid + conv + GBM + combination)
{full.export_seconds:.2f} s,
{full.size_bytes / 1e3:.0f} kB; hybrid alone {hybrid.export_seconds:.2f} s.

Single-sample latency, {CALLS:,} calls each, same process, 1 thread:

| model | p50 ms | p99 ms | speed-up of p50 vs torch eager |
| --- | --- | --- | --- |
| hybrid, torch eager (inference_mode) | {torch_p50:.3f} | {torch_p99:.3f} | 1.00x |
| hybrid, ORT (tuned session) | {ort_p50:.3f} | {ort_p99:.3f} | {torch_p50 / ort_p50:.2f}x |
| hybrid, ORT int8 dynamic | {int8_p50:.3f} | {int8_p99:.3f} | {torch_p50 / int8_p50:.2f}x |
| full ensemble, ONNX Runtime | {full_p50:.3f} | {full_p99:.3f} | - |

int8 dynamic quantization of the hybrid: file {size32 / 1e3:.0f} kB -> {size8 / 1e3:.0f} kB,
test accuracy {acc32:.4f} -> {acc8:.4f}, same predicted class on {agree:.1%} of test samples.
"""
    record("Models: training, export, inference latency", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
