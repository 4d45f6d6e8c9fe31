"""The side feature groups (funding, sentiment) in the feature spec, the features table and the
online engine: one definition (the spec names the modules' columns; migration 0021 generated
from it), batch == online to 1e-9 on the simulated perpetual with its headlines (the engine
fed every event in a random order, pruned or not), the features table built by the rebuild
equal to the batch features of what the warehouse holds (incremental == full), and the real
XRP/USDT:USDT files through the warehouse. No look-ahead for every side feature, batch and
online: tests/pipelines/features/test_no_lookahead.py."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from pipelines.features import build_features, feature_columns
from pipelines.features.migration import SIDE_MIGRATION_FILE, side_migration_sql
from pipelines.features.rebuild import rebuild_features_many
from pipelines.features.side import SideInputs, read_side_inputs
from pipelines.features.spec import (
    FUNDING_FEATURES,
    SENTIMENT_FEATURES,
    SIDE_FEATURES,
    stored_columns,
)
from pipelines.futures_features import FEATURES
from pipelines.importers import read_candles, read_funding_rates, read_mark_candles
from pipelines.news.features import NEWS_FEATURE_COLUMNS
from pipelines.simulated_futures import premium
from tests.support.side import (
    CONTRACT,
    FUTURES_DIR,
    XRP,
    SimulatedPerpetual,
    online_rows,
    simulated_perpetual,
    store_futures,
)
from warehouse import Settings, upsert

H = 3_600_000


@pytest.fixture(scope="module")
def perp() -> SimulatedPerpetual:
    return simulated_perpetual(days=6)


def _values(frame: pl.DataFrame, columns: list[str] | tuple[str, ...]) -> np.ndarray:
    return frame.select(pl.col(c).cast(pl.Float64) for c in columns).to_numpy()


def _online_values(rows: list[dict[str, float | None]], columns: tuple[str, ...]) -> np.ndarray:
    return np.array(
        [[np.nan if r[c] is None else float(r[c]) for c in columns] for r in rows],  # type: ignore[arg-type]
        dtype=np.float64,
    )


def _assert_equal(a: np.ndarray, b: np.ndarray, columns: tuple[str, ...]) -> None:
    for j, c in enumerate(columns):
        x, y = a[:, j], b[:, j]
        assert np.array_equal(np.isnan(x), np.isnan(y)), c
        assert np.abs(x - y)[~np.isnan(x)].max(initial=0.0) <= 1e-9, c


def test_one_definition_the_spec_names_the_modules_columns() -> None:
    assert tuple(FEATURES) == FUNDING_FEATURES
    assert tuple(NEWS_FEATURE_COLUMNS) == SENTIMENT_FEATURES
    assert feature_columns()[-len(SIDE_FEATURES) :] == list(SIDE_FEATURES)
    path = Path(__file__).resolve().parents[3] / "warehouse" / "migrations" / SIDE_MIGRATION_FILE
    assert path.read_text() == side_migration_sql(), (
        "regenerate: python -m pipelines.features.migration 0021"
    )
    # a candle-only series: every side feature null (left out of a model's inputs)
    plain = build_features(
        pl.DataFrame(
            {
                "exchange": "x",
                "symbol": "A/B",
                "timeframe": "1h",
                "ts": pl.datetime_range(
                    pl.datetime(2024, 1, 1), pl.datetime(2024, 1, 2), "1h", eager=True
                ).dt.replace_time_zone("UTC"),
                "open": 1.0,
                "high": 1.0,
                "low": 1.0,
                "close": 1.0,
                "volume": 1.0,
            }
        )
    )
    assert all(plain[c].null_count() == plain.height for c in SIDE_FEATURES)


def test_batch_equals_online_on_the_simulated_perpetual_and_its_news(
    perp: SimulatedPerpetual,
) -> None:
    side = perp.side()
    batch = build_features(perp.candles, side=side)
    online = online_rows(perp.candles, side, seed=1)
    _assert_equal(
        _values(batch, SIDE_FEATURES), _online_values(online, SIDE_FEATURES), SIDE_FEATURES
    )
    n = perp.candles.height
    # values, not nulls: the basis is the simulated premium at the bar's last minute, funding
    # from its past, headlines counted (the market's at least the symbol's)
    last_minute = perp.candles["ts"].dt.epoch("ms").to_numpy() + H - 60_000
    assert np.allclose(batch["basis"].to_numpy(), premium(last_minute), rtol=0, atol=1e-12)
    assert batch["funding_rate_mean_3"].null_count() == 0
    assert batch["oi_change"].null_count() == 1  # the first bar sees one value only
    assert (batch["market_news_count_24h"] >= batch["news_count_24h"]).all()
    assert batch["news_count_24h"].min() > 0 and batch["news_mean_24h"].null_count() == 0
    assert batch["market_news_decayed"].n_unique() > n // 2
    # a pruned engine (a model reading two of them) computes the same values
    pruned = ("basis", "news_mean_24h")
    rows = online_rows(perp.candles, side, columns=list(pruned), seed=2)
    assert set(rows[0]) == set(pruned)
    _assert_equal(_values(batch, pruned), _online_values(rows, pruned), pruned)


def test_sentiment_is_null_before_the_first_headline(perp: SimulatedPerpetual) -> None:
    side = perp.side()
    first = perp.news["ts"].min()
    late = SideInputs(news=side.news.filter(pl.col("ts") > first + pl.duration(days=2)))  # type: ignore[union-attr,operator]
    batch = build_features(perp.candles, side=late)
    start = late.news["ts"].min().timestamp() * 1000  # type: ignore[union-attr]
    close = perp.candles["ts"].dt.epoch("ms") + H
    before = close <= start
    assert 0 < before.sum() < perp.candles.height
    for c in SENTIMENT_FEATURES:
        assert batch[c].filter(before).null_count() == before.sum(), c
        assert batch[c].filter(~before).null_count() < (~before).sum(), c
    assert all(batch[c].null_count() == batch.height for c in FUNDING_FEATURES)
    online = online_rows(perp.candles, late)
    _assert_equal(
        _values(batch, SIDE_FEATURES), _online_values(online, SIDE_FEATURES), SIDE_FEATURES
    )


def _store_news(con: duckdb.DuckDBPyConnection, settings: Settings, news: pl.DataFrame) -> None:
    keys = [f"n{i}" for i in range(news.height)]
    base = {"source": ["sim"] * news.height, "id": keys}
    upsert(
        con,
        "news",
        pa.table(
            {
                **base,
                "ts": news["ts"].to_arrow(),
                "title": ["headline"] * news.height,
                "body": pa.nulls(news.height, pa.string()),
                "url": pa.nulls(news.height, pa.string()),
                "symbols": news["symbols"].to_arrow(),
            }
        ),
        settings=settings,
    )
    upsert(
        con,
        "news_scores",
        pa.table({**base, "scorer": ["vader"] * news.height, "score": news["score"].to_arrow()}),
        settings=settings,
    )


def _candle_rows(candles: pl.DataFrame) -> pa.Table:
    return candles.with_columns(pl.col("ts").dt.cast_time_unit("ms")).to_arrow()


def test_the_features_table_holds_the_side_groups_and_incremental_equals_full(
    lake: duckdb.DuckDBPyConnection, settings: Settings, perp: SimulatedPerpetual
) -> None:
    """The contract (funding data: rebuilt alone) and a spot series without futures data (the
    many-series pass, with the market's headlines), rebuilt in two steps, equal the batch
    features of the warehouse's data computed at once."""
    names = [r[0] for r in lake.execute("SELECT * FROM features LIMIT 0").description]
    assert names[names.index("gap_bars") + 1 :] == stored_columns()  # 0005, 0015, 0021
    spot = perp.candles.with_columns(pl.lit("ETH/BTC").alias("symbol"))
    cut = perp.candles["ts"][perp.candles.height // 2]
    store_futures(lake, settings, perp)
    _store_news(lake, settings, perp.news)
    series = [("simulated", CONTRACT, "1h"), ("simulated", "ETH/BTC", "1h")]
    for part in (pl.col("ts") < cut, pl.col("ts") >= cut):
        for frame in (perp.candles, spot):
            upsert(lake, "candles", _candle_rows(frame.filter(part)), settings=settings)
        rebuild_features_many(lake, series, settings=settings)
    stored = pl.from_arrow(
        lake.execute("SELECT * FROM features ORDER BY symbol, ts").fetch_arrow_table()
    )
    assert isinstance(stored, pl.DataFrame)
    for frame in (perp.candles, spot):
        symbol = str(frame["symbol"][0])
        side = read_side_inputs(lake, exchange="simulated", symbol=symbol, timeframe="1h")
        assert side.groups == (("funding", "sentiment") if symbol == CONTRACT else ("sentiment",))
        want = build_features(frame, side=side)
        got = stored.filter(pl.col("symbol") == symbol)
        assert got.height == want.height
        _assert_equal(_values(got, SIDE_FEATURES), _values(want, SIDE_FEATURES), SIDE_FEATURES)
        funding_nulls = got.select(pl.col(FUNDING_FEATURES).null_count()).row(0)
        if symbol == CONTRACT:
            assert max(funding_nulls) <= 1  # (oi_change of the first bar)
        else:
            assert min(funding_nulls) == got.height
        assert got["market_news_count_24h"].null_count() == 0


def test_the_real_xrp_perpetual_files_through_the_warehouse(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    """freqtrade's XRP/USDT:USDT files as `tradeloop import` reads them: the contract's stored
    features hold the funding rate and the basis (57 bars have a mark candle), equal to the
    features of the files read directly."""
    ex = "binance"
    candles = read_candles(FUTURES_DIR / "XRP_USDT_USDT-1h-futures.feather", exchange=ex)[0]
    mark = read_mark_candles(FUTURES_DIR / "XRP_USDT_USDT-1h-mark.feather", exchange=ex)[0]
    mark8 = read_mark_candles(FUTURES_DIR / "XRP_USDT_USDT-8h-mark.feather", exchange=ex)[0]
    funding = read_funding_rates(
        FUTURES_DIR / "XRP_USDT_USDT-8h-funding_rate.feather", exchange=ex
    )[0]
    upsert(lake, "candles", candles, settings=settings)
    for table, rows in (
        ("mark_candles", mark),
        ("mark_candles", mark8),
        ("funding_rates", funding),
    ):
        upsert(lake, table, rows, settings=settings)
    rebuild_features_many(lake, [(ex, XRP, "1h")], settings=settings)
    stored = pl.from_arrow(lake.execute("SELECT * FROM features ORDER BY ts").fetch_arrow_table())
    assert isinstance(stored, pl.DataFrame) and stored.height == 100
    frames = [pl.from_arrow(t) for t in (candles, mark, funding)]
    want = build_features(
        frames[0],  # type: ignore[arg-type]
        side=SideInputs(
            funding=frames[2].select("ts", "funding_rate"), mark=frames[1].select("ts", "close")
        ),  # type: ignore[union-attr]
    )
    _assert_equal(
        _values(stored, FUNDING_FEATURES), _values(want, FUNDING_FEATURES), FUNDING_FEATURES
    )
    assert stored["basis"].drop_nulls().len() == 57  # the 1h mark file ends 2021-11-19 09:00
    assert np.abs(stored["basis"].drop_nulls().to_numpy()).max() < 0.01
    assert stored["funding_rate_last"].drop_nulls().len() > 0
    assert stored["oi_change"].null_count() == 100  # freqtrade keeps no open interest
    assert all(stored[c].null_count() == 100 for c in SENTIMENT_FEATURES)  # no headlines
