"""One candle checked by the quality gate's own candle rules, for the serving loop.

Live and replayed candles reach the serving loop one at a time and never pass the gate
(``expectations.gate``): a NaN close left RSI ``nan`` and the model's window incomplete for
good. The gate validates a batch with Great Expectations (seconds to import, about 0.3 s a
call); a serving step has microseconds. So this module does not restate the rules: it reads
``expectations.specs.candle_suite`` -- the same ``ExpectationDef`` list the gate sends to
GX -- and evaluates each definition on one row in plain Python:

* ``ExpectColumnValuesToNotBeNull``: null or NaN fails (pandas, which GX validates, reads
  NaN as missing);
* ``ExpectColumnValuesToBeBetween``: its ``min_value``/``max_value``/``strict_*`` arguments;
  a missing value passes (GX skips it);
* ``ExpectColumnPairValuesAToBeGreaterThanB``: ``A > B`` (``>=`` with ``or_equal``), a row
  with either value missing passes (``ignore_row_if``);
* ``ExpectColumnValuesToBeInSet`` over a derived flag: the flag for one row, as
  ``expectations.derive.derive_candles`` computes it for a batch (``DERIVED_FLAGS``).

Rules that need the other rows of a batch (``BATCH_ONLY_RULES``: key uniqueness, extreme
returns against a rolling sigma, gaps) are not per-candle; "ts strictly increasing within the
series" becomes "ts after the last accepted candle" (``last_ts_ms``). Warnings do not refuse a
candle (the gate merges such rows too); critical and hold rules do. A rule added to the suite
that this module cannot evaluate raises at the first check (and fails its test), so the two
cannot drift apart silently. A property test holds ``check_candle`` equal to the gate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from expectations.derive import _UNIT_MS
from expectations.policy import GatePolicy
from expectations.specs import CANDLES, ExpectationDef, candle_suite, finite_flag

# rules that judge a row against the rest of its batch; a single candle cannot fail them
BATCH_ONLY_RULES = frozenset({"key_unique", "extreme_return", "gaps"})


class CandleLike(Protocol):
    """What a candle needs to be checked (``trading.domain.Bar`` has it)."""

    @property
    def ts_ms(self) -> int: ...
    @property
    def open(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def close(self) -> float: ...
    @property
    def volume(self) -> float: ...


@dataclass(frozen=True)
class _Row:
    """One candle's values by column name, with what the derived flags need."""

    values: dict[str, Any]
    tf_ms: int | None
    last_ts_ms: int | None
    now_ms: int
    skew_ms: int


_TIMEFRAME = re.compile(r"([1-9][0-9]*)([mhd])")  # derive._tf_ms_expr's pattern


def _timeframe_ms(timeframe: str | None) -> int | None:
    """The timeframe in ms as the gate reads it (``derive._tf_ms_expr``); None: unknown."""
    m = _TIMEFRAME.fullmatch(timeframe) if timeframe is not None else None
    return int(m[1]) * _UNIT_MS[m[2]] if m else None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _flag_ts_not_future(r: _Row) -> bool:
    ts = r.values["ts"]
    return ts is None or ts <= r.now_ms + r.skew_ms


def _flag_candle_closed(r: _Row) -> bool:
    ts = r.values["ts"]
    return ts is None or r.tf_ms is None or ts + r.tf_ms <= r.now_ms + r.skew_ms


def _flag_ts_aligned(r: _Row) -> bool:
    ts = r.values["ts"]
    return ts is None or r.tf_ms is None or ts % r.tf_ms == 0


def _flag_timeframe_known(r: _Row) -> bool:
    return r.tf_ms is not None or r.values["timeframe"] is None


def _flag_ts_increasing(r: _Row) -> bool:
    ts = r.values["ts"]
    return ts is None or r.last_ts_ms is None or ts > r.last_ts_ms


def _finite(column: str) -> Callable[[_Row], bool]:
    def flag(r: _Row) -> bool:
        value = r.values[column]
        return value is None or not (isinstance(value, float) and math.isinf(value))

    return flag


# derive_candles' flag columns for one row (True = the row passes), by flag column name
DERIVED_FLAGS: dict[str, Callable[[_Row], bool]] = {
    "ts_not_future": _flag_ts_not_future,
    "candle_closed": _flag_candle_closed,
    "ts_aligned": _flag_ts_aligned,
    "timeframe_known": _flag_timeframe_known,
    "ts_increasing": _flag_ts_increasing,
    **{finite_flag(c): _finite(c) for c in CANDLES.finite_columns},
}

Check = Callable[[_Row], bool]


def _compile(d: ExpectationDef) -> Check:
    """The definition as a predicate on one row (True = passes)."""
    kw = d.kwargs
    if d.expectation == "ExpectColumnValuesToNotBeNull":
        column = kw["column"]
        return lambda r: not _missing(r.values[column])
    if d.expectation == "ExpectColumnValuesToBeBetween":
        column = kw["column"]
        low, high = kw.get("min_value"), kw.get("max_value")
        strict_low, strict_high = kw.get("strict_min", False), kw.get("strict_max", False)

        def between(r: _Row) -> bool:
            v = r.values[column]
            if _missing(v):
                return True
            if low is not None and (v <= low if strict_low else v < low):
                return False
            return not (high is not None and (v >= high if strict_high else v > high))

        return between
    if d.expectation == "ExpectColumnPairValuesAToBeGreaterThanB":
        a, b, or_equal = kw["column_A"], kw["column_B"], kw.get("or_equal", False)
        if kw.get("ignore_row_if") != "either_value_is_missing":
            raise ValueError(f"candle rule {d.rule!r}: unsupported ignore_row_if")

        def greater(r: _Row) -> bool:
            x, y = r.values[a], r.values[b]
            if _missing(x) or _missing(y):
                return True
            return bool(x >= y if or_equal else x > y)

        return greater
    if d.expectation == "ExpectColumnValuesToBeInSet" and kw["column"] in DERIVED_FLAGS:
        flag, allowed = DERIVED_FLAGS[kw["column"]], set(kw["value_set"])
        return lambda r: flag(r) in allowed
    raise ValueError(
        f"candle rule {d.rule!r} ({d.expectation} on {d.gx_columns}) has no single-candle "
        "form in expectations.candle_check: add one, or list it in BATCH_ONLY_RULES"
    )


@lru_cache(maxsize=8)
def compiled_rules(policy: GatePolicy) -> tuple[tuple[ExpectationDef, Check], ...]:
    """The candle suite's refusing rules (critical and hold) as predicates on one candle."""
    return tuple(
        (d, _compile(d))
        for d in candle_suite(policy)
        if d.severity != "warning" and d.rule not in BATCH_ONLY_RULES
    )


def _show(value: Any) -> str:
    return repr(value)


def check_candle(
    candle: CandleLike,
    timeframe: str,
    last_ts_ms: int | None,
    now_ms: int,
    *,
    policy: GatePolicy | None = None,
) -> str | None:
    """Why the gate would refuse ``candle`` (the first failing rule's description and the
    values it saw), or None when it passes every per-candle rule of the candle suite.

    ``last_ts_ms``: open time of the last candle accepted for the series (None: the first);
    ``now_ms``: the wall clock in epoch ms, that the future and closed-candle rules judge
    against, with the policy's ``max_future_skew_s`` tolerance."""
    policy = policy or GatePolicy()
    ts = candle.ts_ms
    row = _Row(
        values={
            "exchange": "",  # a loop's candles all come from its one exchange and symbol
            "symbol": "",
            "timeframe": timeframe,
            "ts": None if ts is None else int(ts),
            "open": candle.open,
            "high": candle.high,
            "low": candle.low,
            "close": candle.close,
            "volume": candle.volume,
        },
        tf_ms=_timeframe_ms(timeframe),
        last_ts_ms=last_ts_ms,
        now_ms=now_ms,
        skew_ms=int(policy.max_future_skew_s * 1000),
    )
    for d, passes in compiled_rules(policy):
        if not passes(row):
            seen = ", ".join(f"{c}={_show(row.values[c])}" for c in d.columns if c in row.values)
            extra = f"; last accepted ts={last_ts_ms}" if d.rule == "ts_increasing" else ""
            return f"{d.rule}: {d.describe} ({seen}{extra})"
    return None


__all__ = ["BATCH_ONLY_RULES", "DERIVED_FLAGS", "CandleLike", "check_candle", "compiled_rules"]
