"""The CLI starts no Prefect server unless an API is configured, and checks its arguments first.

Each command runs as a new process, as a person would type it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

CANDLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "candles"
ETH_BTC = CANDLES / "ETH_BTC-5m.feather"
TRADELOOP = str(Path(sys.executable).with_name("tradeloop"))


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADELOOP_", "PREFECT_"))}
    env.update(
        TRADELOOP_HOME=str(home / "tl"),
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        **extra,
    )
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRADELOOP, *args], env=env, capture_output=True, text=True, timeout=240, check=False
    )


def test_commands_without_an_api_run_directly_and_start_no_server(tmp_path: Path) -> None:
    env = _env(tmp_path)
    imported = _run(env, "import", str(ETH_BTC))
    assert imported.returncode == 0, imported.stderr
    assert "5760 merged" in imported.stdout
    # a direct run does not even import Prefect (about a second of CPU per command)
    features = _run(env | {"PYTHONPROFILEIMPORTTIME": "1"}, "features")
    assert features.returncode == 0, features.stderr
    assert "5760 rows written" in features.stdout
    modules = {line.rsplit("|", 1)[-1].strip() for line in features.stderr.splitlines()}
    assert "polars" in modules and "prefect" not in modules, sorted(modules)[:20]
    count = _run(env, "sql", "SELECT count(*) AS n FROM features", "--format", "csv")
    assert count.stdout.split() == ["n", "5760"], count.stdout
    listed = _run(env, "data", "list", "-f", "csv")
    assert listed.stdout.splitlines() == [
        "exchange,symbol,timeframe,first,last,rows,gaps,quarantined",
        "file,ETH/BTC,5m,2018-01-10 04:55,2018-01-30 04:50,5760,0,0",
    ], listed.stdout
    # Prefect's temporary server keeps its database under PREFECT_HOME: none was made
    prefect_home = tmp_path / "prefect"
    assert not list(prefect_home.glob("*.db")), list(prefect_home.iterdir())


def test_with_an_api_the_command_is_a_flow_run_on_that_server(
    prefect_server: None, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter
    from prefect.settings import PREFECT_API_URL

    api_url = str(PREFECT_API_URL.value())
    started = time.time()
    imported = _run(_env(tmp_path, PREFECT_API_URL=api_url), "import", str(ETH_BTC))
    assert imported.returncode == 0, imported.stderr
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["collect"])),
            flow_run_filter=FlowRunFilter(),
        )
    ours = [
        r
        for r in runs
        if r.start_time is not None
        and r.start_time.timestamp() >= started - 1
        and r.parameters.get("path") == str(ETH_BTC)
    ]
    assert len(ours) == 1, [(r.name, r.parameters) for r in runs]
    assert ours[0].state is not None and ours[0].state.is_completed()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["collect", "-t", "7m"], "--timeframe '7m'"),
        (["collect", "--timerange", "2018-01-x:"], "--timerange"),
        (["collect", "-s", "not-a-pair"], "BASE/QUOTE"),
        (["serve", "--replay", "ETH/BTC", "--speed", "fast"], "--speed 'fast'"),
        (["retrain", "-t", "9q"], "--timeframe '9q'"),
        (["import", "/no/such/file.feather"], "no such file"),
    ],
)
def test_a_bad_argument_fails_before_any_work(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    """Exit 2, one line that names the option, no traceback, and nothing heavy imported
    (Prefect, Great Expectations and torch are what make a command slow to start)."""
    probe = (
        "import sys\n"
        "from flows.cli import main\n"
        f"sys.argv = ['tradeloop', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    code = exit.code\n"
        "heavy = sorted(m for m in ('prefect', 'great_expectations', 'torch')"
        " if m in sys.modules)\n"
        "print('EXIT', code, 'HEAVY', ','.join(heavy) or '-')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout.split()[-4:] == ["EXIT", "2", "HEAVY", "-"], result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_reading_before_init_names_the_next_step_and_creates_nothing(tmp_path: Path) -> None:
    env = _env(tmp_path)
    result = _run(env, "sql", "SELECT 1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tradeloop init" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "tl").exists()
    verbose = _run(env, "-v", "sql", "SELECT 1")
    assert "Traceback" in verbose.stderr


def test_config_show_names_each_source_and_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text('exchange = "binance"\n')
    env = _env(
        tmp_path,
        TRADELOOP_EXCHANGE_API_SECRET="s3cr3t-value",
        TRADELOOP_CATALOG_URL="postgresql://me:pw-42@127.0.0.1:5432/lake",
    )
    shown = _run(env, "--config", str(config), "config", "show", "-f", "csv")
    assert shown.returncode == 0, shown.stderr
    rows = {line.split(",")[0]: line.split(",", 2)[1:] for line in shown.stdout.splitlines()}
    assert rows["exchange"] == ["binance", f"file {config}"]
    assert rows["exchange_api_secret"] == ["***", "env TRADELOOP_EXCHANGE_API_SECRET"]
    assert rows["catalog_url"] == [
        "postgresql://me:***@127.0.0.1:5432/lake",
        "env TRADELOOP_CATALOG_URL",
    ]
    assert rows["base_timeframe"] == ["1m", "default"]
    assert "s3cr3t" not in shown.stdout and "pw-42" not in shown.stdout


def test_reports_serve_publishes_the_reports_folder_and_artifacts_link_there(
    tmp_path: Path,
) -> None:
    import re
    import urllib.request

    from warehouse import Settings

    reports = tmp_path / "tl" / "reports" / "ETH_BTC-5m-model"
    reports.mkdir(parents=True)
    (reports / "report.html").write_text("<h1>Backtest: ETH_BTC-5m-model</h1>")
    server = subprocess.Popen(
        [TRADELOOP, "reports", "serve", "--port", "0", "--seconds", "60"],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = re.search(r"http://127\.0\.0\.1:\d+", server.stdout.readline())
        assert url, "no URL printed"
        with urllib.request.urlopen(f"{url.group(0)}/ETH_BTC-5m-model/report.html") as page:
            assert "Backtest: ETH_BTC-5m-model" in page.read().decode()
    finally:
        server.terminate()
        server.wait(timeout=30)
    settings = Settings(home=tmp_path / "tl", reports_url=url.group(0))
    assert settings.report_link(reports / "report.html") == (
        f"{url.group(0)}/ETH_BTC-5m-model/report.html"
    )
    assert Settings(home=tmp_path / "tl").report_link(reports / "report.html").startswith("file://")


def test_import_of_a_directory_keeps_the_good_files_and_names_the_bad_one(tmp_path: Path) -> None:
    """One truncated file no longer costs the whole directory (it used to import 0 rows)."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("ETH_BTC-5m.feather", "LTC_BTC-5m.feather"):
        (data / name).write_bytes((CANDLES / name).read_bytes())
    whole = (CANDLES / "XRP_ETH-5m.feather").read_bytes()
    (data / "XRP_ETH-5m.feather").write_bytes(whole[: len(whole) // 2])  # truncated
    env = _env(tmp_path)
    imported = _run(env, "import", str(data))
    assert imported.returncode == 1, imported.stdout
    last = imported.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "XRP_ETH-5m.feather" in last, imported.stderr
    assert "Traceback" not in imported.stderr
    listed = _run(env, "data", "list", "-f", "csv")
    rows = [line.split(",") for line in listed.stdout.splitlines()[1:]]
    assert [(r[1], r[5]) for r in rows] == [("ETH/BTC", "5760"), ("LTC/BTC", "5760")]


def test_import_names_a_files_symbol_and_timeframe_when_its_name_does_not(tmp_path: Path) -> None:
    import polars as pl

    csv = tmp_path / "export from my desk.csv"
    pl.read_ipc(CANDLES / "XRP_ETH-5m.feather").write_csv(csv)
    env = _env(tmp_path)
    unnamed = _run(env, "import", str(csv))
    assert unnamed.returncode == 1 and "pass --symbol" in unnamed.stderr, unnamed.stderr
    named = _run(env, "import", str(csv), "-s", "ABC/USD", "-t", "5m")
    assert named.returncode == 0, named.stderr
    listed = _run(env, "data", "list", "-f", "csv")
    assert listed.stdout.splitlines()[1].startswith("file,ABC/USD,5m,2019-10-11 00:00"), (
        listed.stdout
    )
    two = _run(env, "import", str(csv), "-s", "ABC/USD,DEF/USD")
    assert two.returncode == 2 and "one file holds one symbol" in two.stderr
