"""Feedback: resolve each prediction's outcome after its horizon; rolling accuracy and F1.

Outcome rule (the label rule of ``pipelines.labels``, with data known only after the horizon):
``r = close[t+h] / close[t] - 1`` over the next ``h`` candles of the symbol, threshold
``thr = max(threshold_scale x sigma_t x sqrt(h), min_threshold_fraction)`` with sigma_t the
std of one-bar log returns over ``vol_window_bars`` up to t (known at prediction time): ``buy``
when r > thr, ``sell`` when r < -thr, else ``hold``.

Rolling metrics cover the last ``window`` resolved predictions of the CURRENT model (reset on a
model swap); fallback (RSI) predictions are resolved and stored but not counted.

Degradation: when rolling accuracy stays below ``degrade_below`` for ``patience`` consecutive
resolutions (with at least ``min_resolved``), ``on_degraded(reason)`` is called — at most once
per ``cooldown_s`` (wall clock). The Prefect flow passes a callback that emits the
``tradeloop.model.degraded`` event (the retrain deployment's trigger).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CLASSES = ("buy", "hold", "sell")


@dataclass(frozen=True, slots=True)
class FeedbackConfig:
    window: int = 200
    threshold_scale: float = 0.5
    min_threshold_fraction: float = 0.0
    vol_window_bars: int = 60
    degrade_below: float = 0.45
    patience: int = 20
    min_resolved: int = 50
    cooldown_s: float = 6 * 3600.0


@dataclass
class Pending:
    symbol: str
    ts_ms: int
    model_id: str
    predicted: str
    close: float
    threshold_fraction: float
    horizon_bars: int
    bars_left: int
    counted: bool  # a model prediction (counts toward rolling metrics)
    row: dict[str, Any] | None = None  # the stored prediction row (rewritten with the outcome)


@dataclass(frozen=True, slots=True)
class Resolved:
    symbol: str
    ts_ms: int
    model_id: str
    predicted: str
    outcome: str
    outcome_return: float
    row: dict[str, Any] | None = None


def outcome_class(r: float, threshold: float) -> str:
    if r > threshold:
        return "buy"
    if r < -threshold:
        return "sell"
    return "hold"


def macro_f1(pairs: list[tuple[str, str]]) -> float:
    f1s = []
    for c in CLASSES:
        tp = sum(1 for p, a in pairs if p == c and a == c)
        fp = sum(1 for p, a in pairs if p == c and a != c)
        fn = sum(1 for p, a in pairs if p != c and a == c)
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s) if f1s else math.nan


@dataclass
class Feedback:
    config: FeedbackConfig
    on_degraded: Callable[[str], None] | None = None
    clock: Callable[[], float] = time.time
    pending: dict[str, deque[Pending]] = field(default_factory=dict)
    recent: deque[tuple[str, str]] = field(default_factory=deque)
    below_streak: int = 0
    last_trigger_s: float = -math.inf
    triggers: int = 0
    # hits in ``recent``, kept as pairs enter and leave it: ``hits`` is read every bar, and
    # summing a window of hundreds each time was the loop's largest cost
    _hits: int = field(default=0, init=False, repr=False)

    def threshold(self, sigma: float, horizon: int) -> float:
        c = self.config
        if not sigma > 0:
            return math.nan
        return max(c.threshold_scale * sigma * math.sqrt(horizon), c.min_threshold_fraction)

    def add(self, p: Pending) -> None:
        self.pending.setdefault(p.symbol, deque()).append(p)

    def on_bar(self, symbol: str, close: float) -> list[Resolved]:
        """Count one new candle of ``symbol``; resolve the predictions whose horizon ended."""
        q = self.pending.get(symbol)
        out: list[Resolved] = []
        if not q:
            return out
        for p in q:
            p.bars_left -= 1
        while q and q[0].bars_left <= 0:
            p = q.popleft()
            r = close / p.close - 1.0
            if math.isnan(p.threshold_fraction):
                continue  # no volatility at prediction time: cannot be judged
            res = Resolved(
                p.symbol,
                p.ts_ms,
                p.model_id,
                p.predicted,
                outcome_class(r, p.threshold_fraction),
                r,
                p.row,
            )
            out.append(res)
            if p.counted:
                self.recent.append((p.predicted, res.outcome))
                self._hits += p.predicted == res.outcome
                while len(self.recent) > self.config.window:
                    old_predicted, old_outcome = self.recent.popleft()
                    self._hits -= old_predicted == old_outcome
        return out

    @property
    def resolved(self) -> int:
        return len(self.recent)

    @property
    def hits(self) -> int:
        return self._hits

    @property
    def accuracy(self) -> float:
        return self.hits / len(self.recent) if self.recent else math.nan

    @property
    def f1(self) -> float:
        return macro_f1(list(self.recent))

    def reset_model(self) -> None:
        """A new model: its rolling metrics start empty (pending ones resolve uncounted)."""
        self.recent.clear()
        self._hits = 0
        self.below_streak = 0
        for q in self.pending.values():
            for p in q:
                p.counted = False

    def check_degradation(self) -> str | None:
        """Call after resolutions; returns the trigger reason when retraining was requested."""
        c = self.config
        if self.resolved < c.min_resolved:
            self.below_streak = 0
            return None
        acc = self.accuracy
        self.below_streak = self.below_streak + 1 if acc < c.degrade_below else 0
        if self.below_streak < c.patience:
            return None
        now = self.clock()
        if now - self.last_trigger_s < c.cooldown_s:
            return None
        self.last_trigger_s = now
        self.triggers += 1
        reason = (
            f"rolling accuracy {acc:.3f} < {c.degrade_below} for {self.below_streak} resolutions "
            f"(F1 {self.f1:.3f}, n={self.resolved})"
        )
        if self.on_degraded is not None:
            self.on_degraded(reason)
        return reason

    def to_dict(self) -> dict[str, object]:
        return {
            "pending": [
                [
                    p.symbol,
                    p.ts_ms,
                    p.model_id,
                    p.predicted,
                    p.close,
                    p.threshold_fraction,
                    p.horizon_bars,
                    p.bars_left,
                    p.counted,
                    p.row,
                ]
                for q in self.pending.values()
                for p in q
            ],
            "recent": [list(x) for x in self.recent],
            "below_streak": self.below_streak,
            "last_trigger_s": self.last_trigger_s if math.isfinite(self.last_trigger_s) else None,
        }

    def load(self, data: dict[str, object]) -> None:
        self.pending = {}
        for row in data["pending"]:  # type: ignore[attr-defined]
            s, ts, mid, pred, close, thr, h, left, counted, stored = row
            self.add(
                Pending(
                    s,
                    int(ts),
                    mid,
                    pred,
                    float(close),
                    math.nan if thr is None else float(thr),
                    int(h),
                    int(left),
                    bool(counted),
                    stored,
                )
            )
        self.recent = deque((a, b) for a, b in data["recent"])  # type: ignore[attr-defined]
        self._hits = sum(1 for p, a in self.recent if p == a)
        self.below_streak = int(data["below_streak"])  # type: ignore[call-overload]
        last = data.get("last_trigger_s")
        self.last_trigger_s = -math.inf if last is None else float(last)  # type: ignore[arg-type]
