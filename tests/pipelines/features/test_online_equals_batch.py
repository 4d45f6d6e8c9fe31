"""Online engine == batch pipeline on every real candle file, every feature, every row."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipelines.features import OnlineFeatureEngine, build_features, feature_columns
from tests.support.features import CANDLE_FILES

RTOL = 1e-9
# Values within 1e-12 of each other count as equal: features that are differences of equal
# quantities (rsi_14 unchanged -> rsimom_14) are exactly 0 in one engine and ~1e-15 in the other.
ATOL = 1e-12


def assert_online_equals_batch(
    batch: pl.DataFrame, online_rows: list[dict[str, float | None]]
) -> None:
    online = pl.DataFrame(online_rows, schema={c: pl.Float64 for c in feature_columns()})
    assert online.height == batch.height
    problems = []
    for col in feature_columns():
        a = batch.get_column(col).to_numpy().astype(float)
        b = online.get_column(col).to_numpy().astype(float)
        null_a, null_b = np.isnan(a), np.isnan(b)
        if (null_a != null_b).any():
            i = int(np.argmax(null_a != null_b))
            problems.append(
                f"{col}: null in one engine only at row {i} (batch {a[i]}, online {b[i]})"
            )
            continue
        both = ~null_a
        diff = np.abs(a[both] - b[both])
        limit = RTOL * np.maximum(np.abs(a[both]), np.abs(b[both])) + ATOL
        if (diff > limit).any():
            i = int(np.argmax(diff - limit))
            problems.append(f"{col}: batch {a[both][i]!r} != online {b[both][i]!r}")
    assert not problems, "\n".join(problems)


def run_online(candles: pl.DataFrame, timeframe: str) -> list[dict[str, float | None]]:
    engine = OnlineFeatureEngine(timeframe)
    return [engine.step(row) for row in candles.iter_rows(named=True)]


@pytest.mark.parametrize("name", sorted(CANDLE_FILES))
def test_online_equals_batch_on_real_candles(
    real_candles: dict[str, pl.DataFrame], name: str
) -> None:
    candles = real_candles[name]
    batch = build_features(candles)
    assert_online_equals_batch(batch, run_online(candles, CANDLE_FILES[name][1]))
    # after warm-up the candle features are really there (not an all-null comparison)
    warm = batch.slice(batch.height // 2)
    for col in (
        "rsi_14",
        "ema_26",
        "sma_50",
        "bbpos_20",
        "rvol_60",
        "logret_1_lag10",
        "regime_30",
        "rsi_14_15m",
    ):
        assert warm.get_column(col).null_count() < warm.height // 4, col


def test_online_equals_batch_with_order_book_and_trades(
    real_candles: dict[str, pl.DataFrame], xrp_trades: pl.DataFrame
) -> None:
    """Real trades of XRP/ETH plus order-book snapshots every 37 s, fed in time order."""
    candles = real_candles["XRP_ETH-1m.feather"]
    rng = np.random.default_rng(7)
    ob_ts = pl.datetime_range(candles["ts"][0], candles["ts"][-1], interval="37s", eager=True)
    close_ms = candles["ts"].dt.epoch("ms").to_numpy()
    mid = np.interp(ob_ts.dt.epoch("ms").to_numpy(), close_ms, candles["close"].to_numpy())
    book = pl.DataFrame(
        {
            "ts": ob_ts,
            "bid_prices": [[m * 0.999, m * 0.998] for m in mid],
            "bid_sizes": [list(rng.uniform(0, 10, 7)) for _ in mid],
            "ask_prices": [[m * 1.001, m * 1.002] for m in mid],
            "ask_sizes": [list(rng.uniform(0, 10, 7)) for _ in mid],
        }
    )
    batch = build_features(candles, order_book=book, trades=xrp_trades)
    engine = OnlineFeatureEngine("1m")
    events: list[tuple[int, int, dict]] = []
    events += [(int(r["ts"].timestamp() * 1000), 0, r) for r in book.iter_rows(named=True)]
    events += [(int(r["ts"].timestamp() * 1000), 0, r) for r in xrp_trades.iter_rows(named=True)]
    events += [
        (int(r["ts"].timestamp() * 1000) + 60_000, 1, r) for r in candles.iter_rows(named=True)
    ]
    events.sort(key=lambda e: (e[0], e[1]))  # a candle is processed after ticks at its close time
    rows = []
    for _, kind, r in events:
        if kind == 1:
            rows.append(engine.step(r))
        elif "side" in r:
            engine.on_trade(r["ts"], r["side"], r["amount"])
        else:
            engine.on_order_book(
                r["ts"], r["bid_prices"], r["bid_sizes"], r["ask_prices"], r["ask_sizes"]
            )
    assert_online_equals_batch(batch, rows)
    for col in (
        "obimb",
        "spreadbps",
        "obimbdev_20",
        "rsixobimb_14",
        "tfbuy_1",
        "tfimb_10",
        "obimb_lag5",
    ):
        assert batch.get_column(col).null_count() < batch.height // 4, col


def test_update_returns_none_until_warm(real_candles: dict[str, pl.DataFrame]) -> None:
    candles = real_candles["ETH_BTC-5m.feather"]
    engine = OnlineFeatureEngine("5m")
    results = [engine.update(row) for row in candles.head(400).iter_rows(named=True)]
    assert results[0] is None
    ready = [r for r in results if r is not None]
    assert ready, "never warmed up in 400 candles"
    assert all(r["rsi_14"] is not None and r["rsi_14_1h"] is not None for r in ready)
    assert ready[-1]["obimb"] is None  # no order book fed


def test_online_rejects_out_of_order_candles(real_candles: dict[str, pl.DataFrame]) -> None:
    rows = list(real_candles["XRP_ETH-5m.feather"].head(3).iter_rows(named=True))
    engine = OnlineFeatureEngine("5m")
    engine.step(rows[1])
    with pytest.raises(ValueError, match="not after the previous"):
        engine.step(rows[0])
