"""The gate's rule columns do not depend on how a batch's series are laid out (issue 16).

``derive_candles`` takes a short cut for a batch that holds one series after another, each in
time order (what a fetch gives): no grouping for the key and order rules, returns and gaps on
the rows as they are. Any other order goes the long way (sort by series and time). Both must
give every row the same flags, gaps and extreme-return count: here the same rows, with
random faults, are derived as they come and with the series interleaved at random (each
series' own order kept), then compared row by row.

A series' fingerprint (its validation id) is taken from a slice of the batch when its rows are
consecutive, else from the rows gathered: both must hash the same bytes.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pyarrow as pa
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from expectations.coerce import coerce
from expectations.derive import derive_candles
from expectations.gate import _fingerprint, _series_groups
from expectations.policy import GatePolicy
from expectations.specs import spec_for

SPEC = spec_for("candles")
START_MS = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
FAULTS = ["duplicate", "conflict", "swap", "off_grid", "nan", "spike", "gap", "null_symbol"]


def _series(symbol: str, n: int, rng: np.random.Generator) -> dict[str, list[object]]:
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, n)))
    return {
        "exchange": ["binance"] * n,
        "symbol": [symbol] * n,
        "timeframe": ["1m"] * n,
        "ts": [START_MS + i * 60_000 for i in range(n)],
        "open": close.tolist(),
        "high": (close * 1.001).tolist(),
        "low": (close * 0.999).tolist(),
        "close": close.tolist(),
        "volume": rng.uniform(1.0, 5.0, n).tolist(),
    }


def _fault(rows: dict[str, list[object]], kind: str, i: int) -> None:
    n = len(rows["ts"])
    i %= n
    if kind == "duplicate":  # an identical copy of a row, right after it
        for values in rows.values():
            values.insert(i + 1, values[i])
    elif kind == "conflict":  # another row with the same key and another close
        for name, values in rows.items():
            values.insert(i + 1, values[i] * 1.01 if name == "close" else values[i])  # type: ignore[operator]
    elif kind == "swap":
        j = (i + 2) % n
        rows["ts"][i], rows["ts"][j] = rows["ts"][j], rows["ts"][i]
    elif kind == "off_grid":
        rows["ts"][i] = int(rows["ts"][i]) + 7_000  # type: ignore[call-overload]
    elif kind == "nan":
        rows["close"][i] = float("nan")
    elif kind == "spike":
        rows["close"][i] = float(rows["close"][i]) * 3.0  # type: ignore[arg-type]
        rows["high"][i] = rows["close"][i]
    elif kind == "gap":
        for values in rows.values():
            del values[i]
    else:
        rows["symbol"][i] = None


def _batch(parts: list[dict[str, list[object]]]) -> pa.Table:
    columns = {k: [v for p in parts for v in p[k]] for k in parts[0]}
    return pa.table(
        {
            **{k: pa.array(columns[k], pa.string()) for k in ("exchange", "symbol", "timeframe")},
            "ts": pa.array(columns["ts"], pa.timestamp("ms", tz="UTC")),
            **{k: pa.array(columns[k], pa.float64()) for k in ("open", "high", "low", "close")},
            "volume": pa.array(columns["volume"], pa.float64()),
        }
    )


POLICY = GatePolicy(extreme_return_window=20, extreme_return_min_periods=5)
NOW_MS = START_MS + 10 * 86_400_000


def _derived(batch: pa.Table) -> tuple[pl.DataFrame, list[tuple[object, ...]], int]:
    frame, gaps, extreme = derive_candles(coerce(SPEC, batch).frame, SPEC, POLICY, NOW_MS)
    rows = sorted((g.series, g.bars_present, g.gaps, g.missing_bars) for g in gaps)
    return frame, rows, extreme


@hsettings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=4),
    faults=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3),
            st.sampled_from(FAULTS),
            st.integers(min_value=0, max_value=10_000),
        ),
        max_size=5,
    ),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_rule_columns_are_the_same_whatever_the_row_order(
    sizes: list[int], faults: list[tuple[int, str, int]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    parts = [_series(f"S{i}/USDT", n, rng) for i, n in enumerate(sizes)]
    for which, kind, i in faults:
        if which < len(parts) and len(parts[which]["ts"]) > 1:
            _fault(parts[which], kind, i)
    batch = _batch(parts)  # one series after another: the short cut when nothing is faulty
    # the series' rows interleaved at random, each series' own order kept (the long way)
    owner = np.concatenate([np.full(len(p["ts"]), i) for i, p in enumerate(parts)])
    rng.shuffle(owner)
    starts = np.concatenate([[0], np.cumsum([len(p["ts"]) for p in parts])])
    order = np.empty(len(owner), dtype=np.int64)
    for i in range(len(parts)):
        order[owner == i] = np.arange(starts[i], starts[i + 1])
    shuffled = batch.take(pa.array(order))

    as_given, gaps, extreme = _derived(batch)
    mixed, mixed_gaps, mixed_extreme = _derived(shuffled)
    # row k of the shuffled batch is row order[k] of the batch
    back = mixed.with_columns(pl.Series("_row", order)).sort("_row")
    assert back.columns == as_given.columns
    assert back.drop("_row").equals(as_given.drop("_row"))
    assert mixed_gaps == gaps
    assert mixed_extreme == extreme


@hsettings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=4),
    nulls=st.floats(min_value=0.0, max_value=0.5),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_a_series_hashes_the_same_sliced_or_gathered(
    sizes: list[int], nulls: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    chunks = []
    for i, n in enumerate(sizes):  # one chunk per series, as a fetch concatenates them
        parts = _series(f"S{i}/USDT", n, rng)
        table = _batch([parts])
        mask = rng.random(n) < nulls
        volume = pa.array(table["volume"].to_numpy(), mask=mask)
        chunks.append(table.set_column(8, "volume", volume))
    batch = pa.concat_tables(chunks)
    groups = _series_groups(coerce(SPEC, batch).frame, SPEC, whole=False)
    assert len(groups) == len(sizes)
    for group in groups:
        sliced = group.of(batch)
        assert sliced.num_rows == len(group.rows)
        assert _fingerprint(sliced) == _fingerprint(batch.take(pa.array(group.rows)))
