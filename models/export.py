"""ONNX export of a trained ensemble: ONE graph per deployed model (torch + onnx + skl2onnx).

The graph (opset ``OPSET`` = 17, ``ai.onnx.ml`` 3 for the tree ensemble):

* input ``window``: float32 (batch, window_len, n_features), the RAW feature window with the
  columns of ``pipelines.features.feature_columns()`` in order; the batch axis is dynamic;
* inside: selection of the model's columns (Slice + Concat of runs of consecutive columns;
  a Gather when they are scattered), the training-set standardization, every
  neural member (softmax probabilities), the scikit-learn gradient boosting member (converted by
  skl2onnx, fed the last row of the raw window), and the combination step: weighted average of
  the member probabilities, or weighted majority vote (one-hot of each member's argmax);
* the calibration fit on the validation part (``models.calibration``):
  ``softmax(scale * ln(clip(p, PROB_FLOOR, 1)) + bias)``;
* outputs ``probabilities``: float32 (batch, 3), the CALIBRATED ensemble probabilities in order
  [buy, hold, sell], and ``confidence``: float32 (batch,), the calibrated probability of the
  ensemble's chosen (argmax) class. (The hybrid member's own confidence head is no longer an
  output: it judged one member, not the ensemble, and was not calibrated.)

Metadata properties (``tradeloop.*``) record the feature-set version, columns, window length,
classes, members, weights and opset; the registry and the runtime check them. Also (JSON):
``tradeloop.calibration`` (method, scale, bias, temperature for the temperature method) and
``tradeloop.class_forward_returns`` ([r_buy, r_hold, r_sell]: the mean tradeable forward return
``open[t+1+h] / open[t+1] - 1`` of validation bars by true class).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, compose, helper, numpy_helper
from torch import nn

from models.architecture import Standardize
from models.calibration import PROB_FLOOR
from models.training import TrainedEnsemble
from pipelines.labels import CLASSES

OPSET = 17
ML_OPSET = 3
FORMAT_VERSION = "1"
INPUT_NAME = "window"
OUTPUT_NAMES = ("probabilities", "confidence")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sha256: str
    opset: int
    export_seconds: float
    size_bytes: int


MAX_SLICE_RUNS = 16  # more runs of selected columns than this: one Gather instead


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """``index`` (increasing or not) as [start, stop) runs of consecutive columns, in order."""
    runs: list[tuple[int, int]] = []
    for i in (int(v) for v in index):
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


class _NeuralGraph(nn.Module):
    """Raw window -> per-member probabilities and the GBM's input row."""

    index: torch.Tensor

    def __init__(self, ensemble: TrainedEnsemble) -> None:
        super().__init__()
        index = ensemble.feature_index
        self.select = not np.array_equal(index, np.arange(len(ensemble.feature_columns)))
        self.register_buffer("index", torch.from_numpy(index))
        # The selected columns as contiguous [start, stop) runs (dropped features are usually a
        # few blocks): Slice + Concat copy blocks of columns, where a Gather on the last axis
        # copies one float at a time and took ~11 % of a batched backtest's inference
        self.runs = _runs(index) if self.select else []
        if len(self.runs) > MAX_SLICE_RUNS:
            self.runs = []
        self.standardize = Standardize(
            torch.from_numpy(ensemble.scaler.mean), torch.from_numpy(ensemble.scaler.std)
        )
        self.neural = nn.ModuleList([m.model for m in ensemble.members if m.name != "gbm"])
        self.has_gbm = any(m.name == "gbm" for m in ensemble.members)

    def forward(self, window: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.select:
            x = window
        elif self.runs:
            x = torch.cat([window[:, :, a:b] for a, b in self.runs], dim=2)
        else:
            x = window.index_select(2, self.index)
        z = self.standardize(x)
        outputs: list[torch.Tensor] = []
        for member in self.neural:
            logits, _ = member(z)
            outputs.append(torch.softmax(logits, dim=1))
        if self.has_gbm:
            outputs.append(x[:, -1, :])
        return tuple(outputs)


def _torch_graph(ensemble: TrainedEnsemble) -> tuple[onnx.ModelProto, list[str]]:
    module = _NeuralGraph(ensemble).eval()
    names = [f"p_{m.name}" for m in ensemble.members if m.name != "gbm"]
    if module.has_gbm:
        names.append("gbm_input")
    example = torch.zeros(2, ensemble.config.window_len, len(ensemble.feature_columns))
    buffer = io.BytesIO()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # The fused Transformer fast path has no ONNX symbolic: trace the plain layer ops.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            torch.onnx.export(
                module,
                (example,),
                buffer,  # type: ignore[arg-type]  # a file-like object is accepted
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}},
                opset_version=OPSET,
                dynamo=False,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return onnx.load_from_string(buffer.getvalue()), names


def _gbm_graph(ensemble: TrainedEnsemble) -> onnx.ModelProto:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    gbm = next(m.model for m in ensemble.members if m.name == "gbm")
    model = to_onnx(
        gbm,
        initial_types=[("gbm_input", FloatTensorType([None, len(ensemble.selected_features)]))],
        options={id(gbm): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )
    return compose.add_prefix(model, prefix="gbm_")


def _combine(model: onnx.ModelProto, member_outputs: list[str], ensemble: TrainedEnsemble) -> None:
    """Append the combination and calibration nodes; set the outputs to probabilities +
    confidence."""
    graph = model.graph
    terms: list[str] = []
    for i, (name, weight) in enumerate(zip(member_outputs, ensemble.weights, strict=True)):
        source = name
        if ensemble.config.combine == "vote":
            graph.node.extend(
                [
                    helper.make_node("ArgMax", [name], [f"vote_idx_{i}"], axis=1, keepdims=0),
                    helper.make_node(
                        "OneHot",
                        [f"vote_idx_{i}", "vote_depth", "vote_values"],
                        [f"vote_{i}"],
                        axis=-1,
                    ),
                ]
            )
            source = f"vote_{i}"
        graph.initializer.append(
            numpy_helper.from_array(np.array(weight, dtype=np.float32), f"weight_{i}")
        )
        graph.node.append(helper.make_node("Mul", [source, f"weight_{i}"], [f"term_{i}"]))
        terms.append(f"term_{i}")
    if ensemble.config.combine == "vote":
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array([len(CLASSES)], dtype=np.int64), "vote_depth"),
                numpy_helper.from_array(np.array([0.0, 1.0], dtype=np.float32), "vote_values"),
            ]
        )
    graph.initializer.append(
        numpy_helper.from_array(np.zeros((1, len(CLASSES)), dtype=np.float32), "sum_0")
    )
    total = "sum_0"
    for i, term in enumerate(terms):
        out = "combined" if i == len(terms) - 1 else f"sum_{i + 1}"
        graph.node.append(helper.make_node("Add", [total, term], [out]))
        total = out
    _calibrate(graph, ensemble, "combined", "probabilities")
    graph.node.append(
        helper.make_node("ReduceMax", ["probabilities"], ["confidence"], keepdims=0, axes=[1])
    )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(
                "probabilities", TensorProto.FLOAT, ["batch", len(CLASSES)]
            ),
            helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["batch"]),
        ]
    )


def _calibrate(graph: onnx.GraphProto, ensemble: TrainedEnsemble, source: str, out: str) -> None:
    """``out = softmax(scale * ln(clip(source, PROB_FLOOR, 1)) + bias)``, the same float32 steps
    as ``models.calibration.Calibration.apply`` (identity when the method is "none")."""
    calibration = ensemble.calibration
    if calibration.method == "none":
        graph.node.append(helper.make_node("Identity", [source], [out]))
        return
    constants = {
        "cal_floor": np.array(PROB_FLOOR, dtype=np.float32),
        "cal_one": np.array(1.0, dtype=np.float32),
        "cal_scale": np.array([calibration.scale], dtype=np.float32),
        "cal_bias": np.array([calibration.bias], dtype=np.float32),
    }
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    graph.node.extend(
        [
            helper.make_node("Clip", [source, "cal_floor", "cal_one"], ["cal_clipped"]),
            helper.make_node("Log", ["cal_clipped"], ["cal_log"]),
            helper.make_node("Mul", ["cal_log", "cal_scale"], ["cal_scaled"]),
            helper.make_node("Add", ["cal_scaled", "cal_bias"], ["cal_logits"]),
            helper.make_node("Softmax", ["cal_logits"], [out], axis=1),
        ]
    )


def build_onnx(ensemble: TrainedEnsemble) -> onnx.ModelProto:
    """The deployable graph of ``ensemble`` (see the module docstring)."""
    neural, names = _torch_graph(ensemble)
    if any(m.name == "gbm" for m in ensemble.members):
        gbm = _gbm_graph(ensemble)
        ir = max(neural.ir_version, gbm.ir_version)
        neural.ir_version = gbm.ir_version = ir
        merged = compose.merge_models(
            neural,
            gbm,
            io_map=[("gbm_input", "gbm_gbm_input")],
            outputs=[n for n in names if n != "gbm_input"] + ["gbm_probabilities"],
        )
    else:
        merged = neural
    member_outputs = [
        f"p_{m.name}" if m.name != "gbm" else "gbm_probabilities" for m in ensemble.members
    ]
    _combine(merged, member_outputs, ensemble)
    cfg = ensemble.config
    metadata = {
        "tradeloop.format_version": FORMAT_VERSION,
        "tradeloop.feature_set_version": ensemble.feature_set_version,
        "tradeloop.feature_columns": json.dumps(list(ensemble.feature_columns)),
        "tradeloop.selected_features": json.dumps(list(ensemble.selected_features)),
        "tradeloop.feature_groups": json.dumps(ensemble.feature_groups),
        "tradeloop.window_len": str(cfg.window_len),
        "tradeloop.n_features": str(len(ensemble.feature_columns)),
        "tradeloop.horizon_bars": str(cfg.horizon_bars),
        "tradeloop.classes": json.dumps(list(CLASSES)),
        "tradeloop.members": json.dumps([m.name for m in ensemble.members]),
        "tradeloop.weights": json.dumps([float(w) for w in ensemble.weights]),
        "tradeloop.combine": cfg.combine,
        "tradeloop.opset": str(OPSET),
        "tradeloop.calibration": json.dumps(ensemble.calibration.to_metadata()),
    }
    if ensemble.class_forward_returns is not None:
        metadata["tradeloop.class_forward_returns"] = json.dumps(
            [float(r) for r in ensemble.class_forward_returns]
        )
    del merged.metadata_props[:]
    for key, value in metadata.items():
        merged.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    merged.producer_name = "tradeloop"
    onnx.checker.check_model(merged, full_check=True)
    return merged


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_onnx(ensemble: TrainedEnsemble, path: Path) -> ExportResult:
    """Write the deployable graph to ``path`` (atomically: temp file + rename)."""
    started = time.perf_counter()
    model = build_onnx(ensemble)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    onnx.save_model(model, tmp)
    tmp.replace(path)
    seconds = time.perf_counter() - started
    return ExportResult(path, file_sha256(path), OPSET, seconds, path.stat().st_size)


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantization of the weights (MatMul/LSTM/Gemm); metadata is kept."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    original = onnx.load(str(source))
    quantized = onnx.load(str(target))
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(original.metadata_props)
    quantized.metadata_props.append(
        onnx.StringStringEntryProto(key="tradeloop.quantized", value="int8-dynamic")
    )
    onnx.save_model(quantized, str(target))
    return target
