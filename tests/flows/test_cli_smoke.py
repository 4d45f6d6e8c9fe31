"""Every CLI command of the loop as a user runs it: a new `tradeloop` process, on the data the
previous command left in one fresh TRADELOOP_HOME, with no Prefect API (direct runs).

`demo` on a tiny configuration fills the warehouse (simulated BTC/USDT, one day, one epoch,
60 served candles); then `features`, `retrain`, `models list/promote/rollback`, `maintain`,
`dashboard` and `kill` run on what it stored, and each is checked by what it changed, not
only by its exit code. (Bad arguments are tests/flows/test_cli_errors.py's.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from warehouse import Settings, connect

# one group: the module's home is filled once (by the demo), on one worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cli-smoke"), pytest.mark.timeout(900)]

TRADELOOP = str(Path(sys.executable).with_name("tradeloop"))
SYMBOL = "BTC/USDT"
SERVED = 60
ACCOUNT = "paper-simulated-BTC_USDT"  # the demo serves on its series' own account


@dataclass
class Home:
    env: dict[str, str]
    path: Path
    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, *args: str, timeout_s: float = 600) -> str:
        started = time.monotonic()
        done = subprocess.run(
            [TRADELOOP, *args], env=self.env, capture_output=True, text=True, timeout=timeout_s
        )
        self.seconds[" ".join(args[:2])] = time.monotonic() - started
        assert done.returncode == 0, f"tradeloop {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        con = connect(Settings(home=self.path), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def models(self) -> dict[str, str]:
        listed = json.loads(self.run("models", "list", "-f", "json"))
        return {m["model_id"]: m["status"] for m in listed}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    path = tmp_path_factory.mktemp("cli-smoke") / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TRADELOOP_"))}
    env |= {
        "TRADELOOP_HOME": str(path),
        "PREFECT_HOME": str(path.parent / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    home = Home(env, path)
    home.run(
        "demo", "-s", SYMBOL, "--days", "1", "--epochs", "1",
        "--max-train-seconds", "10", "--serve-candles", str(SERVED),
    )  # fmt: skip
    yield home
    print(f"seconds per command: {home.seconds}")


def test_demo_fills_the_loop(home: Home) -> None:
    candles = dict(home.query("SELECT timeframe, count(*) FROM candles GROUP BY 1"))
    # one day up to now, from the start of its first hour (the widest timeframe)
    assert 24 * 60 <= candles.get("1m", 0) <= 25 * 60, candles
    assert set(candles) == {"1m", "5m", "15m", "1h"}, candles
    # one model registered (promoted or not, by the rule); the served candles were decided
    [(model_id,)] = home.query("SELECT model_id FROM models")
    assert list(home.models()) == [model_id]
    served = home.query(
        f"SELECT count(*) FROM equity WHERE account = '{ACCOUNT}'"  # noqa: S608 (a constant)
    )
    assert served == [(SERVED,)]


def test_features_brings_every_series_up_to_date(home: Home) -> None:
    home.query("SELECT 1")  # the demo ran
    before = home.query("SELECT count(*) FROM features")[0][0]
    out = home.run("features")
    after = home.query(
        "SELECT count(*) FROM features f JOIN candles c USING (exchange, symbol, timeframe, ts)"
    )[0][0]
    # nothing new to compute: the demo's features cover every stored candle
    assert before == after == home.query("SELECT count(*) FROM candles")[0][0], out


def test_retrain_then_promote_and_rollback(home: Home) -> None:
    [first] = home.models()
    # another horizon: other labels, so another model (the demo's own settings could train
    # the identical file, which the registry keeps as the same model)
    home.run("retrain", "-s", SYMBOL, "-t", "1m", "--days", "1", "--epochs", "1", "--horizon", "3")
    [second] = [m for m in home.models() if m != first]
    # by hand, whatever the rule said: the first, then the second in its place
    home.run("models", "promote", first, "--force")
    home.run("models", "promote", second, "--force")
    assert home.models() == {first: "retired", second: "champion"}
    home.run("models", "rollback")
    assert home.models() == {first: "champion", second: "retired"}


def test_maintain_compacts_the_lake(home: Home) -> None:
    before = home.query("SELECT timeframe, count(*) FROM candles GROUP BY 1 ORDER BY 1")
    out = home.run("maintain", "--keep-days", "0")
    assert "snapshots" in out, out
    # the lake still answers, with every candle
    assert home.query("SELECT timeframe, count(*) FROM candles GROUP BY 1 ORDER BY 1") == before


def test_dashboard_shows_the_served_loop(home: Home) -> None:
    out = home.run("dashboard", "--account", ACCOUNT)
    assert f"account {ACCOUNT}: heartbeat" in out, out
    assert "inference" in out, out


def test_kill_and_reset(home: Home) -> None:
    from trading.protections import kill_file, reset_file

    out = home.run("kill", "--account", ACCOUNT)
    assert kill_file(home.path, ACCOUNT).exists(), out
    out = home.run("kill", "--account", ACCOUNT, "--reset")
    assert not kill_file(home.path, ACCOUNT).exists() and reset_file(home.path, ACCOUNT).exists()
