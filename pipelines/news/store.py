"""Storing headlines and their scores, and reading them back.

``ingest`` tags each item with the assets it names (``news_terms``), upserts it into ``news``
and scores, with the given scorer, the items that have no score from it yet or whose text
changed, into ``news_scores``. Both writes are ``warehouse.upsert`` MERGEs: ingesting the same
items again writes nothing. A run stopped between the two writes leaves items without a score,
which the next ingest scores.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace

import duckdb
import pyarrow as pa

from pipelines.news.items import NewsItem, news_table
from pipelines.news.scoring import SentimentScorer
from pipelines.news.terms import TermMatcher, matcher
from warehouse import Settings, upsert


@dataclass(frozen=True)
class IngestResult:
    source: str
    items: int
    inserted: int  # new headlines
    replaced: int  # headlines whose stored row changed (edited title, new tags, ...)
    unchanged: int
    scored: int  # headlines scored by this run


def tag(items: Sequence[NewsItem], terms: TermMatcher) -> list[NewsItem]:
    """Each item with the assets its source named plus those its title and body mention."""
    return [
        replace(i, symbols=tuple(sorted(set(i.symbols) | set(terms.match(i.text))))) for i in items
    ]


def _unique(items: Sequence[NewsItem]) -> list[NewsItem]:
    seen: dict[tuple[str, str], NewsItem] = {}
    for item in items:
        seen.setdefault((item.source, item.id), item)  # a feed listing an entry twice: the first
    return list(seen.values())


def _first_seen(con: duckdb.DuckDBPyConnection, items: Sequence[NewsItem]) -> list[NewsItem]:
    """Undated items (``ts`` = when fetched) already stored keep the time stored first, so a
    re-fetch neither moves them nor counts as a change."""
    undated = [i for i in items if not i.dated]
    if not undated:
        return list(items)
    keys = pa.table({"source": [i.source for i in undated], "id": [i.id for i in undated]})
    con.register("_tl_news_undated", keys)
    try:
        rows = con.execute(
            "SELECT n.source, n.id, n.ts FROM _tl_news_undated k "
            "JOIN news n ON n.source = k.source AND n.id = k.id"
        ).fetchall()
    finally:
        con.unregister("_tl_news_undated")
    stored = {(source, id_): ts for source, id_, ts in rows}
    return [
        replace(i, ts=stored[(i.source, i.id)]) if (i.source, i.id) in stored else i for i in items
    ]


def _needing_scores(
    con: duckdb.DuckDBPyConnection, items: Sequence[NewsItem], scorer: str
) -> list[NewsItem]:
    """Items with no score from ``scorer`` yet, or whose stored text differs from theirs."""
    keys = pa.table({"source": [i.source for i in items], "id": [i.id for i in items]})
    con.register("_tl_news_keys", keys)
    try:
        rows = con.execute(
            "SELECT n.source, n.id, n.title, n.body FROM _tl_news_keys k "
            "JOIN news n ON n.source = k.source AND n.id = k.id "
            "JOIN news_scores s ON s.source = n.source AND s.id = n.id AND s.scorer = ?",
            [scorer],
        ).fetchall()
    finally:
        con.unregister("_tl_news_keys")
    scored = {(s, i): (t, b) for s, i, t, b in rows}
    return [i for i in items if scored.get((i.source, i.id)) != (i.title, i.body)]


def ingest(
    con: duckdb.DuckDBPyConnection,
    items: Sequence[NewsItem],
    *,
    scorer: SentimentScorer,
    source: str,
    terms: TermMatcher | None = None,
    settings: Settings | None = None,
) -> IngestResult:
    """Tag, store and score ``items`` (what ``source`` yielded); see the module docs."""
    batch = _first_seen(con, tag(_unique(items), terms or matcher(con)))
    to_score = _needing_scores(con, batch, scorer.name) if batch else []
    write = upsert(con, "news", news_table(batch), settings=settings)
    if to_score:
        scores = scorer.score([i.text for i in to_score])
        upsert(
            con,
            "news_scores",
            pa.table(
                {
                    "source": [i.source for i in to_score],
                    "id": [i.id for i in to_score],
                    "scorer": [scorer.name] * len(to_score),
                    "score": pa.array(scores, pa.float64()),
                }
            ),
            settings=settings,
        )
    return IngestResult(
        source, len(batch), write.inserted, write.replaced, write.unchanged, len(to_score)
    )


def read_news(
    con: duckdb.DuckDBPyConnection,
    *,
    assets: Sequence[str] | None = None,
    after: dt.datetime | None = None,
    before: dt.datetime | None = None,
    scorer: str = "vader",
    scored_only: bool = False,
) -> pa.Table:
    """Headlines (ts, source, id, title, symbols, score) with ``after <= ts < before``, about
    any of ``assets`` when given, oldest first. ``score`` is ``scorer``'s, null when it has not
    scored the item (``scored_only`` drops those)."""
    where = ["TRUE"]
    params: list[object] = [scorer]
    if assets:
        where.append("list_has_any(n.symbols, ?::VARCHAR[])")
        params.append([a.upper() for a in assets])
    if after is not None:
        where.append("n.ts >= ?")
        params.append(after)
    if before is not None:
        where.append("n.ts < ?")
        params.append(before)
    join = "JOIN" if scored_only else "LEFT JOIN"
    return con.execute(
        "SELECT n.ts, n.source, n.id, n.title, n.symbols, s.score FROM news n "
        f"{join} news_scores s ON s.source = n.source AND s.id = n.id AND s.scorer = ? "
        f"WHERE {' AND '.join(where)} ORDER BY n.ts, n.source, n.id",
        params,
    ).fetch_arrow_table()
