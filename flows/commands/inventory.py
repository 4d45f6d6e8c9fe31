"""`tradeloop data list` (what the warehouse holds) and `tradeloop config show` (the settings)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import typer

from flows.commands import options as opt

data_app = typer.Typer(help="What the warehouse holds.", no_args_is_help=True)
config_app = typer.Typer(help="The effective settings.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
    app.add_typer(config_app, name="config")


def _utc(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


@data_app.command("list")
def data_list(
    symbol: opt.SymbolOption = None,
    timeframe: opt.TimeframeOption = None,
    exchange: opt.ExchangeOption = None,
    output: opt.FormatOption = opt.OutputFormat.table,
) -> None:
    """Per exchange, symbol and timeframe: first and last candle, rows, missing bars (gaps)
    and quarantined rows (like freqtrade's list-data)."""
    import pyarrow as pa

    from flows.commands.output import print_arrow
    from pipelines.resample import timeframe_ms
    from warehouse import connect, get_settings
    from warehouse.inventory import inventory

    wanted = opt.symbols(symbol)
    tf = opt.timeframe(timeframe)
    con = connect(get_settings(), read_only=True)
    try:
        series = [
            s
            for s in inventory(con)
            if (not wanted or s.symbol in wanted)
            and (tf is None or s.timeframe == tf)
            and (exchange is None or s.exchange == exchange)
        ]
        held = con.execute(
            "SELECT exchange, symbol, timeframe, count(*) FROM quarantine "
            "WHERE table_name = 'candles' GROUP BY ALL"
        ).fetchall()
    finally:
        con.close()
    quarantined = {(e, s, t): int(n) for e, s, t, n in held}
    rows: dict[str, list[Any]] = {
        k: []
        for k in ("exchange", "symbol", "timeframe", "first", "last", "rows", "gaps", "quarantined")
    }
    for s in series:
        expected = (s.last_ts_ms - s.first_ts_ms) // timeframe_ms(s.timeframe) + 1
        for key, value in (
            ("exchange", s.exchange),
            ("symbol", s.symbol),
            ("timeframe", s.timeframe),
            ("first", _utc(s.first_ts_ms)),
            ("last", _utc(s.last_ts_ms)),
            ("rows", s.rows),
            ("gaps", max(expected - s.rows, 0)),
            ("quarantined", quarantined.get((s.exchange, s.symbol, s.timeframe), 0)),
        ):
            rows[key].append(value)
    if not series and output is opt.OutputFormat.table:
        typer.echo("no candles match; import a file (`tradeloop import FILE`) or collect some")
        return
    print_arrow(pa.table(rows), output.value)


def _source(name: str, toml: dict[str, Any], toml_path: Path) -> str:
    if f"TRADELOOP_{name.upper()}" in os.environ:
        return f"env TRADELOOP_{name.upper()}"
    if name in toml:
        return f"file {toml_path}"
    return "default"


def _shown(name: str, value: Any) -> str:
    from pydantic import SecretStr

    if name == "catalog_url" and isinstance(value, SecretStr):
        value = value.get_secret_value()  # shown as a URL, its password masked below
    if isinstance(value, SecretStr):
        return "***"
    text = str(value)
    if name == "catalog_url" and value:
        from urllib.parse import urlparse

        password = urlparse(text).password
        if password:
            text = text.replace(password, "***")
    return text


@config_app.command("show")
def config_show(output: opt.FormatOption = opt.OutputFormat.table) -> None:
    """Every setting, its value (secrets masked) and where it came from: an environment
    variable, the settings file (--config, TRADELOOP_CONFIG or ./tradeloop.toml) or the default."""
    import tomllib

    import pyarrow as pa

    from flows.commands.output import print_arrow
    from warehouse import Settings, get_settings

    settings = get_settings()
    toml_path = Path(os.environ.get("TRADELOOP_CONFIG") or "tradeloop.toml")
    toml = tomllib.loads(toml_path.read_text()) if toml_path.is_file() else {}
    names = list(Settings.model_fields)
    values = [_shown(n, getattr(settings, n)) for n in names]
    sources = [_source(n, toml, toml_path) for n in names]
    print_arrow(pa.table({"setting": names, "value": values, "source": sources}), output.value)
