"""Importing Great Expectations without executing the modules of features tradeloop never uses.

``import great_expectations`` costs 2.5-3 s, and a third of that is two modules it imports for
things the quality gate does not do: ``altair`` (Data Docs charts) and ``scipy.stats`` (the
distributional expectations, such as KL divergence). Both are imported here through the
standard library's ``importlib.util.LazyLoader``: the module object is created at once, and its
code runs on the first attribute access, so anything that does use them still gets the real
module. A ``tradeloop import`` is a new process per command, where those 0.8 s are a sixth of
its wall time.

Only the import of Great Expectations itself is deferred this way: the finder is on
``sys.meta_path`` for the duration of that one import, and a module already imported is left
as it is.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Sequence
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType

DEFERRED_MODULES: tuple[str, ...] = ("altair", "scipy.stats")

_lock = threading.Lock()


class _DeferringFinder:
    """A meta-path finder that hands the named modules a lazy loader.

    The real spec comes from ``PathFinder`` (both modules are plain files of installed
    packages), not from ``sys.meta_path``: taking itself off that list to ask the other
    finders would change it under imports running in other threads.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name not in self.names:
            return None
        spec = PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def import_great_expectations() -> ModuleType:
    """``great_expectations``, imported once per process with ``DEFERRED_MODULES`` lazy."""
    with _lock:
        if "great_expectations" not in sys.modules:
            finder = _DeferringFinder(DEFERRED_MODULES)
            sys.meta_path.insert(0, finder)
            try:
                import great_expectations  # noqa: F401
            finally:
                sys.meta_path.remove(finder)
    return sys.modules["great_expectations"]
