"""Parse a command line with the CLI that would run it, without running it: tradeloop's typer
app (as tests/test_docs.py does) and prefect's cyclopts app. An unknown command or option, a
missing value or a bad choice raises."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

REPO = Path(__file__).resolve().parents[2]
# prefect's own top-level options (handled before its subcommands are parsed)
PREFECT_SESSION_FLAGS = ("--no-prompt", "--prompt")


def parse_tradeloop(args: list[str]) -> list[str]:
    """The command path of `tradeloop ARGS` (e.g. ['tradeloop', 'reports', 'serve'])."""
    from flows.cli import app

    command = typer.main.get_command(app)
    path = ["tradeloop"]
    ctx = command.make_context("tradeloop", list(args), resilient_parsing=False)
    while isinstance(command, TyperGroup):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            raise typer.BadParameter(f"{' '.join(path)}: missing command")
        name, sub, rest = command.resolve_command(ctx, rest)
        if sub is None or name is None:
            raise typer.BadParameter(f"no such command {rest[:1]}")
        command, path = sub, [*path, name]
        ctx = command.make_context(name, list(rest), parent=ctx, resilient_parsing=False)
    return path


def run_tradeloop(args: list[str]) -> Any:
    """``tradeloop ARGS`` in-process (typer's ``Result``); the root log handler the command sets
    up (on this invocation's captured stderr, closed after it) is removed again."""
    import logging

    from typer.testing import CliRunner

    from flows.cli import app

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []
    try:
        return CliRunner().invoke(app, args)
    finally:
        root.handlers = saved


def parse_prefect(args: list[str]) -> tuple[str, dict[str, Any]]:
    """(command function name, bound arguments) of `prefect ARGS`."""
    from prefect.cli._app import _app, _normalize_command_names

    tokens = tuple(a for a in args if a not in PREFECT_SESSION_FLAGS)
    command, bound, _ = _app.parse_args(
        _normalize_command_names(tokens), exit_on_error=False, print_error=False
    )
    return command.__name__, dict(bound.arguments)


def flow_name(entrypoint: str, root: Path = REPO) -> str:
    """The flow name of a deployment entrypoint (`path.py:function`), read from its
    ``@flow(name=...)`` decorator without importing the module (the function name without)."""
    path, function = entrypoint.split(":")
    tree = ast.parse((root / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "flow":
                    for kw in deco.keywords:
                        if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                            return str(kw.value.value)
            return function.replace("_", "-")
    raise LookupError(f"{entrypoint}: no function {function}")
