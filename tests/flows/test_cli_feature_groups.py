"""`tradeloop walk-forward --feature-groups`: unknown groups are a usage error naming them."""

from __future__ import annotations

from typer.testing import CliRunner

from flows.cli import app
from flows.commands.walkforward import _groups


def test_feature_groups_are_parsed_and_checked() -> None:
    assert _groups(None) is None
    assert _groups("candles, multi-timeframe") == ["candles", "multi-timeframe"]
    result = CliRunner().invoke(app, ["walk-forward", "--feature-groups", "candles,orderbook"])
    assert result.exit_code == 2
    assert "unknown ['orderbook']" in result.output
