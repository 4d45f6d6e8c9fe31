"""Real candle files loaded as the contract's frames, and how feature tables are compared."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from pipelines.features import feature_columns
from tests.support.data import REAL_CANDLE_FILES

CANDLE_FILES = {
    "UNITTEST_BTC-1m.feather": ("BTC/USDT", "1m"),
    "ETH_BTC-5m.feather": ("ETH/BTC", "5m"),
    "LTC_BTC-5m.feather": ("LTC/BTC", "5m"),
    "XRP_ETH-1m.feather": ("XRP/ETH", "1m"),
    "XRP_ETH-5m.feather": ("XRP/ETH", "5m"),
}
assert sorted(CANDLE_FILES) == REAL_CANDLE_FILES, "a real candle file has no symbol/timeframe here"


def load_candles(
    path: Path, symbol: str, timeframe: str, exchange: str = "binance"
) -> pl.DataFrame:
    return pl.read_ipc(path).select(
        pl.lit(exchange).alias("exchange"),
        pl.lit(symbol).alias("symbol"),
        pl.lit(timeframe).alias("timeframe"),
        pl.col("date").dt.cast_time_unit("ms").dt.convert_time_zone("UTC").alias("ts"),
        "open",
        "high",
        "low",
        "close",
        "volume",
    )


def load_trades(path: Path) -> pl.DataFrame:
    """A trades file (``timestamp`` in epoch ms, ``side``, ``amount``) as the contract's frame."""
    return pl.read_ipc(path).select(
        pl.from_epoch(pl.col("timestamp"), time_unit="ms").dt.replace_time_zone("UTC").alias("ts"),
        "side",
        "amount",
    )


def stored_features(con: duckdb.DuckDBPyConnection, symbol: str) -> pl.DataFrame:
    """The stored feature rows of ``symbol`` by ``ts``, without ``ingested_at``."""
    return pl.from_arrow(
        con.execute(
            "SELECT * EXCLUDE (ingested_at) FROM features WHERE symbol = ? ORDER BY ts", [symbol]
        ).fetch_arrow_table()
    )  # type: ignore[return-value]


# An incremental rebuild equals a full one to rounding only: polars rolling sums accumulate
# from the first row they see and recursive indicators forget their seed geometrically (to
# SEED_WEIGHT = 1e-13), so a later starting row changes the last bits. Measured on
# ETH_BTC-5m: at most 4e-12 relative (3e-16 absolute near 0).
REBUILD_RTOL = 1e-11
REBUILD_ATOL = 1e-15
# Identity of a stored feature row besides exchange and symbol, compared exactly.
KEY_COLUMNS = ("timeframe", "ts", "feature_set_version")


def feature_differences(
    got: pl.DataFrame,
    want: pl.DataFrame,
    *,
    rtol: float,
    atol: float = REBUILD_ATOL,
    columns: Sequence[str] | None = None,
) -> list[str]:
    """Where ``got`` differs from ``want`` in ``columns`` (default: every column of ``want``),
    each with its first differing row: the row count; non-numeric columns exactly; numeric ones
    with identical nulls and NaNs, other values to ``rtol * |want| + atol``. Empty when equal."""
    if got.height != want.height:
        return [f"rows: {got.height} != {want.height}"]
    columns = list(want.columns if columns is None else columns)
    missing = [c for c in columns if c not in got.columns or c not in want.columns]
    if missing:
        return [f"missing columns: {missing}"]
    problems = []
    for col in columns:
        x, y = got.get_column(col), want.get_column(col)
        if x.dtype.is_numeric() and y.dtype.is_numeric():
            a, b = x.cast(pl.Float64), y.cast(pl.Float64)
            xf, yf = a.to_numpy(), b.to_numpy()  # nulls -> NaN
            same = (a.is_null() == b.is_null()).to_numpy() & np.isclose(
                xf, yf, rtol=rtol, atol=atol, equal_nan=True
            )
        else:
            same = np.array([p == q for p, q in zip(x.to_list(), y.to_list(), strict=True)])
        if not same.all():
            i = int(np.argmin(same))
            at = f" (ts {want['ts'][i]})" if "ts" in want.columns else ""
            problems.append(f"{col} at row {i}{at}: {x[i]!r} != {y[i]!r}")
    return problems


def assert_same_features(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Same rows, same keys, identical nulls (and NaNs) in every column, values equal to
    rounding (``REBUILD_RTOL``); names the first differing column and row."""
    problems = feature_differences(
        got,
        want,
        rtol=REBUILD_RTOL,
        atol=REBUILD_ATOL,
        columns=(*KEY_COLUMNS, "gap_bars", *feature_columns()),
    )
    assert not problems, "\n".join(problems)
