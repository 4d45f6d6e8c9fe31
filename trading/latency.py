"""Per-stage latency histograms of the serving loop (features, inference, decision, total).

Buckets are log-spaced from 1 us to ~16 s (8 per doubling, so a quantile read from the buckets
is within ~9 % of the true value); recording is O(1) and allocation-free. Quantiles are read
from the bucket upper bounds (a conservative estimate).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

STAGES = ("features", "inference", "decision", "total")
_PER_DOUBLING = 8
_MIN_US = 1.0
_N_BUCKETS = 24 * _PER_DOUBLING  # 1 us .. 2^24 us (~16.8 s)
BUCKET_UPPER_US = tuple(_MIN_US * 2 ** ((i + 1) / _PER_DOUBLING) for i in range(_N_BUCKETS))


def _bucket(us: float) -> int:
    if us <= _MIN_US:
        return 0
    i = math.ceil(math.log2(us / _MIN_US) * _PER_DOUBLING) - 1
    return min(max(i, 0), _N_BUCKETS - 1)


@dataclass
class LatencyHistogram:
    counts: list[int] = field(default_factory=lambda: [0] * _N_BUCKETS)
    total: int = 0
    sum_us: float = 0.0
    max_us: float = 0.0

    def record_us(self, us: float) -> None:
        self.counts[_bucket(us)] += 1
        self.total += 1
        self.sum_us += us
        if us > self.max_us:
            self.max_us = us

    def quantile_us(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (nan when empty)."""
        if self.total == 0:
            return math.nan
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return min(BUCKET_UPPER_US[i], self.max_us)
        return self.max_us

    @property
    def mean_us(self) -> float:
        return self.sum_us / self.total if self.total else math.nan

    def nonzero(self) -> list[tuple[float, int]]:
        return [(BUCKET_UPPER_US[i], c) for i, c in enumerate(self.counts) if c]

    def to_dict(self) -> dict[str, object]:
        return {
            "counts": {str(i): c for i, c in enumerate(self.counts) if c},
            "total": self.total,
            "sum_us": self.sum_us,
            "max_us": self.max_us,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LatencyHistogram:
        h = cls()
        counts = data.get("counts", {})
        assert isinstance(counts, dict)
        for k, v in counts.items():
            h.counts[int(k)] = int(v)
        h.total = int(data.get("total", 0))  # type: ignore[call-overload]
        h.sum_us = float(data.get("sum_us", 0.0))  # type: ignore[arg-type]
        h.max_us = float(data.get("max_us", 0.0))  # type: ignore[arg-type]
        return h


class LatencyRecorder:
    """One histogram per stage; ``with recorder.time("inference"): ...``."""

    def __init__(self, stages: tuple[str, ...] = STAGES) -> None:
        self.histograms = {s: LatencyHistogram() for s in stages}

    def record_ns(self, stage: str, ns: int) -> None:
        self.histograms[stage].record_us(ns / 1000.0)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        start = time.perf_counter_ns()
        try:
            yield
        finally:
            self.record_ns(stage, time.perf_counter_ns() - start)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            s: {
                "count": float(h.total),
                "p50_us": h.quantile_us(0.5),
                "p99_us": h.quantile_us(0.99),
                "max_us": h.max_us,
                "mean_us": h.mean_us,
            }
            for s, h in self.histograms.items()
        }

    def to_dict(self) -> dict[str, object]:
        return {s: h.to_dict() for s, h in self.histograms.items()}

    def load(self, data: dict[str, object]) -> None:
        for s, d in data.items():
            if isinstance(d, dict):
                self.histograms[s] = LatencyHistogram.from_dict(d)
