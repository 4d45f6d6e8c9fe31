"""The steps of a retrain (plain functions; ``flows/retrain.py`` lists them as Prefect tasks).

1. ``load_training_data``: candles of the last ``days`` days from the warehouse, at the current
   DuckLake snapshot (recorded), or at a given snapshot to reproduce an earlier training set;
2. ``prepare_samples``: features (``pipelines.features``), labels, windows;
3. ``train``: ``models.training.train_ensemble`` (OOS report on the most recent window);
   ``cross_validate``: ``models.cv`` K purged, embargoed folds of the same configuration on the
   training part (``TrainConfig.cv_folds``, default 3; 0 = off), whose fold statistics the
   promotion rule reads;
4. ``export``: one ONNX graph, checked against the Python ensemble on the test window;
5. ``register``: registry row + file + metrics (validation, and the test window with the
   promotion figures: IC of ``p_buy - p_sell`` against the tradeable return with its block
   bootstrap CI, log-loss beside the training-frequency baseline, ECE, Brier);
6. ``decide_and_promote``: the champion scored through its ONNX file on the challenger's test
   window (the SAME bars and realized returns) and, when its configuration differs from the
   challenger's, that configuration cross-validated on the SAME folds; the promotion rule
   (``models.registry.decide_promotion``) applied, promotion done atomically if it passes;
7. ``dashboard_markdown``: the summary published as a Prefect artifact (calibration before and
   after, the reliability diagram's bins, IC with its CI).
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import registry
from models.cv import CVResult, cross_validate
from models.data import (
    CandleBatch,
    FeaturizedSeries,
    SampleSet,
    assemble_samples,
    build_samples,
    load_candles,
    split_samples,
)
from models.evaluation import registered_probabilities
from models.export import ExportResult, export_onnx
from models.metrics import ReliabilityBins, classification_report, window_scores
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
    # stored with the model's hyperparameters, e.g. the tuning study its defaults came from
    extra_hyperparameters: dict[str, Any] = field(default_factory=dict)


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
    # the reliability diagram's bins on the test window, before and after calibration
    reliability_before: ReliabilityBins | None = None
    reliability_after: ReliabilityBins | None = None
    cv: CVResult | None = None  # the challenger's folds (None: cv_folds = 0)
    champion_cv: CVResult | None = None  # the champion's configuration on the same folds


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
        batch.frame,
        window_len=config.window_len,
        label_config=label_config(config),
        order_book=batch.order_book,
        trades=batch.trades,
        side=batch.side,
    )


def assemble(featurized: Sequence[FeaturizedSeries], config: TrainConfig) -> SampleSet:
    """``prepare_samples`` from series featurized one by one (``models.data.featurize_series``
    over ``models.data.split_series(batch.frame)``): the same samples, built in parallel."""
    return assemble_samples(
        featurized, window_len=config.window_len, label_config=label_config(config)
    )


def train(samples: SampleSet, config: TrainConfig) -> TrainedEnsemble:
    return train_ensemble(samples, config)


def cross_validate_config(samples: SampleSet, config: TrainConfig) -> CVResult | None:
    """``models.cv.cross_validate`` of ``config`` on the training part; None when
    ``config.cv_folds`` is 0, or when the folds cannot be trained (too few samples, a fold
    without a class): the warning says why, and the promotion rule is then the single split's
    (the dashboard names the rule it used)."""
    if config.cv_folds < 2:
        return None
    try:
        return cross_validate(samples, config)
    except ValueError as exc:
        logging.getLogger(__name__).warning(
            "cross-validation skipped, promotion on the single split: %s", exc
        )
        return None


# TrainConfig fields that do not change what a configuration learns (how it is run, measured)
RUN_ONLY_FIELDS = frozenset(
    {
        "progress",
        "threads",
        "cv_folds",
        "cv_embargo_bars",
        "max_train_seconds",
    }
)


def config_from_hyperparameters(hyperparameters: dict[str, Any]) -> TrainConfig | None:
    """The TrainConfig a registered model was trained with (fields its record lacks take
    today's defaults), or None when the record does not validate as one."""
    known = {k: v for k, v in hyperparameters.items() if k in TrainConfig.model_fields}
    try:
        return TrainConfig(**known)
    except ValueError:
        return None


def same_configuration(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether ``a`` and ``b`` learn the same model from the same data (``RUN_ONLY_FIELDS``
    aside)."""
    return a.model_dump(exclude=set(RUN_ONLY_FIELDS)) == b.model_dump(exclude=set(RUN_ONLY_FIELDS))


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


def _train_labels(samples: SampleSet, config: TrainConfig) -> np.ndarray:
    return split_samples(samples, **split_options(config))[0].labels


def score_window(
    probabilities: np.ndarray,
    window: SampleSet,
    train_labels: np.ndarray,
    horizon_bars: int,
) -> dict[str, float]:
    """``models.metrics.window_scores`` of ``probabilities`` on ``window``: IC against the
    window's tradeable returns (bootstrapped one symbol after the other, in time order),
    log-loss beside the training-frequency baseline, ECE and Brier."""
    return window_scores(
        window.labels,
        probabilities,
        window.tradeable_return,
        train_labels,
        horizon_bars=horizon_bars,
        order=np.lexsort((window.ts, window.symbol)),
    )


def challenger_metrics(ensemble: TrainedEnsemble, samples: SampleSet) -> dict[str, float]:
    """``oos_metrics`` plus the promotion figures (``score_window``) of the ensemble's
    calibrated probabilities on its test window: what ``register`` stores for window 'test'."""
    window = test_window(samples, ensemble.config)
    probabilities, _ = ensemble.predict(window.windows)
    scores = score_window(
        probabilities,
        window,
        _train_labels(samples, ensemble.config),
        ensemble.config.horizon_bars,
    )
    return {**oos_metrics(ensemble), **scores}


def register(
    settings: Settings,
    request: RetrainRequest,
    ensemble: TrainedEnsemble,
    exported: ExportResult,
    snapshot_id: int,
    samples: SampleSet,
    cv: CVResult | None = None,
    extra_hyperparameters: dict[str, Any] | None = None,
) -> registry.ModelRecord:
    """Add the exported graph to the registry with its figures: validation metrics, on the
    test window ``challenger_metrics`` (classification, calibration, promotion figures), and
    the fold figures of ``cv`` (window ``cv``). ``extra_hyperparameters`` (e.g. the tuning
    study the configuration came from) are stored with the hyperparameters."""
    assert ensemble.test is not None and ensemble.validation is not None
    test_figures = challenger_metrics(ensemble, samples)
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
        # the promotion figures on the test window (IC with its CI, log-loss and its baseline)
        "promotion_test": {k: test_figures[k] for k in registry.PROMOTION_FIGURES},
        "class_forward_returns": (
            list(ensemble.class_forward_returns) if ensemble.class_forward_returns else None
        ),
        "members_test": {k: v.flat() for k, v in ensemble.member_test.items()},
        # permutation importance per feature family on the validation part, with CIs, and
        # what the selection rule kept (the model's inputs: also in its ONNX metadata)
        "permutation_importance": ensemble.importance,
        "feature_selection": {
            "on": ensemble.config.feature_selection,
            "families": [f.to_dict() for f in ensemble.family_importance],
            "selected_families": list(ensemble.selected_families),
            "selected_features": list(ensemble.selected_features),
            "input_features": len(ensemble.input_columns),
        },
        "cv": cv.to_dict() if cv is not None else None,
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
                **(extra_hyperparameters or {}),
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
            test_figures,
            window_start=start,
            window_end=end,
        )
        if cv is not None:
            registry.record_metrics(con, settings, record.model_id, "cv", cv.figures())
    finally:
        con.close()
    return record


@dataclass(frozen=True)
class PromotionResult:
    decision: registry.Decision
    challenger: dict[str, float]  # the challenger's figures on the window
    previous: dict[str, float] | None  # the champion's on the same window (None: not comparable)
    previous_id: str | None  # the champion before the decision
    window_name: str
    window_start: dt.datetime
    window_end: dt.datetime
    champion_cv: CVResult | None = None


def champion_cv(
    current: registry.ModelRecord,
    config: TrainConfig,
    samples: SampleSet,
    cv: CVResult,
    rebuild: Callable[[TrainConfig], SampleSet] | None,
) -> CVResult | None:
    """The champion's configuration cross-validated on the challenger's folds (``cv.bounds``),
    or None when it is the challenger's configuration (its figures would be the same) or
    cannot be rebuilt (an unreadable record; other label or window settings without
    ``rebuild``, which makes the samples for a configuration)."""
    theirs = config_from_hyperparameters(current.hyperparameters)
    if theirs is None or same_configuration(theirs, config):
        return None
    theirs = theirs.with_updates(cv_folds=len(cv.folds), progress=False, threads=config.threads)
    same_samples = theirs.window_len == config.window_len and label_config(theirs) == label_config(
        config
    )
    try:
        if same_samples:
            their_samples = samples
        elif rebuild is not None:
            their_samples = rebuild(theirs)
        else:
            return None
        return cross_validate(their_samples, theirs, bounds=cv.bounds)
    except ValueError as exc:  # e.g. a fold without a class under the champion's labels
        logging.getLogger(__name__).warning(
            "champion %s's configuration could not be cross-validated (%s): compared on the "
            "newest out-of-sample window",
            current.model_id,
            exc,
        )
        return None


def decide_and_promote(
    settings: Settings,
    record: registry.ModelRecord,
    ensemble: TrainedEnsemble,
    samples: SampleSet,
    *,
    rule: registry.PromotionRule | None = None,
    cv: CVResult | None = None,
    rebuild: Callable[[TrainConfig], SampleSet] | None = None,
) -> PromotionResult:
    """Score the current champion through its ONNX file on the challenger's test window (same
    bars, labels, tradeable returns and training-class frequencies) and, with ``cv``, its
    configuration on the same folds when it differs (``champion_cv``); record both models'
    figures under that window's name, and promote if the rule passes (on the folds when
    ``cv`` is given)."""
    assert ensemble.test is not None and ensemble.test_window is not None
    window = test_window(samples, ensemble.config)
    train_labels = _train_labels(samples, ensemble.config)
    name = _window_name(*ensemble.test_window)
    start, end = (_utc(t) for t in ensemble.test_window)
    their_cv = None
    if cv is not None:  # trained before the write connection opens (it takes K trainings)
        con = connect(settings, read_only=True)
        try:
            current = registry.champion(con, record.name)
        finally:
            con.close()
        if current is not None and current.model_id != record.model_id:
            their_cv = champion_cv(current, ensemble.config, samples, cv, rebuild)
    con = connect(settings)
    try:
        # the challenger's figures on this window are its test figures, stored by `register`
        ours = registry.model_metrics(con, record.model_id, "test")
        if "ic" not in ours:
            ours = challenger_metrics(ensemble, samples)
        if cv is not None:
            ours = {**ours, **cv.figures()}
        current = registry.champion(con, record.name)
        previous = None
        if their_cv is not None and (current is None or current.model_id == record.model_id):
            their_cv = None  # the champion changed meanwhile: its figures are not for this one
        if current is not None and current.model_id != record.model_id:
            outputs = registered_probabilities(current, window)
            if outputs is not None:
                probabilities, confidence = outputs
                report = classification_report(
                    window.labels, probabilities, confidence=confidence, train_labels=train_labels
                )
                horizon = ensemble.config.horizon_bars
                previous = {
                    **report.flat(),
                    **score_window(probabilities, window, train_labels, horizon),
                }
            if their_cv is not None:
                previous = {**(previous or {}), **their_cv.figures()}
            if previous is not None:
                registry.record_metrics(
                    con, settings, current.model_id, name, previous,
                    window_start=start, window_end=end,
                )  # fmt: skip
        registry.record_metrics(
            con, settings, record.model_id, name, ours, window_start=start, window_end=end
        )
        decision = registry.promote_if_better(con, settings, record.model_id, name, rule=rule)
    finally:
        con.close()
    return PromotionResult(
        decision=decision,
        challenger=ours,
        previous=previous,
        previous_id=current.model_id if current else None,
        window_name=name,
        window_start=start,
        window_end=end,
        champion_cv=their_cv,
    )


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


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None or not np.isfinite(value) else format(value, spec)


def _ic_cell(m: dict[str, float] | None) -> str:
    if m is None or "ic" not in m:
        return "–"
    return (
        f"{_num(m['ic'], '.4f')} "
        f"[{_num(m.get('ic_ci_low'), '.4f')}, {_num(m.get('ic_ci_high'), '.4f')}]"
    )


def reliability_table(before: ReliabilityBins | None, after: ReliabilityBins | None) -> list[str]:
    """A reliability diagram as a markdown table: per bin of the predicted (argmax) class's
    probability, its mean, the observed frequency of that class being right, and the count,
    after calibration and before it. A calibrated model has observed ≈ mean predicted."""
    bins = after or before
    if bins is None:
        return []
    lines = [
        "| predicted probability | mean predicted | observed frequency | count "
        "| mean predicted (before) | observed (before) | count (before) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for b in range(len(bins.count)):
        cells = [f"{bins.edges[b]:.1f}–{bins.edges[b + 1]:.1f}"]
        for part in (after, before):
            if part is None:
                cells += ["–", "–", "–"]
                continue
            cells += [
                _num(part.mean_confidence[b], ".3f"),
                _num(part.accuracy[b], ".3f"),
                str(part.count[b]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cv_table(cv: CVResult | None, champion: CVResult | None) -> list[str]:
    """The purged folds as a markdown table: per fold its window, IC, log-loss and baseline
    (and the champion configuration's IC on the same fold when it was cross-validated)."""
    if cv is None:
        return []
    lines = [
        "",
        f"## Purged {len(cv.folds)}-fold cross-validation on the training part "
        f"(purge {cv.purge_bars} bars, embargo {cv.embargo_bars} bars, {cv.seconds:.1f} s)",
        "",
        "| fold | window | samples | IC | log-loss | training-frequency log-loss "
        "| champion configuration IC |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    theirs = {f.fold: f for f in champion.folds} if champion else {}
    for f in cv.folds:
        other = theirs.get(f.fold)
        lines.append(
            f"| {f.fold} | {f.start[:16]} .. {f.end[:16]} | {f.samples} | {_num(f.ic, '.4f')} "
            f"| {_num(f.log_loss, '.4f')} | {_num(f.log_loss_train_frequency, '.4f')} "
            f"| {_num(other.ic, '.4f') if other else '–'} |"
        )
    m = cv.figures()
    lines.append(
        f"| mean (SE) | | | {_num(m['cv_ic_mean'], '.4f')} ({_num(m['cv_ic_se'], '.4f')}) "
        f"| {_num(m['cv_log_loss_mean'], '.4f')} "
        f"| {_num(m['cv_log_loss_train_frequency_mean'], '.4f')} "
        f"| {_num(champion.ic_mean, '.4f') if champion else '–'} |"
    )
    return lines


def dashboard_markdown(outcome: RetrainOutcome, history: list[tuple[str, float, float]]) -> str:
    c, p = outcome.challenger, outcome.previous

    def change(metric: str) -> str:
        if p is None or metric not in p:  # no champion, or one scored on the folds only
            return "n/a (no comparable champion)"
        return f"{c[metric] - p[metric]:+.2%}"

    def row(label: str, metric: str, spec: str, delta: str = "") -> str:
        theirs = _num(p.get(metric), spec) if p else "–"
        return f"| {label} | {_num(c.get(metric), spec)} | {theirs} | {delta} |"

    def diff(metric: str) -> str:
        if p is None or metric not in p or metric not in c:
            return ""
        return _num(c[metric] - p[metric], "+.4f")

    status = "PROMOTED to champion" if outcome.promoted else "kept as challenger"
    lines = [
        f"# Model retrain: {outcome.model_id}",
        "",
        f"**{status}.** {outcome.reason}",
        "",
        "Promotion rule: " + registry.PromotionRule().describe(folds=outcome.cv is not None) + ".",
        "",
        "| metric | this model | previous champion | change |",
        "| --- | --- | --- | --- |",
        f"| IC (p_buy - p_sell vs tradeable return) [95% CI] | {_ic_cell(c)} | {_ic_cell(p)} "
        f"| {diff('ic')} |",
        row("log-loss", "log_loss", ".4f", diff("log_loss")),
        row("training-frequency baseline log-loss", "log_loss_train_frequency", ".4f"),
        row("ECE (10 bins)", "ece", ".4f", diff("ece")),
        row("Brier", "brier", ".4f", diff("brier")),
        f"| accuracy | {c['accuracy']:.2%} | {_num(p.get('accuracy') if p else None, '.2%')} "
        f"| {change('accuracy')} |",
        f"| macro F1 | {c['f1_macro']:.3f} | {_num(p.get('f1_macro') if p else None, '.3f')} "
        f"| {change('f1_macro')} |",
        f"| mean confidence | {_num(c.get('confidence_mean'), '.2%')} | "
        f"{_num(p.get('confidence_mean'), '.2%') if p else '–'} | |",
        f"| majority-class baseline accuracy | {c['baseline_accuracy']:.2%} | | |",
        f"| majority-class baseline macro F1 | {c['baseline_f1_macro']:.3f} | | |",
        "",
        "## Calibration on the test window",
        "",
        "| measure | before calibration | after calibration | training frequencies "
        "| majority class (one-hot) |",
        "| --- | --- | --- | --- | --- |",
        f"| log-loss | {_num(c.get('log_loss_before'), '.4f')} "
        f"| {_num(c.get('log_loss_after'), '.4f')} "
        f"| {_num(c.get('log_loss_train_frequency'), '.4f')} "
        f"| {_num(c.get('log_loss_majority'), '.4f')} |",
        f"| Brier | {_num(c.get('brier_before'), '.4f')} | {_num(c.get('brier_after'), '.4f')} "
        f"| {_num(c.get('brier_train_frequency'), '.4f')} "
        f"| {_num(c.get('brier_majority'), '.4f')} |",
        f"| ECE | {_num(c.get('ece_before'), '.4f')} | {_num(c.get('ece_after'), '.4f')} | | |",
        "",
        "The one-hot majority class pays -ln(1e-15) ≈ 34.5 for every bar it misses, so its "
        "log-loss is no reference; the training frequencies are.",
    ]
    lines += cv_table(outcome.cv, outcome.champion_cv)
    diagram = reliability_table(outcome.reliability_before, outcome.reliability_after)
    if diagram:
        lines += ["", "### Reliability diagram (predicted class, 10 bins)", "", *diagram]
    lines += [
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
    cv = cross_validate_config(samples, request.config)
    with tempfile.TemporaryDirectory(dir=settings.home) as tmp:
        exported, parity = export(ensemble, samples, Path(tmp))
        record = register(
            settings, request, ensemble, exported, batch.snapshot_id, samples, cv,
            request.extra_hyperparameters,
        )  # fmt: skip
    return finish(
        settings, record, ensemble, samples, batch.snapshot_id, exported, parity, cv=cv,
        rebuild=lambda config: prepare_samples(batch, config),
    )  # fmt: skip


def finish(
    settings: Settings,
    record: registry.ModelRecord,
    ensemble: TrainedEnsemble,
    samples: SampleSet,
    snapshot_id: int,
    exported: ExportResult,
    parity: float,
    *,
    cv: CVResult | None = None,
    rebuild: Callable[[TrainConfig], SampleSet] | None = None,
) -> RetrainOutcome:
    result = decide_and_promote(settings, record, ensemble, samples, cv=cv, rebuild=rebuild)
    calibration = ensemble.test_calibration
    return RetrainOutcome(
        model_id=record.model_id,
        promoted=result.decision.promote,
        reason=result.decision.reason,
        champion_id=record.model_id if result.decision.promote else result.previous_id,
        previous_champion_id=result.previous_id,
        challenger=result.challenger,
        previous=result.previous,
        window_name=result.window_name,
        window_start=result.window_start,
        window_end=result.window_end,
        train_samples=ensemble.train_samples,
        snapshot_id=snapshot_id,
        feature_set_version=ensemble.feature_set_version,
        export_seconds=exported.export_seconds,
        parity_max_abs=parity,
        trained_at=record.created_at,
        reliability_before=calibration.reliability_before if calibration else None,
        reliability_after=calibration.reliability_after if calibration else None,
        cv=cv,
        champion_cv=result.champion_cv,
    )
