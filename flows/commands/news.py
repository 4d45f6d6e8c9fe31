"""`tradeloop news`: headlines from feeds, files and the simulated source, their sentiment, the
terms that tag them with assets, and the news features as-of stored candles (docs/news.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.commands import options as opt

news_app = typer.Typer(
    help="Headlines: fetch, import, list, score; the terms that match them to assets.",
    no_args_is_help=True,
)
terms_app = typer.Typer(help="The words that tag a headline with an asset.", no_args_is_help=True)
news_app.add_typer(terms_app, name="terms")


def register(app: typer.Typer) -> None:
    app.add_typer(news_app, name="news")


def _ingest(**kwargs: Any) -> None:
    """Run the `news` flow (directly, or on Prefect with --prefect) and print what it stored;
    a source that failed is one error line, and the status is 1."""
    from flows.commands.runflow import run_flow
    from flows.news import news as news_flow

    report = run_flow(news_flow, **kwargs)
    for r in report["results"]:
        typer.echo(
            f"{r.source}: {r.items} headlines, {r.inserted} new, {r.replaced} changed, "
            f"{r.unchanged} unchanged, {r.scored} scored"
        )
    for error in report["errors"]:
        typer.echo(f"error: {error}", err=True)
    if report["errors"]:
        raise typer.Exit(1)


@news_app.command("fetch")
def fetch(
    feed: Annotated[
        list[str],
        typer.Option("--feed", help="RSS or Atom feed URL; repeatable", show_default=False),
    ],
) -> None:
    """Fetch RSS/Atom feeds, tag each headline with the assets it names, score it (VADER) and
    store it; a re-run stores nothing twice."""
    for url in feed:
        if not url.startswith(("http://", "https://", "file://")):
            raise opt.usage_error(f"--feed {url!r}: expected an http(s):// or file:// URL")
    _ingest(feeds=feed)


@news_app.command("import")
def import_(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="CSV or JSON Lines files (columns: ts, title; optional id, body, "
            "url, symbols, source)",
            show_default=False,
        ),
    ],
) -> None:
    """Import headlines from files; a bad row stops its file with the file and line named."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise opt.usage_error(f"no such file: {', '.join(missing)}")
    _ingest(files=[str(f) for f in files])


@news_app.command("simulate")
def simulate(
    symbol: opt.SymbolOption = None,
    timerange: opt.TimerangeOption = None,
    seed: Annotated[int, typer.Option(help="simulated exchange seed")] = 7,
) -> None:
    """Store the simulated source's headlines about these symbols (default BTC/USDT), which
    follow the simulated exchange's regimes (default --timerange: the 7 days to now)."""
    since, until = opt.timerange(timerange)
    _ingest(simulated=opt.symbols(symbol) or ["BTC/USDT"], since=since, until=until, seed=seed)


def _read(fn: Any, what: str) -> Any:
    """Run ``fn(con)`` on a read-only connection; a warehouse older than the news tables says so."""
    import duckdb

    from flows.commands.context import require_warehouse
    from warehouse import connect, get_settings

    require_warehouse()
    con = connect(get_settings(), read_only=True)
    try:
        return fn(con)
    except duckdb.CatalogException as exc:
        typer.echo(
            f"error: this warehouse has no {what} yet ({exc}); run `tradeloop news fetch` "
            "or `tradeloop init` to add the news tables",
            err=True,
        )
        raise typer.Exit(1) from exc
    finally:
        con.close()


@news_app.command("list")
def list_(
    symbol: opt.SymbolOption = None,
    timerange: opt.TimerangeOption = None,
    fmt: opt.FormatOption = opt.OutputFormat.table,
    scorer: Annotated[str, typer.Option(help="whose scores to show")] = "vader",
) -> None:
    """Stored headlines, oldest first, with their assets and score; -s keeps those about the
    symbol's base asset (ETH/BTC: ETH)."""
    from flows.commands.output import print_arrow
    from pipelines.news.store import read_news
    from pipelines.news.terms import asset_of

    since, until = opt.timerange(timerange)
    assets = [asset_of(s) for s in opt.symbols(symbol) or []]
    table = _read(
        lambda con: read_news(con, assets=assets, after=since, before=until, scorer=scorer),
        "news",
    )
    if table.num_rows == 0 and fmt is opt.OutputFormat.table:
        typer.echo("no headlines match; fetch some (`tradeloop news fetch --feed URL`)")
        return
    print_arrow(table, fmt.value)


@news_app.command("features")
def features(
    symbol: opt.SymbolOption = None,
    timeframe: opt.TimeframeOption = None,
    exchange: opt.ExchangeOption = None,
    timerange: opt.TimerangeOption = None,
    fmt: opt.FormatOption = opt.OutputFormat.table,
    scorer: Annotated[str, typer.Option(help="whose scores the features use")] = "vader",
) -> None:
    """The news features as-of each stored candle's close of the series (one timeframe and
    exchange, every symbol given) (per symbol and market: mean score
    over 1 h and 24 h, item count, decayed score), computed from the stored headlines."""
    import polars as pl

    from flows.commands.output import print_arrow
    from flows.commands.series import resolve
    from pipelines.news.features import NEWS_FEATURE_COLUMNS, news_features
    from pipelines.news.store import read_news
    from warehouse import read_candles

    series = resolve(opt.symbols(symbol), opt.timeframe(timeframe), exchange)
    since, until = opt.timerange(timerange)

    def compute(con: Any) -> pl.DataFrame:
        candles = pl.from_arrow(
            read_candles(
                con,
                symbols=list(series.symbols),
                timeframe=series.timeframe,
                exchange=series.exchange,
                before=until,
            )
        )
        assert isinstance(candles, pl.DataFrame)
        if since is not None:
            candles = candles.filter(pl.col("ts") >= since)
        news = pl.from_arrow(read_news(con, scorer=scorer, scored_only=True))
        assert isinstance(news, pl.DataFrame)
        return news_features(candles, news)

    frame = _read(compute, "news")
    print_arrow(
        frame.select("symbol", "timeframe", "ts", *NEWS_FEATURE_COLUMNS).to_arrow(), fmt.value
    )


@terms_app.command("list")
def terms_list(fmt: opt.FormatOption = opt.OutputFormat.table) -> None:
    """Each asset and its terms. A term in capitals (a ticker) matches only in capitals; any
    other term in any case; both as whole words."""
    import pyarrow as pa

    from flows.commands.output import print_arrow
    from pipelines.news.terms import read_terms

    held = _read(read_terms, "news terms")
    print_arrow(
        pa.table({"asset": list(held), "terms": [", ".join(t) for t in held.values()]}),
        fmt.value,
    )


AssetArgument = Annotated[str, typer.Argument(help="the asset's ticker, e.g. SOL")]
TermsArgument = Annotated[list[str], typer.Argument(help="words, e.g. solana", show_default=False)]


def _write_terms(fn: Any) -> int:
    from flows.commands.context import require_warehouse
    from warehouse import connect, get_settings, migrate

    require_warehouse()
    con = connect(get_settings())
    try:
        migrate(con)
        return int(fn(con))
    finally:
        con.close()


@terms_app.command("add")
def terms_add(asset: AssetArgument, terms: TermsArgument) -> None:
    """Tag headlines that contain any of TERMS with ASSET (from the next fetch or import on)."""
    from pipelines.news.terms import add_terms

    added = _write_terms(lambda con: add_terms(con, asset, terms))
    typer.echo(f"{asset.upper()}: {added} term(s) added")


@terms_app.command("remove")
def terms_remove(asset: AssetArgument, terms: TermsArgument) -> None:
    """Stop tagging headlines with ASSET for these TERMS (stored headlines keep their tags)."""
    from pipelines.news.terms import remove_terms

    removed = _write_terms(lambda con: remove_terms(con, asset, terms))
    typer.echo(f"{asset.upper()}: {removed} term(s) removed")
