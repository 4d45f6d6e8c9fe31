"""`--feature-groups` (retrain, walk-forward): the groups the model reads; unknown groups are a
usage error naming them, before anything runs."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.commands.options import feature_groups
from models.training import TrainConfig
from pipelines.features.groups import DEFAULT_INPUT_GROUPS


def test_feature_groups_are_parsed_and_checked() -> None:
    assert feature_groups(None) is None  # the defaults
    assert feature_groups("candles, multi-timeframe") == {
        "input_groups": ["candles", "multi-timeframe"]
    }
    assert feature_groups("all") == {"input_groups": None}  # every group with data
    assert TrainConfig().input_groups == DEFAULT_INPUT_GROUPS == ("candles", "multi-timeframe")


@pytest.mark.parametrize("command", ["walk-forward", "retrain"])
def test_an_unknown_group_is_a_usage_error(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--feature-groups", "candles,orderbook"])
    assert result.exit_code == 2
    assert "unknown ['orderbook']" in result.output
