"""A loopback feed server (stdlib http.server, one thread) serving RSS/Atom documents a test
writes: ``serve_feeds()`` yields it; tests/pipelines/news and tests/flows use it. And
``ingest_counts``: a news source's items fetched, stored and scored, as counts."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape


@dataclass
class Entry:
    id: str
    title: str
    published: dt.datetime | None  # None: an RSS item without a pubDate
    summary: str = ""


def _atom_entry(e: Entry) -> str:
    when = e.published.isoformat() if e.published else "2024-03-01T00:00:00Z"
    return (
        f"<entry><id>{escape(e.id)}</id><title>{escape(e.title)}</title>"
        f"<link href='https://news.example/{escape(e.id)}'/>"
        f"<published>{when}</published><updated>{when}</updated>"
        f"<summary>{escape(e.summary)}</summary></entry>"
    )


def atom(entries: list[Entry]) -> str:
    return (
        "<?xml version='1.0' encoding='utf-8'?>"
        "<feed xmlns='http://www.w3.org/2005/Atom'><title>Loopback crypto news</title>"
        "<id>urn:tradeloop:loopback</id><updated>2024-03-01T00:00:00Z</updated>"
        f"{''.join(_atom_entry(e) for e in entries)}</feed>"
    )


def _rss_item(e: Entry) -> str:
    date = e.published.strftime("%a, %d %b %Y %H:%M:%S +0000") if e.published else None
    return (
        f"<item><guid>{escape(e.id)}</guid><title>{escape(e.title)}</title>"
        + (f"<pubDate>{date}</pubDate>" if date else "")
        + f"<description>{escape(e.summary)}</description></item>"
    )


def rss(entries: list[Entry]) -> str:
    return (
        "<?xml version='1.0'?><rss version='2.0'><channel><title>Loopback RSS</title>"
        "<link>http://127.0.0.1/</link><description>test</description>"
        f"{''.join(_rss_item(e) for e in entries)}</channel></rss>"
    )


@dataclass
class FeedServer:
    base: str
    documents: dict[str, str] = field(default_factory=dict)  # path -> document
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@contextmanager
def serve_feeds() -> Iterator[FeedServer]:
    served = FeedServer(base="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            served.requests.append(self.path)
            body = served.documents.get(self.path)
            if body is None:
                self.send_error(404, "no such feed")
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/atom+xml; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def ingest_counts(con: Any, source: Any) -> tuple[int, int, int]:
    """(inserted, unchanged, scored) of ingesting what ``source`` fetches, scored by VADER."""
    from pipelines.news import VaderScorer, ingest

    result = ingest(con, source.fetch(), scorer=VaderScorer(), source=source.name)
    return result.inserted, result.unchanged, result.scored
