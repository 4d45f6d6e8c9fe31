"""The serving path imports neither torch nor Prefect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serving_path_runs_without_torch_and_prefect(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = f"""
import sys
import scipy.stats  # noqa: F401  (scipy's array-API shim breaks on a None torch module;
# it never imports torch itself, so load it first)
assert 'torch' not in sys.modules
sys.modules['torch'] = None  # any 'import torch' now raises ImportError
sys.modules['prefect'] = None
import trading.loop, trading.market, trading.state, trading.fallback, trading.feedback
import trading.protections, trading.thresholds, trading.confidence, trading.latency
import trading.writer, flows.commands.serve
from tests.trading.serve_support import make_loop, slice_file
from trading.loop import LoopConfig, run
from trading.market import ReplayMarket, read_replay_candles
from warehouse import Settings, connect, migrate
s = Settings(home={str(tmp_path)!r})
con = connect(s); migrate(con)
loop, _ = make_loop(s, LoopConfig(model_check_every_steps=50), lookup_con=con)
summary = run(loop, ReplayMarket([read_replay_candles(str(slice_file(120)))]))
loop.writer.close()
assert summary.candles == 120, summary
assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]
print('ok', summary.candles)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok 120" in out.stdout
