"""Keep exchange credentials out of logs, in every process that builds a ccxt client.

ccxt logs each request at DEBUG with its headers, the API key among them (Binance's
``X-MBX-APIKEY``). Whoever builds a ccxt client with credentials (the collector's
``CcxtSource``, the live broker) registers them here; a filter on ccxt's loggers then replaces
them with ``***`` in every record before any handler sees it.
"""

from __future__ import annotations

import logging
from typing import Any

REDACTED = "***"
CCXT_LOGGERS = ("ccxt.base.exchange", "ccxt")
# ccxt's credential fields (Exchange.requiredCredentials)
CREDENTIAL_KEYS = ("apiKey", "secret", "password", "uid", "privateKey", "token", "twofa")


class RedactSecrets(logging.Filter):
    """Replaces every registered secret in a record's message with ``***``."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            if any(s in text for s in self.secrets):
                record.msg, record.args = self.scrub(text), ()
        return True


REDACT = RedactSecrets()
for _name in CCXT_LOGGERS:
    logging.getLogger(_name).addFilter(REDACT)


def register_secrets(*secrets: str | None) -> None:
    """Redact these values (empty ones are ignored) from ccxt's log records in this process."""
    REDACT.secrets.update(s for s in secrets if s)


def credentials_in(config: dict[str, Any] | None) -> list[str]:
    """The ccxt credential keys set in ``config`` (a flow parameter must carry none: Prefect
    stores a flow run's parameters in clear)."""
    return [k for k in CREDENTIAL_KEYS if (config or {}).get(k)]


def refuse_credentials(config: dict[str, Any] | None) -> None:
    """ValueError when ``config`` (a flow parameter) carries ccxt credentials."""
    found = credentials_in(config)
    if found:
        raise ValueError(
            f"ccxt_config carries {', '.join(found)}: a flow run's parameters are stored in "
            "clear; set TRADELOOP_EXCHANGE_API_KEY and TRADELOOP_EXCHANGE_API_SECRET (environment "
            "or settings file) instead"
        )
