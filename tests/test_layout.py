"""Test hygiene that a reviewer would otherwise have to remember: shared helpers live in
tests/support/, and no test imports a conftest module as a library (pytest imports conftest
files itself; importing one again runs its module code twice under two names)."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CONFTEST_IMPORT = re.compile(
    r"^\s*(from\s+tests(\.\w+)*\.conftest\s+import|import\s+tests(\.\w+)*\.conftest)", re.M
)


def test_no_test_imports_a_conftest() -> None:
    offenders = [
        str(p.relative_to(TESTS))
        for p in sorted(TESTS.rglob("*.py"))
        if CONFTEST_IMPORT.search(p.read_text())
    ]
    assert offenders == [], f"import helpers from tests/support/ instead: {offenders}"


def test_the_guard_sees_both_spellings() -> None:
    assert CONFTEST_IMPORT.search("from tests.flows.conftest import artifact_texts")
    assert CONFTEST_IMPORT.search("    import tests.conftest")
    assert not CONFTEST_IMPORT.search("from tests.support.models import TINY")
