"""`make bench`: run every benchmarks/bench_*.py module's ``main()`` in turn."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks


def main(selected: list[str]) -> None:
    names = sorted(
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    for name in names:
        if selected and not any(s in name for s in selected):
            continue
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()
        print(f"   done in {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
