"""Every real file in ../shared/data/candles passes the gate; its gaps are reported."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.feather as feather

from expectations.gate import gate_and_merge
from tests.support.batches import real_candle_batch
from warehouse import Settings


def test_every_real_candle_file_passes_with_its_gaps_reported(
    candles_dir: Path, lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    files = sorted(candles_dir.glob("*-[0-9]*[mhd].feather"))
    assert len(files) == 5
    total = 0
    for path in files:
        batch = real_candle_batch(path)
        result = gate_and_merge(lake, "candles", batch, settings=settings, run_id="real")
        assert result.success, result.message
        assert result.rows_quarantined == 0, result.message
        assert result.rows_merged == batch.num_rows
        total += batch.num_rows
        if path.stem in ("ETH_BTC-5m", "LTC_BTC-5m"):  # complete files
            assert result.warnings == ()
        else:
            assert any("gaps" in w for w in result.warnings), path.name
        if path.stem == "UNITTEST_BTC-1m":  # the README counts 538 holes
            assert result.warnings[0].startswith("UNITTEST/BTC 1m: 538 gaps")
        if path.stem == "XRP_ETH-5m":  # six 10-minute gaps
            assert result.warnings[0].startswith("XRP/ETH 5m: 6 gaps, 6 missing bars")
    assert lake.execute("SELECT count(*) FROM candles").fetchone() == (total,)
    assert lake.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
    details = lake.execute(
        "SELECT details_json FROM quality_results WHERE symbol = 'UNITTEST/BTC'"
    ).fetchone()
    assert details is not None
    assert json.loads(details[0])["gaps"][0]["gaps"] == 538


def test_real_trades_pass_the_trades_suite(
    candles_dir: Path, lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    raw = feather.read_table(candles_dir / "XRP_ETH-trades.feather")
    n = raw.num_rows
    batch = pa.table(
        {
            "exchange": pa.array(["binance"] * n),
            "symbol": pa.array(["XRP/ETH"] * n),
            "trade_id": raw["id"],
            "ts": raw["timestamp"],  # epoch milliseconds, coerced by the gate
            "side": raw["side"],
            "price": raw["price"],
            "amount": raw["amount"],
            "cost": raw["cost"],
        }
    )
    result = gate_and_merge(lake, "trades", batch, settings=settings)
    assert result.success, result.message
    assert (result.rows_merged, result.rows_quarantined) == (n, 0)
    assert lake.execute("SELECT count(*) FROM trades").fetchone() == (n,)
