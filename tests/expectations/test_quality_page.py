"""The quality report's pages, rendered from the ``quality_results`` and ``quarantine`` rows
that real validations wrote (a real 5m file, and a stored row the suite now refuses)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from expectations.gate import gate_and_merge
from expectations.quality_page import (
    expectation_rows,
    read_latest,
    read_run,
    write_quality_pages,
)
from expectations.revalidate import revalidate_candles
from tests.support.batches import candle_rows, real_candle_batch, to_arrow
from warehouse import Settings, connect, migrate, upsert

RUN = "quality-test-run"


@pytest.fixture(scope="module")
def validated(
    tmp_path_factory: pytest.TempPathFactory, candles_dir: Path
) -> Iterator[tuple[duckdb.DuckDBPyConnection, Settings, int]]:
    """One warehouse for the module (a GX validation costs seconds): XRP/ETH 5m stored through
    the gate, a BAD/USDT 1m row the suite refuses stored around it, then both series
    re-validated under one run id, as the quality flow does."""
    settings = Settings(home=tmp_path_factory.mktemp("quality-page") / "home")
    lake = connect(settings)
    migrate(lake)
    batch = real_candle_batch(candles_dir / "XRP_ETH-5m.feather")
    assert gate_and_merge(lake, "candles", batch, settings=settings).success
    rows = candle_rows(3, symbol="BAD/USDT", timeframe="1m")
    rows["low"][1] = -1.0  # stored before the suite caught it
    upsert(lake, "candles", to_arrow(rows), settings=settings)
    for symbol, timeframe in (("XRP/ETH", "5m"), ("BAD/USDT", "1m")):
        revalidate_candles(
            lake,
            settings=settings,
            exchange="binance",
            symbol=symbol,
            timeframe=timeframe,
            run_id=RUN,
        )
    yield lake, settings, batch.num_rows
    lake.close()


def test_run_page_names_each_series_and_its_expectations(
    validated: tuple[duckdb.DuckDBPyConnection, Settings, int],
) -> None:
    lake, settings, stored = validated
    page = write_quality_pages(lake, settings.home / "reports", RUN)
    assert page == settings.home / "reports" / "quality" / "runs" / f"{RUN}.html"
    text = page.read_text()

    sections = dict(re.findall(r"<section id='([^']+)'>(.*?)</section>", text, flags=re.S))
    good = sections["candles-binance-XRP-ETH-5m"]
    bad = sections["candles-binance-BAD-USDT-1m"]
    for section, symbol, timeframe in ((good, "XRP/ETH", "5m"), (bad, "BAD/USDT", "1m")):
        assert f"<h2>binance {symbol} {timeframe} " in section
        assert f"symbol <b class='series'>{symbol}</b>" in section
        assert f"timeframe <b>{timeframe}</b>" in section
    assert f"{stored} rows in, {stored} passed, 0 quarantined" in good
    assert "class='fail'" not in good  # every expectation passed on the real file
    assert "6 gaps" in good  # the file's gaps, from the validation's warnings

    # the bad row: the batch failed, its rule failed with one unexpected row, and the
    # quarantined row is listed with its reason
    assert "3 rows in, 2 passed, 1 quarantined" in bad and "FAILED" in bad
    failed = re.findall(
        r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>critical</td>"
        r"<td><span class='fail'>fail</span></td><td class='n'>(\d+)</td>",
        bad,
    )
    assert failed and all(n == "1" for _, _, n in failed), failed
    assert any("low" in columns for _, columns, _ in failed)
    assert "Quarantined rows (the first 1 of 1)" in bad and "price_positive" in bad

    assert not re.search(r">\s*(None|nan|NaN)\s*<", text)  # no empty figure printed raw
    assert not re.search(r"""(src|href)=['"]?https?:""", text)  # nothing to fetch


def test_expectations_are_listed_one_by_one_with_counts(
    validated: tuple[duckdb.DuckDBPyConnection, Settings, int],
) -> None:
    lake = validated[0]
    by_symbol = {v.symbol: v for v in read_run(lake, RUN)}
    bad = by_symbol["BAD/USDT"]
    recorded = bad.details["expectations"]
    rows = expectation_rows(bad)
    assert len(rows) == len(recorded) > 10  # one row per expectation of the suite
    # the page's counts are the gate's: the unexpected rows per rule add up
    by_rule: dict[str, int] = {}
    for x in recorded:
        by_rule[x["rule"]] = by_rule.get(x["rule"], 0) + x["unexpected"]
    assert {k: v for k, v in by_rule.items() if v} == bad.details["unexpected_by_rule"]
    assert sum(int(r[4]) for r in rows) == sum(bad.details["unexpected_by_rule"].values())


def test_index_shows_the_latest_validation_of_every_series(
    validated: tuple[duckdb.DuckDBPyConnection, Settings, int],
) -> None:
    lake, settings, _ = validated
    write_quality_pages(lake, settings.home / "reports", RUN)
    # a later validation of one series, outside any run: the index shows it, not the older one
    revalidate_candles(
        lake, settings=settings, exchange="binance", symbol="XRP/ETH", timeframe="5m"
    )
    index = write_quality_pages(lake, settings.home / "reports")
    assert index.name == "index.html"
    text = index.read_text()
    latest = {(v.symbol, v.timeframe): v for v in read_latest(lake)}
    assert latest[("XRP/ETH", "5m")].run_id is None
    assert latest[("BAD/USDT", "1m")].run_id == RUN
    assert "<span class='series'>XRP/ETH</span>" in text
    assert f"<a href='runs/{RUN}.html'>{RUN}</a>" in text  # the run's page exists: linked
    assert (index.parent / "runs" / f"{RUN}.html").is_file()


def test_a_validation_written_before_per_expectation_records_shows_its_rule_counts(
    validated: tuple[duckdb.DuckDBPyConnection, Settings, int],
) -> None:
    bad = next(v for v in read_run(validated[0], RUN) if v.symbol == "BAD/USDT")
    details = {k: v for k, v in bad.details.items() if k != "expectations"}
    rows = expectation_rows(dataclasses.replace(bad, details=details))
    assert [r[0] for r in rows] == list(details["unexpected_by_rule"])
    assert [int(r[4]) for r in rows] == list(details["unexpected_by_rule"].values())
