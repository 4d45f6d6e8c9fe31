"""Rules that need order or context, or that GX's range checks miss (+inf passes ``> 0``),
computed with polars into columns GX then asserts.

Each function takes the typed frame from ``expectations.coerce`` (with ``_row``, the input
row number) and returns it with boolean rule columns (True = the row passes) and, for
candles, ``missing_bars_before`` and per-series gap statistics.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

import numpy as np
import polars as pl

from expectations.policy import GatePolicy
from expectations.specs import TableSpec, finite_flag

_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


def timeframe_ms(timeframe: str) -> int | None:
    """Milliseconds in a timeframe like ``1m``/``15m``/``1h``/``1d``; None when unknown."""
    if len(timeframe) < 2 or timeframe[-1] not in _UNIT_MS or not timeframe[:-1].isdigit():
        return None
    amount = int(timeframe[:-1])
    return amount * _UNIT_MS[timeframe[-1]] if amount > 0 else None


@dataclass(frozen=True)
class SeriesGaps:
    series: tuple[str, ...]
    bars_present: int
    gaps: int  # holes (runs of missing bars)
    missing_bars: int

    @property
    def missing_fraction(self) -> float:
        expected = self.bars_present + self.missing_bars
        return self.missing_bars / expected if expected else 0.0


def _tf_ms_expr() -> pl.Expr:
    parts = pl.col("timeframe").str.extract_groups(r"^([1-9][0-9]*)([mhd])$")
    unit = parts.struct.field("2").replace_strict(
        {k: v for k, v in _UNIT_MS.items()}, default=None, return_dtype=pl.Int64
    )
    return (parts.struct.field("1").cast(pl.Int64, strict=False) * unit).alias("_tf_ms")


def _finite(columns: tuple[str, ...]) -> list[pl.Expr]:
    """A ``finite_flag`` column per column, False only for +/-inf. NaN and null stay True:
    the not-null rule reports them, and one bad value should not be counted twice."""
    return [pl.col(c).is_infinite().not_().fill_null(True).alias(finite_flag(c)) for c in columns]


def _key_unique(frame: pl.DataFrame, key: list[str], values: list[str]) -> pl.Series:
    """False for all but the first of identical copies of a key, and for every conflicting copy."""
    valid = pl.all_horizontal(pl.col(k).is_not_null() for k in key)
    content = pl.struct(values).hash() if values else pl.lit(0)
    flags = frame.select(
        pl.when(~valid)
        .then(True)
        .when(pl.len().over(key) == 1)
        .then(True)
        .when(content.n_unique().over(key) == 1)
        .then(pl.col("_row") == pl.col("_row").min().over(key))
        .otherwise(False)
        .alias("key_unique")
    )
    return flags.to_series()


def _longest_increasing(values: np.ndarray) -> np.ndarray:
    """Mask of one longest strictly increasing subsequence (O(n log n))."""
    tails: list[int] = []
    tail_index: list[int] = []
    parent = np.full(len(values), -1, dtype=np.int64)
    for i, v in enumerate(values.tolist()):
        pos = bisect_left(tails, v)
        if pos == len(tails):
            tails.append(v)
            tail_index.append(i)
        else:
            tails[pos] = v
            tail_index[pos] = i
        parent[i] = tail_index[pos - 1] if pos > 0 else -1
    keep = np.zeros(len(values), dtype=bool)
    i = tail_index[-1] if tail_index else -1
    while i >= 0:
        keep[i] = True
        i = int(parent[i])
    return keep


def _ts_increasing(frame: pl.DataFrame, series: list[str], eligible: pl.Series) -> pl.Series:
    """False for the fewest rows whose removal leaves ts strictly increasing per series."""
    ok = np.ones(frame.height, dtype=bool)
    sub = frame.filter(eligible).select(["_row", *series, pl.col("ts").dt.epoch("ms").alias("_ts")])
    if sub.height == 0:
        return pl.Series("ts_increasing", ok)
    # fast path: already strictly increasing within every series
    diffs = sub.select((pl.col("_ts").diff().over(series) > 0).fill_null(True).all()).item()
    if diffs:
        return pl.Series("ts_increasing", ok)
    for _, group in sub.group_by(series, maintain_order=True):
        rows = group["_row"].to_numpy()
        keep = _longest_increasing(group["_ts"].to_numpy())
        ok[rows[~keep]] = False
    return pl.Series("ts_increasing", ok)


def _tf_ms(frame: pl.DataFrame) -> pl.Expr:
    """``_tf_ms`` of every row, parsed once per distinct timeframe (a batch has a few)."""
    names = frame["timeframe"].drop_nulls().unique()
    parsed = pl.DataFrame({"timeframe": names}).select(_tf_ms_expr()).to_series()
    return (
        pl.col("timeframe")
        .replace_strict(names, parsed, default=None, return_dtype=pl.Int64)
        .alias("_tf_ms")
    )


def _run_starts(frame: pl.DataFrame, columns: list[str]) -> pl.Series:
    """True on the first row and on each row whose ``columns`` differ from the row before."""
    return frame.select(
        (
            pl.any_horizontal(pl.col(c).ne_missing(pl.col(c).shift(1)) for c in columns)
            | (pl.int_range(pl.len()) == 0)
        ).alias("_start")
    ).to_series()


def _in_runs(frame: pl.DataFrame, series: list[str], starts: pl.Series) -> bool:
    """Whether each series' rows are one run (consecutive rows) with ``_ts`` strictly
    increasing: the shape of a batch that holds one fetch after another. Then the rows are
    already in series and time order, up to the order of the series."""
    if frame.height == 0:
        return True
    heads = frame.filter(starts).select(series)
    if heads.is_duplicated().any():
        return False
    rising = frame.select(((pl.col("_ts") - pl.col("_ts").shift(1)) > 0).fill_null(False))
    return bool((rising.to_series() | starts).all())


def derive_candles(
    frame: pl.DataFrame, spec: TableSpec, policy: GatePolicy, now_ms: int
) -> tuple[pl.DataFrame, list[SeriesGaps], int]:
    """Rule columns for candles; also gap statistics per series and the extreme-return count.

    A batch whose series come one after another, each in time order and with every key
    present (what a fetch gives), has no repeated key and no row out of order: the key and
    order rules pass every row without grouping, and the return and gap columns are computed
    on the rows as they are (one sort by series and time otherwise)."""
    key, series = list(spec.key), list(spec.series)
    skew_ms = int(policy.max_future_skew_s * 1000)
    prices = ["open", "high", "low", "close"]
    frame = frame.with_columns(_tf_ms(frame), pl.col("ts").dt.epoch("ms").alias("_ts"))
    starts = _run_starts(frame, series)
    ordered_keys = all(frame[k].null_count() == 0 for k in key) and _in_runs(frame, series, starts)
    frame = frame.with_columns(
        (
            pl.lit(True).alias("key_unique")
            if ordered_keys
            else _key_unique(frame, key, [*prices, "volume"])
        ),
        (pl.col("_tf_ms").is_not_null() | pl.col("timeframe").is_null()).alias("timeframe_known"),
        (pl.col("_ts").is_null() | (pl.col("_ts") <= now_ms + skew_ms)).alias("ts_not_future"),
        ((pl.col("_ts") + pl.col("_tf_ms") <= now_ms + skew_ms).fill_null(True)).alias(
            "candle_closed"
        ),
        ((pl.col("_ts") % pl.col("_tf_ms")) == 0).fill_null(True).alias("ts_aligned"),
        *_finite(spec.finite_columns),
    )
    if ordered_keys:  # every key present and distinct, ts increasing in each series
        frame = frame.with_columns(pl.lit(True).alias("ts_increasing"))
    else:
        valid_key = frame.select(
            pl.all_horizontal(pl.col(k).is_not_null() for k in key)
        ).to_series()
        frame = frame.with_columns(_ts_increasing(frame, series, valid_key & frame["key_unique"]))

    clean = frame.select(
        pl.all_horizontal(
            *(pl.col(k).is_not_null() for k in key),
            *((pl.col(p) > 0) & pl.col(p).is_finite() for p in prices),
            "key_unique",
            "ts_increasing",
            "ts_aligned",
            "timeframe_known",
        ).fill_null(False)
    ).to_series()
    ordered = (
        frame.with_row_index("_pos")
        .filter(clean)
        .select(["_pos", *series, "_ts", "_tf_ms", "close"])
    )
    sub_starts = _run_starts(ordered, series)
    if not _in_runs(ordered, series, sub_starts):
        ordered = ordered.sort([*series, "_ts"])
        sub_starts = _run_starts(ordered, series)
    # each series is one run of rows in time order now: the previous bar is the row before,
    # except on a run's first row
    first = pl.col("_start")

    def previous(value: pl.Expr) -> pl.Expr:
        return pl.when(~first).then(value.shift(1))

    ordered = (
        ordered.with_columns(sub_starts, sub_starts.cum_sum().alias("_run"))
        .with_columns(
            (pl.col("close").log() - previous(pl.col("close").log())).alias("_ret"),
            ((pl.col("_ts") - previous(pl.col("_ts"))) // pl.col("_tf_ms") - 1)
            .fill_null(0)
            .alias("missing_bars_before"),
        )
        .with_columns(
            pl.col("_ret")
            .rolling_std(
                policy.extreme_return_window, min_samples=policy.extreme_return_min_periods
            )
            .shift(1)
            .over("_run")
            .alias("_sigma")
        )
        .with_columns(
            (
                (pl.col("_sigma") <= 1e-12)
                | (pl.col("_ret").abs() <= policy.extreme_return_sigmas * pl.col("_sigma"))
            )
            .fill_null(True)
            .alias("return_within_sigma")
        )
    )
    positions = ordered["_pos"].to_numpy()
    missing = np.zeros(frame.height, dtype=np.int64)
    missing[positions] = ordered["missing_bars_before"].to_numpy()
    within = np.ones(frame.height, dtype=bool)
    within[positions] = ordered["return_within_sigma"].to_numpy()
    frame = frame.with_columns(
        pl.Series("missing_bars_before", missing), pl.Series("return_within_sigma", within)
    )
    gaps = [
        SeriesGaps(
            series=tuple(row[c] for c in series),
            bars_present=row["present"],
            gaps=row["gaps"],
            missing_bars=row["missing"],
        )
        for row in ordered.group_by("_run", maintain_order=True)
        .agg(
            *(pl.col(c).first() for c in series),
            pl.len().alias("present"),
            (pl.col("missing_bars_before") > 0).sum().alias("gaps"),
            pl.col("missing_bars_before").sum().alias("missing"),
        )
        .iter_rows(named=True)
    ]
    extreme = int((~ordered["return_within_sigma"]).sum())
    return frame, gaps, extreme


def derive_order_books(
    frame: pl.DataFrame, spec: TableSpec, policy: GatePolicy, now_ms: int
) -> pl.DataFrame:
    key, series = list(spec.key), list(spec.series)
    skew_ms = int(policy.max_future_skew_s * 1000)
    sides = ["bid_prices", "bid_sizes", "ask_prices", "ask_sizes"]

    def all_elements(column: str, expr: pl.Expr) -> pl.Expr:
        return pl.col(column).list.eval(expr).list.all()

    frame = frame.with_columns(
        pl.all_horizontal(
            *(pl.col(c).is_not_null() for c in sides),
            pl.col("bid_prices").list.len() == pl.col("bid_sizes").list.len(),
            pl.col("ask_prices").list.len() == pl.col("ask_sizes").list.len(),
            pl.col("bid_prices").list.len() > 0,
            pl.col("ask_prices").list.len() > 0,
        )
        .fill_null(False)
        .alias("levels_parse"),
        pl.all_horizontal(
            all_elements(c, (pl.element() > 0) & pl.element().is_finite()).fill_null(True)
            for c in ("bid_prices", "ask_prices")
        ).alias("prices_positive"),
        pl.all_horizontal(
            all_elements(c, (pl.element() > 0) & pl.element().is_finite()).fill_null(True)
            for c in ("bid_sizes", "ask_sizes")
        ).alias("sizes_positive"),
        pl.all_horizontal(
            all_elements("bid_prices", pl.element().diff().drop_nulls() < 0).fill_null(True),
            all_elements("ask_prices", pl.element().diff().drop_nulls() > 0).fill_null(True),
        ).alias("levels_sorted"),
        pl.col("bid_prices").list.first().alias("best_bid"),
        pl.col("ask_prices").list.first().alias("best_ask"),
        (pl.col("ts").is_null() | (pl.col("ts").dt.epoch("ms") <= now_ms + skew_ms)).alias(
            "ts_not_future"
        ),
    )
    frame = frame.with_columns(_key_unique(frame, key, sides))
    valid_key = frame.select(pl.all_horizontal(pl.col(k).is_not_null() for k in key)).to_series()
    return frame.with_columns(_ts_increasing(frame, series, valid_key & frame["key_unique"]))


def derive_trades(
    frame: pl.DataFrame, spec: TableSpec, policy: GatePolicy, now_ms: int
) -> pl.DataFrame:
    skew_ms = int(policy.max_future_skew_s * 1000)
    notional = pl.col("price") * pl.col("amount")
    frame = frame.with_columns(
        (pl.col("ts").is_null() | (pl.col("ts").dt.epoch("ms") <= now_ms + skew_ms)).alias(
            "ts_not_future"
        ),
        ((pl.col("cost") - notional).abs() <= 1e-3 * notional.abs())
        .fill_null(True)
        .alias("cost_consistent"),
        *_finite(spec.finite_columns),
    )
    return frame.with_columns(
        _key_unique(frame, list(spec.key), ["ts", "side", "price", "amount", "cost"])
    )
