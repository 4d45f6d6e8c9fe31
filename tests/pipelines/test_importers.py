"""Importing the real freqtrade data (../shared/data/candles) and CSV/Parquet/JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from pipelines.importers import ImportError_, discover, pair_to_symbol, read_candles, read_trades
from warehouse import upsert

# the holes the data README documents (real minutes without trades) -- they must stay holes
EXPECTED_GAPS = {
    "UNITTEST_BTC-1m.feather": 538,
    "ETH_BTC-5m.feather": 0,
    "LTC_BTC-5m.feather": 0,
    "XRP_ETH-5m.feather": 6,
}


def test_every_candle_file_round_trips_row_for_row(candles_dir: Path, lake, settings) -> None:
    files = [f for f in discover(candles_dir) if f.kind == "candles"]
    assert {f.path.name for f in files} >= set(EXPECTED_GAPS) | {"XRP_ETH-1m.feather"}
    for info in files:
        table, report = read_candles(info.path, exchange="binance")
        upsert(lake, "candles", table, settings=settings)
        source = feather.read_table(info.path)
        stored = lake.execute(
            "SELECT epoch_ms(ts) AS ts_ms, open, high, low, close, volume FROM candles "
            "WHERE symbol = ? AND timeframe = ? ORDER BY ts",
            [report.symbol, report.timeframe],
        ).fetch_arrow_table()
        assert stored.num_rows == source.num_rows == report.rows, info.path.name
        src_ms = source["date"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy()
        np.testing.assert_array_equal(stored["ts_ms"].to_numpy(), src_ms)
        for col in ("open", "high", "low", "close", "volume"):
            np.testing.assert_array_equal(
                stored[col].to_numpy(), source[col].to_numpy(), err_msg=col
            )
        # real gaps are preserved (rows == source rows: nothing filled) and reported
        step = {"1m": 60_000, "5m": 300_000}[report.timeframe]
        holes = int((np.diff(src_ms) > step).sum())
        assert report.gaps == holes
        if info.path.name in EXPECTED_GAPS:
            assert report.gaps == EXPECTED_GAPS[info.path.name], report.summary()
        assert report.duplicates_dropped == 0, report.summary()  # every file, not just the last


def test_trades_file_round_trips(candles_dir: Path, lake, settings) -> None:
    path = candles_dir / "XRP_ETH-trades.feather"
    table, report = read_trades(path, exchange="binance")
    upsert(lake, "trades", table, settings=settings)
    source = feather.read_table(path).to_pandas()
    stored = lake.execute(
        "SELECT trade_id, epoch_ms(ts) AS ts_ms, side, price, amount, cost FROM trades "
        "ORDER BY ts, trade_id"
    ).df()
    assert len(stored) == len(source) == report.rows == 12_477
    source = source.sort_values(["timestamp", "id"]).reset_index(drop=True)
    assert list(stored["trade_id"]) == list(source["id"])
    np.testing.assert_array_equal(stored["ts_ms"].to_numpy(), source["timestamp"].to_numpy())
    assert list(stored["side"]) == list(source["side"])
    for col in ("price", "amount", "cost"):
        np.testing.assert_array_equal(stored[col].to_numpy(), source[col].to_numpy(), err_msg=col)
    assert report.symbol == "XRP/ETH" and report.duplicates_dropped == 0


def test_names_and_symbols() -> None:
    assert pair_to_symbol("ETH_BTC") == "ETH/BTC"
    assert pair_to_symbol("BTC_USDT_USDT") == "BTC/USDT:USDT"
    with pytest.raises(ImportError_, match="BASE_QUOTE"):
        pair_to_symbol("NOPAIR")


def _frame() -> pl.DataFrame:
    ts = [1_699_999_800_000 + i * 300_000 for i in (0, 1, 2, 5)]  # a 2-bar hole
    return pl.DataFrame(
        {
            "Date": ts,
            "Open": [1.0, 2, 3, 4],
            "High": [2.0, 3, 4, 5],
            "Low": [0.5, 1, 2, 3],
            "Close": [1.5, 2.5, 3.5, 4.5],
            "Volume": [10.0, 20, 30, 40],
        }
    )


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_csv_parquet_json(tmp_path: Path, fmt: str) -> None:
    frame = _frame()
    path = tmp_path / f"SOL_USDT-5m.{fmt}"
    if fmt == "csv":
        frame.with_columns(
            pl.from_epoch("Date", time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%S")
        ).write_csv(path)
    elif fmt == "parquet":
        frame.write_parquet(path)
    else:
        path.write_text(json.dumps(frame.rows()))
    table, report = read_candles(path, exchange="x")
    assert (report.symbol, report.timeframe, report.rows) == ("SOL/USDT", "5m", 4)
    assert (report.gaps, report.missing_bars) == (1, 2)
    assert table["close"].to_pylist() == [1.5, 2.5, 3.5, 4.5]
    assert table["ts"].cast(pa.int64()).to_pylist() == frame["Date"].to_list()


def test_timeframe_inferred_and_symbol_required(tmp_path: Path) -> None:
    path = tmp_path / "prices.parquet"
    _frame().write_parquet(path)
    with pytest.raises(ImportError_, match=r"prices.parquet.*--symbol"):
        read_candles(path, exchange="x")
    _, report = read_candles(path, exchange="x", symbol="SOL/USDT")
    assert report.timeframe == "5m"


def test_bad_files_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "ETH_USDT-1m.csv"
    bad.write_text("date,open,high,low,close,volume\n2024-01-01T00:00:00,1,2,0.5,oops,3\n")
    with pytest.raises(ImportError_, match=r"ETH_USDT-1m.csv.*'close'.*not a number"):
        read_candles(bad, exchange="x")
    clash = tmp_path / "ETH_USDT-5m.csv"
    clash.write_text(
        "date,open,high,low,close,volume\n2024-01-01T00:00:00,1,2,0.5,1,3\n2024-01-01T00:00:00,1,2,0.5,1.1,3\n"
    )
    with pytest.raises(ImportError_, match="two different candles"):
        read_candles(clash, exchange="x")
    missing = tmp_path / "ETH_USDT-15m.csv"
    missing.write_text("date,open,high,low\n")
    with pytest.raises(ImportError_, match=r"missing column\(s\) close, volume"):
        read_candles(missing, exchange="x")


def test_freqtrade_json_gz_candles_and_json_trades(tmp_path: Path) -> None:
    import gzip

    rows = [[1_699_999_800_000 + i * 60_000, 1.0 + i, 2.0 + i, 0.5, 1.5, 10.0] for i in range(3)]
    candles = tmp_path / "ETH_BTC-1m.json.gz"
    candles.write_bytes(gzip.compress(json.dumps(rows).encode()))
    trades = tmp_path / "ETH_BTC-trades.json"
    trades.write_text(
        json.dumps(
            [
                [1_699_999_800_123, "7", None, "buy", 0.05, 2.0, 0.1],
                [1_699_999_800_456, "8", None, "sell", 0.06, 1.0, 0.06],
            ]
        )
    )
    found = {f.path.name: f for f in discover(tmp_path)}
    assert (found["ETH_BTC-1m.json.gz"].kind, found["ETH_BTC-trades.json"].kind) == (
        "candles",
        "trades",
    )
    table, report = read_candles(candles, exchange="x")
    assert (report.symbol, report.timeframe, report.rows) == ("ETH/BTC", "1m", 3)
    assert table["open"].to_pylist() == [1.0, 2.0, 3.0]
    ttable, treport = read_trades(trades, exchange="x")
    assert ttable["trade_id"].to_pylist() == ["7", "8"] and ttable["side"].to_pylist() == [
        "buy",
        "sell",
    ]
    assert ttable["ts"].cast(pa.int64()).to_pylist() == [1_699_999_800_123, 1_699_999_800_456]
