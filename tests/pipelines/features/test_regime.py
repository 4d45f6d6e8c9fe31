"""Regime labels (``regime_trend``, ``regime_vol``; docs/regimes.md): part of the one feature
specification, computed identically by the batch pipeline and the online engine, stored in the
features table, not model inputs, and without look-ahead: changing or removing bars after ``t``
never changes the regime at ``t``."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.features import OnlineFeatureEngine, build_features, feature_columns
from pipelines.features.migration import REGIME_MIGRATION_FILE, regime_migration_sql
from pipelines.features.spec import (
    REGIME_COLUMNS,
    REGIME_TREND_BAND_SIGMAS,
    REGIME_TREND_BARS,
    REGIME_VOL_BASELINE_BARS,
    feature_table_markdown,
    stored_columns,
)
from pipelines.simulated_exchange import RANGE, TREND_DOWN, TREND_UP, SimulatedExchange
from trading.backtest import Candles
from trading.model_backtest import candle_frame
from warehouse import Settings

N = 1_000  # 5m candles: the volatility label is set from the 780th on
STEP_MS = 300_000


def regime_candles(seed: int, gaps: list[int]) -> pl.DataFrame:
    """A random walk with switching drift and volatility (so both labels change), with gaps
    (some longer than the carried limit: the labels restart there)."""
    rng = np.random.default_rng(seed)
    steps = np.ones(N, dtype=np.int64)
    for g in gaps:
        steps[g % N] += 1 + g % 9
    ts = np.cumsum(steps) * STEP_MS + 1_700_000_000_000 // 3_600_000 * 3_600_000
    block = np.arange(N) // 150
    drift = rng.choice([-0.0012, 0.0, 0.0012], size=block.max() + 1)[block]
    vol = rng.choice([0.001, 0.004], size=block.max() + 1)[block]
    close = 100 * np.exp(np.cumsum(drift + rng.normal(0, 1, N) * vol))
    open_ = np.r_[close[0], close[:-1]]
    high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
    bars = Candles("A/B", "5m", ts, open_, high, low, close, rng.uniform(1, 50, N))
    return candle_frame(bars, "x")


def online_regimes(candles: pl.DataFrame) -> pl.DataFrame:
    """The online engine's regime labels, one candle at a time."""
    engine = OnlineFeatureEngine(str(candles["timeframe"][0]))
    rows = [engine.step(c) for c in candles.iter_rows(named=True)]
    return pl.DataFrame(
        {c: [r[c] for r in rows] for c in REGIME_COLUMNS},
        schema={c: pl.Float64 for c in REGIME_COLUMNS},
    )


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    other=st.integers(0, 2**16),
    gaps=st.lists(st.integers(0, N - 1), max_size=4),
    cut=st.integers(100, N - 2),
    drop_next=st.booleans(),
)
def test_the_regime_at_t_never_depends_on_bars_after_t(
    seed: int, other: int, gaps: list[int], cut: int, drop_next: bool
) -> None:
    """Every bar after ``t`` replaced by another market's (and the next one dropped, which
    changes the gap after ``t``): the labels up to ``t`` stay, in batch and online."""
    candles = regime_candles(seed, gaps)
    base = build_features(candles).select(REGIME_COLUMNS)
    future = regime_candles(other, gaps).slice(cut + 2 if drop_next else cut + 1)
    changed = build_features(pl.concat([candles.head(cut + 1), future])).select(REGIME_COLUMNS)
    assert base.head(cut + 1).equals(changed.head(cut + 1), null_equal=True)
    # the online engine at t has seen nothing after t: its labels are the batch's of the
    # changed future, exactly
    assert online_regimes(candles).head(cut + 1).equals(changed.head(cut + 1), null_equal=True)
    # not vacuous: the trend label is set before the cut once its window is warm and no
    # long gap restarted it
    if cut >= 400 and not gaps:
        assert base.head(cut + 1)["regime_trend"].drop_nulls().len() > 0


def test_online_equals_batch_on_real_files_with_gaps(real_candles: dict[str, pl.DataFrame]) -> None:
    """Discrete labels: exactly equal, nulls (warm-up, restarts after long gaps) included."""
    for name in ("XRP_ETH-1m.feather", "UNITTEST_BTC-1m.feather", "ETH_BTC-5m.feather"):
        candles = real_candles[name].head(3_000)
        batch = build_features(candles).select(REGIME_COLUMNS)
        online = online_regimes(candles)
        assert online.equals(batch, null_equal=True), name
        assert batch["regime_trend"].drop_nulls().n_unique() == 3, name  # bull, sideways, bear
        if name != "XRP_ETH-1m.feather":  # its gaps keep restarting the 781-bar warm-up
            assert batch["regime_vol"].drop_nulls().n_unique() == 2, name


def textbook_regimes(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The documented definition, written out with numpy on a gapless series."""
    w, k, base = REGIME_TREND_BARS, REGIME_TREND_BAND_SIGMAS, REGIME_VOL_BASELINE_BARS
    lc = np.log(close)
    n = lc.size
    r1 = np.r_[np.nan, np.diff(lc)]
    trend, vol = np.full(n, np.nan), np.full(n, np.nan)
    rvol = np.full(n, np.nan)
    state = math.nan
    for t in range(w, n):
        rvol[t] = np.std(r1[t - w + 1 : t + 1], ddof=1)
        move, band = lc[t] - lc[t - w], k * math.sqrt(w) * rvol[t]
        if move > band:
            state = 1.0
        elif move < -band:
            state = -1.0
        elif abs(move) <= band / 2:
            state = 0.0
        trend[t] = state
        if t >= w + base - 1:
            vol[t] = 1.0 if rvol[t] > np.mean(rvol[t - base + 1 : t + 1]) else 0.0
    return trend, vol


def test_labels_follow_the_documented_definition(real_candles: dict[str, pl.DataFrame]) -> None:
    candles = real_candles["ETH_BTC-5m.feather"].head(2_000)  # complete: no gaps
    got = build_features(candles)
    trend, vol = textbook_regimes(candles["close"].to_numpy())
    for col, want in (("regime_trend", trend), ("regime_vol", vol)):
        have = got[col].fill_null(np.nan).to_numpy()
        assert np.array_equal(have, want, equal_nan=True), col


def test_labels_find_the_simulated_markets_regimes() -> None:
    """On the simulated exchange (known trend regimes and volatility), bull is far more often
    the label inside up-trends than inside down-trends, and high volatility is more often the
    label when the true volatility is above its median."""
    ex = SimulatedExchange()
    start = ex.config.origin_ms
    a = ex.candle_arrays("BTC/USDT", start, start + 6 * 86_400_000)
    fields = (a["ts"], *(a[k] for k in ("open", "high", "low", "close", "volume")))
    candles = candle_frame(Candles("BTC/USDT", "1m", *fields), "sim")
    got = build_features(candles)
    trend = got["regime_trend"].fill_null(np.nan).to_numpy()
    vol = got["regime_vol"].fill_null(np.nan).to_numpy()
    ok = np.isfinite(trend) & np.isfinite(vol)
    true = a["regime"]
    bull_up = np.mean(trend[ok & (true == TREND_UP)] == 1)
    bull_down = np.mean(trend[ok & (true == TREND_DOWN)] == 1)
    bear_down = np.mean(trend[ok & (true == TREND_DOWN)] == -1)
    bear_up = np.mean(trend[ok & (true == TREND_UP)] == -1)
    assert (true[ok] == RANGE).any()
    assert bull_up > 1.5 * bull_down and bear_down > 1.5 * bear_up, (bull_up, bull_down)
    sigma = a["sigma"]
    calm = ok & (sigma <= np.median(sigma[ok]))
    assert np.mean(vol[ok & ~calm] == 1) > np.mean(vol[calm] == 1) + 0.2


def test_labels_are_stored_but_are_not_model_inputs() -> None:
    assert not set(REGIME_COLUMNS) & set(feature_columns())
    # stored in the table's order: candle inputs (0005), labels (0015), side groups (0021)
    assert sorted(stored_columns()) == sorted([*feature_columns(), *REGIME_COLUMNS])
    table = feature_table_markdown()
    assert all(f"`{c}`" in table and "not a model input" in table for c in REGIME_COLUMNS)
    # a caller asking for some model inputs (a model's selected features) gets no labels
    candles = regime_candles(1, [])
    assert set(build_features(candles).columns) >= set(REGIME_COLUMNS)
    only = build_features(candles, columns=["logret_1"])
    assert not set(REGIME_COLUMNS) & set(only.columns)
    engine = OnlineFeatureEngine("5m", columns=["logret_1"])
    assert not set(REGIME_COLUMNS) & set(engine.step(candles.row(0, named=True)))


def test_regime_migration_adds_the_columns_to_the_features_table(
    lake: duckdb.DuckDBPyConnection,
) -> None:
    import pipelines.features.migration as mig

    path = Path(mig.__file__).parents[2] / "warehouse" / "migrations" / REGIME_MIGRATION_FILE
    assert path.read_text() == regime_migration_sql(), (
        "regenerate: python -m pipelines.features.migration 0015"
    )
    names = [r[0] for r in lake.execute("SELECT * FROM features LIMIT 0").description]
    assert names[names.index("gap_bars") + 1 :][: len(stored_columns())] == stored_columns()


def test_rebuild_stores_the_labels_with_the_features(
    lake: duckdb.DuckDBPyConnection, settings: Settings, real_candles: dict[str, pl.DataFrame]
) -> None:
    from pipelines.features.rebuild import rebuild_features
    from warehouse import upsert

    candles = real_candles["ETH_BTC-5m.feather"].head(1_200)
    upsert(lake, "candles", candles.to_arrow(), settings=settings)
    rebuild_features(
        lake, exchange="binance", symbol="ETH/BTC", timeframe="5m", settings=settings, full=True
    )
    stored = pl.from_arrow(
        lake.execute(
            "SELECT regime_trend, regime_vol FROM features WHERE symbol = 'ETH/BTC' ORDER BY ts"
        ).fetch_arrow_table()
    )
    assert isinstance(stored, pl.DataFrame)
    assert stored.equals(build_features(candles).select(REGIME_COLUMNS), null_equal=True)
    assert stored["regime_vol"].drop_nulls().len() > 0
