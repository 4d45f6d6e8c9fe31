"""The one settings object of tradeloop.

Values come from (highest first): keyword arguments, ``TRADELOOP_*`` environment variables,
``tradeloop.toml`` in the working directory (or the file named by ``TRADELOOP_CONFIG``),
then the defaults below.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# The cost defaults, shared with trading.loop.LoopConfig (one place).
DEFAULT_TAKER_FEE = 0.001
DEFAULT_MAKER_FEE = 0.001
DEFAULT_SLIPPAGE_FRACTION = 0.0005
DEFAULT_HALF_SPREAD_FRACTION = 0.0001


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRADELOOP_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    home: Path = Field(
        default=Path("var"), description="data directory (warehouse, models, reports)"
    )
    # A secret: a PostgreSQL URL carries the catalog's password. Shown masked (repr, dumps,
    # `config show`); ``catalog_dsn`` gives the value where a connection needs it.
    catalog_url: SecretStr | None = Field(
        default=None,
        description="DuckLake catalog: None = SQLite file under home; 'sqlite:///path' or "
        "'postgresql://user@host/db' selects another",
    )
    data_path: str | None = Field(
        default=None, description="where DuckLake writes Parquet files (default: home/lake/data/)"
    )
    # Off by default: with duckdb 1.4.4's ducklake, repeated delete+insert of inlined rows lost
    # committed rows (reproduced by tests/warehouse/test_writers.py's property test). Small
    # writes make small Parquet files instead, which `maintain` merges.
    data_inlining_row_limit: int = Field(
        default=0, ge=0, description="inserts of at most this many rows are kept in the catalog"
    )
    write_max_attempts: int = Field(default=30, ge=1)
    write_backoff_initial_s: float = Field(default=0.02, gt=0)
    write_backoff_max_s: float = Field(default=1.0, gt=0)

    exchange: str = "simulated"
    symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    base_timeframe: str = "1m"
    microstructure_symbols: tuple[str, ...] = Field(
        default=(),
        description="symbols whose order-book snapshots and public trades every collect "
        "stores (each cycle of --follow-every, and the one-shot collect); '*' = every "
        "symbol collected (docs/features.md)",
    )
    task_runner: Literal["thread", "dask"] = "thread"
    dask_address: str | None = Field(
        default=None, description="Dask scheduler (tcp://host:8786); None = a local cluster"
    )
    task_workers: int | None = Field(
        default=None,
        ge=1,
        description="tasks at once per flow run: threads, or local Dask worker processes "
        "(None = 8 threads / one Dask worker per core)",
    )

    # Trading costs (fractions of traded notional): the paper broker charges the fee and the
    # slippage; the decision path needs a trade's expected edge to exceed the round trip
    # 2 x (taker_fee + slippage_fraction + half_spread_fraction) (trading.decide.Costs).
    taker_fee: float = Field(default=DEFAULT_TAKER_FEE, ge=0, lt=0.1)
    maker_fee: float = Field(default=DEFAULT_MAKER_FEE, ge=0, lt=0.1)
    slippage_fraction: float = Field(default=DEFAULT_SLIPPAGE_FRACTION, ge=0, lt=0.5)
    half_spread_fraction: float = Field(
        default=DEFAULT_HALF_SPREAD_FRACTION,
        ge=0,
        lt=0.5,
        description="estimate of half the bid-ask spread (candles carry no spread)",
    )

    live_trading: bool = Field(default=False, description="live orders need this explicit opt-in")
    exchange_api_key: SecretStr | None = None
    exchange_api_secret: SecretStr | None = None
    exchange_sandbox: bool = Field(
        default=True, description="live orders go to the exchange's sandbox/testnet first"
    )
    reports_url: str | None = Field(
        default=None,
        description="where `tradeloop reports serve` (or compose's reports service) publishes "
        "home/reports, e.g. http://127.0.0.1:8000; artifacts link there instead of file://",
    )
    live_max_unwritten_batches: int = Field(
        default=5,
        ge=1,
        description="live mode: with this many batches of rows not yet written to the "
        "warehouse, the loop stops trading until the writer catches up",
    )
    exchange_api_base: str | None = Field(
        default=None, description="REST base URL replacing the exchange's (e.g. a loopback)"
    )
    alert_webhook_url: SecretStr | None = Field(
        default=None,
        description="where alerts are POSTed as JSON without Prefect (and the URL of the "
        "Webhook block `tradeloop alerts setup` creates); secret: webhook URLs carry tokens",
    )

    @field_validator("catalog_url", mode="before")
    @classmethod
    def _known_catalog(cls, value: object) -> object:
        # Any other value used to fall back silently to the SQLite catalog under home.
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not value:
            return None
        if not isinstance(value, str):
            return value  # pydantic says what type it wanted
        if value.startswith(("postgresql://", "postgres://", "sqlite:///")):
            return value
        scheme = value.split("://", 1)[0] if "://" in value else ""
        raise ValueError(
            f"catalog_url must be 'postgresql://user:pw@host:port/db' or 'sqlite:///path' "
            f"(got scheme {scheme!r})"
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        named = os.environ.get("TRADELOOP_CONFIG")
        if named and not Path(named).is_file():
            # a misspelt path would otherwise silently give the defaults
            raise FileNotFoundError(f"TRADELOOP_CONFIG names {named!r}, which is not a file")
        toml_file = Path(named or "tradeloop.toml")
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )

    def report_link(self, path: Path) -> str:
        """A link a browser on the UI's page can open: under ``reports_url`` when it is set
        (a browser blocks file:// links from an http page), else the file's URI."""
        path = Path(path).resolve()
        reports = (self.home / "reports").resolve()
        if self.reports_url and path.is_relative_to(reports):
            return self.reports_url.rstrip("/") + "/" + path.relative_to(reports).as_posix()
        return path.as_uri()

    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def catalog_dsn(self) -> str | None:
        """The catalog URL in clear (password included): only where a connection needs it."""
        return self.catalog_url.get_secret_value() if self.catalog_url else None

    @property
    def catalog_kind(self) -> Literal["sqlite", "postgres"]:
        dsn = self.catalog_dsn
        if dsn and dsn.startswith(("postgresql://", "postgres://")):
            return "postgres"
        return "sqlite"

    @property
    def resolved_data_path(self) -> str:
        if self.data_path:
            return self.data_path.rstrip("/") + "/"
        return str((self.lake_dir / "data").resolve()) + "/"

    @property
    def sqlite_catalog_path(self) -> Path:
        dsn = self.catalog_dsn
        if dsn and dsn.startswith("sqlite:///"):
            return Path(dsn.removeprefix("sqlite:///"))
        return self.lake_dir / "catalog.sqlite"


class _ProcessSettings:
    """``get_settings()``: the Settings of this process, read once from the environment and
    the settings file (``get_settings.cache_clear()`` reads them again). Flows take no Settings
    parameter (Prefect stores a run's parameters in clear, the catalog password with them):
    they call ``get_settings()`` where they run. ``use_settings`` makes it return a given
    object for a while, for a program (or a test) that built its own Settings."""

    def __init__(self) -> None:
        self._cached: Settings | None = None
        self._override: list[Settings] = []

    def __call__(self) -> Settings:
        if self._override:
            return self._override[-1]
        if self._cached is None:
            self._cached = Settings()
        return self._cached

    def cache_clear(self) -> None:
        self._cached = None

    @contextmanager
    def use(self, settings: Settings) -> Iterator[Settings]:
        self._override.append(settings)
        try:
            yield settings
        finally:
            self._override.remove(settings)


get_settings = _ProcessSettings()


def use_settings(settings: Settings) -> AbstractContextManager[Settings]:
    """``with use_settings(s): ...``: ``get_settings()`` returns ``s`` in this process inside
    the block (flows called there run on ``s``)."""
    return get_settings.use(settings)
