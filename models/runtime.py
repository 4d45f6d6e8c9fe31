"""Serving: the exported ensemble in ONNX Runtime. Imports neither torch nor onnx.

    predictor = OnnxPredictor.load(path, expected_feature_set_version=FEATURE_SET_VERSION)
    prediction = predictor.predict(windows)  # (batch, window_len, n_features) float32, raw features
    prediction.probabilities  # (batch, 3): [buy, hold, sell], calibrated inside the graph
    prediction.confidence     # (batch,) in [0, 1]: calibrated probability of the argmax class
    predictor.required_features  # the model's selected feature columns (all it reads)
    engine = predictor.feature_engine("5m")  # computes only those (and their dependencies)
    predictor.inputs([engine.step(candle), ...])  # graph input rows, NaN where not read
    predictor.info.class_forward_returns  # (r_buy, r_hold, r_sell) or None (older models)
    predictor.info.calibration            # {"method": "temperature", "temperature": ...} or {}

Models exported before calibration existed have uncalibrated probabilities, the hybrid member's
confidence head as ``confidence``, ``calibration == {}`` and ``class_forward_returns is None``.

Session options are tuned for single-sample latency: one intra-op and one inter-op thread,
sequential execution, all graph optimizations, no thread spinning.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

if TYPE_CHECKING:
    from pipelines.features.online import OnlineFeatureEngine

CLASSES = ("buy", "hold", "sell")
INPUT_NAME = "window"
OUTPUT_NAMES = ("probabilities", "confidence")


class ModelFileError(ValueError):
    """The ONNX file is unreadable, or not a tradeloop signal model, or does not match what
    the caller expects (feature set, window shape)."""


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray  # (batch, 3) float32, [buy, hold, sell]
    confidence: np.ndarray  # (batch,) float32

    @property
    def predicted_class(self) -> list[str]:
        return [CLASSES[i] for i in self.probabilities.argmax(axis=1)]


@dataclass(frozen=True)
class ModelInfo:
    feature_set_version: str
    feature_columns: tuple[str, ...]
    selected_features: tuple[str, ...]  # the columns the model uses (others may be NaN)
    window_len: int
    n_features: int
    horizon_bars: int
    members: tuple[str, ...]
    combine: str
    opset: int
    metadata: dict[str, str]
    # mean tradeable forward return (open[t+1+h] / open[t+1] - 1) of validation bars by TRUE class
    # [buy, hold, sell]; None for models exported before it was recorded
    class_forward_returns: tuple[float, float, float] | None = None
    # the calibration baked into the graph (``tradeloop.calibration``); {} for older models
    calibration: dict[str, Any] = field(default_factory=dict)


def _class_forward_returns(meta: dict[str, str]) -> tuple[float, float, float] | None:
    raw = meta.get("tradeloop.class_forward_returns")
    if raw is None:
        return None
    values = [float(v) for v in json.loads(raw)]
    if len(values) != len(CLASSES) or not all(math.isfinite(v) for v in values):
        raise ValueError(f"tradeloop.class_forward_returns must be 3 finite numbers, got {raw}")
    return (values[0], values[1], values[2])


def _calibration(meta: dict[str, str]) -> dict[str, Any]:
    raw = meta.get("tradeloop.calibration")
    if raw is None:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"tradeloop.calibration must be a JSON object, got {raw}")
    return value


def session_options(threads: int = 1) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def model_info(session: ort.InferenceSession, where: str) -> ModelInfo:
    meta = dict(session.get_modelmeta().custom_metadata_map)
    required = (
        "tradeloop.feature_set_version",
        "tradeloop.feature_columns",
        "tradeloop.window_len",
    )
    missing = [key for key in required if key not in meta]
    if missing:
        raise ModelFileError(f"{where}: not a tradeloop signal model (metadata lacks {missing})")
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(float)":
        found = [(i.name, i.type) for i in inputs]
        raise ModelFileError(f"{where}: expected one float input {INPUT_NAME!r}, found {found}")
    outputs = tuple(o.name for o in session.get_outputs())
    if outputs != OUTPUT_NAMES:
        raise ModelFileError(
            f"{where}: expected outputs {list(OUTPUT_NAMES)}, found {list(outputs)}"
        )
    try:
        columns = tuple(json.loads(meta["tradeloop.feature_columns"]))
        window_len = int(meta["tradeloop.window_len"])
        info = ModelInfo(
            feature_set_version=meta["tradeloop.feature_set_version"],
            feature_columns=columns,
            selected_features=tuple(
                json.loads(meta.get("tradeloop.selected_features", "null")) or columns
            ),
            window_len=window_len,
            n_features=int(meta.get("tradeloop.n_features", len(columns))),
            horizon_bars=int(meta.get("tradeloop.horizon_bars", "0")),
            members=tuple(json.loads(meta.get("tradeloop.members", "[]"))),
            combine=meta.get("tradeloop.combine", "average"),
            opset=int(meta.get("tradeloop.opset", "0")),
            metadata=meta,
            class_forward_returns=_class_forward_returns(meta),
            calibration=_calibration(meta),
        )
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{where}: malformed tradeloop metadata: {exc}") from exc
    shape = inputs[0].shape
    if len(shape) != 3 or shape[1] != info.window_len or shape[2] != info.n_features:
        raise ModelFileError(
            f"{where}: input shape {shape} does not match the metadata "
            f"(window_len={info.window_len}, n_features={info.n_features})"
        )
    if len(info.feature_columns) != info.n_features:
        raise ModelFileError(
            f"{where}: {len(info.feature_columns)} feature columns but n_features={info.n_features}"
        )
    return info


def open_session(path: Path | str, threads: int = 1) -> ort.InferenceSession:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such ONNX file")
    try:
        return ort.InferenceSession(
            str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own exception types for corrupt files
        raise ModelFileError(
            f"{path}: not a loadable ONNX model ({type(exc).__name__}: {exc})"
        ) from exc


class OnnxPredictor:
    """A loaded, checked model; ``predict`` is safe to call from one thread at a time per instance
    (ONNX Runtime sessions are thread-safe for ``run``)."""

    def __init__(self, session: ort.InferenceSession, info: ModelInfo, path: Path) -> None:
        self.session = session
        self.info = info
        self.path = path
        self.used_index = np.array([info.feature_columns.index(c) for c in info.selected_features])
        # a graph exported with a fixed batch size cannot take the padded pair (see ``predict``)
        self._pad_single = not isinstance(session.get_inputs()[0].shape[0], int)

    @property
    def required_features(self) -> tuple[str, ...]:
        """The feature columns this model reads (its selected set, ``tradeloop.selected_features``
        in the graph's metadata): all that serving has to compute for it."""
        return self.info.selected_features

    def feature_engine(self, timeframe: str) -> OnlineFeatureEngine:
        """An online feature engine computing only ``required_features`` and what they
        depend on (``pipelines.features.prune``)."""
        from pipelines.features.online import OnlineFeatureEngine

        return OnlineFeatureEngine(timeframe, columns=self.required_features)

    def inputs(self, rows: Sequence[Mapping[str, float | None]]) -> np.ndarray:
        """(len(rows), n_features) float32 rows of the graph's input from feature dicts (e.g.
        ``feature_engine(...).step`` outputs); the columns the model does not read are NaN
        (the graph never reads them). A required column missing from a row is an error."""
        out = np.full((len(rows), self.info.n_features), np.nan, dtype=np.float32)
        for i, row in enumerate(rows):
            for j in self.used_index:
                name = self.info.feature_columns[j]
                if name not in row:
                    raise ValueError(f"inputs: row {i} lacks the model's feature {name!r}")
                value = row[name]
                if value is not None:
                    out[i, j] = value
        return out

    def input_matrix(self, columns: Sequence[str], values: np.ndarray) -> np.ndarray:
        """``values`` (n, len(columns)) of named feature columns (e.g. a batch frame of
        ``build_features(..., columns=required_features)``) as graph input rows (NaN elsewhere)."""
        index = {c: i for i, c in enumerate(columns)}
        missing = [c for c in self.required_features if c not in index]
        if missing:
            raise ValueError(f"input_matrix: the model's features {missing} are not given")
        out = np.full((values.shape[0], self.info.n_features), np.nan, dtype=np.float32)
        out[:, self.used_index] = values[:, [index[c] for c in self.required_features]]
        return out

    @classmethod
    def load(
        cls, onnx_path: Path | str, expected_feature_set_version: str, *, threads: int = 1
    ) -> OnnxPredictor:
        path = Path(onnx_path)
        session = open_session(path, threads)
        info = model_info(session, str(path))
        if info.feature_set_version != expected_feature_set_version:
            raise ModelFileError(
                f"{path}: trained on feature set {info.feature_set_version!r}, "
                f"but the features here are {expected_feature_set_version!r}"
            )
        return cls(session, info, path)

    def predict(self, windows: np.ndarray, *, check_finite: bool = True) -> Prediction:
        """``check_finite=False``: the caller has already checked every used input of every
        window (a batched backtest checks each bar once, not each of the window_len copies of
        it); a non-finite input then gives non-finite outputs instead of a ValueError."""
        windows = np.asarray(windows)
        expected = (self.info.window_len, self.info.n_features)
        if windows.ndim == 2:
            windows = windows[None]
        if windows.ndim != 3 or windows.shape[1:] != expected:
            raise ValueError(
                f"predict: windows must have shape (batch, {expected[0]}, {expected[1]}), "
                f"got {windows.shape}"
            )
        if check_finite:
            used = windows[:, :, self.used_index]
            if not np.isfinite(used).all():
                bad = np.argwhere(~np.isfinite(used))[0]
                column = self.info.selected_features[int(bad[2])]
                raise ValueError(
                    f"predict: non-finite value in sample {bad[0]}, step {bad[1]}, "
                    f"feature {column!r}"
                )
        n = windows.shape[0]
        if n == 1 and self._pad_single:
            # ONNX Runtime's batch-of-one kernels round differently (last float32 bit) from any
            # larger batch; a padded pair gives serve (one symbol: one window a bar) exactly the
            # numbers the batched backtest gets for the same window
            windows = np.concatenate([windows, windows])
        probabilities, confidence = self.session.run(
            list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(windows, dtype=np.float32)}
        )
        return Prediction(probabilities=probabilities[:n], confidence=confidence[:n])
