"""Matching headlines to assets by ticker and name, from the editable ``news_terms`` table.

A term written in capitals (a ticker: ``BTC``) matches only in capitals, so "sol" in a sentence
does not tag SOL; any other term (``bitcoin``, ``binance coin``) matches in any case. Both match
whole words only ("ether" does not match inside "ethereum"). A pair's per-symbol news features
use the headlines tagged with its base asset (``ETH/BTC`` -> ``ETH``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import duckdb
import pyarrow as pa

from warehouse import upsert
from warehouse.retry import run_transaction


def asset_of(symbol: str) -> str:
    """The asset a pair's news is about: ``ETH/BTC`` -> ``ETH``, ``XRP/USDT:USDT`` -> ``XRP``."""
    return symbol.split("/")[0].upper()


class TermMatcher:
    """Tags a text with every asset whose terms occur in it as whole words."""

    def __init__(self, terms: Mapping[str, Iterable[str]]) -> None:
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for asset, words in sorted(terms.items()):
            exact = sorted({w for w in words if w.isupper()})
            loose = sorted({w for w in words if not w.isupper()})
            parts = [re.escape(w) for w in exact]
            parts += ["(?i:" + re.escape(w) + ")" for w in loose]
            if parts:
                pattern = r"(?<![\w])(?:" + "|".join(parts) + r")(?![\w])"
                self._patterns.append((asset.upper(), re.compile(pattern)))

    def match(self, text: str) -> tuple[str, ...]:
        return tuple(asset for asset, pattern in self._patterns if pattern.search(text))


def read_terms(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    rows = con.execute("SELECT asset, term FROM news_terms ORDER BY asset, term").fetchall()
    out: dict[str, list[str]] = {}
    for asset, term in rows:
        out.setdefault(str(asset), []).append(str(term))
    return out


def matcher(con: duckdb.DuckDBPyConnection) -> TermMatcher:
    return TermMatcher(read_terms(con))


def add_terms(con: duckdb.DuckDBPyConnection, asset: str, terms: Iterable[str]) -> int:
    """Add terms for ``asset`` (a ticker such as SOL); returns how many were new."""
    words = sorted({t.strip() for t in terms if t.strip()})
    if not asset.strip() or not words:
        raise ValueError("news terms: give an asset (e.g. SOL) and at least one term")
    table = pa.table({"asset": [asset.strip().upper()] * len(words), "term": words})
    return upsert(con, "news_terms", table).inserted


def remove_terms(con: duckdb.DuckDBPyConnection, asset: str, terms: Iterable[str]) -> int:
    """Remove terms of ``asset``; returns how many were there."""
    words = sorted({t.strip() for t in terms if t.strip()})

    def body(c: duckdb.DuckDBPyConnection) -> int:
        c.execute("UPDATE write_tokens SET writes = writes + 1 WHERE table_name = 'news_terms'")
        row = c.execute(
            "DELETE FROM news_terms WHERE asset = ? AND term IN (SELECT unnest(?::VARCHAR[]))",
            [asset.strip().upper(), words],
        ).fetchone()
        return int(row[0]) if row else 0

    return run_transaction(con, body, what="remove news terms")
