"""The README and docs/ against the current CLI: every `tradeloop ...` line in a code block parses.

A line is parsed with click, as the shell would hand it over, down to the subcommand that would
run, without running it: an unknown or misspelled option, a missing argument or a bad choice
fails here. The README also stays a few screens long and links only to pages that exist.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from tests.support.cli import parse_tradeloop

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*```")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
MAX_README_LINES = 160


def command_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, command) for each `tradeloop` command inside a fenced code block; a line
    ending in a backslash is joined with the next, as the shell does."""
    in_block = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_block = not in_block
            continue
        if not in_block:
            continue
        if pending is not None:
            start, head = pending
            line, number = head + " " + line.strip(), start
            pending = None
        if line.rstrip().endswith("\\"):
            pending = (number, line.rstrip()[:-1])
            continue
        if tradeloop_args(line) is not None:
            yield number, line.strip()


def tradeloop_args(line: str) -> list[str] | None:
    """The arguments after `tradeloop` on a shell line (None when it runs something else);
    leading `VAR=value` assignments and a trailing `# comment` are left out."""
    words = shlex.split(line, comments=True)
    while words and ENV_ASSIGNMENT.match(words[0]):
        words.pop(0)
    return words[1:] if words and words[0] == "tradeloop" else None


# one parser for every command line a test reads (docs here, compose in tests/deployments)
parse = parse_tradeloop


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOC_FILES:
        for number, line in command_lines(doc.read_text()):
            found.append((f"{doc.relative_to(ROOT)}:{number}", line))
    return found


COMMANDS = documented_commands()


def test_docs_show_commands() -> None:
    # The scan itself must find what is there: the README's cheat-sheet alone has a dozen.
    in_readme = [where for where, _ in COMMANDS if where.startswith("README.md:")]
    assert len(in_readme) >= 12, in_readme
    assert len(COMMANDS) >= 60


@pytest.mark.parametrize(("where", "line"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_documented_command_parses(where: str, line: str) -> None:
    args = tradeloop_args(line)
    assert args is not None
    try:
        parse(args)
    except typer.Exit:
        pass  # an eager option such as --version ends the parse on purpose
    except typer.TyperException as exc:
        pytest.fail(f"{where}: `{line}` does not parse: {exc}")


@pytest.mark.parametrize(
    "line",
    [
        "tradeloop retrain --symbool BTC/USDT",  # misspelled option
        "tradeloop collect --timerange",  # option without its value
        "tradeloop sql -f yaml 'SELECT 1'",  # not a choice
        "tradeloop import",  # missing argument
        "tradeloop models promte X",  # misspelled subcommand
        "tradeloop models promote",  # a subcommand's missing argument
        "tradeloop serve --replay X --verbose",  # a global option after the command
    ],
)
def test_a_wrong_line_fails(line: str) -> None:
    args = tradeloop_args(line)
    assert args is not None
    with pytest.raises(typer.TyperException):
        parse(args)


def test_parse_reaches_the_subcommand() -> None:
    assert parse(["-v", "models", "promote", "signal-v3", "--force"]) == [
        "tradeloop",
        "models",
        "promote",
    ]


def test_command_lines_in_code_blocks_only() -> None:
    text = "\n".join(
        [
            "tradeloop prose --not-a-block",
            "```",
            "tradeloop collect -s A/B \\",
            "    -t 5m   # comment",
            "X=1 tradeloop sql 'SELECT 1'",
            "make demo",
            "```",
        ]
    )
    found = list(command_lines(text))
    assert [n for n, _ in found] == [3, 5]
    assert [parse(tradeloop_args(c) or []) for _, c in found] == [
        ["tradeloop", "collect"],
        ["tradeloop", "sql"],
    ]


def test_readme_is_short_and_links_to_existing_docs() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES
    assert "make demo" in text and "make test" in text
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)", text)
    local = [link for link in links if not re.match(r"^[a-z]+://", link)]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


def test_docs_link_to_existing_pages() -> None:
    for doc in DOC_FILES[1:]:
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)", doc.read_text()):
            if re.match(r"^[a-z]+://", link):
                continue
            assert (doc.parent / link).exists(), f"{doc.name} links to {link}, which is missing"


# A figure is quoted with the RESULTS.md section it comes from: `("Regimes")` in the README's
# table, `RESULTS.md`, "Cross-validated retraining"` in the docs. Each must still be there.
SECTION_QUOTE = re.compile(r'\("([A-Z][^"]{3,100})"|RESULTS(?:\.md)?`?, "([^"]+)"')


def quoted_sections() -> list[tuple[str, str]]:
    found = []
    for doc in DOC_FILES:
        for match in SECTION_QUOTE.finditer(doc.read_text()):
            found.append((doc.name, " ".join((match.group(1) or match.group(2)).split())))
    return found


def test_every_quoted_results_section_exists() -> None:
    quotes = quoted_sections()
    assert len(quotes) >= 8, quotes  # the README's figures table alone quotes 7
    headings = [
        line[3:]
        for line in (ROOT / "benchmarks" / "RESULTS.md").read_text().splitlines()
        if line.startswith("## ")
    ]
    for doc, section in quotes:
        assert any(heading.startswith(section) for heading in headings), (
            f'{doc} quotes "{section}", which benchmarks/RESULTS.md has no section for'
        )
