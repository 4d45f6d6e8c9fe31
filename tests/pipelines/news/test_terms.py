"""Matching headlines to assets from the editable ``news_terms`` table (seeded by migration
0018): tickers in capitals only, names in any case, whole words only."""

from __future__ import annotations

import duckdb
import pytest

from pipelines.news import TermMatcher, asset_of, matcher
from pipelines.news.terms import add_terms, read_terms, remove_terms
from warehouse import Settings, connect, migrate


@pytest.fixture(scope="module")
def seeded_terms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The terms a freshly migrated warehouse holds (one migration for the module's cases)."""
    con = connect(Settings(home=tmp_path_factory.mktemp("terms") / "home"))
    try:
        migrate(con)
        return read_terms(con)
    finally:
        con.close()


@pytest.mark.parametrize(
    ("text", "assets"),
    [
        ("Bitcoin hits a record", ("BTC",)),
        ("BITCOIN and ethereum both up", ("BTC", "ETH")),
        ("ETH/BTC ratio slips", ("BTC", "ETH")),
        ("$SOL jumps", ("SOL",)),
        ("the sol rises over the eth zurich campus", ()),  # tickers match in capitals only
        ("Ethereum's upgrade ships", ("ETH",)),
        ("Tethered assets", ()),  # 'ether' inside a word is not the word
        ("Binance Coin burns tokens", ("BNB",)),
        ("Markets calm", ()),
    ],
)
def test_seeded_terms_tag_by_ticker_and_name(
    seeded_terms: dict[str, list[str]], text: str, assets: tuple[str, ...]
) -> None:
    assert TermMatcher(seeded_terms).match(text) == assets


def test_terms_are_edited_in_the_warehouse(lake: duckdb.DuckDBPyConnection) -> None:
    assert "bitcoin" in read_terms(lake)["BTC"]
    assert add_terms(lake, "pepe", ["pepe", "PEPE", "pepe"]) == 2
    assert add_terms(lake, "PEPE", ["pepe"]) == 0, "adding a term twice stores it once"
    assert matcher(lake).match("Pepe rallies") == ("PEPE",)
    assert remove_terms(lake, "BTC", ["bitcoin", "not-there"]) == 1
    assert matcher(lake).match("bitcoin rallies") == ()
    assert matcher(lake).match("BTC rallies") == ("BTC",)
    with pytest.raises(ValueError, match="at least one term"):
        add_terms(lake, "BTC", [" "])


def test_a_pair_means_its_base_asset() -> None:
    assert [asset_of(s) for s in ("ETH/BTC", "XRP/USDT:USDT", "btc/usdt")] == ["ETH", "XRP", "BTC"]
    assert TermMatcher({"BTC": []}).match("BTC") == ()
