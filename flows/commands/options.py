"""The option vocabulary every command shares, and the checks that run before any work starts.

Spelled as freqtrade users know them: ``-s/--symbol`` (repeatable and comma-separated),
``-t/--timeframe``, ``--exchange``, ``--timerange START:END`` and ``-f/--format``. A bad value
fails here, before Prefect, Great Expectations or torch are imported: one line, exit status 2.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated

import typer

SYMBOL_PATTERN = re.compile(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(:[A-Za-z0-9._-]+)?$")


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


SymbolOption = Annotated[
    list[str] | None,
    typer.Option(
        "--symbol",
        "-s",
        help="symbol, e.g. ETH/BTC; repeatable or comma-separated",
        show_default=False,
    ),
]
TimeframeOption = Annotated[
    str | None,
    typer.Option("--timeframe", "-t", help="candle timeframe, e.g. 5m", show_default=False),
]
TimeframesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--timeframe", "-t", help="candle timeframe, e.g. 5m; repeatable", show_default=False
    ),
]
ExchangeOption = Annotated[
    str | None,
    typer.Option("--exchange", help="exchange name in the warehouse", show_default=False),
]
TimerangeOption = Annotated[
    str | None,
    typer.Option(
        "--timerange",
        help="START:END, ISO dates or times in UTC, either side optional (2018-01-10:2018-02-01)",
        show_default=False,
    ),
]
FormatOption = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="how to print the results")
]


FeatureGroupsOption = Annotated[
    str | None,
    typer.Option(
        "--feature-groups",
        help="the feature groups the model reads, comma-separated: candles, multi-timeframe, "
        "order book/trades, funding/basis, sentiment, or all (every group with data); default: "
        "candles,multi-timeframe (what the others added was not measurable: docs/models.md)",
        show_default=False,
    ),
]


def usage_error(message: str) -> typer.Exit:
    """Print one line and return the exit (status 2) for the caller to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def symbols(values: list[str] | None, *aliases: str | None) -> list[str] | None:
    """``-s A -s B,C`` (and old comma-separated spellings) -> [A, B, C]; None when none given."""
    out: list[str] = []
    for value in [*(values or []), *(a for a in aliases if a)]:
        for part in value.split(","):
            name = part.strip()
            if not name:
                continue
            if not SYMBOL_PATTERN.match(name):
                raise usage_error(f"--symbol {name!r}: expected BASE/QUOTE, e.g. ETH/BTC")
            if name not in out:
                out.append(name)
    return out or None


def timeframe(value: str | None) -> str | None:
    if value is None:
        return None
    from pipelines.resample import timeframe_ms

    try:
        timeframe_ms(value)
    except ValueError as exc:
        raise usage_error(f"--timeframe {value!r}: {exc}") from exc
    return value


def timeframes(values: list[str] | None) -> list[str] | None:
    return [t for v in values for t in [timeframe(v)] if t] if values else None


def _when(text: str) -> dt.datetime | None:
    if not text:
        return None
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def timerange(value: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``START:END`` -> (start, end), each None when left out. ISO times contain ':' too, so the
    split is the one colon where both sides parse."""
    if value is None:
        return None, None
    for i, char in enumerate(value):
        if char != ":":
            continue
        try:
            start, end = _when(value[:i]), _when(value[i + 1 :])
        except ValueError:
            continue
        if start is not None and end is not None and end <= start:
            raise usage_error(f"--timerange {value!r}: END must be after START")
        return start, end
    raise usage_error(
        f"--timerange {value!r}: expected START:END with ISO dates, e.g. 2018-01-10:2018-02-01 "
        "(either side may be empty)"
    )


def when(value: str | None, option: str) -> dt.datetime | None:
    """One ISO date/time (UTC when naive) of an old-style option such as --since."""
    if value is None:
        return None
    try:
        return _when(value)
    except ValueError as exc:
        raise usage_error(f"{option} {value!r}: not an ISO date or time") from exc


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def feature_groups(value: str | None) -> dict[str, object] | None:
    """``--feature-groups`` as training overrides (None: the defaults); a usage error names
    unknown groups."""
    if value is None:
        return None
    if value.strip() == "all":
        return {"input_groups": None}
    from pipelines.features.groups import GROUPS

    groups = [g.strip() for g in value.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise usage_error(
            f"--feature-groups {value!r}: unknown {unknown or 'empty'}; known: "
            f"{', '.join(GROUPS)}, or all"
        )
    return {"input_groups": groups}
