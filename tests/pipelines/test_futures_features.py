"""The funding/basis features: batch == online (<= 1e-9) on the simulated perpetual, the basis
is the simulated premium, and no look-ahead (hypothesis): a bar's values do not change when
anything stamped at or after its close changes, in batch and online. (The same features
through the feature spec, with every other feature: tests/pipelines/features/
test_no_lookahead.py.)"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.futures_features import FEATURES, OnlineFuturesFeatures, futures_features
from pipelines.importers import read_candles, read_funding_rates, read_mark_candles
from pipelines.loopback import LoopbackExchange
from pipelines.simulated_exchange import DEFAULT_ORIGIN_MS
from pipelines.simulated_futures import premium

H = 3_600_000
CONTRACT = "BTC/USDT:USDT"


def _online(tf: str, candles: pl.DataFrame, funding, mark, oi, seed: int = 0) -> pl.DataFrame:
    """Feed every funding, mark and open-interest event first, in a random order, then the
    candles in time order."""
    engine = OnlineFuturesFeatures(tf)
    events = (
        [("f", t, v) for t, v in funding.iter_rows()]
        + [("m", t, v) for t, v in mark.iter_rows()]
        + [("o", t, v) for t, v in oi.iter_rows()]
    )
    random.Random(seed).shuffle(events)
    feed = {"f": engine.on_funding, "m": engine.on_mark, "o": engine.on_open_interest}
    for kind, t, v in events:
        feed[kind](t, v)
    rows = [engine.on_candle(t, c) for t, c in candles.select("ts", "close").iter_rows()]
    return pl.DataFrame(rows, schema={f: pl.Float64 for f in FEATURES})


def _simulated(days: int = 10) -> tuple[pl.DataFrame, ...]:
    ex = LoopbackExchange(symbols=["BTC/USDT"], futures=[CONTRACT], clock=lambda: 0)
    since = DEFAULT_ORIGIN_MS + 3 * 86_400_000
    until = since + days * 86_400_000
    ex.clock = lambda: until
    trade = ex.klines("BTC/USDT", "1h", since, until - 1, 10_000)
    mark = ex.klines(CONTRACT, "1h", since, until - 1, 10_000, mark=True)
    candles = pl.DataFrame({"ts": [r[0] for r in trade], "close": [float(r[4]) for r in trade]})
    marks = pl.DataFrame({"ts": [r[0] for r in mark], "close": [float(r[4]) for r in mark]})
    funding = pl.DataFrame(
        [
            (r["fundingTime"], float(r["fundingRate"]))
            for r in ex.funding_history(CONTRACT, since - 86_400_000, until, 1000)
        ],
        schema={"ts": pl.Int64, "funding_rate": pl.Float64},
        orient="row",
    )
    oi = pl.DataFrame(
        [
            (r["timestamp"], float(r["sumOpenInterest"]))
            for r in ex.open_interest_hist(CONTRACT, "1h", since, until, 1000)
        ],
        schema={"ts": pl.Int64, "open_interest": pl.Float64},
        orient="row",
    )
    return candles, funding, marks, oi


def _assert_close(a: pl.DataFrame, b: pl.DataFrame) -> None:
    for f in FEATURES:
        x, y = a[f].to_numpy().astype(float), b[f].to_numpy().astype(float)
        assert np.array_equal(np.isnan(x), np.isnan(y)), f
        ok = ~np.isnan(x)
        assert np.abs(x[ok] - y[ok]).max(initial=0.0) <= 1e-9, f


def test_batch_equals_online_on_the_simulated_perpetual() -> None:
    candles, funding, marks, oi = _simulated()
    batch = futures_features(candles, "1h", funding=funding, mark=marks, open_interest=oi)
    assert batch.height == candles.height == 240
    _assert_close(batch.drop("ts"), _online("1h", candles, funding, marks, oi))
    # the basis is the simulated premium at the bar's last minute (mark = trade / (1 + p))
    last_minute = candles["ts"].to_numpy() + H - 60_000
    assert np.allclose(batch["basis"].to_numpy(), premium(last_minute), rtol=0, atol=1e-12)
    # every bar has a funding rate from its past; the rates are not all the same
    assert batch["funding_rate_last"].null_count() == 0
    assert batch["funding_rate_last"].n_unique() > 5
    # hourly open interest stamped on the hour from the first bar's open: that bar sees one
    # value (the one stamped at its close is not before it), every later bar two
    assert batch["oi_change"][0] is None and batch["oi_change"][1:].null_count() == 0
    # 1h bars, funding every 8h at hh:00:00.017: the rate of 08:00 is used from the 08:00 bar
    # on (it closes at 09:00), not by the 07:00 bar (closing at 08:00:00.000)
    f_ts = funding["ts"].to_numpy()
    stamp = int(f_ts[len(f_ts) // 2])
    bar = candles.with_row_index().filter(pl.col("ts") == stamp - 17)["index"][0]
    rate = funding.filter(pl.col("ts") == stamp)["funding_rate"][0]
    assert batch["funding_rate_last"][bar] == rate
    assert batch["funding_rate_last"][bar - 1] != rate


@st.composite
def _market(draw):
    n = draw(st.integers(5, 40))
    t0 = 1_704_067_200_000
    ts = [t0 + i * H for i in range(n)]
    price = st.floats(0.5, 2.0, allow_nan=False)
    candles = pl.DataFrame({"ts": ts, "close": draw(st.lists(price, min_size=n, max_size=n))})
    present = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    marks = pl.DataFrame(
        {
            "ts": [t for t, p in zip(ts, present, strict=True) if p],
            "close": draw(st.lists(price, min_size=sum(present), max_size=sum(present))),
        },
        schema={"ts": pl.Int64, "close": pl.Float64},
    )
    stamps = st.lists(st.integers(t0 - 10 * H, t0 + (n + 2) * H), max_size=25, unique=True)
    f_ts = draw(stamps)
    funding = pl.DataFrame(
        {
            "ts": f_ts,
            "funding_rate": draw(
                st.lists(st.floats(-0.01, 0.01), min_size=len(f_ts), max_size=len(f_ts))
            ),
        },
        schema={"ts": pl.Int64, "funding_rate": pl.Float64},
    )
    o_ts = draw(stamps)
    oi = pl.DataFrame(
        {
            "ts": o_ts,
            "open_interest": draw(
                st.lists(st.floats(1.0, 1e6), min_size=len(o_ts), max_size=len(o_ts))
            ),
        },
        schema={"ts": pl.Int64, "open_interest": pl.Float64},
    )
    cut = draw(st.integers(0, n - 1))  # the bar whose close is "now"
    return candles, funding, marks, oi, cut, draw(st.randoms(use_true_random=False))


def _change_after(
    frame: pl.DataFrame, column: str, after_ms: int, rng: random.Random, *, at: bool = True
) -> pl.DataFrame:
    """Other values for the rows stamped at (``at``) or after ``after_ms``, and one more."""
    later = pl.col("ts") >= after_ms if at else pl.col("ts") > after_ms
    changed = frame.with_columns(
        pl.when(later).then(pl.col(column) * 1.5 + 0.25).otherwise(pl.col(column)).alias(column)
    )
    extra = pl.DataFrame(
        {"ts": [after_ms + rng.randint(0 if at else 1, 5 * H)], column: [rng.uniform(0.5, 2.0)]},
        schema=frame.schema,
    )
    if extra["ts"][0] in set(frame["ts"].to_list()):
        return changed
    return pl.concat([changed, extra])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_market())
def test_no_look_ahead_batch_and_online(market) -> None:
    candles, funding, marks, oi, cut, rng = market
    close_ms = int(candles["ts"][cut]) + H  # bars 0..cut are closed at close_ms
    candles2 = candles.with_columns(
        pl.when(pl.col("ts") + H > close_ms)
        .then(pl.col("close") * 1.7)
        .otherwise(pl.col("close"))
        .alias("close")
    )
    # a mark candle is available at its own close, like the bar's
    marks2 = _change_after(marks.with_columns(pl.col("ts") + H), "close", close_ms, rng, at=False)
    marks2 = marks2.with_columns(pl.col("ts") - H)
    funding2 = _change_after(funding, "funding_rate", close_ms, rng)
    oi2 = _change_after(oi, "open_interest", close_ms, rng)

    def upto(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.head(cut + 1)

    a = futures_features(candles, "1h", funding=funding, mark=marks, open_interest=oi)
    b = futures_features(candles2, "1h", funding=funding2, mark=marks2, open_interest=oi2)
    _assert_close(upto(a).drop("ts"), upto(b).drop("ts"))
    on_a = _online("1h", candles, funding, marks, oi, seed=1)
    on_b = _online("1h", candles2, funding2, marks2, oi2, seed=2)
    _assert_close(upto(on_a), upto(on_b))
    _assert_close(a.drop("ts"), on_a)  # and batch == online on every bar


FUTURES = Path(__file__).resolve().parents[3] / "shared" / "data" / "futures"


def test_real_xrp_perpetual_files() -> None:
    """The real XRP/USDT:USDT files (read as the importer reads them): batch == online, the
    basis is small where a mark candle exists and null where none does."""
    ex = "binance"
    candles = pl.DataFrame(
        read_candles(FUTURES / "XRP_USDT_USDT-1h-futures.feather", exchange=ex)[0]
    ).select(pl.col("ts").dt.epoch("ms"), "close")
    marks = pl.DataFrame(
        read_mark_candles(FUTURES / "XRP_USDT_USDT-1h-mark.feather", exchange=ex)[0]
    ).select(pl.col("ts").dt.epoch("ms"), "close")
    funding = pl.DataFrame(
        read_funding_rates(FUTURES / "XRP_USDT_USDT-8h-funding_rate.feather", exchange=ex)[0]
    ).select(pl.col("ts").dt.epoch("ms"), "funding_rate")
    assert candles.height == 100
    empty_oi = pl.DataFrame(schema={"ts": pl.Int64, "open_interest": pl.Float64})
    batch = futures_features(candles, "1h", funding=funding, mark=marks)
    _assert_close(batch.drop("ts"), _online("1h", candles, funding, marks, empty_oi))
    basis = batch["basis"].drop_nulls()
    # the mark file ends at 2021-11-19 09:00: the 57 bars from 11-17 01:00 have a basis
    assert basis.len() == 57 and np.abs(basis.to_numpy()).max() < 0.01
    # the first funding stamp is 2021-11-18 00:00:00.017: the bars closing before it have none
    first = int(funding["ts"][0])
    before = batch.filter(pl.col("ts").dt.epoch("ms") + H < first)
    assert before.height > 0 and before["funding_rate_last"].null_count() == before.height
    assert batch["oi_change"].null_count() == batch.height  # no open interest in the files
