"""deployments/docker-compose.yml without Docker (no daemon runs on these machines).

* The file is valid for the Compose specification: `docker-compose config` (Debian's
  docker-compose 1.29, installed by .ci/setup-compose.sh) resolves it with the placeholder
  credentials of deployments/.env.example and refuses it without them. Skipped on a machine
  without docker-compose, failed in CI.
* Every command in it parses with the CLI that would run it (tradeloop's typer app, prefect's
  cyclopts app), and what it names exists: the prefect.yaml file, its work pool, its
  deployments, the served symbol.
* The production-shape rules: healthchecks, start order on health, restart policies, ports on
  127.0.0.1 only, credentials only from the env file, CPU-only torch in the training image.
"""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cli import flow_name, parse_prefect, parse_tradeloop
from tests.support.postgres import in_ci

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"
COMPOSE = DEPLOYMENTS / "docker-compose.yml"
PREFECT_YAML = DEPLOYMENTS / "prefect.yaml"
ENV_EXAMPLE = DEPLOYMENTS / ".env.example"
WORKDIR = "/opt/tradeloop"  # where the images copy the repository (Dockerfile.*)
ONE_SHOT = {"deploy"}  # services that run once and exit
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)")


def _load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def command_lines(service: dict[str, Any]) -> list[list[str]]:
    """The argv of each command a service runs: its entrypoint + command, with a
    `sh -c "a && b"` script split into its commands."""
    argv: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if value is not None:
            argv += shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
    if argv[:2] in (["sh", "-c"], ["bash", "-c"]):
        script = " ".join(argv[2:])
        return [shlex.split(part) for part in re.split(r"&&|;|\|\|", script) if part.strip()]
    return [argv] if argv else []


def deployment_names(prefect_yaml: dict[str, Any]) -> set[str]:
    return {f"{flow_name(d['entrypoint'], ROOT)}/{d['name']}" for d in prefect_yaml["deployments"]}


def _check_prefect(args: list[str], prefect_yaml: dict[str, Any]) -> list[str]:
    try:
        command, bound = parse_prefect(args)
    except Exception as exc:
        return [f"prefect {' '.join(args)}: {exc}"]
    problems = []
    pools = {d["work_pool"]["name"] for d in prefect_yaml["deployments"]}
    pool = bound.get("work_pool_name") or (
        bound.get("name") if args[:2] == ["work-pool", "create"] else None
    )
    if pool is not None and pool not in pools:
        problems.append(f"prefect {' '.join(args)}: work pool {pool!r} is none of {pools}")
    prefect_file = bound.get("prefect_file")
    if prefect_file is not None and not (ROOT / str(prefect_file)).is_file():
        problems.append(f"prefect {' '.join(args)}: no file {prefect_file} in the image")
    if (
        command == "run"
        and args[:1] in (["deployment"], ["deployments"])
        and bound["name"] not in deployment_names(prefect_yaml)
    ):
        problems.append(f"prefect {' '.join(args)}: no deployment {bound['name']!r}")
    return problems


def _check_tradeloop(args: list[str], prefect_yaml: dict[str, Any]) -> list[str]:
    try:
        path = parse_tradeloop(args)
    except Exception as exc:
        return [f"tradeloop {' '.join(args)}: {exc}"]
    problems = []
    if path == ["tradeloop", "serve"] and "--replay" in args:
        # the served symbol is one the scheduled pipeline collects
        symbol = args[args.index("--replay") + 1]
        minutely = next(d for d in prefect_yaml["deployments"] if d["name"] == "minutely")
        if symbol not in minutely["parameters"]["symbols"]:
            problems.append(
                f"tradeloop {' '.join(args)}: pipeline/minutely never collects {symbol}"
            )
    return problems


def command_problems(compose: dict[str, Any], prefect_yaml: dict[str, Any]) -> list[str]:
    """What in the compose file's commands would fail on start: unknown commands and options,
    a work pool, prefect file or deployment that does not exist."""
    problems: list[str] = []
    for name, service in compose["services"].items():
        for argv in command_lines(service):
            program, args = argv[0], argv[1:]
            if program == "prefect":
                found = _check_prefect(args, prefect_yaml)
            elif program == "tradeloop":
                found = _check_tradeloop(args, prefect_yaml)
            else:
                found = [] if name == "postgres" else [f"{name}: unexpected program {program}"]
            problems += [f"{name}: {p}" for p in found]
    return problems


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(COMPOSE)


@pytest.fixture(scope="module")
def prefect_yaml() -> dict[str, Any]:
    return _load(PREFECT_YAML)


def test_every_command_parses_and_names_what_exists(
    compose: dict[str, Any], prefect_yaml: dict[str, Any]
) -> None:
    assert command_problems(compose, prefect_yaml) == []
    # and the check saw the commands that matter
    programs = {
        name: [argv[:3] for argv in command_lines(s)] for name, s in compose["services"].items()
    }
    assert ["prefect", "worker", "start"] in programs["worker"]
    assert ["prefect", "--no-prompt", "deploy"] in programs["deploy"]
    assert ["tradeloop", "serve", "--replay"] in programs["serve"]


@pytest.mark.parametrize(
    ("service", "old", "new", "expected"),
    [
        ("worker", "--with-healthcheck", "--with-health-check", "Unknown option"),
        ("serve", "--follow-every", "--follow", "No such option"),
        ("reports", "serve", "serves", "No such command"),
        ("deploy", "collect/backfill", "collect/backfil", "no deployment 'collect/backfil'"),
        ("deploy", "deployments/prefect.yaml", "deployments/prefect.yml", "no file"),
        ("worker", "tradeloop-process", "tradeloop-proc", "work pool 'tradeloop-proc'"),
        ("serve", "BTC/USDT", "DOGE/USDT", "never collects DOGE/USDT"),
    ],
)
def test_a_command_naming_what_does_not_exist_fails(
    compose: dict[str, Any],
    prefect_yaml: dict[str, Any],
    service: str,
    old: str,
    new: str,
    expected: str,
) -> None:
    broken = copy.deepcopy(compose)
    command = broken["services"][service]["command"]
    if isinstance(command, list) and len(command) > 2 and command[:2] == ["sh", "-c"]:
        command[2] = command[2].replace(old, new)
    else:
        assert old in command, f"{service}'s command has no {old!r}: {command}"
        command[command.index(old)] = new
    problems = command_problems(broken, prefect_yaml)
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_deployment_renamed_in_prefect_yaml_fails(
    compose: dict[str, Any], prefect_yaml: dict[str, Any]
) -> None:
    renamed = copy.deepcopy(prefect_yaml)
    next(d for d in renamed["deployments"] if d["name"] == "backfill")["name"] = "history"
    problems = command_problems(compose, renamed)
    assert len(problems) == 1 and "no deployment 'collect/backfill'" in problems[0], problems


def _docker_compose() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    why = "docker-compose is not installed (.ci/setup-compose.sh installs Debian's)"
    if in_ci():
        pytest.fail(why)
    pytest.skip(why)


def test_compose_config_accepts_the_file_with_the_env_file_only(tmp_path: Path) -> None:
    tool = _docker_compose()
    # a copy of deployments/ so that no deployments/.env of the developer is read
    project = tmp_path / "deployments"
    shutil.copytree(DEPLOYMENTS, project, ignore=shutil.ignore_patterns(".env"))
    base = [*tool, "--project-directory", str(project), "-f", str(project / COMPOSE.name)]
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if not k.startswith(("POSTGRES_", "PREFECT_"))
    }
    ok = subprocess.run(
        [*base, "--env-file", str(project / ENV_EXAMPLE.name), "config"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    resolved = yaml.safe_load(ok.stdout)
    assert set(resolved["services"]) == set(_load(COMPOSE)["services"])
    missing = subprocess.run([*base, "config"], capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode != 0 and "deployments/.env" in missing.stderr, missing.stderr


def test_services_start_in_order_on_health_and_restart(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
        else:
            assert service.get("restart") == "unless-stopped", name
        for dependency, rule in (service.get("depends_on") or {}).items():
            wanted = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert rule == {"condition": wanted}, (name, dependency, rule)
            assert dependency in ONE_SHOT or "healthcheck" in services[dependency], dependency
    assert services["worker"]["depends_on"]["deploy"]["condition"] == (
        "service_completed_successfully"
    )


def test_ports_are_loopback_and_credentials_come_from_the_env_file(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    text = COMPOSE.read_text()
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    # every variable the file reads is documented in .env.example, and no secret of it is
    # written into the file itself
    assert set(VARIABLE.findall(text)) == set(example), set(VARIABLE.findall(text)) ^ set(example)
    secrets = [v for k, v in example.items() if "PASSWORD" in k or "AUTH" in k]
    assert len(secrets) == 2 and not [v for v in secrets if v.split(":")[-1] in text]
    assert "tradeloop:tradeloop@" not in text
    server = compose["services"]["prefect-server"]["environment"]
    assert server["PREFECT_SERVER_API_AUTH_STRING"].startswith("${PREFECT_AUTH_STRING")
    for name in ("deploy", "worker", "serve"):
        env = compose["services"][name]["environment"]
        assert env["PREFECT_API_AUTH_STRING"].startswith("${PREFECT_AUTH_STRING"), name
    assert "deployments/.env" in (ROOT / ".gitignore").read_text().splitlines()


def test_reports_and_data_docs_have_volumes(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]["volumes"]
    assert {"reports:/data/reports", "quality:/data/quality"} <= set(worker)
    assert {"reports", "quality", "lakedata", "pgdata"} <= set(compose["volumes"])


def test_training_image_takes_torch_from_the_cpu_index() -> None:
    text = (DEPLOYMENTS / "Dockerfile.train").read_text()
    pin = re.search(r'"torch==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin is not None
    cpu = re.search(r"--index-url https://download.pytorch.org/whl/cpu torch==(\S+)", text)
    assert cpu is not None and cpu.group(1) == pin.group(1)
    # torch is installed before the package, so the package's own pin finds it satisfied
    assert text.index("whl/cpu") < text.index("pip install '.[train]'")
