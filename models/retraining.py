"""The steps of a retrain (plain functions; ``flows/retrain.py`` lists them as Prefect tasks).

1. ``load_training_data``: candles of the last ``days`` days from the warehouse, at the current
   DuckLake snapshot (recorded), or at a given snapshot to reproduce an earlier training set;
2. ``prepare_samples``: features (``pipelines.features``), labels, windows;
3. ``train``: ``models.training.train_ensemble`` (OOS report on the most recent window);
4. ``export``: one ONNX graph, checked against the Python ensemble on the test window;
5. ``register``: registry row + file + metrics (validation, test, and the comparison window);
6. ``decide_and_promote``: champion and challenger scored on the SAME test window, the
   promotion rule applied, promotion done atomically if it passes;
7. ``dashboard_markdown``: the summary published as a Prefect artifact.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import registry
from models.data import (
    CandleBatch,
    FeaturizedSeries,
    SampleSet,
    assemble_samples,
    build_samples,
    load_candles,
    split_samples,
)
from models.evaluation import evaluate_registered
from models.export import ExportResult, export_onnx
from models.metrics import ClassificationReport
from models.runtime import OnnxPredictor
from models.training import (
    TrainConfig,
    TrainedEnsemble,
    label_config,
    split_options,
    train_ensemble,
)
from warehouse import Settings, connect

# ONNX Runtime vs the Python ensemble on the test window (max abs difference of probabilities
# and confidence); an export that differs by more is refused.
PARITY_MAX_ABS = 1e-5


@dataclass(frozen=True)
class RetrainRequest:
    symbols: tuple[str, ...]
    timeframe: str = "1m"
    days: float | None = 30
    exchange: str | None = None
    snapshot_id: int | None = None
    name: str = registry.DEFAULT_NAME
    config: TrainConfig = field(default_factory=lambda: TrainConfig())


@dataclass(frozen=True)
class RetrainOutcome:
    model_id: str
    promoted: bool
    reason: str
    champion_id: str | None  # the champion after this run
    previous_champion_id: str | None
    challenger: dict[str, float]  # metrics on the comparison window
    previous: dict[str, float] | None  # the previous champion on the same window
    window_name: str
    window_start: dt.datetime
    window_end: dt.datetime
    train_samples: int
    snapshot_id: int
    feature_set_version: str
    export_seconds: float
    parity_max_abs: float
    trained_at: dt.datetime


def load_training_data(settings: Settings, request: RetrainRequest) -> CandleBatch:
    con = connect(settings, read_only=True)
    try:
        return load_candles(
            con,
            symbols=request.symbols,
            timeframe=request.timeframe,
            days=request.days,
            exchange=request.exchange,
            snapshot_id=request.snapshot_id,
        )
    finally:
        con.close()


def prepare_samples(batch: CandleBatch, config: TrainConfig) -> SampleSet:
    return build_samples(
        batch.frame, window_len=config.window_len, label_config=label_config(config)
    )


def assemble(featurized: Sequence[FeaturizedSeries], config: TrainConfig) -> SampleSet:
    """``prepare_samples`` from series featurized one by one (``models.data.featurize_series``
    over ``models.data.split_series(batch.frame)``): the same samples, built in parallel."""
    return assemble_samples(
        featurized, window_len=config.window_len, label_config=label_config(config)
    )


def train(samples: SampleSet, config: TrainConfig) -> TrainedEnsemble:
    return train_ensemble(samples, config)


def test_window(samples: SampleSet, config: TrainConfig) -> SampleSet:
    """The out-of-sample window the ensemble was tested on (the most recent samples)."""
    return split_samples(samples, **split_options(config))[2]


def export(
    ensemble: TrainedEnsemble, samples: SampleSet, directory: Path
) -> tuple[ExportResult, float]:
    """Export and check ORT against the Python ensemble on the test window (max abs difference)."""
    result = export_onnx(ensemble, directory / "challenger.onnx")
    window = test_window(samples, ensemble.config)
    predictor = OnnxPredictor.load(result.path, ensemble.feature_set_version)
    reference, reference_conf = ensemble.predict(window.windows)
    got = predictor.predict(window.full_windows())
    parity = float(
        max(
            np.abs(got.probabilities - reference).max(),
            np.abs(got.confidence - reference_conf).max(),
        )
    )
    if not parity <= PARITY_MAX_ABS:  # a NaN parity fails too
        raise RuntimeError(
            f"exported graph differs from the trained ensemble by {parity:.2e} on the test window "
            f"(allowed {PARITY_MAX_ABS:.0e})"
        )
    return result, parity


def _window_name(start: np.datetime64, end: np.datetime64) -> str:
    return f"oos_{np.datetime_as_string(start, unit='m')}_{np.datetime_as_string(end, unit='m')}"


def _utc(value: np.datetime64) -> dt.datetime:
    seconds = value.astype("datetime64[us]").astype(np.int64) / 1e6
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def oos_metrics(ensemble: TrainedEnsemble) -> dict[str, float]:
    """The ensemble's scalar metrics on its test window: classification and probability metrics
    of the calibrated probabilities (``log_loss``, ``brier``, ``ece``, ``baseline_log_loss``,
    per-class precision/recall ...), and the calibration report's before/after figures with
    the majority-class and training-frequency baselines (``log_loss_before`` ...)."""
    assert ensemble.test is not None
    calibration = ensemble.test_calibration.flat() if ensemble.test_calibration else {}
    return {**ensemble.test.flat(), **calibration}


def register(
    settings: Settings,
    request: RetrainRequest,
    ensemble: TrainedEnsemble,
    exported: ExportResult,
    snapshot_id: int,
) -> registry.ModelRecord:
    assert ensemble.test is not None and ensemble.validation is not None
    metrics: dict[str, Any] = {
        "test": ensemble.test.to_dict(),
        "validation": ensemble.validation.to_dict(),
        # probability metrics before/after calibration, with reliability-diagram bins
        "calibration_test": (
            ensemble.test_calibration.to_dict() if ensemble.test_calibration else None
        ),
        "calibration_validation": (
            ensemble.validation_calibration.to_dict() if ensemble.validation_calibration else None
        ),
        "calibration": ensemble.calibration.to_metadata(),
        "class_forward_returns": (
            list(ensemble.class_forward_returns) if ensemble.class_forward_returns else None
        ),
        "members_test": {k: v.flat() for k, v in ensemble.member_test.items()},
        "permutation_importance": ensemble.importance,
        "train_samples": ensemble.train_samples,
        "train_seconds": ensemble.train_seconds,
        "export_seconds": exported.export_seconds,
        "opset": exported.opset,
    }
    con = connect(settings)
    try:
        record = registry.register_model(
            con,
            settings,
            exported.path,
            name=request.name,
            feature_set_version=ensemble.feature_set_version,
            training_snapshot_id=snapshot_id,
            hyperparameters={
                **ensemble.hyperparameters(),
                "symbols": list(request.symbols),
                "timeframe": request.timeframe,
                "days": request.days,
                "exchange": request.exchange,
            },
            metrics=metrics,
            expected_feature_columns=ensemble.feature_columns,
            expected_sha256=exported.sha256,
        )
        validation_metrics = ensemble.validation.flat()
        if ensemble.validation_calibration is not None:
            validation_metrics.update(ensemble.validation_calibration.flat())
        registry.record_metrics(con, settings, record.model_id, "validation", validation_metrics)
        assert ensemble.test_window is not None
        start, end = (_utc(t) for t in ensemble.test_window)
        registry.record_metrics(
            con,
            settings,
            record.model_id,
            "test",
            oos_metrics(ensemble),
            window_start=start,
            window_end=end,
        )
    finally:
        con.close()
    return record


def decide_and_promote(
    settings: Settings,
    record: registry.ModelRecord,
    ensemble: TrainedEnsemble,
    samples: SampleSet,
    *,
    rule: registry.PromotionRule | None = None,
) -> tuple[
    registry.Decision, ClassificationReport | None, str | None, str, dt.datetime, dt.datetime
]:
    """Score the current champion on the challenger's test window and promote if the rule passes."""
    assert ensemble.test is not None and ensemble.test_window is not None
    window = test_window(samples, ensemble.config)
    train_labels = split_samples(samples, **split_options(ensemble.config))[0].labels
    name = _window_name(*ensemble.test_window)
    start, end = (_utc(t) for t in ensemble.test_window)
    con = connect(settings)
    try:
        current = registry.champion(con, record.name)
        previous_report = None
        if current is not None and current.model_id != record.model_id:
            previous_report = evaluate_registered(current, window, train_labels=train_labels)
            if previous_report is not None:
                registry.record_metrics(
                    con,
                    settings,
                    current.model_id,
                    name,
                    previous_report.flat(),
                    window_start=start,
                    window_end=end,
                )
        registry.record_metrics(
            con,
            settings,
            record.model_id,
            name,
            oos_metrics(ensemble),
            window_start=start,
            window_end=end,
        )
        decision = registry.promote_if_better(con, settings, record.model_id, name, rule=rule)
    finally:
        con.close()
    return decision, previous_report, current.model_id if current else None, name, start, end


def trend(settings: Settings, name: str, limit: int = 10) -> list[tuple[str, float, float]]:
    """(model_id, test accuracy, test macro F1) of the last ``limit`` models, oldest first."""
    con = connect(settings, read_only=True)
    try:
        rows = con.execute(
            "SELECT m.model_id, "
            "max(mm.value) FILTER (WHERE mm.metric = 'accuracy'), "
            "max(mm.value) FILTER (WHERE mm.metric = 'f1_macro') "
            "FROM models m JOIN model_metrics mm USING (model_id) "
            "WHERE m.name = ? AND mm.window_name = 'test' GROUP BY m.model_id, m.version "
            "ORDER BY m.version DESC LIMIT ?",
            [name, limit],
        ).fetchall()
    finally:
        con.close()
    return [(str(r[0]), float(r[1]), float(r[2])) for r in reversed(rows)]


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    bars = "▁▂▃▄▅▆▇█"
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    return "".join(bars[int((v - lo) / span * (len(bars) - 1))] for v in values)


def dashboard_markdown(outcome: RetrainOutcome, history: list[tuple[str, float, float]]) -> str:
    c, p = outcome.challenger, outcome.previous

    def change(metric: str) -> str:
        if p is None:
            return "n/a (no comparable champion)"
        return f"{c[metric] - p[metric]:+.2%}"

    status = "PROMOTED to champion" if outcome.promoted else "kept as challenger"
    lines = [
        f"# Model retrain: {outcome.model_id}",
        "",
        f"**{status}.** {outcome.reason}",
        "",
        "| metric | this model | previous champion | change |",
        "| --- | --- | --- | --- |",
        f"| accuracy | {c['accuracy']:.2%} | {p['accuracy']:.2%} | {change('accuracy')} |"
        if p
        else f"| accuracy | {c['accuracy']:.2%} | – | {change('accuracy')} |",
        f"| macro F1 | {c['f1_macro']:.3f} | {p['f1_macro']:.3f} | {change('f1_macro')} |"
        if p
        else f"| macro F1 | {c['f1_macro']:.3f} | – | {change('f1_macro')} |",
        f"| mean confidence | {c.get('confidence_mean', float('nan')):.2%} | "
        f"{p.get('confidence_mean', float('nan')) if p else float('nan'):.2%} | |",
        f"| calibration error (ECE) | {c.get('calibration_error', float('nan')):.3f} | | |",
        f"| log-loss (calibrated; before: {c.get('log_loss_before', float('nan')):.3f}) | "
        f"{c.get('log_loss', float('nan')):.3f} | "
        f"{p.get('log_loss', float('nan')) if p else float('nan'):.3f} | |",
        f"| training-frequency baseline log-loss | {c.get('baseline_log_loss', float('nan')):.3f} "
        "| | |",
        f"| majority-class baseline accuracy | {c['baseline_accuracy']:.2%} | | |",
        f"| majority-class baseline macro F1 | {c['baseline_f1_macro']:.3f} | | |",
        "",
        f"- Out-of-sample window: {outcome.window_start:%Y-%m-%d %H:%M} .. "
        f"{outcome.window_end:%Y-%m-%d %H:%M} UTC"
        f" ({int(c['samples'])} samples)",
        f"- Training samples: {outcome.train_samples}",
        f"- Last training: {outcome.trained_at:%Y-%m-%d %H:%M:%S} UTC",
        f"- Data: DuckLake snapshot {outcome.snapshot_id}, "
        f"feature set {outcome.feature_set_version}",
        f"- Export: {outcome.export_seconds:.2f} s, "
        f"ORT vs Python max abs diff {outcome.parity_max_abs:.1e}",
        f"- Champion now: {outcome.champion_id or 'none'}",
    ]
    if history:
        lines += [
            "",
            f"Trend (test accuracy, last {len(history)} models): "
            f"{sparkline([h[1] for h in history])} " + " ".join(f"{h[1]:.1%}" for h in history),
            f"Trend (test macro F1): {sparkline([h[2] for h in history])} "
            + " ".join(f"{h[2]:.3f}" for h in history),
        ]
    return "\n".join(lines) + "\n"


def run_retrain(settings: Settings, request: RetrainRequest) -> RetrainOutcome:
    """All steps without an orchestrator (the flow calls the same functions one task each)."""
    batch = load_training_data(settings, request)
    samples = prepare_samples(batch, request.config)
    ensemble = train(samples, request.config)
    with tempfile.TemporaryDirectory(dir=settings.home) as tmp:
        exported, parity = export(ensemble, samples, Path(tmp))
        record = register(settings, request, ensemble, exported, batch.snapshot_id)
    return finish(settings, record, ensemble, samples, batch.snapshot_id, exported, parity)


def finish(
    settings: Settings,
    record: registry.ModelRecord,
    ensemble: TrainedEnsemble,
    samples: SampleSet,
    snapshot_id: int,
    exported: ExportResult,
    parity: float,
) -> RetrainOutcome:
    decision, previous, previous_id, name, start, end = decide_and_promote(
        settings, record, ensemble, samples
    )
    assert ensemble.test is not None
    return RetrainOutcome(
        model_id=record.model_id,
        promoted=decision.promote,
        reason=decision.reason,
        champion_id=record.model_id if decision.promote else previous_id,
        previous_champion_id=previous_id,
        challenger=oos_metrics(ensemble),
        previous=previous.flat() if previous else None,
        window_name=name,
        window_start=start,
        window_end=end,
        train_samples=ensemble.train_samples,
        snapshot_id=snapshot_id,
        feature_set_version=ensemble.feature_set_version,
        export_seconds=exported.export_seconds,
        parity_max_abs=parity,
        trained_at=record.created_at,
    )
