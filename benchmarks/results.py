"""Recording benchmark results in benchmarks/RESULTS.md, one section per benchmark.

Each benchmark module (``benchmarks/bench_<area>.py``) measures its subject beside a baseline
run in the same process and calls ``record(section, markdown)``; re-running replaces that
section only.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
_HEADER = (
    "# Benchmark results\n\nRecorded by `make bench`; each section says where and when it ran.\n"
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def stamp() -> str:
    return f"_Machine: {machine()}. Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC._"


def record(section: str, markdown: str) -> None:
    """Replace (or add) ``## section`` in RESULTS.md with ``markdown`` and the machine stamp.

    Benchmarks run side by side (and from helpers' checkouts of the same file): the read,
    replace and write happen under one exclusive lock, so that one run cannot write back a
    copy that lacks the section another run has just added.
    """
    body = f"## {section}\n\n{stamp()}\n\n{markdown.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = RESULTS.read_text() if RESULTS.exists() else _HEADER
        text = (
            pattern.sub(lambda _: body + "\n", text)
            if pattern.search(text)
            else text.rstrip() + "\n\n" + body
        )
        RESULTS.write_text(text)
