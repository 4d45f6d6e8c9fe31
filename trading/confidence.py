"""Confidence scoring: how much the loop trusts one model prediction.

    confidence = model_confidence x volatility_factor x quality_factor x accuracy_weight

* ``model_confidence`` in [0, 1]: the model's confidence output (``Prediction.confidence``).
* ``volatility_factor = min(1, sigma_ref / sigma) ** volatility_power``: sigma is the per-bar
  volatility (std of log returns over the loop's volatility window) now, sigma_ref its slow EWMA
  (alpha ``reference_alpha``) over the symbol's history, i.e. the normal level. Calm or normal
  markets keep the full confidence; a market twice as volatile as usual gets 1/sqrt(2) with the
  default power 0.5. Unknown sigma (warm-up) gives ``unknown_volatility_factor``.
* ``quality_factor`` in [0, 1]: the fraction of the model's input features that are present and
  finite in the latest row, times ``(1 - gap_bars / max_gap_bars)`` when the latest candle came
  after a gap (stale, carried inputs).
* ``accuracy_weight = min(1, acc_shrunk / accuracy_reference)`` with the rolling accuracy shrunk
  toward ``prior_accuracy`` by ``prior_weight`` pseudo-predictions:
  ``acc_shrunk = (hits + prior_accuracy x prior_weight) / (n + prior_weight)``. A model whose
  recent predictions are right at least ``accuracy_reference`` of the time keeps its confidence;
  a worse one is scaled down in proportion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfidencePolicy:
    volatility_power: float = 0.5
    reference_alpha: float = 1.0 / 500.0
    unknown_volatility_factor: float = 1.0
    max_gap_bars: int = 5
    accuracy_reference: float = 0.5
    prior_accuracy: float = 0.5
    prior_weight: float = 20.0

    def __post_init__(self) -> None:
        if not 0.0 < self.accuracy_reference <= 1.0:
            raise ValueError("ConfidencePolicy.accuracy_reference must be in (0, 1]")
        if self.prior_weight < 0 or self.volatility_power < 0:
            raise ValueError("ConfidencePolicy: prior_weight and volatility_power must be >= 0")


@dataclass(frozen=True, slots=True)
class ConfidenceParts:
    model: float
    volatility_factor: float
    quality_factor: float
    accuracy_weight: float

    @property
    def value(self) -> float:
        v = self.model * self.volatility_factor * self.quality_factor * self.accuracy_weight
        return min(max(v, 0.0), 1.0)


def volatility_factor(sigma: float, sigma_ref: float, policy: ConfidencePolicy) -> float:
    if not (sigma > 0 and sigma_ref > 0) or math.isnan(sigma) or math.isnan(sigma_ref):
        return policy.unknown_volatility_factor
    return min(1.0, sigma_ref / sigma) ** policy.volatility_power


def quality_factor(present_fraction: float, gap_bars: int, policy: ConfidencePolicy) -> float:
    stale = 1.0 - min(max(gap_bars, 0), policy.max_gap_bars) / policy.max_gap_bars
    return min(max(present_fraction, 0.0), 1.0) * stale


def accuracy_weight(hits: int, n: int, policy: ConfidencePolicy) -> float:
    shrunk = (hits + policy.prior_accuracy * policy.prior_weight) / (n + policy.prior_weight)
    return min(1.0, shrunk / policy.accuracy_reference)


def score(
    model_confidence: float,
    *,
    sigma: float,
    sigma_ref: float,
    present_fraction: float,
    gap_bars: int,
    hits: int,
    resolved: int,
    policy: ConfidencePolicy,
) -> ConfidenceParts:
    """The confidence of one prediction (see the module docstring for the formula)."""
    return ConfidenceParts(
        model=min(max(float(model_confidence), 0.0), 1.0),
        volatility_factor=volatility_factor(sigma, sigma_ref, policy),
        quality_factor=quality_factor(present_fraction, gap_bars, policy),
        accuracy_weight=accuracy_weight(hits, resolved, policy),
    )


class VolatilityReference:
    """Slow EWMA of sigma: the symbol's normal volatility level."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.value = math.nan

    def update(self, sigma: float) -> float:
        if sigma > 0 and not math.isnan(sigma):
            if math.isnan(self.value):
                self.value = sigma
            else:
                self.value += self.alpha * (sigma - self.value)
        return self.value
