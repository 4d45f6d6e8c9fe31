"""Migrations apply once, `maintain` compacts and expires, and the views return what they say.

Every test runs on both DuckLake catalogs (SQLite and PostgreSQL, see conftest.py).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.support.postgres import CATALOGS, catalog_settings, worker_env
from tests.warehouse.workers import EPOCH, candle_batch
from warehouse import (
    Settings,
    WarehouseError,
    connect,
    current_snapshot_id,
    maintain,
    migrate,
    upsert,
)
from warehouse.migrate import available_migrations, schema_version

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.UTC


def _ts(minutes: int) -> dt.datetime:
    return EPOCH + dt.timedelta(minutes=minutes)


def _ts_array(values: list[dt.datetime]) -> pa.Array:
    return pa.array(values, pa.timestamp("us", tz="UTC"))


# --- migrations -------------------------------------------------------------------------------


def test_migrations_apply_once_each_and_editing_an_applied_one_is_an_error(
    settings: Settings,
) -> None:
    migrations = available_migrations()
    versions = [m.version for m in migrations]
    assert versions == sorted(set(versions)) and versions[0] == 1

    con = connect(settings)
    assert schema_version(con) == 0
    assert migrate(con) == versions
    snapshot = current_snapshot_id(con)
    assert migrate(con) == [], "a second migrate must apply nothing"
    assert migrate(connect(settings)) == [], "nor one from another connection"
    assert current_snapshot_id(con) == snapshot, "a no-op migrate must not commit anything"

    recorded = con.execute(
        "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
    ).fetchall()
    assert recorded == [(m.version, m.name, m.checksum) for m in migrations]
    assert schema_version(con) == versions[-1]
    # what the migrations made is there exactly once
    keys = con.execute("SELECT table_name, count(*) FROM table_keys GROUP BY ALL").fetchall()
    assert keys and all(n == 1 for _, n in keys)
    tokens = con.execute("SELECT table_name FROM write_tokens ORDER BY 1").fetchall()
    assert tokens == sorted((name,) for name, _ in keys)

    # what migrate sees when 0002_views.sql was changed after it was applied
    views = next(m for m in migrations if m.version == 2)
    con.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")
    with pytest.raises(WarehouseError, match=f"0002_{views.name} was edited after it was applied"):
        migrate(con)
    assert con.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(versions)


@pytest.mark.xdist_group("warehouse-processes")
def test_processes_migrating_a_fresh_warehouse_at_once_apply_each_migration_once(
    settings: Settings,
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.warehouse.workers", "migrate", str(settings.home)],
            cwd=ROOT,
            env=worker_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    applied: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        applied += json.loads(out)
    versions = [m.version for m in available_migrations()]
    assert sorted(applied) == versions, "each migration is applied by exactly one process"
    con = connect(settings, read_only=True)
    rows = con.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [v for (v,) in rows] == versions


# --- maintenance ------------------------------------------------------------------------------


def _candle_files(con: duckdb.DuckDBPyConnection) -> int:
    return int(
        con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'candles')").fetchone()[0]
    )


def _snapshot_ids(con: duckdb.DuckDBPyConnection) -> set[int]:
    return {int(r[0]) for r in con.execute("SELECT snapshot_id FROM lake.snapshots()").fetchall()}


def _parquet_on_disk(settings: Settings, table: str) -> int:
    return len(list((Path(settings.resolved_data_path) / "main" / table).glob("*.parquet")))


def test_maintain_compacts_small_files_and_expires_old_snapshots(
    lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    batches = 8
    upsert(lake, "candles", candle_batch(list(range(5)), price=100.0), settings=settings)
    first = current_snapshot_id(lake)
    for i in range(1, batches):
        batch = candle_batch(list(range(5 * i, 5 * i + 5)), price=100.0 + i)
        upsert(lake, "candles", batch, settings=settings)
    # a revision: its old row's file stays referenced by older snapshots only
    upsert(lake, "candles", candle_batch([2], price=7.0), settings=settings)
    data = lake.execute("SELECT * FROM candles ORDER BY ts").fetchall()
    assert len(data) == 5 * batches
    assert _candle_files(lake) == batches + 1, "each small upsert wrote its own Parquet file"
    on_disk = _parquet_on_disk(settings, "candles")
    assert on_disk >= batches + 1

    # default: merge small files, keep snapshots of the last 7 days (time travel still works)
    snapshots = _snapshot_ids(lake)
    report = maintain(lake)
    assert _candle_files(lake) == 1
    assert report.data_files_after < report.data_files_before
    assert snapshots <= _snapshot_ids(lake), "recent snapshots are kept"
    assert report.snapshots_after >= report.snapshots_before
    assert lake.execute("SELECT * FROM candles ORDER BY ts").fetchall() == data
    old = lake.execute(f"SELECT count(*) FROM candles AT (VERSION => {first})").fetchone()[0]
    assert old == 5

    # nothing kept: old snapshots expire, their files are deleted, the data stays identical
    report = maintain(lake, keep_snapshots_for=dt.timedelta(0))
    assert report.snapshots_after == 1 < report.snapshots_before
    assert lake.execute("SELECT count(*) FROM lake.snapshots()").fetchone()[0] == 1
    with pytest.raises(duckdb.Error):
        lake.execute(f"SELECT count(*) FROM candles AT (VERSION => {first})").fetchall()
    assert _candle_files(lake) == 1
    assert _parquet_on_disk(settings, "candles") == 1 < on_disk
    assert lake.execute("SELECT * FROM candles ORDER BY ts").fetchall() == data
    # and the compacted lake still takes upserts by key
    result = upsert(lake, "candles", candle_batch([2, 999], price=7.0), settings=settings)
    assert (result.inserted, result.replaced, result.unchanged) == (1, 0, 1)


# --- views ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=CATALOGS)
def views_lake(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[duckdb.DuckDBPyConnection]:
    """One migrated warehouse per catalog for the view tests (each writes its own tables)."""
    home = tmp_path_factory.mktemp("views") / "home"
    with catalog_settings(str(request.param), home) as settings:
        con = connect(settings)
        migrate(con)
        yield con
        con.close()


def test_latest_candles_is_the_last_candle_per_exchange_symbol_timeframe(
    views_lake: duckdb.DuckDBPyConnection,
) -> None:
    rng = random.Random(3)
    newer: list[pa.Table] = []
    older: list[pa.Table] = []
    expected: dict[tuple[str, str, str], tuple[dt.datetime, float]] = {}
    for exchange in ("binance", "kraken"):
        for symbol in ("BTC/USDT", "ETH/USDT"):
            for timeframe, step in (("1m", 1), ("1h", 60)):
                last = rng.randrange(3, 20)
                minutes = [step * m for m in range(last + 1)]
                rng.shuffle(minutes)  # the view must not depend on row order
                batch = candle_batch(
                    minutes,
                    exchange=exchange,
                    symbol=symbol,
                    timeframe=timeframe,
                    price=float(rng.randrange(999)),
                )
                is_last = pa.array([m == step * last for m in minutes])
                newer.append(batch.filter(is_last))
                older.append(batch.filter(pc.invert(is_last)))
                # candle_batch's volume is 1 + the minute: it identifies the candle
                expected[(exchange, symbol, timeframe)] = (_ts(step * last), 1.0 + step * last)
    # the newest candles are written first: the view must not depend on write order either
    upsert(views_lake, "candles", pa.concat_tables(newer))
    upsert(views_lake, "candles", pa.concat_tables(older))
    # a revision of one group's last candle shows in the view
    revised_ts, volume = expected[("kraken", "BTC/USDT", "1h")]
    revised = candle_batch([int(volume) - 1], exchange="kraken", timeframe="1h", price=5.0)
    assert revised.column("ts")[0].as_py() == revised_ts
    upsert(views_lake, "candles", revised)

    rows = views_lake.execute(
        "SELECT exchange, symbol, timeframe, ts, volume, close FROM latest_candles"
    ).fetchall()
    assert len(rows) == len(expected) == 8
    got = {(e, s, t): (ts.astimezone(UTC), volume) for e, s, t, ts, volume, _ in rows}
    assert got == expected
    closes = {(e, s, t): c for e, s, t, _, _, c in rows}
    assert closes[("kraken", "BTC/USDT", "1h")] == 5.5


def _predictions(rows: list[tuple[str, str, str | None]], t0: dt.datetime) -> pa.Table:
    """(model_id, predicted, outcome) rows as predictions of BTC/USDT 1m, a minute apart."""
    n = len(rows)
    return pa.table(
        {
            "exchange": ["binance"] * n,
            "symbol": ["BTC/USDT"] * n,
            "timeframe": ["1m"] * n,
            "ts": _ts_array([t0 + dt.timedelta(minutes=i) for i in range(n)]),
            "model_id": [r[0] for r in rows],
            "horizon_bars": pa.array([5] * n, pa.int32()),
            "predicted_class": [r[1] for r in rows],
            "outcome_class": pa.array([r[2] for r in rows], pa.string()),
        }
    )


def test_model_leaderboard_ranks_by_test_f1_with_test_and_live_metrics(
    views_lake: duckdb.DuckDBPyConnection,
) -> None:
    day = dt.datetime(2024, 3, 1, tzinfo=UTC)
    ids = ["m_old", "m_best", "m_mid", "m_new"]  # created in this order, a day apart
    models = pa.table(
        {
            "model_id": ids,
            "version": pa.array([1, 2, 3, 4], pa.int32()),
            "name": ["ensemble"] * 4,
            "created_at": _ts_array([day + dt.timedelta(days=i) for i in range(4)]),
            "feature_set_version": ["fs1"] * 4,
            "training_snapshot_id": pa.array([10, 20, None, 40], pa.int64()),
            "onnx_path": [f"models/{i}.onnx" for i in ids],
            "onnx_sha256": ["0" * 64] * 4,
            "status": ["retired", "champion", "challenger", "challenger"],
        }
    )
    upsert(views_lake, "models", models)
    metric_rows = [
        # model, window, metric, value
        ("m_best", "test", "accuracy", 0.61),
        ("m_best", "test", "f1_macro", 0.58),
        ("m_best", "live_rolling", "accuracy", 0.55),  # not what the loop measured: ignored
        ("m_best", "validation", "f1_macro", 0.99),  # not a test metric: must not show
        ("m_mid", "test", "accuracy", 0.52),
        ("m_mid", "test", "f1_macro", 0.41),
        ("m_mid", "live_rolling", "f1_macro", 0.90),  # live f1 is not live accuracy
        ("m_old", "validation", "accuracy", 0.70),
        # m_new has no metrics yet
    ]
    metrics = pa.table(
        {
            "model_id": [r[0] for r in metric_rows],
            "window_name": [r[1] for r in metric_rows],
            "metric": [r[2] for r in metric_rows],
            "value": [r[3] for r in metric_rows],
            "evaluated_at": _ts_array([day] * len(metric_rows)),
        }
    )
    upsert(views_lake, "model_metrics", metrics)
    # live accuracy = resolved predictions of the model that were right (the serving loop's
    # feedback fills outcome_class); unresolved ones and the RSI fallback's do not count
    served: list[tuple[str, str, str | None]] = [
        ("m_best", "buy", "buy"),
        ("m_best", "sell", "sell"),
        ("m_best", "hold", "buy"),
        ("m_best", "hold", "hold"),
        ("m_best", "sell", None),
        ("m_old", "buy", "sell"),
        ("m_old", "buy", "buy"),
        ("rsi_fallback", "buy", "buy"),
    ]
    views_lake.execute("DELETE FROM predictions")  # both view tests write predictions
    upsert(views_lake, "predictions", _predictions(served, day))

    rows = views_lake.execute(
        "SELECT model_id, version, status, training_snapshot_id, test_accuracy, test_f1_macro, "
        "live_accuracy, live_resolved FROM model_leaderboard"
    ).fetchall()
    # by test F1 (best first), then models without one, newest first
    assert rows == [
        ("m_best", 2, "champion", 20, 0.61, 0.58, 0.75, 4),
        ("m_mid", 3, "challenger", None, 0.52, 0.41, None, 0),
        ("m_new", 4, "challenger", 40, None, None, None, 0),
        ("m_old", 1, "retired", 10, None, None, 0.5, 2),
    ]


def test_model_leaderboard_shows_the_promotion_figures_beside_live_accuracy(
    views_lake: duckdb.DuckDBPyConnection,
) -> None:
    """0010: ic with its CI, log-loss and the training-frequency baseline's, ECE and Brier from
    each model's test window, beside 0009's live_accuracy; best IC first, NaN reads as NULL."""
    day = dt.datetime(2024, 6, 1, tzinfo=UTC)
    ids = ["lb_weak", "lb_strong", "lb_flat"]
    upsert(
        views_lake,
        "models",
        pa.table(
            {
                "model_id": ids,
                "version": pa.array([11, 12, 13], pa.int32()),
                "name": ["leaderboard"] * 3,
                "created_at": _ts_array([day + dt.timedelta(days=i) for i in range(3)]),
                "feature_set_version": ["fs1"] * 3,
                "training_snapshot_id": pa.array([1, 2, 3], pa.int64()),
                "onnx_path": [f"models/{i}.onnx" for i in ids],
                "onnx_sha256": ["1" * 64] * 3,
                "status": ["retired", "champion", "challenger"],
            }
        ),
    )
    figures = {
        "lb_weak": {"ic": 0.02, "ic_ci_low": -0.03, "ic_ci_high": 0.07, "log_loss": 1.05},
        "lb_strong": {"ic": 0.11, "ic_ci_low": 0.06, "ic_ci_high": 0.16, "log_loss": 0.98},
        # a constant score has no IC: stored NaN, shown NULL and ranked last
        "lb_flat": {"ic": math.nan, "ic_ci_low": math.nan, "ic_ci_high": math.nan},
    }
    rows = [
        (model, window, metric, value)
        for model, values in figures.items()
        for window in ("test", "oos_elsewhere")  # only the model's own test window shows
        for metric, value in {
            **values,
            "log_loss_train_frequency": 1.01,
            "ece": 0.04,
            "brier": 0.6,
        }.items()
    ]
    rows = [(m, w, k, v + (5.0 if w != "test" else 0.0)) for m, w, k, v in rows]
    upsert(
        views_lake,
        "model_metrics",
        pa.table(
            {
                "model_id": [r[0] for r in rows],
                "window_name": [r[1] for r in rows],
                "metric": [r[2] for r in rows],
                "value": [r[3] for r in rows],
                "evaluated_at": _ts_array([day] * len(rows)),
            }
        ),
    )
    views_lake.execute("DELETE FROM predictions")
    served: list[tuple[str, str, str | None]] = [
        ("lb_strong", "buy", "buy"),
        ("lb_strong", "sell", "hold"),
        ("lb_weak", "hold", "hold"),
    ]
    upsert(views_lake, "predictions", _predictions(served, day))

    got = views_lake.execute(
        "SELECT model_id, ic, ic_ci_low, ic_ci_high, log_loss, log_loss_train_frequency, ece, "
        "brier, live_accuracy, live_resolved FROM model_leaderboard WHERE name = 'leaderboard'"
    ).fetchall()
    assert got == [
        ("lb_strong", 0.11, 0.06, 0.16, 0.98, 1.01, 0.04, 0.6, 0.5, 2),
        ("lb_weak", 0.02, -0.03, 0.07, 1.05, 1.01, 0.04, 0.6, 1.0, 1),
        ("lb_flat", None, None, None, None, 1.01, 0.04, 0.6, None, 0),
    ]
    # 0009's columns are all still there
    columns = [d[0] for d in views_lake.execute("SELECT * FROM model_leaderboard").description]
    assert columns[:11] == [
        "model_id", "version", "name", "status", "created_at", "feature_set_version",
        "training_snapshot_id", "test_accuracy", "test_f1_macro", "live_accuracy",
        "live_resolved",
    ]  # fmt: skip


def test_live_performance_per_account(views_lake: duckdb.DuckDBPyConnection) -> None:
    t0 = dt.datetime(2024, 5, 1, tzinfo=UTC)
    # account, hours after t0, equity, stored drawdown (written out of time order). acct_a's rows
    # carry the old positive sign (1 - equity / peak), acct_b's the negative one: the view
    # reads the equity curve, so both report a negative max drawdown.
    equity_rows = [
        ("acct_a", 2, 990.0, 0.10),
        ("acct_a", 0, 1000.0, 0.0),
        ("acct_a", 1, 1100.0, 0.0),
        ("acct_b", 0, 500.0, 0.0),
        ("acct_b", 3, 550.0, 0.0),
        ("acct_b", 1, 400.0, -0.20),
        ("acct_b", 2, 450.0, -0.10),
    ]
    upsert(
        views_lake,
        "equity",
        pa.table(
            {
                "account": [r[0] for r in equity_rows],
                "ts": _ts_array([t0 + dt.timedelta(hours=r[1]) for r in equity_rows]),
                "cash": [r[2] for r in equity_rows],
                "position_value": [0.0] * len(equity_rows),
                "equity": [r[2] for r in equity_rows],
                "drawdown": [r[3] for r in equity_rows],
            }
        ),
    )
    fees = [0.25, 0.5, 1.25]
    upsert(
        views_lake,
        "fills",
        pa.table(
            {
                "account": ["acct_a"] * 3,
                "fill_id": ["f1", "f2", "f3"],
                "client_order_id": ["o1", "o1", "o2"],
                "exchange": ["binance"] * 3,
                "symbol": ["BTC/USDT"] * 3,
                "ts": _ts_array([t0 + dt.timedelta(minutes=i) for i in range(3)]),
                "side": ["buy", "buy", "sell"],
                "price": [100.0, 101.0, 102.0],
                "amount": [1.0, 1.0, 2.0],
                "fee": fees,
            }
        ),
    )
    # predicted, outcome: 3 of 4 resolved ones right; the unresolved one does not count
    predictions: list[tuple[str, str, str | None]] = [
        ("m_best", "buy", "buy"),
        ("m_best", "sell", "sell"),
        ("m_best", "hold", "buy"),
        ("m_best", "hold", "hold"),
        ("m_best", "sell", None),
    ]
    views_lake.execute("DELETE FROM predictions")  # both view tests write predictions
    upsert(views_lake, "predictions", _predictions(predictions, t0))

    rows = views_lake.execute(
        "SELECT account, as_of, equity, total_return, drawdown, max_drawdown, fills, fees_paid, "
        "resolved_predictions, realized_accuracy FROM live_performance ORDER BY account"
    ).fetchall()
    assert len(rows) == 2
    a, b = rows
    assert a[0] == "acct_a" and a[1].astimezone(UTC) == t0 + dt.timedelta(hours=2)
    assert a[2:] == pytest.approx((990.0, 990.0 / 1000.0 - 1, -0.10, -0.10, 3, sum(fees), 4, 0.75))
    assert b[0] == "acct_b" and b[1].astimezone(UTC) == t0 + dt.timedelta(hours=3)
    assert b[2:] == pytest.approx((550.0, 550.0 / 500.0 - 1, 0.0, -0.20, 0, 0.0, 4, 0.75))
