"""A newcomer's first hour: after `tradeloop import FILE` of a real 5m freqtrade file, every
command works with no other flag (each a new process on a fresh TRADELOOP_HOME): the defaults
follow what the warehouse holds, not the settings' symbols and 1m."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

CANDLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "candles"
TRADELOOP = str(Path(sys.executable).with_name("tradeloop"))
ROWS = 1800  # the newest bars of the real file: enough for a model, quick to train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRADELOOP, *args], env=env, capture_output=True, text=True, timeout=800, check=False
    )


def test_import_then_every_command_with_no_other_flag(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    real = pl.read_ipc(CANDLES / "LTC_BTC-5m.feather").tail(ROWS)
    real.write_ipc(data / "LTC_BTC-5m.feather")  # a freqtrade file, named as freqtrade names it
    signals = tmp_path / "signals.csv"
    pl.DataFrame(
        {
            "ts": real["date"].dt.convert_time_zone("UTC"),
            "symbol": ["LTC/BTC"] * real.height,
            "signal": [1 if (i // 50) % 2 == 0 else 0 for i in range(real.height)],
        }
    ).write_csv(signals)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADELOOP_", "PREFECT_"))}
    env.update(TRADELOOP_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"))

    steps = [
        ("import", str(data / "LTC_BTC-5m.feather")),
        ("features",),
        ("retrain",),
        ("serve", "--replay", "LTC/BTC"),
        ("backtest", "--signals", str(signals)),
    ]
    outputs = {}
    for args in steps:
        result = _run(env, *args)
        assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-2000:])
        assert "Traceback" not in result.stderr, (args, result.stderr[-2000:])
        outputs[args[0] + (args[1] if args[0] == "backtest" else "")] = result.stdout
    assert "5m" in outputs["features"] and "LTC/BTC" in outputs["features"]
    assert f"served {ROWS} candles" in outputs["serve"]
    found = re.search(r"^model (\S+): (promoted|not promoted)", outputs["retrain"], re.M)
    assert found, outputs["retrain"]
    model_id = found.group(1)
    champion = _run(env, "backtest", "--model", "champion", "-f", "json")
    if found.group(2) == "not promoted":
        # The promotion rule refused the first model (log-loss not below the class
        # frequencies'): there is no champion, and the one-line error names the refused model
        # and the command that measures it anyway
        assert champion.returncode == 1, champion.stdout
        lines = champion.stderr.strip().splitlines()
        assert len(lines) == 1 and f"tradeloop backtest --model {model_id}" in lines[0], lines
        champion = _run(env, "backtest", "--model", model_id, "-f", "json")
    assert champion.returncode == 0, (champion.stdout[-2000:], champion.stderr[-2000:])
    summary = json.loads(champion.stdout)
    assert summary["symbol"] == "LTC/BTC" and summary["timeframe"] == "5m"
    assert summary["model_trades"] + summary["fallback_trades"] == summary["trades"]
    # retrain trained and calibrated on most of these bars: the summary says how many
    assert 0 < summary["in_sample_bars"] < summary["bars"]
    # predictions are stored under the exchange the file was imported as, not 'simulated'
    stored = _run(env, "sql", "SELECT DISTINCT exchange FROM predictions", "-f", "csv")
    assert stored.stdout.split() == ["exchange", "file"], stored.stdout
