"""The gate's failure policy: what is quarantined, what is only a warning, when a batch fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class GatePolicy:
    """How the quality gate treats a batch.

    Row rules (nulls, prices, OHLC consistency, keys, order, alignment, future or unclosed
    candles, unparseable values) always send the offending ROW to quarantine; the rest of the
    batch is merged. The batch as a whole FAILS (``GateResult.success`` is False) when the
    rows quarantined by failure-counting rules exceed
    ``max(allowed_bad_rows, max_bad_fraction * rows_in)``, or when its columns do not match
    the table (then every row is quarantined).

    Attributes:
        max_bad_fraction: share of a batch that may be quarantined before the batch fails.
        allowed_bad_rows: bad rows tolerated regardless of the fraction (small batches).
        quarantine_batch_on_failure: when the batch fails, also quarantine its passing rows
            instead of merging them (default: merge them; the failure is reported anyway).
        extra_columns: ``"quarantine"`` quarantines a batch with columns the table does not
            have (schema drift); ``"drop"`` drops them and records a warning.
        max_future_skew_s: clock skew tolerated before a timestamp counts as in the future.
        reject_unclosed_candles: quarantine candles whose close time is after now. Such rows
            do not count towards failing the batch: the head of a live fetch is expected to
            be unclosed, and it is fetched again once closed.
        extreme_return_sigmas: |log return| above this many rolling sigmas is flagged.
        extreme_return_window: bars in the rolling sigma (previous bars only).
        extreme_return_min_periods: returns needed before sigma is trusted.
        extreme_return_action: ``"warn"`` (default: row merged, warning reported) or
            ``"quarantine"``.
        max_gap_fraction: gaps (missing bars / expected bars) above this share are reported as
            above threshold; gaps are warnings, never failures (exchanges skip quiet minutes).
        empty_batch_fails: whether an empty batch fails (default: recorded, warned, not failed).
    """

    max_bad_fraction: float = 0.01
    allowed_bad_rows: int = 0
    quarantine_batch_on_failure: bool = False
    extra_columns: Literal["quarantine", "drop"] = "quarantine"
    max_future_skew_s: float = 5.0
    reject_unclosed_candles: bool = True
    extreme_return_sigmas: float = 12.0
    extreme_return_window: int = 120
    extreme_return_min_periods: int = 30
    extreme_return_action: Literal["warn", "quarantine"] = "warn"
    max_gap_fraction: float = 0.05
    empty_batch_fails: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        if self.allowed_bad_rows < 0:
            raise ValueError(f"allowed_bad_rows must be >= 0, got {self.allowed_bad_rows}")
        if self.extreme_return_sigmas <= 0:
            raise ValueError("extreme_return_sigmas must be > 0")
        if self.extreme_return_window < 2 or self.extreme_return_min_periods < 2:
            raise ValueError("extreme_return_window and extreme_return_min_periods must be >= 2")
        if not 0.0 <= self.max_gap_fraction <= 1.0:
            raise ValueError(f"max_gap_fraction must be in [0, 1], got {self.max_gap_fraction}")
        if self.extra_columns not in ("quarantine", "drop"):
            raise ValueError(
                f"extra_columns must be 'quarantine' or 'drop', got {self.extra_columns!r}"
            )
        if self.extreme_return_action not in ("warn", "quarantine"):
            raise ValueError("extreme_return_action must be 'warn' or 'quarantine'")
