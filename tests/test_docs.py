"""The documentation as a reader sees it: every table renders (a Markdown parser, not
a regex), the README starts with its users and stays short, and its links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).parent.parent
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "examples").rglob("README.md")),
]


def _table_rows(text: str) -> tuple[int, int]:
    """(rows written as table lines, rows the parser renders in tables)."""
    written = sum(
        1
        for line in text.splitlines()
        if line.startswith("|") and not re.fullmatch(r"\|[\s:|-]+\|", line.strip())
    )
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    rendered = sum(1 for token in tokens if token.type == "tr_open")
    return written, rendered


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_table_renders(doc: Path) -> None:
    """A table split by a blank line rendered its last rows as raw ``|`` text."""
    written, rendered = _table_rows(doc.read_text(encoding="utf-8"))
    assert written == rendered, f"{written} table lines, {rendered} rendered rows"


def test_a_split_table_is_caught() -> None:
    split = "| a | b |\n|---|---|\n| 1 | 2 |\n\n| 3 | 4 |\n"
    assert _table_rows(split) == (3, 2)


def test_the_readme_starts_with_its_users_and_is_short() -> None:
    """Issue 29: what it does, the requirements and the operators' section come first;
    contributors' material lives in docs/development.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(text.split()) <= 3000
    operators = lines.index("## Running it for real (operators)")
    assert operators < 150
    assert "Python 3.11 or newer" in "\n".join(lines[:20])
    assert lines.index("## Developing") > operators
    for changelog in ("(was ", "(before: ", "new in this version"):
        assert changelog not in text, changelog


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if "://" in target:
            continue
        assert (doc.parent / target).exists(), f"{doc.name}: {target}"
