"""Scale-out: many symbols end to end on 1 vs 2 Dask workers, and a 100-symbol serving step.

Pipeline (real Prefect server from prefect_test_harness, real DuckLake, real GX gate):
collect (simulated exchange, one task per symbol) -> quality (revalidate, one task per series,
no Data Docs) -> features (one task per series), each flow on a Dask ``LocalCluster`` with
1 and then 2 worker processes (one thread each). Peak memory = the highest sum of RSS over
this process and all its children (the Dask workers), sampled every 0.1 s.

Serving: a tiny ensemble (trained here on real candles, exported by ``models.export``) loaded by
``models.runtime.OnnxPredictor``; one step = ONE batched ``predict`` call for the windows of 100
symbols; baseline = 100 single-window calls in a loop (what a per-symbol server would do).

Size: ``BENCH_SCALE_SYMBOLS`` (default 100) x ``BENCH_SCALE_DAYS`` (default 30) days of 1m, as
the scale-out issue asks (4.32M candles; the longest benchmark: tens of minutes on 2 cores).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.results import record

SYMBOLS = int(os.environ.get("BENCH_SCALE_SYMBOLS", "100"))
DAYS = float(os.environ.get("BENCH_SCALE_DAYS", "30"))
SINCE = "2024-03-01T00:00:00Z"
CANDLES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "candles"


class PeakRss:
    """Highest total RSS of this process plus its children while the block runs."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self._stop = threading.Event()

    def _total(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a worker that just exited
                total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._total())
            self._stop.wait(0.1)

    def __enter__(self) -> PeakRss:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def pipeline(workers: int, root: Path) -> dict[str, float]:
    import datetime as dt

    from flows.collect import collect
    from flows.features import features
    from flows.quality import quality
    from flows.runners import on_runner
    from warehouse import Settings, use_settings

    settings = Settings(home=root / f"w{workers}", task_runner="dask", task_workers=workers)
    symbols = [f"SIM{i:03d}/USDT" for i in range(SYMBOLS)]
    start = dt.datetime.fromisoformat(SINCE)
    until = (start + dt.timedelta(days=DAYS)).isoformat()
    with PeakRss() as peak, use_settings(settings):  # the flows read their settings there
        t_collect, report = _timed(
            lambda: on_runner(collect, settings)(symbols=symbols, since=SINCE, until=until)
        )
        t_quality, _ = _timed(
            lambda: on_runner(quality, settings)(
                symbols=symbols, build_docs=False, fail_on_policy=False
            )
        )
        t_features, feats = _timed(lambda: on_runner(features, settings)(symbols=symbols))
    return {
        "candles": float(report["rows_merged"]),
        "feature_rows": float(feats["rows_written"]),
        "collect_s": t_collect,
        "quality_s": t_quality,
        "features_s": t_features,
        "total_s": t_collect + t_quality + t_features,
        "peak_mib": peak.peak_bytes / 2**20,
    }


def serving(root: Path, steps: int = 300) -> dict[str, float]:
    import polars as pl

    from models.data import build_samples
    from models.export import export_onnx
    from models.runtime import OnnxPredictor
    from models.training import TrainConfig, label_config, train_ensemble
    from pipelines.features import FEATURE_SET_VERSION

    frame = pl.read_ipc(CANDLES_DIR / "UNITTEST_BTC-1m.feather").rename({"date": "ts"})
    frame = (
        frame.with_columns(
            exchange=pl.lit("binance"), symbol=pl.lit("BTC/USDT"), timeframe=pl.lit("1m")
        )
        .select("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
        .with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
        .tail(2600)
    )
    config = TrainConfig(
        window_len=32,
        epochs=1,
        batch_size=64,
        max_samples=700,
        importance_repeats=0,
        progress=False,
        threads=1,
        gbm_estimators=20,
    )
    samples = build_samples(frame, window_len=config.window_len, label_config=label_config(config))
    ensemble = train_ensemble(samples, config)
    exported = export_onnx(ensemble, root / "model.onnx")
    predictor = OnnxPredictor.load(exported.path, FEATURE_SET_VERSION)
    recent = samples.last(SYMBOLS)
    windows = np.ascontiguousarray(
        recent.full_windows(), dtype=np.float32
    )  # one window per "symbol"
    assert windows.shape[0] == SYMBOLS, windows.shape
    for _ in range(20):  # warm up
        predictor.predict(windows)
    batched = []
    for _ in range(steps):
        t0 = time.perf_counter()
        predictor.predict(windows)
        batched.append(time.perf_counter() - t0)
    single = []
    for _ in range(max(20, steps // 10)):
        t0 = time.perf_counter()
        for row in windows:
            predictor.predict(row[None])
        single.append(time.perf_counter() - t0)
    ms = lambda xs, q: float(np.percentile(xs, q) * 1000)  # noqa: E731
    return {
        "window_len": float(windows.shape[1]),
        "n_features": float(windows.shape[2]),
        "batched_p50_ms": ms(batched, 50),
        "batched_p99_ms": ms(batched, 99),
        "single_p50_ms": ms(single, 50),
        "single_p99_ms": ms(single, 99),
    }


def main() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with prefect_test_harness(server_startup_timeout=120):
            runs = {workers: pipeline(workers, root) for workers in (1, 2)}
        serve = serving(root)

    one, two = runs[1], runs[2]
    rows = "\n".join(
        f"| {w} | {r['candles']:,.0f} | {r['collect_s']:.1f} | {r['quality_s']:.1f} | "
        f"{r['features_s']:.1f} | {r['total_s']:.1f} | {r['candles'] / r['total_s']:,.0f} | "
        f"{r['peak_mib']:,.0f} |"
        for w, r in runs.items()
    )
    batched_row = (
        f"| one batched call, {SYMBOLS} windows | {serve['batched_p50_ms']:.2f} | "
        f"{serve['batched_p99_ms']:.2f} |"
    )
    single_row = (
        f"| baseline: {SYMBOLS} single-window calls | {serve['single_p50_ms']:.2f} | "
        f"{serve['single_p99_ms']:.2f} |"
    )
    speedup = serve["single_p50_ms"] / serve["batched_p50_ms"]
    markdown = f"""{SYMBOLS} symbols x {DAYS:g} days of 1m candles from the simulated exchange,
collect -> quality -> features as Prefect flows whose per-symbol tasks run on a Dask
LocalCluster (1 thread per worker process), real DuckLake (SQLite catalog), real GX gate.
Peak memory: highest summed RSS of the benchmark process and all its children (the Dask
workers and the temporary Prefect server the benchmark starts), sampled every 0.1 s.

| Dask workers | candles | collect s | quality s | features s | total s | candles/s | peak MiB |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{rows}

2 workers vs 1: {one["total_s"] / two["total_s"]:.2f}x faster end to end, peak memory
{two["peak_mib"] / one["peak_mib"]:.2f}x.

Serving step for {SYMBOLS} symbols (ONNX Runtime via `models.runtime.OnnxPredictor`, 1 intra-op
thread, a tiny ensemble trained and exported here; input ({SYMBOLS}, {serve["window_len"]:.0f},
{serve["n_features"]:.0f}) float32 windows; inference only: no feature update, decision or
warehouse write):

| one step | p50 ms | p99 ms |
| --- | ---: | ---: |
{batched_row}
{single_row}

Batched is {speedup:.1f}x faster than per-symbol calls at p50. The whole serving step for 100
symbols (features, batched inference, decisions, paper orders) is in "Serving" above.
"""
    record("Scale-out: 100 symbols on Dask, batched serving", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
