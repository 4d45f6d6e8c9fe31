"""Importer fixes of issue 18 item 12, in process: parser errors name the file, nanosecond
times, freqtrade's futures files (real ones, ../shared/data/futures) told apart from candles,
and true duplicate counts on the way to ``ingestion_runs``."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from pipelines.collect import collect_series, collect_trades, ingestion_table, upsert_merge
from pipelines.importers import (
    ImportError_,
    describe,
    iter_import,
    merge_side_tables,
    read_candles,
    read_funding_rates,
    read_mark_candles,
)
from pipelines.sources import FileSource

FUTURES = Path(__file__).resolve().parents[3] / "shared" / "data" / "futures"
XRP = "XRP/USDT:USDT"


def test_a_three_column_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ETH_BTC-1m.json"
    path.write_text(json.dumps([[1_700_000_040_000, 1.0, 2.0], [1_700_000_100_000, 1.0, 2.0]]))
    with pytest.raises(ImportError_, match=r"ETH_BTC-1m.json: .*found rows of 3 value"):
        read_candles(path, exchange="x")
    ragged = tmp_path / "ETH_BTC-5m.json"
    ragged.write_text(json.dumps([[1_700_000_100_000, 1, 2, 0.5, 1, 3], [1_700_000_400_000, 1]]))
    with pytest.raises(ImportError_, match=r"ETH_BTC-5m.json: cannot read"):
        read_candles(ragged, exchange="x")


def test_nanosecond_and_microsecond_epoch_times_import(candles_dir: Path, tmp_path: Path) -> None:
    real = pl.read_ipc(candles_dir / "ETH_BTC-5m.feather").head(50)
    expected, _ = read_candles(candles_dir / "ETH_BTC-5m.feather", exchange="x")
    for unit in ("ns", "us", "ms"):
        path = tmp_path / f"ETH_BTC-5m-{unit}.csv"
        as_int = pl.col("date").dt.cast_time_unit(unit).cast(pl.Int64)  # type: ignore[arg-type]
        real.with_columns(as_int).write_csv(path)
        table, report = read_candles(path, exchange="x", symbol="ETH/BTC", timeframe="5m")
        assert table.to_pylist() == expected.slice(0, 50).to_pylist(), unit
        assert report.rows == 50


def test_any_parser_error_names_the_file(tmp_path: Path) -> None:
    """Far-out times used to fail inside polars ("date value out of range") with no file name."""
    path = tmp_path / "ETH_BTC-5m.csv"
    path.write_text("date,open,high,low,close,volume\n9" + "9" * 25 + ",1,2,0.5,1,3\n")
    with pytest.raises(ImportError_, match=r"ETH_BTC-5m.csv"):
        read_candles(path, exchange="x")


def test_futures_files_are_told_apart() -> None:
    kinds = {p.name: (describe(p).kind, describe(p).symbol) for p in FUTURES.glob("*.feather")}
    assert kinds == {
        "XRP_USDT_USDT-1h-futures.feather": ("candles", XRP),
        "XRP_USDT_USDT-1h-mark.feather": ("mark_candles", XRP),
        "XRP_USDT_USDT-8h-mark.feather": ("mark_candles", XRP),
        "XRP_USDT_USDT-8h-funding_rate.feather": ("funding_rates", XRP),
    }
    assert describe(Path("BTC_USDT_USDT-1h-index.feather")).kind == "refused"


def test_real_mark_and_funding_files(tmp_path: Path) -> None:
    mark, report = read_mark_candles(FUTURES / "XRP_USDT_USDT-1h-mark.feather", exchange="b")
    raw = pl.read_ipc(FUTURES / "XRP_USDT_USDT-1h-mark.feather")
    assert report.kind == "mark_candles" and mark.num_rows == 100
    assert mark["close"].to_pylist() == raw["close"].to_list()
    assert mark["volume"].null_count == 100  # freqtrade writes no mark volume
    eight, _ = read_mark_candles(FUTURES / "XRP_USDT_USDT-8h-mark.feather", exchange="b")
    assert eight.num_rows == 91 and eight["timeframe"][0].as_py() == "8h"
    funding, report = read_funding_rates(
        FUTURES / "XRP_USDT_USDT-8h-funding_rate.feather", exchange="b"
    )
    assert report.rows == 91 and funding.column_names[-1] == "funding_rate"
    assert funding["funding_rate"].to_pylist()[:3] == [0.0001] * 3  # the rate was in `open`
    # kept as the exchange stamped it: 00:00:00.017
    assert funding["ts"].cast(pa.int64())[0].as_py() % 3_600_000 == 17
    # a funding file with a rate that is not a number names the file and the time
    bad = tmp_path / "XRP_USDT_USDT-8h-funding_rate.csv"
    bad.write_text("date,open\n2021-11-18T00:00:00Z,0.0001\n2021-11-18T08:00:00Z,inf\n")
    with pytest.raises(ImportError_, match=r"funding_rate.csv: .*not a finite number at"):
        read_funding_rates(bad, exchange="b")


def test_a_futures_directory_never_puts_mark_or_funding_rows_into_candles(lake, settings) -> None:  # type: ignore[no-untyped-def]
    source = FileSource(FUTURES, name="binance")
    assert source.series == [(XRP, "1h")] and source.failures == []
    assert sorted((t, r.timeframe) for t, _, r in source.side_tables) == [
        ("funding_rates", "8h"),
        ("mark_candles", "1h"),
        ("mark_candles", "8h"),
    ]
    merge = upsert_merge(lake, settings)
    stats = collect_series(source, merge, XRP, "1h", 0, None, resume=False)
    side = merge_side_tables(lake, source.side_tables, settings=settings)
    again = merge_side_tables(lake, source.side_tables, settings=settings)
    count = lake.execute(
        "SELECT (SELECT count(*) FROM candles), (SELECT count(*) FROM mark_candles), "
        "(SELECT count(*) FROM funding_rates)"
    ).fetchone()
    assert count == (100, 191, 91) and stats.rows_merged == 100
    assert [s.timeframe for s in side] == ["1h mark_candles", "8h funding_rates", "8h mark_candles"]
    assert all("0 written" in s.message for s in again)  # a re-import writes nothing new
    futures = pl.read_ipc(FUTURES / "XRP_USDT_USDT-1h-futures.feather")
    stored = lake.execute("SELECT close FROM candles ORDER BY ts").fetchall()
    assert [r[0] for r in stored] == futures["close"].to_list()  # the contract's candles intact


def test_duplicate_rows_are_counted_for_ingestion_runs(  # type: ignore[no-untyped-def]
    lake, settings, candles_dir, tmp_path
) -> None:
    real = pl.read_ipc(candles_dir / "ETH_BTC-5m.feather").head(100)
    folder = tmp_path / "data"
    folder.mkdir()
    pl.concat([real, real.slice(10, 7)]).write_ipc(folder / "ETH_BTC-5m.feather")  # 7 repeats
    trades = [[1_600_000_000_000 + i, str(i % 5), None, "buy", 1.0, 1.0, 1.0] for i in range(8)]
    (folder / "ETH_BTC-trades.json").write_text(json.dumps(trades))  # ids 0..4: 3 repeats
    for _ in range(2):  # a second import counts the file's duplicates again, nothing more
        source = FileSource(folder, name="binance")
        merge = upsert_merge(lake, settings)
        candles = collect_series(source, merge, "ETH/BTC", "5m", 0, None, resume=False)
        traded = collect_trades(source, merge, "ETH/BTC", 0, None)
        row = ingestion_table("run", [candles, traded]).to_pylist()
        assert [r["duplicates_dropped"] for r in row] == [7, 3]
        assert [r["rows_fetched"] for r in row] == [100, 5]
    assert lake.execute("SELECT count(*) FROM candles").fetchone() == (100,)


def test_a_bad_file_in_a_futures_directory_is_named_and_the_rest_read(tmp_path: Path) -> None:
    for p in FUTURES.glob("*.feather"):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "XRP_USDT_USDT-1h-index.feather").write_bytes(b"")
    failures: list[str] = []
    read = [r.path for _, _, r in iter_import(tmp_path, exchange="b", failures=failures)]
    assert len(read) == 4
    (failure,) = failures
    assert "XRP_USDT_USDT-1h-index.feather: freqtrade index candles are not imported" in failure
