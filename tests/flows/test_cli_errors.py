"""Every expected failure of the CLI, each as a new process on its own TRADELOOP_HOME: exit status
2 for a usage error and 1 for failed work, one line that names what and where and the next step,
no traceback (``-v`` shows it), and no empty warehouse left behind by a failed first command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.importers import read_candles
from warehouse import Settings, connect, migrate, upsert

CANDLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "candles"
TRADELOOP = str(Path(sys.executable).with_name("tradeloop"))
INIT_HINT = "run `tradeloop init`"
NO_CANDLES_HINT = "import a file (`tradeloop import FILE`)"


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADELOOP_", "PREFECT_"))}
    env.update(TRADELOOP_HOME=str(home), PREFECT_HOME=str(home.parent / "prefect"))
    return subprocess.run(
        [TRADELOOP, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def empty_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse after `tradeloop init`: the schema, no candles."""
    home = tmp_path_factory.mktemp("empty") / "home"
    con = connect(Settings(home=home))
    migrate(con)
    con.close()
    return home


@pytest.fixture(scope="module")
def stored_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A warehouse holding the newest 300 bars of the real LTC/BTC 5m file, and no model."""
    home = tmp_path_factory.mktemp("stored") / "home"
    settings = Settings(home=home)
    con = connect(settings)
    migrate(con)
    table, _ = read_candles(CANDLES / "LTC_BTC-5m.feather", exchange="file")
    upsert(con, "candles", table.slice(table.num_rows - 300), settings=settings)
    con.close()
    yield home


@pytest.fixture(scope="module")
def eth_signals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("signals") / "eth.csv"
    path.write_text("ts,symbol,signal\n2018-01-20T00:00:00Z,ETH/BTC,1\n")
    return path


# (id, which home, arguments, exit status, text the line must hold); SLOW: the cases that cost
# over ~1.3 CPU seconds each (they load the registry, ONNX or polars), kept out of `make test`
SLOW = {"rollback-no-champion", "promote-unknown-id", "retrain-absent-timeframe"}
SLOW |= {"signals-no-candles", "no-champion"}
CASES = [
    # no warehouse yet: the line names the place and `tradeloop init`; nothing is created
    ("sql-before-init", "none", ["sql", "SELECT 1"], 1, INIT_HINT),
    ("retrain-before-init", "none", ["retrain"], 1, INIT_HINT),
    ("features-before-init", "none", ["features"], 1, INIT_HINT),
    ("maintain-before-init", "none", ["maintain"], 1, INIT_HINT),
    ("rollback-before-init", "none", ["models", "rollback"], 1, INIT_HINT),
    ("data-list-before-init", "none", ["data", "list"], 1, INIT_HINT),
    ("quality-before-init", "none", ["quality"], 1, INIT_HINT),
    # usage errors: exit 2, before any work
    ("collect-bad-timeframe", "none", ["collect", "-t", "7m"], 2, "known: 1m, 3m, 5m"),
    ("serve-speed-fast", "empty", ["serve", "--speed", "fast", "--replay", "X/Y"], 2, "'max'"),
    ("serve-no-replay", "none", ["serve"], 2, "needs --replay FILE_OR_SYMBOL"),
    ("serve-missing-file", "none", ["serve", "--replay", "data/X_Y-5m.feather"], 2, "no such"),
    ("import-missing-path", "none", ["import", "/no/such/LTC_BTC-5m.feather"], 2, "no such"),
    ("signals-missing-file", "none", ["backtest", "--signals", "/no/such.csv"], 2, "no such"),
    ("unknown-option", "none", ["collect", "--frobnicate"], 2, "`tradeloop collect --help`"),
    ("missing-value", "none", ["collect", "-t"], 2, "`tradeloop collect --help`"),
    ("bad-timerange", "none", ["backtest", "--model", "x", "--timerange", "soon"], 2, "START:END"),
    # an empty warehouse: say how to fill it
    ("retrain-empty", "empty", ["retrain"], 2, NO_CANDLES_HINT),
    ("features-empty", "empty", ["features"], 2, NO_CANDLES_HINT),
    ("rollback-no-champion", "empty", ["models", "rollback"], 1, "nothing to roll back"),
    ("promote-unknown-id", "empty", ["models", "promote", "nosuch"], 1, "`tradeloop models list`"),
    # candles of LTC/BTC 5m only: name what is held and the flag that picks
    ("features-unknown-symbol", "stored", ["features", "-s", "FOO/BAR"], 2, "it holds LTC/BTC"),
    ("replay-unknown-symbol", "stored", ["serve", "--replay", "FOO/BAR"], 2, "import or collect"),
    ("retrain-absent-timeframe", "stored", ["retrain", "-t", "1m"], 2, "pick one with --timeframe"),
    ("signals-no-candles", "stored", ["backtest", "--signals", "{eth_signals}"], 2, "LTC/BTC"),
    ("no-champion", "stored", ["backtest", "--model", "champion"], 1, "`tradeloop retrain`"),
]


@pytest.mark.parametrize(
    ("where", "args", "status", "hint"),
    [
        pytest.param(*c[1:], id=c[0], marks=[pytest.mark.slow] if c[0] in SLOW else [])
        for c in CASES
    ],
)
def test_expected_failure_is_one_line_with_the_next_step(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    eth_signals: Path,
    where: str,
    args: list[str],
    status: int,
    hint: str,
) -> None:
    home = tmp_path / "home" if where == "none" else request.getfixturevalue(f"{where}_home")
    args = [a.format(eth_signals=eth_signals) for a in args]
    result = run(home, *args)
    output = lines(result)
    assert result.returncode == status, (result.returncode, output)
    assert len(output) == 1, output
    assert output[0].startswith("error: ") and hint in output[0], output
    assert "Traceback" not in result.stderr
    if where == "none":
        assert not home.exists(), sorted(str(p) for p in home.rglob("*"))


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = run(home, "-v", "models", "rollback")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "WarehouseNotFound" in result.stderr
    assert not home.exists()


@pytest.mark.slow
def test_a_failed_first_import_leaves_no_empty_warehouse(tmp_path: Path) -> None:
    """The import runs (migrates the new warehouse, starts its flow) and then fails on the file:
    the warehouse it made holds nothing, so it goes again."""
    bad = tmp_path / "candles.csv"  # a name that says neither symbol nor timeframe
    bad.write_text("date,open,high,low,close,volume\n2018-01-01T00:00:00Z,1,2,0.5,1.5,10\n")
    home = tmp_path / "home"
    result = run(home, "import", str(bad))
    assert result.returncode == 1, lines(result)
    assert lines(result)[-1].startswith(f"error: {bad}") and "--symbol" in lines(result)[-1]
    assert "Traceback" not in result.stderr
    assert not home.exists(), sorted(str(p) for p in home.rglob("*"))


def test_the_cli_log_handler_drops_the_tracebacks_libraries_attach() -> None:
    # Prefect logs a failed flow run's exception with its traceback; without -v the command's
    # output stays one error line (the record keeps exc_info for Prefect's API handler)
    import logging

    from flows.cli import LOG_FORMAT, _NoTracebackFormatter

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord(
            "prefect.flow_runs", logging.ERROR, __file__, 1, "run failed", None, sys.exc_info()
        )
    record.exc_text = "Traceback (cached by an earlier handler)"
    text = _NoTracebackFormatter(LOG_FORMAT).format(record)
    assert text.endswith("ERROR prefect.flow_runs: run failed") and "\n" not in text
    assert record.exc_info is not None and record.exc_text  # kept for the other handlers
    record.exc_text = None
    assert "Traceback" in logging.Formatter(LOG_FORMAT).format(record)  # what -v shows
