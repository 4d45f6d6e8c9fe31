"""Indicators against slow textbook references on real data, and the spec's own invariants."""

from __future__ import annotations

import math
import re

import polars as pl
import pytest

from pipelines.features import (
    FEATURE_SET_VERSION,
    MAX_CARRIED_GAP_BARS,
    build_features,
    feature_columns,
)
from pipelines.features.migration import migration_sql
from pipelines.features.spec import SIDE_FEATURES, candle_feature_columns, feature_table_markdown
from tests.support.features import CANDLE_FILES


def segments(ts_ms: list[int], step_ms: int) -> list[tuple[int, int]]:
    """[start, end) row ranges between gaps longer than the carried limit."""
    bounds = [0]
    for i in range(1, len(ts_ms)):
        if (ts_ms[i] - ts_ms[i - 1]) // step_ms - 1 > MAX_CARRIED_GAP_BARS:
            bounds.append(i)
    bounds.append(len(ts_ms))
    return list(zip(bounds[:-1], bounds[1:], strict=False))


def ref_sma(x: list[float], n: int) -> list[float | None]:
    return [None if i < n - 1 else sum(x[i - n + 1 : i + 1]) / n for i in range(len(x))]


def ref_ema(x: list[float], n: int) -> list[float | None]:
    """EMA with alpha = 2/(n+1), seeded with the SMA of the first n values."""
    alpha = 2.0 / (n + 1)
    out: list[float | None] = [None] * len(x)
    if len(x) < n:
        return out
    y = sum(x[:n]) / n
    out[n - 1] = y
    for i in range(n, len(x)):
        y = alpha * x[i] + (1 - alpha) * y
        out[i] = y
    return out


def ref_wilder_rsi(close: list[float], n: int) -> list[float | None]:
    """Wilder (1978): first averages = mean of the first n gains/losses, then (prev*(n-1)+x)/n."""
    out: list[float | None] = [None] * len(close)
    if len(close) <= n:
        return out
    gains = [max(close[i] - close[i - 1], 0.0) for i in range(1, len(close))]
    losses = [max(close[i - 1] - close[i], 0.0) for i in range(1, len(close))]
    ag, al = sum(gains[:n]) / n, sum(losses[:n]) / n
    for i in range(n, len(close)):
        if i > n:
            ag = (ag * (n - 1) + gains[i - 1]) / n
            al = (al * (n - 1) + losses[i - 1]) / n
        out[i] = (
            100.0 if al == 0 and ag > 0 else 50.0 if al == 0 else 100.0 - 100.0 / (1.0 + ag / al)
        )
    return out


@pytest.mark.parametrize(
    "name", ["UNITTEST_BTC-1m.feather", "ETH_BTC-5m.feather", "XRP_ETH-1m.feather"]
)
def test_indicators_match_textbook_references(
    real_candles: dict[str, pl.DataFrame], name: str
) -> None:
    candles = real_candles[name]
    feats = build_features(candles)
    step_ms = {"1m": 60_000, "5m": 300_000}[CANDLE_FILES[name][1]]
    ts_ms = candles["ts"].dt.epoch("ms").to_list()
    close = candles["close"].to_list()
    checked = 0
    for start, end in segments(ts_ms, step_ms):
        seg = close[start:end]
        for col, ref in (
            ("sma_20", ref_sma(seg, 20)),
            ("sma_50", ref_sma(seg, 50)),
            ("ema_12", ref_ema(seg, 12)),
            ("ema_26", ref_ema(seg, 26)),
            ("rsi_14", ref_wilder_rsi(seg, 14)),
            ("rsi_7", ref_wilder_rsi(seg, 7)),
        ):
            got = feats[col][start:end].to_list()
            for i, (g, r) in enumerate(zip(got, ref, strict=True)):
                if r is None:
                    assert g is None, f"{col} row {start + i}: expected null in warm-up, got {g}"
                else:
                    assert g is not None and math.isclose(g, r, rel_tol=1e-9, abs_tol=1e-12), (
                        f"{col} row {start + i}: {g} != textbook {r}"
                    )
                    checked += 1
    assert checked > len(close) * 4


def test_feature_names_follow_the_pattern() -> None:
    cols = feature_columns()
    assert len(cols) == len(set(cols)) >= 100
    pattern = re.compile(r"^[a-z]+(_\d+)*(_lag\d+)?(_(5m|15m|1h))?$")
    # the side groups keep the names their modules give them (funding_rate_last, news_mean_1h)
    assert [c for c in candle_feature_columns() if not pattern.match(c)] == []
    assert cols == candle_feature_columns() + list(SIDE_FEATURES)
    for name in (
        "rsi_14",
        "ema_12",
        "sma_20",
        "rsi_14_1h",
        "obimb",
        "tfimb_1",
        "logret_1_lag10",
        "hoursin",
    ):
        assert name in cols
    table = feature_table_markdown()
    assert all(f"`{c}`" in table for c in cols)


def test_version_is_a_hash_of_the_spec() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", FEATURE_SET_VERSION)


def test_migration_columns_equal_feature_columns(lake) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    import pipelines.features.migration as mig

    path = Path(mig.__file__).parents[2] / "warehouse" / "migrations" / mig.MIGRATION_FILE
    assert path.read_text() == migration_sql(), "regenerate: python -m pipelines.features.migration"
    names = [r[0] for r in lake.execute("SELECT * FROM features LIMIT 0").description]
    # 0005 holds the candle features; the side groups (funding, sentiment: 0021) come after
    # the regime labels (0015), at the end of feature_columns()
    candle = candle_feature_columns()
    assert names[names.index("gap_bars") + 1 :][: len(candle)] == candle
    assert feature_columns()[: len(candle)] == candle


def test_gap_policy(real_candles: dict[str, pl.DataFrame]) -> None:
    """Short gaps are carried (gap_bars > 0, windows continue); long gaps restart windows."""
    candles = real_candles["UNITTEST_BTC-1m.feather"]
    feats = build_features(candles)
    gaps = feats["gap_bars"]
    assert int((gaps > 0).sum()) == 538  # the README's real holes
    seg = (pl.col("gap_bars") > MAX_CARRIED_GAP_BARS).cum_sum()
    pos = pl.int_range(pl.len()).over(seg)
    short = feats.filter(
        (pl.col("gap_bars") > 0) & (pl.col("gap_bars") <= MAX_CARRIED_GAP_BARS) & (pos >= 19)
    )
    assert short.height > 400
    assert short["sma_20"].null_count() == 0  # carried: the window continues across the hole
    long_rows = [i for i, g in enumerate(gaps.to_list()) if g > MAX_CARRIED_GAP_BARS]
    assert long_rows
    for i in long_rows:
        window = feats.slice(i, 19)
        assert window["sma_20"].null_count() == min(19, window.height)  # restarted: warming up
        assert window["gap_bars"][0] > MAX_CARRIED_GAP_BARS


def test_bad_input_is_named(real_candles: dict[str, pl.DataFrame]) -> None:
    from pipelines.features import FeatureInputError

    candles = real_candles["XRP_ETH-5m.feather"]
    with pytest.raises(FeatureInputError, match="missing column"):
        build_features(candles.drop("volume"))
    with pytest.raises(FeatureInputError, match="not strictly increasing"):
        build_features(pl.concat([candles.head(5), candles.slice(3, 5)]))
