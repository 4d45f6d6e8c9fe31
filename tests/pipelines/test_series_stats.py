"""pipelines.collect.SeriesStats.summary: the line a collect or import prints per series says
why a series is not "ok": its error, or the gate's warnings when it only warned."""

from __future__ import annotations

import datetime as dt

from pipelines.collect import SeriesStats

NOW = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)


def _stats() -> SeriesStats:
    return SeriesStats("file", "file", "IMP/BTC", "1m", started_at=NOW, finished_at=NOW)


def test_an_ok_series_has_no_verdict() -> None:
    assert "[" not in _stats().summary()


def test_a_warning_names_the_gates_warnings_once_each() -> None:
    stats = _stats()
    stats.status = "warning"
    gap = "IMP/BTC 1m: 385 gaps, 544 missing bars (9.8% of expected bars)"
    stats.warnings += [gap, gap, "IMP/BTC 1m: 3 zero-volume bars"]
    assert stats.summary().endswith(f"[warning: {gap}; IMP/BTC 1m: 3 zero-volume bars]")


def test_a_failure_gives_its_message() -> None:
    stats = _stats()
    stats.status, stats.message = "failed", "candles_fail_rate 0.40 above 0.05"
    stats.warnings.append("a warning beside it")
    assert stats.summary().endswith("[failed: candles_fail_rate 0.40 above 0.05]")
