"""Calibration of the ensemble's combined class probabilities (numpy + scipy, no torch).

The ensemble's probabilities ``p`` (n, 3) [buy, hold, sell] are mapped to

    q = softmax(scale * ln(max(p, PROB_FLOOR)) + bias)

with ``scale`` and ``bias`` of length 3. Two ways to fit them, both by minimizing the log-loss
on the VALIDATION part only (never the test part):

* ``temperature``: one temperature ``T``: ``scale = 1/T`` for every class, ``bias = 0``. It keeps
  the argmax, and fixes over- or under-confidence;
* ``temperature_bias``: one temperature and a bias per class (the bias of the first class fixed
  at 0: softmax ignores a common shift). The biases move the class balance, which class-weighted
  training shifts on purpose (balanced losses over-predict the minority classes);
* ``vector``: a scale and a bias per class (5 parameters).

``method="auto"`` fits each on the first half of the validation part (in time), scores them on
the second half, and refits the winner on the whole validation part; a method with more
parameters has to be clearly better (``AUTO_MARGIN`` nats lower held-out log-loss) than the
simpler one it would replace (measured on real 5m candles: per-class scales fitted on a few
hundred bars can overfit a regime; the held-out half catches that).

The exported ONNX graph applies the same map with the same float32 operations (Clip, Log, Mul,
Add, Softmax), so ``apply`` here and ONNX Runtime agree to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize, minimize_scalar

PROB_FLOOR = 1e-6  # probabilities are clipped here before the log (vote shares can be 0)
AUTO_MARGIN = 0.002  # nats of held-out log-loss vector scaling must win by in "auto"
CalibrationMethod = Literal["temperature", "temperature_bias", "vector", "auto", "none"]
AUTO_CANDIDATES = ("temperature", "temperature_bias", "vector")  # fewest parameters first


@dataclass(frozen=True)
class Calibration:
    method: str  # "temperature", "temperature_bias", "vector" or "none" (identity)
    scale: tuple[float, float, float]
    bias: tuple[float, float, float]
    fit_samples: int = 0
    log_loss_before: float = float("nan")  # on the samples it was fit on
    log_loss_after: float = float("nan")

    @property
    def temperature(self) -> float | None:
        shared = self.method in ("temperature", "temperature_bias")
        return 1.0 / self.scale[0] if shared and self.scale[0] > 0 else None

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (float32, as the exported graph computes them)."""
        p = np.asarray(probabilities, dtype=np.float32)
        if self.method == "none":
            return p
        logits = np.log(np.clip(p, np.float32(PROB_FLOOR), np.float32(1.0)))
        logits = logits * np.asarray(self.scale, dtype=np.float32) + np.asarray(
            self.bias, dtype=np.float32
        )
        return _softmax32(logits)

    def to_metadata(self) -> dict[str, Any]:
        """What ``tradeloop.calibration`` holds (JSON)."""
        out: dict[str, Any] = {
            "method": self.method,
            "scale": list(self.scale),
            "bias": list(self.bias),
            "prob_floor": PROB_FLOOR,
            "fit_on": "validation",
            "fit_samples": self.fit_samples,
            "log_loss_before": self.log_loss_before,
            "log_loss_after": self.log_loss_after,
        }
        if self.temperature is not None:
            out["temperature"] = self.temperature
        # strict JSON has no NaN (an unfitted map has no log-loss figures)
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()
        }


IDENTITY = Calibration("none", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


def _softmax32(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _nll(log_p: np.ndarray, labels: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> float:
    z = log_p * scale + bias
    z = z - z.max(axis=1, keepdims=True)
    log_q = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_q[np.arange(labels.size), labels].mean())


def _log_p(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), PROB_FLOOR, 1.0))


def _fit_temperature(log_p: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    zero = np.zeros(3)
    # Search log(1/T) so T stays positive; [-5, 5] spans T from 0.007 to 150.
    result = minimize_scalar(
        lambda s: _nll(log_p, labels, np.full(3, np.exp(s)), zero),
        bounds=(-5.0, 5.0),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return np.full(3, float(np.exp(result.x))), zero


def _fit_scaled(
    log_p: np.ndarray, labels: np.ndarray, per_class_scale: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class biases (the first fixed at 0) with one shared scale, or a scale per class."""
    n_scale = 3 if per_class_scale else 1

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.resize(theta[:n_scale], 3), np.concatenate([[0.0], theta[n_scale:]])

    start_scale, _ = _fit_temperature(log_p, labels)
    result = minimize(
        lambda theta: _nll(log_p, labels, *unpack(theta)),
        np.concatenate([start_scale[:n_scale], np.zeros(2)]),
        method="L-BFGS-B",
        bounds=[(0.0, 100.0)] * n_scale + [(-20.0, 20.0)] * 2,
    )
    return unpack(np.asarray(result.x, dtype=np.float64))


def _fit(method: str, log_p: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if method == "temperature":
        return _fit_temperature(log_p, labels)
    return _fit_scaled(log_p, labels, per_class_scale=method == "vector")


def _choose(log_p: np.ndarray, labels: np.ndarray) -> str:
    """The method of ``AUTO_CANDIDATES`` with the best log-loss on the later half of the
    samples when fit on the earlier half; more parameters must win by ``AUTO_MARGIN``."""
    half = labels.size // 2
    if half < 20:
        return "temperature"
    chosen, best = AUTO_CANDIDATES[0], float("inf")
    for candidate in AUTO_CANDIDATES:
        scale, bias = _fit(candidate, log_p[:half], labels[:half])
        score = _nll(log_p[half:], labels[half:], scale, bias)
        if score < best - (AUTO_MARGIN if np.isfinite(best) else 0.0):
            chosen, best = candidate, score
    return chosen


def fit_calibration(
    probabilities: np.ndarray, labels: np.ndarray, method: CalibrationMethod = "temperature"
) -> Calibration:
    """Fit the calibration map on (validation) ``probabilities`` (n, 3) and true ``labels``.

    Samples must be in time order for ``auto`` (it holds out the later half)."""
    labels = np.asarray(labels, dtype=np.int64)
    log_p = _log_p(probabilities)
    if method == "none" or labels.size == 0:
        return IDENTITY
    chosen: str = method
    if method == "auto":
        chosen = _choose(log_p, labels)
    scale, bias = _fit(chosen, log_p, labels)
    before = _nll(log_p, labels, np.ones(3), np.zeros(3))
    return Calibration(
        method=chosen,
        scale=(float(scale[0]), float(scale[1]), float(scale[2])),
        bias=(float(bias[0]), float(bias[1]), float(bias[2])),
        fit_samples=int(labels.size),
        log_loss_before=before,
        log_loss_after=_nll(log_p, labels, scale, bias),
    )


def class_forward_returns(
    labels: np.ndarray, tradeable_return: np.ndarray
) -> tuple[float, float, float]:
    """Mean tradeable forward return of the samples whose TRUE label is buy, hold, sell.

    Samples with an unknown (NaN) return are left out; a class without any known return gets
    0.0 (no evidence of an edge)."""
    labels = np.asarray(labels, dtype=np.int64)
    returns = np.asarray(tradeable_return, dtype=np.float64)
    out = []
    for c in range(3):
        values = returns[(labels == c) & np.isfinite(returns)]
        out.append(float(values.mean()) if values.size else 0.0)
    return (out[0], out[1], out[2])
