"""Secrets stay secret (issue 18, item 5): no flow takes a Settings object (Prefect stores a
flow run's parameters in clear, and the catalog URL carries its password), a pipeline run's
flows get no catalog URL, ccxt credentials never become flow parameters, and a process that
only collects redacts its API key from ccxt's DEBUG logs."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.loopback.server import LoopbackExchange, LoopbackServer
from tests.support.cli import run_tradeloop

KEY = "collector-key-4be1d07c"
SECRET = "collector-secret-93aa6f10"
PASSWORD = "pw-8c1e5d"


def _flows() -> dict[str, Any]:
    """Every Prefect flow of the flows package (a ``LazyFlow`` when the module was imported
    before Prefect: it becomes a Prefect flow on first use)."""
    import importlib
    import pkgutil

    from prefect import Flow

    import flows
    from flows.orchestration import LazyFlow

    found: dict[str, Any] = {}
    for info in pkgutil.iter_modules(flows.__path__):
        module = importlib.import_module(f"flows.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, Flow | LazyFlow) and obj.fn.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_no_flow_takes_settings_or_credentials_as_a_parameter() -> None:
    found = _flows()
    assert {"flows.pipeline.pipeline", "flows.collect.collect", "flows.serve.serve"} <= set(found)
    for name, f in found.items():
        params = inspect.signature(f.fn).parameters
        assert "settings" not in params, f"{name} takes settings (stored in clear by Prefect)"
        for p in params.values():
            assert "Settings" not in str(p.annotation), f"{name}({p.name}: {p.annotation})"


@pytest.fixture
def pg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home whose settings name a PostgreSQL catalog with a password (never connected)."""
    from warehouse import get_settings

    monkeypatch.setenv("TRADELOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADELOOP_CATALOG_URL", f"postgresql://lake:{PASSWORD}@127.0.0.1:1/lake")
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def test_settings_repr_and_config_show_mask_the_catalog_password_and_keys(
    pg_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warehouse import Settings, get_settings

    monkeypatch.setenv("TRADELOOP_EXCHANGE_API_KEY", KEY)
    monkeypatch.setenv("TRADELOOP_EXCHANGE_API_SECRET", SECRET)
    get_settings.cache_clear()
    s = get_settings()
    for text in (repr(s), str(s), s.model_dump_json(), json.dumps(s.model_dump(), default=str)):
        assert PASSWORD not in text and KEY not in text and SECRET not in text
    assert s.catalog_kind == "postgres" and s.catalog_dsn is not None and PASSWORD in s.catalog_dsn
    out = run_tradeloop(["config", "show", "-f", "json"])
    assert out.exit_code == 0, out.output
    assert PASSWORD not in out.output and KEY not in out.output and SECRET not in out.output
    assert Settings(catalog_url="sqlite:////tmp/c.sqlite").sqlite_catalog_path == Path(
        "/tmp/c.sqlite"
    )


def test_ccxt_credentials_are_refused_as_collect_flow_parameters() -> None:
    from flows.collect import collect

    with pytest.raises(ValueError, match="apiKey, secret.*TRADELOOP_EXCHANGE_API_KEY"):
        collect.fn(source="ccxt", ccxt_config={"apiKey": KEY, "secret": SECRET})


COLLECTOR = textwrap.dedent(
    """
    import logging, sys
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    from pipelines.sources.ccxt_source import CcxtSource

    source = CcxtSource(
        "binance", api_base=sys.argv[1], api_key=sys.argv[2], api_secret=sys.argv[3],
        config={"timeout": 10000},
    )
    source.exchange.fetch_balance()  # a signed call
    assert not [m for m in sys.modules if m == "trading" or m.startswith("trading.")]
    print("signed call done")
    """
)


def test_a_collector_process_redacts_its_api_key_from_ccxt_debug_logs() -> None:
    exchange = LoopbackExchange(symbols=["BTC/USDT"], api_key=KEY)
    with LoopbackServer(exchange) as server:
        done = subprocess.run(
            [sys.executable, "-c", COLLECTOR, server.url, KEY, SECRET],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "signed call done" in done.stdout
    # ccxt did log the signed request with its headers, the key's place redacted
    assert "X-MBX-APIKEY" in done.stderr and "/api/v3/account" in done.stderr
    assert KEY not in done.stderr and SECRET not in done.stderr
    assert "***" in done.stderr


def test_ccxt_config_credentials_are_not_stored_with_the_flow_run(
    prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    monkeypatch.setenv("TRADELOOP_HOME", str(tmp_path / "home"))
    # the command moves the credentials to these; undo puts the environment back
    monkeypatch.setenv("TRADELOOP_EXCHANGE_API_KEY", "placeholder")
    monkeypatch.setenv("TRADELOOP_EXCHANGE_API_SECRET", "placeholder")
    config = json.dumps({"apiKey": KEY, "secret": SECRET, "timeout": 5000})
    with LoopbackServer(LoopbackExchange(symbols=["BTC/USDT"])) as server:
        out = run_tradeloop(
            [
                "--prefect",
                "collect",
                "--source",
                "ccxt",
                "--exchange",
                "binance",
                "--api-base",
                server.url,
                "-s",
                "BTC/USDT",
                "--lookback-days",
                "0.02",
                "--ccxt-config",
                config,
            ],
        )
    assert out.exit_code == 0, out.output
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs() if r.flow_id]
    # the session's Prefect server holds other tests' collect runs too: this one's is the run
    # against this loopback server
    ours = [r for r in runs if r.parameters.get("api_base") == server.url]
    assert len(ours) == 1, [r.parameters for r in runs]
    assert ours[0].parameters["ccxt_config"] == {"timeout": 5000}  # the rest is kept
    text = json.dumps([r.parameters for r in runs], default=str)
    assert KEY not in text and SECRET not in text
    refused = run_tradeloop(
        ["collect", "--source", "ccxt", "--ccxt-config", json.dumps({"password": "x"})]
    )
    assert refused.exit_code == 2 and "password would be stored with the run" in refused.output
