"""Training the signal ensemble (torch + scikit-learn). Never imported by serving code.

Entry points:

* ``train_ensemble(samples, config) -> TrainedEnsemble``: time-ordered train/validation/test
  split with a purge gap of ``horizon_bars``; the scaler is fit on the training part only; each
  member is trained (class-weighted loss) with early stopping on validation; member weights come
  from validation macro F1; the calibration of the combined probabilities
  (``models.calibration``) and the per-class expected tradeable forward returns are fit on the
  validation part; the test part (the most recent data) gives the out-of-sample report, with the
  probability metrics before and after calibration. Feature selection (on by default,
  ``select_features``) runs on the validation part before the calibration is fit.
* ``fit_predict(train, test, config) -> np.ndarray``: for walk-forward backtests: train on
  ``train`` (its own last part is the validation window, which also fits the calibration) and
  return calibrated [buy, hold, sell] probabilities for every ``test`` sample.
* ``fit_ensemble(train, config) -> TrainedEnsemble``: the same on one training set (no test
  part), what each fold of ``models.cv`` fits. Hyperparameter search: ``models.tuning``.

Members: ``hybrid`` (LSTM + Transformer, with the confidence head), ``conv`` (temporal conv
net), ``gbm`` (scikit-learn gradient boosting on the last row of the window). Combination:
``average`` = performance-weighted average of probabilities; ``vote`` = each member's argmax
counts with its weight (weighted majority vote; shares of the vote are the probabilities).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.ensemble import GradientBoostingClassifier
from torch import nn

from models.architecture import (
    ConvConfig,
    HybridConfig,
    HybridLSTMTransformer,
    TemporalConvNet,
)
from models.calibration import (
    IDENTITY,
    Calibration,
    CalibrationMethod,
    class_forward_returns,
    fit_calibration,
)
from models.data import SampleSet, split_samples
from models.metrics import (
    CalibrationReport,
    ClassificationReport,
    FamilyImportance,
    SelectionRule,
    calibration_report,
    classification_report,
    grouped_permutation_importance,
    select_families,
)
from pipelines.features.groups import DEFAULT_INPUT_GROUPS, GROUPS, columns_of
from pipelines.features.prune import feature_families
from pipelines.labels import LabelConfig, LabelMethod, class_weights
from pipelines.progress import NoProgress, Progress, current

MemberName = Literal["hybrid", "conv", "gbm"]


class TrainConfig(BaseModel):
    """Every knob of one training run (stored as the model's hyperparameters)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_len: int = Field(default=32, ge=2)
    horizon_bars: int = Field(default=5, ge=1)
    vol_window_bars: int = Field(default=60, ge=2)
    threshold_scale: float = Field(default=0.5, gt=0)
    # The class threshold (and triple barriers) is never below what a round trip costs:
    # 2 * (taker fee + slippage + half spread); 0.003 = 0.1 % fee + 0.05 % slippage, each side.
    round_trip_cost_fraction: float = Field(default=0.003, ge=0)
    # labels' cost floor = round trip x this margin (>1: only moves well past the cost are
    # buy/sell); a label/decision parameter the tuner searches
    cost_margin: float = Field(default=1.0, gt=0)
    label_method: LabelMethod = "threshold"
    take_profit_vol: float = Field(default=1.0, gt=0)  # triple barrier, units of vol * sqrt(h)
    stop_loss_vol: float = Field(default=1.0, gt=0)
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    max_samples: int | None = Field(default=None, description="keep only the most recent N samples")

    members: tuple[MemberName, ...] = ("hybrid", "conv", "gbm")
    combine: Literal["average", "vote"] = "average"

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=1)
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = Field(default=3, ge=1)
    confidence_loss_weight: float = 0.5
    class_weighting: bool = Field(
        default=True, description="balanced class weights in every member's loss"
    )
    calibration_method: CalibrationMethod = "auto"
    max_train_seconds: float | None = Field(default=None, description="time box per neural member")

    d_model: int = 32
    lstm_hidden: int = 32
    lstm_layers: int = 1
    n_heads: int = 2
    transformer_layers: int = 1
    dropout: float = 0.1
    conv_channels: int = 32
    conv_layers: int = 2

    gbm_estimators: int = 60
    gbm_max_depth: int = 3
    gbm_learning_rate: float = 0.1
    gbm_max_train_samples: int = 20_000

    # Purged, embargoed K-fold cross-validation on the training part (``models.cv``) in every
    # retrain; the promotion rule reads its fold statistics. 0 turns it off (single split).
    cv_folds: int = Field(default=3, ge=0)
    cv_embargo_bars: int | None = Field(
        default=None, ge=0, description="bars dropped after each fold's purge (None: window_len)"
    )

    # Feature selection (docs/models.md, "Feature selection"): permutation importance per
    # feature family on the validation part, then the members are refit on the families the
    # rule keeps (``models.metrics.select_families``; "ci": drop a family whose importance CI
    # is at or below zero), at least ``selection_min_families``. The selected columns are the
    # exported model's inputs.
    feature_selection: bool = True
    selection_rule: SelectionRule = "ci"
    selection_min_families: int = Field(default=3, ge=1)
    # permutations per family (importance is computed when > 0 even with selection off)
    importance_repeats: int = Field(default=2, ge=0)
    importance_max_samples: int = 2_000
    # The feature groups (pipelines.features.groups: candles, multi-timeframe, order
    # book/trades, funding/basis, sentiment) the model may read; None: every group with data.
    # By default those that earned their place (groups.DEFAULT_INPUT_GROUPS); ``tradeloop
    # retrain|walk-forward --feature-groups`` sets it.
    input_groups: tuple[str, ...] | None = DEFAULT_INPUT_GROUPS

    seed: int = 7
    threads: int | None = None
    progress: bool = True

    @model_validator(mode="after")
    def _folds(self) -> TrainConfig:
        if self.cv_folds == 1:
            raise ValueError("cv_folds must be 0 (no cross-validation) or at least 2")
        return self

    @model_validator(mode="after")
    def _groups(self) -> TrainConfig:
        unknown = sorted(set(self.input_groups or ()) - set(GROUPS))
        if unknown or self.input_groups == ():
            raise ValueError(
                f"input_groups {list(self.input_groups or ())}: unknown or none; known: "
                f"{list(GROUPS)}"
            )
        return self

    @property
    def embargo_bars(self) -> int:
        """Bars dropped after each CV fold's purge: by default the input window's length, so
        no training window after a fold contains a bar of the fold."""
        return self.window_len if self.cv_embargo_bars is None else self.cv_embargo_bars

    def with_updates(self, **changes: Any) -> TrainConfig:
        return self.model_validate({**self.model_dump(), **changes})


def split_options(config: TrainConfig) -> dict[str, Any]:
    """The arguments of ``models.data.split_samples`` that ``config`` implies."""
    return {
        "purge_bars": config.horizon_bars,
        "validation_fraction": config.validation_fraction,
        "test_fraction": config.test_fraction,
        "max_samples": config.max_samples,
    }


def model_columns(columns: Sequence[str], config: TrainConfig) -> tuple[str, ...]:
    """The columns (of those with data) the members may read: all of them, or those of
    ``config.input_groups``. Raises ValueError naming the groups when none has data."""
    if config.input_groups is None:
        return tuple(columns)
    chosen = columns_of(config.input_groups, columns)
    if not chosen:
        raise ValueError(
            f"no column of the feature groups {list(config.input_groups)} has data in the "
            "training window"
        )
    return chosen


def label_config(config: TrainConfig) -> LabelConfig:
    return LabelConfig(
        horizon_bars=config.horizon_bars,
        vol_window_bars=config.vol_window_bars,
        threshold_scale=config.threshold_scale,
        round_trip_cost_fraction=config.round_trip_cost_fraction * config.cost_margin,
        method=config.label_method,
        take_profit_vol=config.take_profit_vol,
        stop_loss_vol=config.stop_loss_vol,
    )


def loss_weights(labels: np.ndarray, config: TrainConfig) -> np.ndarray:
    """Per-class loss weights: balanced (``pipelines.labels.class_weights``) unless turned off."""
    if not config.class_weighting:
        return np.ones(3, dtype=np.float32)
    return class_weights(labels)


@dataclass(frozen=True)
class Scaler:
    """Per-feature standardization fit on the training window [fit_start, fit_end] only."""

    mean: np.ndarray  # (n_features,) float32
    std: np.ndarray
    fit_start: np.datetime64
    fit_end: np.datetime64
    fit_samples: int

    @classmethod
    def fit(cls, train: SampleSet) -> Scaler:
        rows = train.windows.reshape(-1, train.windows.shape[2]).astype(np.float64)
        std = rows.std(axis=0)
        std[~np.isfinite(std) | (std < 1e-8)] = 1.0
        return cls(
            mean=rows.mean(axis=0).astype(np.float32),
            std=std.astype(np.float32),
            fit_start=train.ts.min(),
            fit_end=train.ts.max(),
            fit_samples=len(train),
        )

    def transform(self, windows: np.ndarray) -> np.ndarray:
        return ((windows - self.mean) * (np.float32(1.0) / self.std)).astype(np.float32)


@dataclass
class Member:
    name: MemberName
    model: Any  # nn.Module for neural members, GradientBoostingClassifier for gbm
    validation: ClassificationReport
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    samples_per_s: float = 0.0


@dataclass
class TrainedEnsemble:
    config: TrainConfig
    feature_columns: tuple[str, ...]  # the feature set's full column list (the graph's input)
    input_columns: tuple[str, ...]  # the columns of the training windows (features with data)
    selected_features: tuple[str, ...]  # the columns the members use (subset, in order)
    feature_set_version: str
    scaler: Scaler  # over selected_features
    members: list[Member]
    weights: np.ndarray  # (n_members,), sums to 1
    validation: ClassificationReport | None = None
    test: ClassificationReport | None = None
    member_test: dict[str, ClassificationReport] = field(default_factory=dict)
    importance: dict[str, float] = field(default_factory=dict)  # per feature family
    family_importance: list[FamilyImportance] = field(default_factory=list)  # with CIs
    selected_families: tuple[str, ...] = ()  # the families kept (all when selection is off)
    train_samples: int = 0
    test_window: tuple[np.datetime64, np.datetime64] | None = None
    train_seconds: float = 0.0
    calibration: Calibration = IDENTITY  # fit on the validation part
    # mean tradeable forward return of validation bars by TRUE class [buy, hold, sell]
    class_forward_returns: tuple[float, float, float] | None = None
    validation_calibration: CalibrationReport | None = None
    test_calibration: CalibrationReport | None = None

    @property
    def feature_index(self) -> np.ndarray:
        """Positions of the selected features in the full column list (the exported graph)."""
        return np.array(
            [self.feature_columns.index(c) for c in self.selected_features], dtype=np.int64
        )

    @property
    def feature_groups(self) -> list[str]:
        """The feature groups the model reads (``pipelines.features.groups``: candles,
        multi-timeframe, order book/trades, funding/basis, sentiment; in that order): in its
        registry hyperparameters and its ONNX metadata (``tradeloop.feature_groups``)."""
        from pipelines.features.groups import group_columns

        return [g for g, cols in group_columns(self.selected_features).items() if cols]

    @property
    def input_index(self) -> np.ndarray:
        """Positions of the selected features in the training windows' columns."""
        return np.array(
            [self.input_columns.index(c) for c in self.selected_features], dtype=np.int64
        )

    def member_outputs(self, windows: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Per-member probabilities and the ensemble confidence for RAW windows over
        ``input_columns`` (the columns of the SampleSet it was trained on)."""
        x = np.ascontiguousarray(windows[:, :, self.input_index], dtype=np.float32)
        z = torch.from_numpy(self.scaler.transform(x))
        probs: list[np.ndarray] = []
        confidence: np.ndarray | None = None
        with torch.no_grad():
            for member in self.members:
                if member.name == "gbm":
                    probs.append(member.model.predict_proba(x[:, -1, :]).astype(np.float32))
                    continue
                member.model.eval()
                logits, conf = member.model(z)
                probs.append(torch.softmax(logits, dim=1).numpy())
                if confidence is None and member.name == "hybrid":
                    confidence = conf.numpy()
        return probs, confidence if confidence is not None else np.empty(0, dtype=np.float32)

    def predict_uncalibrated(self, windows: np.ndarray) -> np.ndarray:
        """The combined member probabilities (n, 3) before calibration, for RAW windows."""
        probs, _ = self.member_outputs(windows)
        return combine_probabilities(probs, self.weights, self.config.combine)

    def predict(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities (n, 3) [buy, hold, sell], confidence (n,)) for RAW windows:
        what the exported graph returns. Confidence is the calibrated probability of the
        ensemble's chosen (argmax) class."""
        calibrated = self.calibration.apply(self.predict_uncalibrated(windows))
        return calibrated, calibrated.max(axis=1)

    def calibrate(self, validation: SampleSet) -> None:
        """Fit the calibration and the per-class forward returns on ``validation`` (only)."""
        self.calibration = fit_calibration(
            self.predict_uncalibrated(validation.windows),
            validation.labels,
            self.config.calibration_method,
        )
        self.class_forward_returns = class_forward_returns(
            validation.labels, validation.tradeable_return
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **self.config.model_dump(),
            "members": [m.name for m in self.members],
            "weights": [float(w) for w in self.weights],
            "selected_features": list(self.selected_features),
            "selected_families": list(self.selected_families),
            "feature_groups": self.feature_groups,
            "scaler_fit_start": str(self.scaler.fit_start),
            "scaler_fit_end": str(self.scaler.fit_end),
        }


def combine_probabilities(
    probs: Sequence[np.ndarray], weights: np.ndarray, mode: str
) -> np.ndarray:
    """Weighted average of member probabilities, or weighted shares of member argmax votes.

    Accumulates in member order in float32, as the exported graph does.
    """
    total = np.zeros_like(probs[0], dtype=np.float32)
    for p, w in zip(probs, weights, strict=True):
        term = p if mode == "average" else np.eye(p.shape[1], dtype=np.float32)[p.argmax(axis=1)]
        total = total + np.float32(w) * term.astype(np.float32)
    return total


def _seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def _build_neural(name: MemberName, n_features: int, config: TrainConfig) -> nn.Module:
    if name == "hybrid":
        return HybridLSTMTransformer(
            HybridConfig(
                n_features=n_features,
                d_model=config.d_model,
                lstm_hidden=config.lstm_hidden,
                lstm_layers=config.lstm_layers,
                n_heads=config.n_heads,
                transformer_layers=config.transformer_layers,
                dropout=config.dropout,
            )
        )
    if name == "conv":
        return TemporalConvNet(
            ConvConfig(
                n_features=n_features,
                channels=config.conv_channels,
                layers=config.conv_layers,
                dropout=config.dropout,
            )
        )
    raise ValueError(f"unknown neural member {name!r}")


def train_neural(
    name: MemberName,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    config: TrainConfig,
    progress: Progress | None = None,
) -> Member:
    """Train one neural member on standardized windows with early stopping on validation loss."""
    progress = _progress(config, progress)
    _seed_everything(config.seed)
    model = _build_neural(name, train_x.shape[2], config)
    weights = torch.from_numpy(loss_weights(train_y, config))
    ce = nn.CrossEntropyLoss(weight=weights)
    bce = nn.BCELoss()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    x_train, y_train = torch.from_numpy(train_x), torch.from_numpy(train_y)
    x_val, y_val = torch.from_numpy(val_x), torch.from_numpy(val_y)
    generator = torch.Generator().manual_seed(config.seed)
    best_loss, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    seen = 0
    progress.start(f"train {name} (epochs)", config.epochs)
    for epoch in range(config.epochs):
        model.train()
        # Shuffling inside the training window only; the windows never cross into validation.
        order = torch.randperm(x_train.shape[0], generator=generator)
        running = 0.0
        for start in range(0, x_train.shape[0], config.batch_size):
            batch = order[start : start + config.batch_size]
            logits, confidence = model(x_train[batch])
            loss = ce(logits, y_train[batch])
            if name == "hybrid":
                correct = (logits.argmax(dim=1) == y_train[batch]).float()
                loss = loss + config.confidence_loss_weight * bce(confidence, correct)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            running += loss.item() * batch.shape[0]
            seen += int(batch.shape[0])
        model.eval()
        with torch.no_grad():
            val_logits, _ = model(x_val)
            val_loss = float(ce(val_logits, y_val))
            val_acc = float((val_logits.argmax(dim=1) == y_val).float().mean())
        history.append(
            {
                "epoch": float(epoch),
                "train_loss": running / max(1, x_train.shape[0]),
                "val_loss": val_loss,
                "val_accuracy": val_acc,
            }
        )
        progress.advance(note=f"train_loss {history[-1]['train_loss']:.4f} val_loss {val_loss:.4f}")
        if val_loss < best_loss - 1e-6:
            best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
        if (
            config.max_train_seconds is not None
            and time.perf_counter() - started > config.max_train_seconds
        ):
            break
    progress.done()
    elapsed = time.perf_counter() - started
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        logits, confidence = model(x_val)
    report = classification_report(
        val_y,
        torch.softmax(logits, dim=1).numpy(),
        confidence=confidence.numpy(),
        train_labels=train_y,
    )
    return Member(name, model, report, history, elapsed, seen / elapsed if elapsed > 0 else 0.0)


def train_gbm(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    config: TrainConfig,
) -> Member:
    """Gradient boosting on the last row of each (raw) window, grown in steps of 10 trees with
    early stopping on the time-ordered validation log loss (never sklearn's shuffled split)."""
    if train_x.shape[0] > config.gbm_max_train_samples:
        train_x, train_y = (
            train_x[-config.gbm_max_train_samples :],
            train_y[-config.gbm_max_train_samples :],
        )
    sample_weight = loss_weights(train_y, config)[train_y]
    model = GradientBoostingClassifier(
        n_estimators=0,
        max_depth=config.gbm_max_depth,
        learning_rate=config.gbm_learning_rate,
        random_state=config.seed,
        warm_start=True,
    )
    started = time.perf_counter()
    best, stale, history = float("inf"), 0, []
    for n_trees in range(10, config.gbm_estimators + 1, 10):
        model.set_params(n_estimators=n_trees)
        model.fit(train_x, train_y, sample_weight=sample_weight)
        proba = np.clip(model.predict_proba(val_x), 1e-7, 1.0)
        loss = float(-np.log(proba[np.arange(val_y.size), val_y]).mean())
        history.append({"trees": float(n_trees), "val_loss": loss})
        if loss < best - 1e-6:
            best, stale = loss, 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    elapsed = time.perf_counter() - started
    report = classification_report(val_y, model.predict_proba(val_x), train_labels=train_y)
    return Member("gbm", model, report, history, elapsed, train_x.shape[0] * len(history) / elapsed)


def _check_classes(labels: np.ndarray, where: str) -> None:
    counts = np.bincount(labels, minlength=3)
    if (counts == 0).any():
        raise ValueError(
            f"{where}: every class needs samples, got buy={counts[0]} hold={counts[1]} "
            f"sell={counts[2]} "
            "(more data, a longer horizon or a smaller threshold_scale help)"
        )


def _fit_members(
    train: SampleSet, validation: SampleSet, columns: tuple[str, ...], config: TrainConfig
) -> tuple[Scaler, list[Member]]:
    index = np.array([train.feature_columns.index(c) for c in columns], dtype=np.int64)
    train_raw = np.ascontiguousarray(train.windows[:, :, index])
    val_raw = np.ascontiguousarray(validation.windows[:, :, index])
    scaler = Scaler.fit(_subset(train, index))
    train_z, val_z = scaler.transform(train_raw), scaler.transform(val_raw)
    members: list[Member] = []
    progress = _progress(config, None)
    progress.start("train members", len(config.members))
    for name in config.members:
        if name == "gbm":
            members.append(
                train_gbm(
                    train_raw[:, -1, :], train.labels, val_raw[:, -1, :], validation.labels, config
                )
            )
        else:
            members.append(
                train_neural(name, train_z, train.labels, val_z, validation.labels, config)
            )
        progress.advance()
    progress.done()
    return scaler, members


def _progress(config: TrainConfig, progress: Progress | None) -> Progress:
    """Where training reports: the caller's, else the command's; nothing with progress off."""
    if not config.progress:
        return NoProgress()
    return progress if progress is not None else current()


def _subset(samples: SampleSet, index: np.ndarray) -> SampleSet:
    return SampleSet(
        windows=np.ascontiguousarray(samples.windows[:, :, index]),
        labels=samples.labels,
        ts=samples.ts,
        symbol=samples.symbol,
        forward_return=samples.forward_return,
        tradeable_return=samples.tradeable_return,
        feature_columns=tuple(samples.feature_columns[i] for i in index),
        feature_set_version=samples.feature_set_version,
        all_feature_columns=samples.all_feature_columns,
    )


def member_weights(members: Sequence[Member]) -> np.ndarray:
    """Weights proportional to validation macro F1 (floored so no member gets exactly 0)."""
    scores = np.array([max(m.validation.f1_macro, 1e-3) for m in members], dtype=np.float64)
    return (scores / scores.sum()).astype(np.float32)


def train_ensemble(samples: SampleSet, config: TrainConfig) -> TrainedEnsemble:
    """Split by time (purged), fit the scaler and members on train, weight on validation,
    report on test (the most recent, never-seen window)."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    _seed_everything(config.seed)
    started = time.perf_counter()
    train, validation, test = split_samples(samples, **split_options(config))
    _check_classes(train.labels, "training window")
    columns = model_columns(samples.feature_columns, config)
    scaler, members = _fit_members(train, validation, columns, config)
    ensemble = TrainedEnsemble(
        config=config,
        feature_columns=samples.serving_columns,
        input_columns=samples.feature_columns,
        selected_features=columns,
        feature_set_version=samples.feature_set_version,
        scaler=scaler,
        members=members,
        weights=member_weights(members),
        train_samples=len(train),
    )
    select_features(ensemble, train, validation, config)
    ensemble.calibrate(validation)
    ensemble.validation, ensemble.validation_calibration = _reports(
        ensemble, validation, train.labels
    )
    ensemble.test, ensemble.test_calibration = _reports(ensemble, test, train.labels)
    member_probs, _ = ensemble.member_outputs(test.windows)
    ensemble.member_test = {
        m.name: classification_report(test.labels, p, train_labels=train.labels)
        for m, p in zip(ensemble.members, member_probs, strict=True)
    }
    ensemble.test_window = (test.ts.min(), test.ts.max())
    ensemble.train_seconds = time.perf_counter() - started
    return ensemble


def select_features(
    ensemble: TrainedEnsemble, train: SampleSet, validation: SampleSet, config: TrainConfig
) -> None:
    """Feature selection in the loop, on ``validation`` only (before the calibration is fit).

    The permutation importance of each feature family (``pipelines.features.prune``) is
    measured on the latest ``importance_max_samples`` validation windows; with
    ``config.feature_selection`` the families the rule keeps (``select_families``) are the
    model's inputs and the members are refit on them (on ``train``, early-stopped on
    ``validation`` as before). Nothing is measured when selection is off and
    ``importance_repeats`` is 0."""
    columns = ensemble.selected_features
    ensemble.selected_families = tuple(feature_families(columns))
    if not (config.feature_selection or config.importance_repeats > 0):
        return
    sub = validation.last(config.importance_max_samples)
    ensemble.family_importance = grouped_permutation_importance(
        ensemble.predict_uncalibrated,
        sub.windows,
        sub.labels,
        feature_families(columns),
        ensemble.input_columns,
        horizon_bars=config.horizon_bars,
        repeats=max(1, config.importance_repeats),
        seed=config.seed,
    )
    ensemble.importance = {f.family: f.importance for f in ensemble.family_importance}
    if not config.feature_selection:
        return
    kept = select_families(
        ensemble.family_importance,
        rule=config.selection_rule,
        keep_at_least=config.selection_min_families,
    )
    chosen = tuple(c for f in ensemble.family_importance if f.family in kept for c in f.columns)
    selected = tuple(c for c in columns if c in chosen)
    ensemble.selected_families = tuple(f for f in ensemble.selected_families if f in kept)
    if selected == columns:
        return
    scaler, members = _fit_members(train, validation, selected, config)
    ensemble.selected_features, ensemble.scaler, ensemble.members = selected, scaler, members
    ensemble.weights = member_weights(members)


def _reports(
    ensemble: TrainedEnsemble, part: SampleSet, train_labels: np.ndarray
) -> tuple[ClassificationReport, CalibrationReport]:
    """Classification report of the calibrated probabilities, and the probability metrics
    before and after calibration, on ``part``."""
    raw = ensemble.predict_uncalibrated(part.windows)
    probs = ensemble.calibration.apply(raw)
    return (
        classification_report(
            part.labels, probs, confidence=probs.max(axis=1), train_labels=train_labels
        ),
        calibration_report(part.labels, raw, probs, train_labels=train_labels),
    )


def fit_ensemble(train: SampleSet, config: TrainConfig) -> TrainedEnsemble:
    """Train on the whole of ``train``: its latest ``validation_fraction`` of timestamps (after
    a purge gap of ``horizon_bars``) validates, weights the members and fits the calibration;
    there is no test part. The rows of ``train`` need not be contiguous (a K-fold's training
    set has a hole where its validation fold was)."""
    distinct = np.unique(train.ts)
    n_val = max(1, int(round(distinct.size * config.validation_fraction)))
    cut = distinct.size - n_val
    train_part = train.take(np.flatnonzero(train.ts < distinct[max(0, cut - config.horizon_bars)]))
    val_part = train.take(np.flatnonzero(train.ts >= distinct[cut]))
    _check_classes(train_part.labels, "training window")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    _seed_everything(config.seed)
    started = time.perf_counter()
    columns = model_columns(train.feature_columns, config)
    scaler, members = _fit_members(train_part, val_part, columns, config)
    ensemble = TrainedEnsemble(
        config=config,
        feature_columns=train.serving_columns,
        input_columns=train.feature_columns,
        selected_features=columns,
        feature_set_version=train.feature_set_version,
        scaler=scaler,
        members=members,
        weights=member_weights(members),
        train_samples=len(train_part),
    )
    select_features(ensemble, train_part, val_part, config)
    ensemble.calibrate(val_part)
    ensemble.train_seconds = time.perf_counter() - started
    return ensemble


def fit_predict(train: SampleSet, test: SampleSet, config: TrainConfig) -> np.ndarray:
    """Walk-forward helper: train on ``train`` (its latest part validates) and return the
    [buy, hold, sell] probabilities of ``test`` (which must come after ``train`` in time)."""
    if len(test) and len(train) and test.ts.min() <= train.ts.max():
        raise ValueError("fit_predict: test samples must all be later than the training samples")
    return fit_ensemble(train, config).predict(test.windows)[0]
