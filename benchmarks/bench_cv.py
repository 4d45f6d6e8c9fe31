"""Cross-validated retraining: the wall time of one default retrain (``run_retrain``, the last 30
days of the real ETH/BTC 5m candles, default ``TrainConfig``) with its purged 3-fold
cross-validation, split into the single-split part (train, export, register, promote) and the
folds. The first model of a fresh warehouse: no champion, so no champion configuration is
cross-validated (when there is one of another configuration, that doubles the fold part)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow as pa

from benchmarks.results import record
from models import retraining
from models.training import TrainConfig
from warehouse import Settings, connect, migrate, upsert

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "candles" / "ETH_BTC-5m.feather"


def _candles() -> pa.Table:
    frame = pl.read_ipc(DATA).rename({"date": "ts"})
    frame = frame.with_columns(
        pl.col("ts").dt.convert_time_zone("UTC").dt.cast_time_unit("ms"),
        exchange=pl.lit("binance"),
        symbol=pl.lit("ETH/BTC"),
        timeframe=pl.lit("5m"),
    ).select("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
    return frame.to_arrow()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home")
        con = connect(settings)
        migrate(con)
        upsert(con, "candles", _candles(), settings=settings)
        con.close()
        round_trip = 2.0 * (
            settings.taker_fee + settings.slippage_fraction + settings.half_spread_fraction
        )
        config = TrainConfig(round_trip_cost_fraction=round_trip, progress=False)
        request = retraining.RetrainRequest(
            symbols=("ETH/BTC",), timeframe="5m", days=30, config=config
        )
        # the steps of retraining.run_retrain, timed one by one
        started, cpu0 = time.perf_counter(), time.process_time()
        batch = retraining.load_training_data(settings, request)
        samples = retraining.prepare_samples(batch, config)
        prepared, cpu1 = time.perf_counter(), time.process_time()
        ensemble = retraining.train(samples, config)
        trained, cpu2 = time.perf_counter(), time.process_time()
        cv = retraining.cross_validate_config(samples, config)
        validated, cpu3 = time.perf_counter(), time.process_time()
        staging = Path(tmp) / "staging"
        staging.mkdir()
        exported, parity = retraining.export(ensemble, samples, staging)
        record_ = retraining.register(
            settings, request, ensemble, exported, batch.snapshot_id, samples, cv
        )
        outcome = retraining.finish(
            settings, record_, ensemble, samples, batch.snapshot_id, exported, parity, cv=cv
        )
        total, cpu_total = time.perf_counter() - started, time.process_time() - cpu0
        steps = {
            "load candles, features, labels, windows": (prepared - started, cpu1 - cpu0),
            "train_ensemble (the single split)": (trained - prepared, cpu2 - cpu1),
            "the 3 purged folds (models.cv.cross_validate)": (validated - trained, cpu3 - cpu2),
            "export, register, promotion decision": (
                total - (validated - started),
                cpu_total - (cpu3 - cpu0),
            ),
        }
        load = os.getloadavg()
    assert outcome.cv is not None
    cv = outcome.cv
    folds = "\n".join(
        f"| {f.fold} | {f.start[:16]} .. {f.end[:16]} | {f.samples:,} | {f.train_samples:,} "
        f"| {f.seconds:.1f} | {f.ic:.4f} | {f.log_loss:.4f} | {f.log_loss_train_frequency:.4f} |"
        for f in cv.folds
    )
    m = cv.figures()
    decision = "promoted" if outcome.promoted else "not promoted"
    rows = "\n".join(f"| {k} | {w:.1f} | {c:.1f} |" for k, (w, c) in steps.items())
    folds_wall, folds_cpu = steps["the 3 purged folds (models.cv.cross_validate)"]
    before_cpu = cpu_total - folds_cpu
    share = sum(f.train_samples for f in cv.folds) / len(cv.folds) / ensemble.train_samples
    record(
        "Cross-validated retraining",
        f"""
One default retrain (`models.retraining.run_retrain`: last 30 days of the real ETH/BTC 5m
file, default `TrainConfig`: hybrid + conv + gbm, at most 10 epochs, `cv_folds=3`, embargo
= window length {config.embargo_bars} bars, purge = horizon {config.horizon_bars} bars), first
model of a fresh warehouse (no champion configuration to cross-validate). Shared 2-core
machine.

{len(samples):,} samples ({ensemble.train_samples:,} in the single split's training part).

| step | wall seconds | CPU seconds (all threads) |
| --- | --- | --- |
{rows}
| whole retrain | {total:.1f} | {cpu_total:.1f} |
| without the folds (what it cost before) | {total - folds_wall:.1f} | {before_cpu:.1f} |

Load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) on 2
cores: other engineers' jobs shared them, so wall times are inflated; CPU seconds are this
process's own.

The folds cost {folds_cpu / max(before_cpu, 1e-9):.2f}x the CPU time of the retrain without
them, so a retrain takes {cpu_total / max(before_cpu, 1e-9):.1f}x as long: each of the 3 fold models
trains on about {share:.0%} as many samples as the single split's model (early stopping ends
some sooner). A champion of another configuration (e.g. after `tradeloop tune`) is
cross-validated on the same folds too, which adds the fold time again.

| fold | window | samples | training samples | seconds | IC | log-loss | baseline log-loss |
| --- | --- | --- | --- | --- | --- | --- | --- |
{folds}

Fold mean IC {m["cv_ic_mean"]:.4f} (SE {m["cv_ic_se"]:.4f}); mean log-loss
{m["cv_log_loss_mean"]:.4f} vs the folds' training-frequency baseline
{m["cv_log_loss_train_frequency_mean"]:.4f} (baseline: the fold-training class frequencies).
Decision: {decision} ({outcome.reason}).
""",
    )


if __name__ == "__main__":
    main()
