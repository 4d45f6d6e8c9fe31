"""The `quality` flow, the `gate_task` wrapper and `tradeloop quality`, on a real Prefect server."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from prefect import flow
from typer.testing import CliRunner

from expectations.gate import GateResult, QualityGateError
from tests.support.artifacts import artifact_texts
from tests.support.batches import candle_rows, real_candle_batch, to_arrow
from warehouse import Settings, upsert


def _seed(lake: duckdb.DuckDBPyConnection, settings: Settings, candles_dir: Path) -> int:
    """Real 5m candles stored through the gate, plus one bad row written around it."""
    from expectations.gate import gate_and_merge

    batch = real_candle_batch(candles_dir / "XRP_ETH-5m.feather")
    assert gate_and_merge(lake, "candles", batch, settings=settings).success
    rows = candle_rows(1, symbol="BAD/USDT", timeframe="1m")
    rows["low"] = [-1.0]  # stored before the suite caught it
    upsert(lake, "candles", to_arrow(rows))
    return batch.num_rows


def test_gate_task_merges_a_batch_inside_a_flow(
    prefect_server: None, lake: duckdb.DuckDBPyConnection, settings: Settings
) -> None:
    from flows.quality import gate_task

    @flow
    def one_batch(batch: pa.Table) -> GateResult:
        return gate_task(settings, "candles", batch, run_id="t")

    result = one_batch(to_arrow(candle_rows(5)))
    assert (result.rows_in, result.rows_merged, result.success) == (5, 5, True)
    assert lake.execute("SELECT count(*) FROM candles").fetchone() == (5,)


def test_quality_flow_revalidates_publishes_and_fails_by_policy(
    prefect_server: None, lake: duckdb.DuckDBPyConnection, settings: Settings, candles_dir: Path
) -> None:
    from flows.quality import quality

    stored = _seed(lake, settings, candles_dir)
    report = quality(fail_on_policy=False)
    results = report["results"]
    assert isinstance(results, list) and len(results) == 2
    by_symbol = {r.message.removeprefix("FAILED ").split()[1]: r for r in results}
    assert by_symbol["XRP/ETH"].success and by_symbol["XRP/ETH"].rows_merged == stored
    assert any("6 gaps" in w for w in by_symbol["XRP/ETH"].warnings)
    assert not by_symbol["BAD/USDT"].success
    assert "price_positive" in by_symbol["BAD/USDT"].message
    docs = report["data_docs"]
    assert (
        isinstance(docs, Path)
        and docs.is_file()
        and str(docs).startswith(str(settings.home.resolve()))
    )
    assert "candles@v" in docs.read_text() or any(docs.parent.rglob("*.html"))
    summary = str(report["summary"])
    assert "FAILED" in summary and "6 gaps" in summary

    assert any("BAD/USDT" in text for text in artifact_texts("quality-summary"))

    # the stored bad row is flagged, not deleted: nothing accepted is lost
    assert lake.execute("SELECT count(*) FROM candles WHERE symbol = 'BAD/USDT'").fetchone() == (1,)
    with pytest.raises(QualityGateError, match="BAD/USDT"):
        quality(symbols=["BAD/USDT"], build_docs=False)


def test_tradeloop_quality_command_prints_the_data_docs_path(
    prefect_server: None,
    lake: duckdb.DuckDBPyConnection,
    settings: Settings,
    candles_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.cli import app

    _seed(lake, settings, candles_dir)
    monkeypatch.setenv("TRADELOOP_HOME", str(settings.home))
    out = CliRunner().invoke(
        app,
        ["quality", "--symbol", "XRP/ETH", "--start", "2019-10-11", "--end", "2019-10-12T03:00"],
    )
    assert out.exit_code == 0, out.output
    assert "ok      candles XRP/ETH 5m: 321 rows in" in out.output
    assert "warning: XRP/ETH 5m: 3 gaps, 3 missing bars" in out.output
    assert "Data Docs: " in out.output
    path = Path(out.output.split("Data Docs: ")[1].strip())
    assert path.is_file()
