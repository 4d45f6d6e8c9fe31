"""What the serving loop writes reads right in the warehouse views (issue 19, item 8): drawdown is
a negative fraction (equity / peak - 1) in the equity rows and in ``live_performance``, and
``model_leaderboard.live_accuracy`` is the champion's share of right resolved predictions."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trading.serve_support import (
    constant_model,
    make_loop,
    register_champion,
    replay_market,
)
from trading.loop import LoopConfig, run
from warehouse import Settings

# a model that always buys: its position's equity goes up and down
CONFIG = LoopConfig(account="report", flush_every_steps=200, model_check_every_steps=25)


def test_drawdown_and_live_accuracy_reach_the_views(settings: Settings, lake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model_id = register_champion(
        lake, settings, constant_model(tmp_path / "buy.onnx", (0.9, 0.05, 0.05), 0.95)
    )
    loop, _ = make_loop(settings, CONFIG, lookup_con=lake)
    run(loop, replay_market(400))
    loop.writer.close()
    assert loop.state.portfolio.trades or loop.state.portfolio.positions  # it traded

    stored = lake.execute(
        "SELECT equity, drawdown FROM equity WHERE account = 'report' ORDER BY ts"
    ).fetchall()
    equity = np.array([e for e, _ in stored])
    drawdown = np.array([d for _, d in stored])
    assert (drawdown <= 0).all() and drawdown.min() < 0  # negative below the peak
    # the loop's peak is the risk state's (it starts at the first equity): the same curve here
    np.testing.assert_allclose(drawdown, equity / np.maximum.accumulate(equity) - 1, atol=1e-12)

    (max_dd, dd) = lake.execute(
        "SELECT max_drawdown, drawdown FROM live_performance WHERE account = 'report'"
    ).fetchone()
    assert max_dd == pytest.approx(drawdown.min(), abs=1e-12) and max_dd < 0
    assert dd == pytest.approx(drawdown[-1], abs=1e-12)

    right, resolved = lake.execute(
        "SELECT count(*) FILTER (WHERE outcome_class = predicted_class), count(*) "
        "FROM predictions WHERE model_id = ? AND outcome_class IS NOT NULL",
        [model_id],
    ).fetchone()
    assert resolved > 100
    (live, n) = lake.execute(
        "SELECT live_accuracy, live_resolved FROM model_leaderboard WHERE model_id = ?",
        [model_id],
    ).fetchone()
    assert (live, n) == (pytest.approx(right / resolved), resolved)
