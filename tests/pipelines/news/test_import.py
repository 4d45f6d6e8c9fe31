"""File import: CSV and JSON Lines headlines stored once, tagged and scored; a bad row stops
its file, before anything of it is stored, with the file and line named."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest

from pipelines.news import NewsFileSource, NewsSourceError, read_news
from tests.support.feeds import ingest_counts

CSV = """ts,title,symbols,body
2024-03-01T10:00:00Z,Great week for Solana as prices rise,SOL/USDT,
2024-03-01 11:30,XRP falls; traders fear a crash,,"Ripple's token slid, losses deepen."
1709290800000,Markets quiet ahead of the Fed,,
"""


def test_csv_and_jsonl_import_once_with_tags_and_scores(
    lake: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    csv_file = tmp_path / "headlines.csv"
    csv_file.write_text(CSV)
    jsonl = tmp_path / "wire.jsonl"
    jsonl.write_text(
        json.dumps(
            {
                "ts": "2024-03-01T12:00:00+01:00",
                "title": "Ether and bitcoin climb together",
                "id": "wire-7",
                "source": "wire",
                "symbols": ["DOGE"],
            }
        )
        + "\n\n"
    )
    assert ingest_counts(lake, NewsFileSource(csv_file)) == (3, 0, 3)
    assert ingest_counts(lake, NewsFileSource(jsonl)) == (1, 0, 1)
    again = ingest_counts(lake, NewsFileSource(csv_file))
    assert again == (0, 3, 0), "importing a file again stores nothing twice"
    rows = read_news(lake).to_pylist()
    got = [(r["ts"].strftime("%H:%M"), r["source"], r["symbols"]) for r in rows]
    assert got == [
        ("10:00", "file:headlines.csv", ["SOL"]),  # from its symbols column (a pair: its base)
        ("11:00", "file:headlines.csv", []),  # epoch milliseconds; names no asset
        ("11:00", "wire", ["BTC", "DOGE", "ETH"]),  # 12:00+01:00; named ones and its own tag
        ("11:30", "file:headlines.csv", ["XRP"]),  # a naive time is UTC
    ]
    by_title = {r["title"]: r for r in rows}
    assert by_title["Great week for Solana as prices rise"]["score"] > 0.3
    assert by_title["XRP falls; traders fear a crash"]["score"] < -0.3
    assert by_title["XRP falls; traders fear a crash"]["symbols"] == ["XRP"]
    assert by_title["Markets quiet ahead of the Fed"]["ts"] == dt.datetime(
        2024, 3, 1, 11, tzinfo=dt.UTC
    )
    assert by_title["Ether and bitcoin climb together"]["id"] == "wire-7"
    assert by_title["Ether and bitcoin climb together"]["symbols"] == ["BTC", "DOGE", "ETH"]


@pytest.mark.parametrize(
    ("name", "text", "where", "what"),
    [
        ("bad.csv", "ts,title\n2024-03-01,fine\nyesterday,Bitcoin up\n", ":3:", "not an ISO time"),
        ("bad.csv", "ts,title\n2024-03-01,\n", ":2:", "empty title"),
        ("bad.csv", "when,title\n2024-03-01,x\n", ":1:", "lacks column(s) ['ts']"),
        ("bad.csv", "ts,title\n2024-03-01,x,extra\n", ":2:", "more fields than the header"),
        ("bad.jsonl", '{"ts": "2024-03-01", "title": "a"}\n{"ts": 1,\n', ":2:", "not a JSON"),
        ("bad.jsonl", '{"ts": "2024-03-01", "title": "a", "tags": []}\n', ":1:", "unknown field"),
        ("bad.jsonl", '{"title": "a"}\n', ":1:", "no ts"),
        ("bad.txt", "anything\n", ":", "expected .csv or .jsonl"),
    ],
)
def test_a_bad_row_is_named_by_file_and_line(
    tmp_path: Path, name: str, text: str, where: str, what: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(NewsSourceError) as raised:
        NewsFileSource(path).fetch()
    message = str(raised.value)
    assert f"{path}{where}" in message and what in message, message
