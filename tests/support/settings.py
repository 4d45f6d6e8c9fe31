"""The settings cache in tests: ``warehouse.get_settings`` caches one Settings per process, so
a test that changes ``TRADELOOP_*`` must not see the previous test's (or its own earlier)
settings. tests/conftest.py clears the cache around every test and gives every test this
monkeypatch, whose ``setenv``/``delenv`` of a ``TRADELOOP_*`` variable clears it too: no test
calls ``cache_clear`` by hand, and no test depends on the order tests run in."""

from __future__ import annotations

import pytest

from warehouse import get_settings

PREFIX = "TRADELOOP_"


class SettingsAwareMonkeyPatch(pytest.MonkeyPatch):
    def setenv(self, name: str, value: str, prepend: str | None = None) -> None:
        super().setenv(name, value, prepend)
        if name.startswith(PREFIX):
            get_settings.cache_clear()

    def delenv(self, name: str, raising: bool = True) -> None:
        super().delenv(name, raising)
        if name.startswith(PREFIX):
            get_settings.cache_clear()

    def undo(self) -> None:
        super().undo()
        get_settings.cache_clear()
