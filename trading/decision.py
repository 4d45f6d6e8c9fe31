"""Decisions: a target direction per bar from model probabilities, an external signal, or the
RSI rule (the fallback when there is no usable model, and a baseline in every report).

Every rule has a batch form (numpy, for the vectorized backtest) and an online form (one bar at
a time, for the event-driven backtest and the live loop); tests hold the two equal.

Target semantics: a decision's ``signal`` is the position wanted from the next bar's open on
(1 long, 0 flat, -1 short). A model's "hold" class, or a buy/sell below its threshold or below
the minimum confidence, keeps the previous target (no trade on a weak opinion).
"""

from __future__ import annotations

import math
import operator
from collections import deque
from dataclasses import dataclass

import numpy as np
import polars as pl

from trading.domain import Decision

BUY, HOLD, SELL = 0, 1, 2  # column order of model probabilities


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A buy (sell) needs p_buy (p_sell) to be the largest class, at least ``buy_fraction``
    (``sell_fraction``), and a confidence of at least ``min_confidence``."""

    buy_fraction: float = 0.5
    sell_fraction: float = 0.5
    min_confidence: float = 0.6

    def __post_init__(self) -> None:
        for name in ("buy_fraction", "sell_fraction", "min_confidence"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"Thresholds.{name}={v!r}: must be in [0, 1]")


# ---------------------------------------------------------------- model probabilities


def probability_event(
    p_buy: float, p_hold: float, p_sell: float, confidence: float, thresholds: Thresholds
) -> int | None:
    """+1 / -1 when the bar calls for a long / short, None when it keeps the previous target."""
    if confidence < thresholds.min_confidence:
        return None
    if p_buy >= p_hold and p_buy >= p_sell and p_buy > p_sell and p_buy >= thresholds.buy_fraction:
        return 1
    if p_sell >= p_hold and p_sell > p_buy and p_sell >= thresholds.sell_fraction:
        return -1
    return None


def signals_from_probabilities(
    probabilities: np.ndarray, confidence: np.ndarray | None, thresholds: Thresholds
) -> np.ndarray:
    """Batch form: (n, 3) [buy, hold, sell] probabilities -> int8 target per bar."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"probabilities must have shape (n, 3), got {p.shape}")
    conf = p.max(axis=1) if confidence is None else np.asarray(confidence, dtype=np.float64)
    pb, ph, ps = p[:, BUY], p[:, HOLD], p[:, SELL]
    ok = conf >= thresholds.min_confidence
    buy = ok & (pb >= ph) & (pb >= ps) & (pb > ps) & (pb >= thresholds.buy_fraction)
    sell = ok & ~buy & (ps >= ph) & (ps > pb) & (ps >= thresholds.sell_fraction)
    event = np.where(buy, 1.0, np.where(sell, -1.0, np.nan))
    return _ffill_events(event)


class ProbabilityDecider:
    """Online form of ``signals_from_probabilities`` (keeps the last target)."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self.target = 0

    def update(
        self, probabilities: tuple[float, float, float], confidence: float | None = None
    ) -> Decision:
        pb, ph, ps = probabilities
        conf = max(probabilities) if confidence is None else confidence
        event = probability_event(pb, ph, ps, conf, self.thresholds)
        if event is not None:
            self.target = event
        reason = "model" if event is not None else "model: keep (hold or below threshold)"
        return Decision(self.target, conf, 1.0, reason, (pb, ph, ps))


def model_event(
    probabilities: tuple[float, float, float],
    confidence: float,
    thresholds: Thresholds,
    *,
    expected_return: float | None = None,
    round_trip_cost: float = 0.0,
    allow_short: bool = False,
    target: int = 0,
) -> tuple[int | None, str]:
    """The serving path's model rule: (new target or None = keep, the reason that decided).

    Checked in this order, the first that applies decides (the reason names it):

    1. ``confidence < thresholds.min_confidence`` -> "model: confidence below gate";
    2. the hold class is the largest -> "model: hold class";
    3. buy / sell below its probability fraction -> "model: below threshold";
    4. with an edge estimate (``expected_return``, fraction): a long needs
       ``expected_return > round_trip_cost``, a short (``allow_short``) needs
       ``-expected_return > round_trip_cost``, else "model: edge below cost" (an opposite
       position is still left: the new target is flat). A sell without shorts only exits,
       which needs no edge. Without an estimate (None) this rule is skipped;
    5. "model: buy" / "model: sell".
    """
    pb, ph, ps = probabilities
    gate = thresholds.min_confidence
    if confidence < gate:
        return None, f"model: confidence below gate ({confidence:.3f} < {gate:.2f})"
    event = probability_event(pb, ph, ps, confidence, thresholds)
    if event is None:
        if ph >= pb and ph >= ps:
            return None, "model: hold class"
        return None, (
            f"model: below threshold (p_buy {pb:.3f}, p_sell {ps:.3f}; needs "
            f"{thresholds.buy_fraction:.2f} / {thresholds.sell_fraction:.2f})"
        )
    if expected_return is not None:
        edge = expected_return if event == 1 else -expected_return
        if (event == 1 or allow_short) and not edge > round_trip_cost:
            why = (
                f"model: edge below cost (expected {expected_return:+.4%}, round trip "
                f"{round_trip_cost:.4%})"
            )
            return (0 if target == -event else None), why
    return event, "model: buy" if event == 1 else "model: sell"


# ---------------------------------------------------------------- RSI rule


def rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    """RSI with Wilder smoothing as an EMA (alpha = 1/period) started at the first change.

    NaN for the first ``period`` bars (warm-up). Uses data up to and including each bar.
    """
    c = np.asarray(close, dtype=np.float64)
    n = c.size
    out = np.full(n, np.nan)
    if n < 2:
        return out
    delta = np.diff(c)
    gains = np.maximum(delta, 0.0)
    losses = np.maximum(-delta, 0.0)
    alpha = 1.0 / period
    frame = pl.DataFrame({"g": gains, "l": losses}).select(
        pl.col("g").ewm_mean(alpha=alpha, adjust=False),
        pl.col("l").ewm_mean(alpha=alpha, adjust=False),
    )
    ag, al = frame["g"].to_numpy(), frame["l"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 100.0 - 100.0 / (1.0 + ag / al)
    value = np.where(al == 0.0, np.where(ag == 0.0, 50.0, 100.0), value)
    out[1:] = value
    out[: min(period, n)] = np.nan
    return out


class OnlineRSI:
    """O(1) per bar; equals ``rsi`` (to float rounding)."""

    def __init__(self, period: int = 14) -> None:
        self.period = period
        self.alpha = 1.0 / period
        self.prev: float | None = None
        self.avg_gain = 0.0
        self.avg_loss = 0.0
        self.count = 0

    def update(self, close: float) -> float:
        if self.prev is None:
            self.prev = close
            return math.nan
        delta = close - self.prev
        self.prev = close
        gain, loss = max(delta, 0.0), max(-delta, 0.0)
        if self.count == 0:
            self.avg_gain, self.avg_loss = gain, loss
        else:
            self.avg_gain = (1.0 - self.alpha) * self.avg_gain + self.alpha * gain
            self.avg_loss = (1.0 - self.alpha) * self.avg_loss + self.alpha * loss
        self.count += 1
        if self.count < self.period:
            return math.nan
        if self.avg_loss == 0.0:
            return 50.0 if self.avg_gain == 0.0 else 100.0
        return 100.0 - 100.0 / (1.0 + self.avg_gain / self.avg_loss)


@dataclass(frozen=True, slots=True)
class RsiRule:
    """Go long when RSI < ``lower``; leave (or go short, with shorts) when RSI > ``upper``."""

    period: int = 14
    lower: float = 30.0
    upper: float = 70.0
    allow_short: bool = False


def rsi_confidence(value: float, rule: RsiRule) -> float:
    """How sure the RSI rule is: 0.5 at its band, rising linearly to 1.0 at the extreme.

    ``0.5 + 0.5 x min(1, distance past the band / room past the band)``, the room being
    ``lower`` below the lower band (RSI 0 is the extreme) and ``100 - upper`` above the upper
    one. Inside the band (no opinion) or in warm-up (NaN): 0.0. With the default 30/70 band and
    the 0.6 gate, a buy needs RSI < 24 and a sell RSI > 76.
    """
    if math.isnan(value):
        return 0.0
    if value < rule.lower:
        distance, room = rule.lower - value, rule.lower
    elif value > rule.upper:
        distance, room = value - rule.upper, 100.0 - rule.upper
    else:
        return 0.0
    return 0.5 + 0.5 * min(1.0, distance / room) if room > 0 else 1.0


def rsi_event(value: float, rule: RsiRule, min_confidence: float) -> tuple[int | None, float, str]:
    """The fallback's rule under the confidence gate: (new target or None = keep, the rule's
    confidence, the reason). Past the lower band -> long; past the upper band -> flat (short
    with ``allow_short``); an event whose ``rsi_confidence`` is below the gate is kept out."""
    conf = rsi_confidence(value, rule)
    if math.isnan(value):
        return None, conf, "fallback: rsi warm-up"
    if rule.lower <= value <= rule.upper:
        return None, conf, f"fallback: rsi {value:.2f} inside the band"
    if conf < min_confidence:
        return (
            None,
            conf,
            f"fallback: confidence below gate (rsi {value:.2f}, {conf:.3f} < {min_confidence:.2f})",
        )
    if value < rule.lower:
        return 1, conf, f"fallback: rsi buy (rsi {value:.2f}, confidence {conf:.3f})"
    target = -1 if rule.allow_short else 0
    return target, conf, f"fallback: rsi sell (rsi {value:.2f}, confidence {conf:.3f})"


def rsi_rule_signals(close: np.ndarray, rule: RsiRule = RsiRule()) -> np.ndarray:
    r = rsi(close, rule.period)
    event = np.where(
        r < rule.lower, 1.0, np.where(r > rule.upper, -1.0 if rule.allow_short else 0.0, np.nan)
    )
    return _ffill_events(event)


class RsiDecider:
    """Online form of ``rsi_rule_signals``: the fallback decision of the live loop."""

    def __init__(self, rule: RsiRule = RsiRule()) -> None:
        self.rule = rule
        self.rsi = OnlineRSI(rule.period)
        self.target = 0

    def update(self, close: float) -> Decision:
        value = self.rsi.update(close)
        if value < self.rule.lower:
            self.target = 1
        elif value > self.rule.upper:
            self.target = -1 if self.rule.allow_short else 0
        return Decision(self.target, 1.0, 1.0, f"rsi_rule rsi={value:.2f}")


# ---------------------------------------------------------------- volatility (for stops)


def rolling_volatility(close: np.ndarray, window: int = 20) -> np.ndarray:
    """Sample std of the last ``window`` log returns up to each bar (NaN in warm-up)."""
    c = np.asarray(close, dtype=np.float64)
    out = np.full(c.size, np.nan)
    if c.size <= window:
        return out
    r = np.diff(np.log(c))
    s = pl.Series(r).rolling_std(window_size=window, ddof=1).to_numpy()
    out[1:] = s
    return out


class OnlineVolatility:
    """Online form of ``rolling_volatility`` (same numbers to float rounding)."""

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self.prev: float | None = None
        self.returns: deque[float] = deque(maxlen=window)

    def update(self, close: float) -> float:
        if self.prev is not None:
            self.returns.append(math.log(close) - math.log(self.prev))
        self.prev = close
        if len(self.returns) < self.window:
            return math.nan
        mean = sum(self.returns) / self.window
        # the two-pass sum of squared deviations, the products summed in C (it runs twice a bar
        # in the serving loop); d * d may differ from d ** 2 in the last bit, nothing more
        d = [x - mean for x in self.returns]
        return math.sqrt(sum(map(operator.mul, d, d)) / (self.window - 1))


def _ffill_events(event: np.ndarray) -> np.ndarray:
    """Forward-fill a float array of events (NaN = keep); 0 before the first event."""
    idx = np.where(np.isnan(event), 0, np.arange(event.size))
    np.maximum.accumulate(idx, out=idx)
    filled = event[idx]
    filled = np.where(np.isnan(filled), 0.0, filled)
    return filled.astype(np.int8)
