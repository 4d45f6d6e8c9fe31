"""Flow `news`: fetch headlines from feeds, files and the simulated source; score and store them.

One task per source (``pipelines.news``: fetch, tag with ``news_terms``, upsert into ``news``,
score what has no score yet into ``news_scores``). A source that fails is reported with what
went wrong and the others carry on; the flow's report lists both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flows.orchestration import NO_CACHE, flow, get_run_logger, task, unmapped
from pipelines.news import (
    FeedSource,
    IngestResult,
    NewsFileSource,
    NewsSource,
    NewsSourceError,
    SimulatedNewsSource,
    VaderScorer,
    ingest,
)
from warehouse import Settings, WarehouseError, connect, get_settings, migrate


@task(name="news-source", cache_policy=NO_CACHE, retries=0)
def ingest_source(settings: Settings, source: NewsSource) -> IngestResult | str:
    """The source's items stored and scored, or the error that stopped it (one line)."""
    try:
        items = source.fetch()
        con = connect(settings)
        try:
            result = ingest(con, items, scorer=VaderScorer(), source=source.name, settings=settings)
        finally:
            con.close()
    except (NewsSourceError, WarehouseError) as exc:
        get_run_logger().error(str(exc))
        return str(exc)
    get_run_logger().info(
        f"{source.name}: {result.items} headlines, {result.inserted} new, {result.replaced} "
        f"changed, {result.unchanged} unchanged, {result.scored} scored"
    )
    return result


@flow(name="news", log_prints=False)
def news(
    feeds: Sequence[str] = (),
    files: Sequence[str] = (),
    simulated: Sequence[str] = (),
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    seed: int = 7,
) -> dict[str, Any]:
    """Ingest every feed URL, every file, and the simulated headlines about ``simulated``
    symbols published in [since, until) (default: the 7 days to now)."""
    settings = get_settings()
    con = connect(settings)
    try:
        migrate(con)
    finally:
        con.close()
    sources: list[NewsSource] = [FeedSource(url) for url in feeds]
    sources += [NewsFileSource(Path(p)) for p in files]
    if simulated:
        from pipelines.simulated_exchange import SimulatedExchange, SimulationConfig

        end = until or dt.datetime.now(dt.UTC)
        start = since or end - dt.timedelta(days=7)
        sources.append(
            SimulatedNewsSource(
                SimulatedExchange(SimulationConfig(seed=seed)),
                list(simulated),
                int(start.timestamp() * 1000),
                int(end.timestamp() * 1000),
            )
        )
    outcomes = list(ingest_source.map(unmapped(settings), sources).result())
    results = [o for o in outcomes if isinstance(o, IngestResult)]
    return {
        "results": results,
        "errors": [o for o in outcomes if isinstance(o, str)],
        "inserted": sum(r.inserted for r in results),
    }
