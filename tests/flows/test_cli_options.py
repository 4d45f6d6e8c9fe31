"""Every command's ``--help``: the options the commands share are spelled one way everywhere
(``-s/--symbol``, ``-t/--timeframe``, ``--exchange``, ``--timerange``, ``-f/--format``), and the
spellings they replaced are accepted but hidden."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from flows.cli import app

ROOT = typer.main.get_command(app)

# parameter name -> the spellings every command that takes it must offer
SHARED = {
    "symbol": {"-s", "--symbol"},
    "symbols": {"-s", "--symbol"},
    "timeframe": {"-t", "--timeframe"},
    "exchange": {"--exchange"},
    "timerange": {"--timerange"},
    "fmt": {"-f", "--format"},
    "format": {"-f", "--format"},
}
# spellings the vocabulary replaced: never shown in a command's help
RETIRED = {"--since", "--until", "--start", "--end", "--no-prefect"}


def _commands() -> Iterator[tuple[str, Any]]:
    def walk(cmd: Any, path: list[str], ctx: Any) -> Iterator[tuple[str, Any]]:
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                sub_ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
                yield from walk(sub, [*path, name], sub_ctx)
        else:
            yield " ".join(path), cmd

    yield from walk(ROOT, [], ROOT.make_context("tradeloop", [], resilient_parsing=True))


COMMANDS = dict(_commands())


def test_every_command_is_found() -> None:
    assert {"collect", "import", "retrain", "serve", "backtest", "models list"} <= set(COMMANDS)
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_shared_options_are_spelled_the_same_way(path: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, [*path.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for param in COMMANDS[path].params:
        if param.param_type_name != "option":
            continue
        spellings = set(param.opts) | set(param.secondary_opts)
        if param.hidden:
            assert not any(f"{s} " in result.output for s in spellings if len(s) > 2), (
                path,
                spellings,
            )
            continue
        assert not spellings & RETIRED, f"{path}: {sorted(spellings & RETIRED)} is shown"
        wanted = SHARED.get(param.name or "")
        if wanted is not None:
            assert wanted <= spellings, f"{path}: {param.name} is spelled {sorted(spellings)}"
            assert all(s in result.output for s in wanted), (path, result.output)
