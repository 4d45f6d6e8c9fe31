"""News sources behind one interface: ``fetch()`` returns the items the source holds now.

* ``FeedSource``: an RSS or Atom feed over HTTP(S) (or file://), parsed by ``feedparser``;
* ``NewsFileSource``: a CSV or JSON Lines file (``.csv``, ``.jsonl``/``.ndjson``);
* ``SimulatedNewsSource``: headlines that follow the simulated exchange's regimes (positive in
  an up-trend, negative in a down-trend, neutral in a range), deterministic for its seed.

Every error names the source (URL, or file and line) and what was wrong.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipelines.news.items import NewsItem, NewsSourceError, content_id
from pipelines.news.terms import asset_of
from pipelines.simulated_exchange import (
    DAY_MS,
    MINUTE_MS,
    RANGE,
    TREND_DOWN,
    TREND_UP,
    SimulatedExchange,
    symbol_id,
)


class NewsSource(Protocol):
    @property
    def name(self) -> str: ...

    def fetch(self) -> list[NewsItem]: ...


# ---------------------------------------------------------------------------------- feeds
def _entry_time(entry: Any) -> dt.datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = entry.get(key)
        if parsed:
            return dt.datetime.fromtimestamp(calendar.timegm(parsed), dt.UTC)
    return None


@dataclass
class FeedSource:
    """An RSS/Atom feed. Items are keyed by the feed's URL and the entry's id (Atom ``id``, RSS
    ``guid``), else its link, else a hash of its title and time. An entry without a date gets the
    time it was fetched (never an earlier one, which would be look-ahead)."""

    url: str
    timeout_s: float = 20.0

    @property
    def name(self) -> str:
        return self.url

    def fetch(self) -> list[NewsItem]:
        import feedparser

        fetched_at = dt.datetime.now(dt.UTC)
        request = urllib.request.Request(self.url, headers={"User-Agent": "tradeloop-news"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                content = response.read()
        except urllib.error.HTTPError as exc:
            raise NewsSourceError(f"feed {self.url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise NewsSourceError(f"feed {self.url}: cannot fetch it: {exc}") from exc
        parsed = feedparser.parse(content)
        if parsed.bozo and not parsed.entries:
            raise NewsSourceError(
                f"feed {self.url}: not an RSS or Atom feed ({parsed.get('bozo_exception')})"
            )
        items = []
        for n, entry in enumerate(parsed.entries, start=1):
            title = (entry.get("title") or "").strip()
            if not title:
                raise NewsSourceError(f"feed {self.url}: entry {n} has no title")
            published = _entry_time(entry)
            link = entry.get("link")
            body = entry.get("summary") or None
            # an undated entry's id must not depend on the time it happened to be fetched
            stamp = published.isoformat() if published else None
            item_id = entry.get("id") or link or content_id(title, stamp)
            items.append(
                NewsItem(
                    self.url,
                    str(item_id),
                    published or fetched_at,
                    title,
                    body,
                    link,
                    dated=published is not None,
                )
            )
        return items


# ---------------------------------------------------------------------------------- files
FILE_COLUMNS = ("ts", "title", "id", "body", "url", "symbols", "source")
_LIST_SPLIT = re.compile(r"[;|,\s]+")


def _parse_ts(value: Any) -> dt.datetime:
    if isinstance(value, bool):
        raise ValueError(f"ts {value!r} is not a time")
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)  # epoch milliseconds
    text = str(value).strip()
    if text.isdigit():
        return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
    try:
        ts = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"ts {value!r} is not an ISO time (2024-01-02T03:04:05Z) or epoch milliseconds"
        ) from None
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def _parse_symbols(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    parts = value if isinstance(value, list) else _LIST_SPLIT.split(str(value))
    return tuple(sorted({asset_of(str(p)) for p in parts if str(p).strip()}))


@dataclass
class NewsFileSource:
    """Headlines from a CSV (header row) or JSON Lines file. Columns: ``ts`` (ISO time, UTC
    when naive, or epoch milliseconds) and ``title`` are required; ``id``, ``body``, ``url``,
    ``symbols`` (tickers or pairs, separated by ``;``, ``|``, ``,`` or spaces; a JSON list) and
    ``source`` (default ``file:<name>``) are optional. An item without an id is keyed by a hash
    of its time and title, so importing the file again stores nothing twice."""

    path: Path

    @property
    def name(self) -> str:
        return f"file:{self.path.name}"

    def _records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        suffix = self.path.suffix.lower()
        try:
            handle = self.path.open(newline="", encoding="utf-8")
        except OSError as exc:
            raise NewsSourceError(f"{self.path}: cannot read it: {exc}") from exc
        with handle:
            if suffix == ".csv":
                reader = csv.DictReader(handle)
                missing = [c for c in ("ts", "title") if c not in (reader.fieldnames or [])]
                if missing:
                    raise NewsSourceError(
                        f"{self.path}:1: header lacks column(s) {missing}; it has "
                        f"{reader.fieldnames or []}"
                    )
                for row in reader:
                    if None in row:
                        raise NewsSourceError(
                            f"{self.path}:{reader.line_num}: more fields than the header names"
                        )
                    yield reader.line_num, dict(row)
            elif suffix in (".jsonl", ".ndjson"):
                for line_no, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise NewsSourceError(
                            f"{self.path}:{line_no}: not a JSON object: {exc.msg}"
                        ) from exc
                    if not isinstance(record, dict):
                        raise NewsSourceError(f"{self.path}:{line_no}: not a JSON object")
                    yield line_no, record
            else:
                raise NewsSourceError(
                    f"{self.path}: unknown news file type {suffix!r} (expected .csv or .jsonl)"
                )

    def fetch(self) -> list[NewsItem]:
        items = []
        for line, record in self._records():
            where = f"{self.path}:{line}"
            unknown = sorted(set(record) - set(FILE_COLUMNS))
            if unknown:
                raise NewsSourceError(f"{where}: unknown field(s) {unknown}; known: {FILE_COLUMNS}")
            title = str(record.get("title") or "").strip()
            if not title:
                raise NewsSourceError(f"{where}: empty title")
            if record.get("ts") in (None, ""):
                raise NewsSourceError(f"{where}: no ts")
            try:
                ts = _parse_ts(record["ts"])
            except (ValueError, OverflowError, OSError) as exc:
                raise NewsSourceError(f"{where}: {exc}") from exc
            source = str(record.get("source") or self.name)
            item_id = str(record.get("id") or content_id(ts.isoformat(), title))
            items.append(
                NewsItem(
                    source,
                    item_id,
                    ts,
                    title,
                    str(record["body"]) if record.get("body") else None,
                    str(record["url"]) if record.get("url") else None,
                    _parse_symbols(record.get("symbols")),
                )
            )
        return items


# ---------------------------------------------------------------------------------- simulated
ASSET_NAMES = {"BTC": "Bitcoin", "ETH": "Ethereum", "SOL": "Solana", "XRP": "XRP", "BNB": "BNB"}
HEADLINES = {
    TREND_UP: (
        "{name} rallies strongly as confident buyers return",
        "{name} wins big as gains lift the market",
        "Great week for {name} as prices rise",
        "{name} gains as optimism grows",
        "{name} surges on strong inflows",
    ),
    TREND_DOWN: (
        "{name} slides as worried sellers take control",
        "{name} loses ground as fear spreads",
        "{name} falls, traders fear a crash",
        "Bad day for {name} as prices sink",
        "{name} slumps on weak demand, panic selling",
    ),
    RANGE: (
        "{name} trades sideways in a quiet session",
        "{name} holds steady ahead of data",
        "{name} little changed as volume thins",
    ),
}
_NEWS_SALT = 0x6E657773  # "news": the headlines' own random stream, apart from the prices'


@dataclass
class SimulatedNewsSource:
    """Headlines about ``symbols`` published in ``[since_ms, until_ms)``: one some minutes
    (5 to 45) after each regime switch of the simulated exchange, saying what the new regime
    does, and a few a day (Poisson, ``per_day``) about the regime of that minute. Each day's
    headlines are drawn from ``SeedSequence([seed, symbol_id, day, salt])``, so a window gives
    the same items whatever was asked before. A headline never precedes the regime it reports."""

    exchange: SimulatedExchange
    symbols: Sequence[str]
    since_ms: int
    until_ms: int
    per_day: float = 4.0
    name: str = "simulated"

    def _day_items(self, symbol: str, day: int) -> list[tuple[int, int, int]]:
        """(publish ms, regime, template index) of one day's headlines about ``symbol``."""
        c = self.exchange.config
        start = c.origin_ms + day * DAY_MS
        regime = self.exchange.candle_arrays(symbol, start, start + DAY_MS)["regime"]
        rng = np.random.default_rng(
            np.random.SeedSequence([c.seed, symbol_id(symbol), day, _NEWS_SALT])
        )
        previous = (
            self.exchange.candle_arrays(symbol, start - MINUTE_MS, start)["regime"]
            if day > 0
            else regime[:1]
        )
        before = np.r_[previous[-1:], regime[:-1]]
        switches = np.flatnonzero(regime != before)
        delays = rng.integers(5, 46, switches.size)
        routine = np.sort(rng.integers(0, regime.size, rng.poisson(self.per_day)))
        out = []
        for minute, delay in zip(switches, delays, strict=True):
            r = int(regime[minute])
            out.append((start + int(minute + delay) * MINUTE_MS, r, int(rng.integers(0, 1 << 30))))
        for minute in routine:
            r = int(regime[minute])
            out.append((start + int(minute) * MINUTE_MS + 30_000, r, int(rng.integers(0, 1 << 30))))
        return out

    def fetch(self) -> list[NewsItem]:
        c = self.exchange.config
        since = max(self.since_ms, c.origin_ms)
        if self.until_ms <= since:
            return []
        first_day = max((since - c.origin_ms) // DAY_MS - 1, 0)  # a late one from the day before
        last_day = (self.until_ms - 1 - c.origin_ms) // DAY_MS
        items = []
        for symbol in self.symbols:
            asset = asset_of(symbol)
            name = ASSET_NAMES.get(asset, asset)
            for day in range(first_day, last_day + 1):
                for k, (ts_ms, regime, pick) in enumerate(self._day_items(symbol, day)):
                    if not since <= ts_ms < self.until_ms:
                        continue
                    templates = HEADLINES[regime]
                    title = templates[pick % len(templates)].format(name=name)
                    items.append(
                        NewsItem(
                            self.name,
                            f"{symbol}:{day}:{k}",
                            dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC),
                            title,
                            symbols=(asset,),
                        )
                    )
        items.sort(key=lambda i: (i.ts, i.id))
        return items
