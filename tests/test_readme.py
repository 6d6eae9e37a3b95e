"""README excerpts are real output: the demo excerpt is checked against a real run of
the command it names, and the commands the README shows parse."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from neuro_chat_elo_pxls import jsonlines

README = Path(__file__).parent.parent / "README.md"
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def _excerpt() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- demo-excerpt: begin -->", 1)[1].split("<!-- demo-excerpt: end -->")[0]
    lines = block.strip().splitlines()
    assert lines[0] == "```text" and lines[-1] == "```"
    return lines[1:-1]


def _pattern(line: str) -> re.Pattern[str]:
    """The line with numbers, temporary paths and whitespace runs left open."""
    out = []
    for token in re.split(r"(\d+|pxls-demo-[a-z0-9_]+|\s+)", line):
        if not token:
            continue
        if token.isdigit():
            out.append(r"\d+")
        elif token.startswith("pxls-demo-"):
            out.append(r"pxls-demo-[a-z0-9_]+")
        elif token.isspace():
            out.append(r"\s+")
        else:
            out.append(re.escape(token))
    return re.compile("^" + "".join(out) + "$")


@pytest.mark.integration
def test_demo_excerpt_matches_a_real_run(tmp_path: Path) -> None:
    excerpt = _excerpt()
    assert "demo --hours 8" in README.read_text(encoding="utf-8")
    out = tmp_path / "deltas.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "neuro_chat_elo_pxls.cli",
            "demo",
            "--hours",
            "8",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    real = [_TIMESTAMP.sub("", line) for line in result.stderr.splitlines()]
    missing = [line for line in excerpt if not any(_pattern(line).match(r) for r in real)]
    # the last line names where the deltas went: the --out file here
    missing = [m for m in missing if not m.startswith("INFO neuro_chat_elo_pxls: demo: 985 JSON")]
    assert not missing, "README lines not in the real output:\n" + "\n".join(missing)
    assert real[-1].endswith(
        f"JSON-lines deltas went to {out}; the database is "
        + (real[-1].rsplit("the database is ", 1)[1])
    )
    deltas = [jsonlines.loads(line) for line in out.read_text().splitlines()]
    assert deltas and deltas[0].seq == 1
    text = README.read_text(encoding="utf-8")
    example = text.split("One JSON line (a delta) looks like this:", 1)[1].split("```json\n")[1]
    example_line = example.split("\n```")[0]
    assert set(json.loads(example_line)) == set(json.loads(out.read_text().splitlines()[0]))
    assert jsonlines.loads(example_line).via == "toplist"


@pytest.mark.integration
def test_demo_on_a_terminal_writes_the_deltas_to_a_file_and_says_where(tmp_path: Path) -> None:
    import os
    import pty

    master, slave = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "neuro_chat_elo_pxls.cli", "demo", "--hours", "2"],
            stdout=slave,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp_path,
        )
        os.set_blocking(master, False)
        try:
            on_terminal = os.read(master, 1 << 20).decode()
        except BlockingIOError:
            on_terminal = ""
    finally:
        os.close(master)
        os.close(slave)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"seq"' not in on_terminal  # no JSON lines on the terminal
    last = result.stderr.strip().splitlines()[-1]
    match = re.search(r"(\d+) JSON-lines deltas went to (\S+deltas\.jsonl);", last)
    assert match, last
    written = Path(match.group(2)).read_text().splitlines()
    assert len(written) == int(match.group(1)) > 0
    assert jsonlines.loads(written[0]).seq == 1
