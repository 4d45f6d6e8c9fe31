"""A headline as every source yields it, and its rows in the ``news`` table."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa


class NewsSourceError(ValueError):
    """A source could not be read, or one of its items is malformed: the message names the
    source (URL or file, and line) and the problem."""


@dataclass(frozen=True)
class NewsItem:
    source: str
    id: str
    ts: dt.datetime  # published, tz-aware UTC
    title: str
    body: str | None = None
    url: str | None = None
    symbols: tuple[str, ...] = field(default_factory=tuple)  # assets the source names
    # False when the source gave no time and ``ts`` is when it was fetched: a later fetch
    # keeps the time stored first (``pipelines.news.store.ingest``)
    dated: bool = True

    def __post_init__(self) -> None:
        if self.ts.tzinfo is None:
            raise NewsSourceError(f"{self.source}: item {self.id!r} has a naive time {self.ts}")
        if not self.title.strip():
            raise NewsSourceError(f"{self.source}: item {self.id!r} has an empty title")

    @property
    def text(self) -> str:
        """What a scorer reads: the title, then the body when there is one."""
        return self.title if not self.body else f"{self.title}. {self.body}"


def content_id(*parts: str | None) -> str:
    """A stable id for an item its source gave none: a hash of what identifies it."""
    joined = "\x1f".join(p or "" for p in parts)
    return "sha1:" + hashlib.sha1(joined.encode()).hexdigest()[:20]


NEWS_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("id", pa.string()),
        ("ts", pa.timestamp("us", "UTC")),
        ("title", pa.string()),
        ("body", pa.string()),
        ("url", pa.string()),
        ("symbols", pa.list_(pa.string())),
    ]
)


def news_table(items: Sequence[NewsItem]) -> pa.Table:
    """The items as rows of the ``news`` table (``symbols`` sorted, without repeats)."""
    return pa.Table.from_pylist(
        [
            {
                "source": i.source,
                "id": i.id,
                "ts": i.ts.astimezone(dt.UTC),
                "title": i.title,
                "body": i.body,
                "url": i.url,
                "symbols": sorted(set(i.symbols)),
            }
            for i in items
        ],
        schema=NEWS_SCHEMA,
    )
