"""The quality suites of funding_rates, mark_candles and open_interest, through the real gate
(Great Expectations): bad rows go to the quarantine with the rule that caught them, the rest
is merged on the table's key."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from expectations.gate import gate_and_merge
from pipelines.sources.base import TS

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
H = 3_600_000
NOW = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)


def _series(n: int, step: int, offset: int = 0, timeframe: str = "1h") -> dict[str, object]:
    return {
        "exchange": ["binanceusdm"] * n,
        "symbol": ["XRP/USDT:USDT"] * n,
        "timeframe": [timeframe] * n,
        "ts": pa.array([T0 + offset + i * step for i in range(n)], TS),
    }


def _quarantined(lake, table: str) -> dict[str, int]:
    rows = lake.execute(
        "SELECT expectation, count(*) FROM quarantine WHERE table_name = ? GROUP BY ALL", [table]
    ).fetchall()
    return dict(rows)


def test_funding_rates_suite(lake, settings) -> None:
    cols = _series(6, 8 * H, offset=17, timeframe="8h")  # stamped 17 ms past the hour
    cols["funding_rate"] = [0.0001, -0.0002, float("inf"), 0.3, 0.0001, 0.0002]
    batch = pa.table(cols)
    # the last row repeats the fifth's key with another rate: both are refused
    batch = batch.set_column(
        3, "ts", pa.array([*batch["ts"].to_pylist()[:5], T0 + 17 + 32 * H], TS)
    )
    result = gate_and_merge(lake, "funding_rates", batch, settings=settings, now=NOW)
    assert result.rows_merged == 2
    assert result.rows_quarantined == 4
    assert _quarantined(lake, "funding_rates") == {
        "finite,funding_rate_bounded": 1,  # +inf: not finite, and above the bound
        "funding_rate_bounded": 1,
        "key_unique": 2,
    }
    assert lake.execute("SELECT count(*) FROM funding_rates").fetchone() == (2,)


def test_mark_candles_suite_accepts_missing_volume(lake, settings) -> None:
    cols = _series(4, 8 * H, timeframe="8h")
    cols |= {
        "open": [1.0, 1.0, 1.0, 1.0],
        "high": [1.1, 1.1, 0.5, 1.1],  # the third: high below low
        "low": [0.9, 0.9, 0.9, 0.9],
        "close": [1.0, 1.0, 1.0, 1.0],
        "volume": pa.array([None] * 4, pa.float64()),
    }
    result = gate_and_merge(lake, "mark_candles", pa.table(cols), settings=settings, now=NOW)
    assert (result.rows_merged, result.rows_quarantined) == (3, 1)
    assert set(_quarantined(lake, "mark_candles")) == {"ohlc_consistent"}


def test_open_interest_suite(lake, settings) -> None:
    cols = _series(4, H)
    cols["open_interest"] = [1e6, -5.0, 1e6, 1e6]
    cols["open_interest_value"] = [5e5, 5e5, None, 5e5]  # the value is optional
    batch = pa.table(cols)
    batch = batch.set_column(3, "ts", pa.array([T0, T0 + H, T0 + 2 * H, T0 + 3 * H + 1], TS))
    result = gate_and_merge(lake, "open_interest", batch, settings=settings, now=NOW)
    assert (result.rows_merged, result.rows_quarantined) == (2, 2)
    assert _quarantined(lake, "open_interest") == {"non_negative": 1, "ts_aligned": 1}
    # idempotent: the same batch again merges the same rows and adds no quarantine rows
    again = gate_and_merge(lake, "open_interest", batch, settings=settings, now=NOW)
    assert again.rows_merged == 2
    assert lake.execute("SELECT count(*) FROM open_interest").fetchone() == (2,)
    assert lake.execute(
        "SELECT count(*) FROM quarantine WHERE table_name = 'open_interest'"
    ).fetchone() == (2,)
