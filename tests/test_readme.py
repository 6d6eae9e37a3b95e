"""README excerpts are real output: the demo excerpt is checked against a real run of
the command it names, and the commands the README shows parse."""

from __future__ import annotations

import json
import os
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


DEMO = [sys.executable, "-m", "neuro_chat_elo_pxls.cli", "demo"]


def _run_demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``neuro-chat-elo-pxls demo ARGS`` in a subprocess from ``cwd``; it must succeed."""
    result = subprocess.run(
        [*DEMO, *args], capture_output=True, text=True, timeout=300, check=False, cwd=cwd
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.mark.integration
def test_demo_excerpt_matches_a_real_run(tmp_path: Path) -> None:
    excerpt = _excerpt()
    assert "demo --hours 8" in README.read_text(encoding="utf-8")
    out = tmp_path / "deltas.jsonl"
    result = _run_demo(tmp_path, "--hours", "8", "--out", str(out))
    real = [_TIMESTAMP.sub("", line) for line in result.stderr.splitlines()]
    missing = [line for line in excerpt if not any(_pattern(line).match(r) for r in real)]
    # the last line names where the deltas went: the --out file here
    missing = [m for m in missing if "JSON-lines deltas went to" not in m]
    assert not missing, "README lines not in the real output:\n" + "\n".join(missing)
    (went,) = [line for line in real if "JSON-lines deltas went to" in line]
    # the temporary folder held only the database: removed, and the last line says so
    # (it said "the database is X", then "X was removed": issue 29, item 19)
    match = re.search(
        rf"deltas went to {re.escape(str(out))}; the database (\S+) is removed now", went
    )
    assert match and went is [r for r in real if r.strip()][-1], went
    assert not Path(match.group(1)).exists()
    deltas = [jsonlines.loads(line) for line in out.read_text().splitlines()]
    assert deltas and deltas[0].seq == 1
    text = README.read_text(encoding="utf-8")
    example = text.split("One JSON line (a delta) looks like this:", 1)[1].split("```json\n")[1]
    example_line = example.split("\n```")[0]
    assert set(json.loads(example_line)) == set(json.loads(out.read_text().splitlines()[0]))
    assert jsonlines.loads(example_line).via == "toplist"


@pytest.mark.integration
def test_demo_on_a_terminal_writes_the_deltas_to_a_file_and_says_where(tmp_path: Path) -> None:
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
            # the folder it keeps goes under the test's own (was: one more /tmp/pxls-demo-*
            # folder left behind by every test run)
            env={**os.environ, "TMPDIR": str(tmp_path)},
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
    lines = result.stderr.strip().splitlines()
    last = lines[-1]
    # CI greps the wheel's `demo --hours 2` log for this line: a finished demo says so
    assert "demo done: " in last, last
    # two hours end before the rename (hour 5): the recap tells only what happened
    recap = [line for line in lines if "demo recap: " in line]
    assert recap and not [line for line in recap if "renamed to" in line], recap
    for line in recap:
        reset = re.search(r"canvas reset (\S+) -> (\S+):", line)
        assert reset is None or reset.group(1) != reset.group(2), line
    match = re.search(r"(\d+) JSON-lines deltas went to (\S+deltas\.jsonl);", last)
    assert match, last
    written = Path(match.group(2)).read_text().splitlines()
    assert len(written) == int(match.group(1)) > 0
    assert jsonlines.loads(written[0]).seq == 1
    assert Path(match.group(2)).is_relative_to(tmp_path)


# -- installing: the package is not on any index; the docs show what CI builds -------

ROOT = README.parent
DOCS = [README, *sorted((ROOT / "examples").rglob("README.md"))]
CI = ROOT / ".ci" / "run"
_FROM_INDEX = re.compile(
    r"\bpip3?\s+install\s+(?:-[-\w]+(?:[= ]\S+)?\s+)*[\"']?neuro[-_.]chat[-_.]elo[-_.]pxls\b",
    re.IGNORECASE,
)
_SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}


def _shell_blocks(doc: Path) -> list[str]:
    """The lines of the doc's ```sh blocks."""
    blocks = re.findall(r"```(?:sh|bash|shell)\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    return [line for block in blocks for line in block.splitlines()]


def _pip_calls(lines: list[str]) -> list[list[str]]:
    """Every pip call in these shell lines: its arguments after ``pip`` (``pip``,
    ``…/bin/pip`` or ``python -m pip``), one per command of a ``&&`` chain."""
    import shlex

    calls = []
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():  # continued lines
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token not in _SEPARATORS:
                command.append(token)
                continue
            for i, word in enumerate(command):
                module = i > 0 and command[i - 1] == "-m" and word == "pip"
                if module or Path(word).name in ("pip", "pip3"):
                    calls.append(command[i + 1 :])
                    break
            command = []
    return calls


def _normalised(args: list[str]) -> list[str]:
    """Quiet flags dropped; the wheel directory (whatever its name) as ``<dir>``."""
    out = [a for a in args if a not in ("--quiet", "-q")]
    if "--wheel-dir" in out:
        out[out.index("--wheel-dir") + 1] = "<dir>"
    return [re.sub(r"^[^/]+/\*\.whl$", "<dir>/*.whl", a) for a in out]


def test_no_readme_installs_the_package_from_an_index() -> None:
    for doc in DOCS:
        found = _FROM_INDEX.search(doc.read_text(encoding="utf-8"))
        assert found is None, f"{doc.relative_to(ROOT)}: {found.group(0)!r} (not on any index)"
    assert _FROM_INDEX.search("sudo /opt/x/bin/pip install neuro-chat-elo-pxls   # or")
    assert _FROM_INDEX.search('pip install --quiet "neuro_chat_elo_pxls>=0.1"')
    assert not _FROM_INDEX.search('pip install -e ".[dev]"')


def test_the_install_commands_shown_are_the_ones_ci_runs() -> None:
    """A wheel built like .ci/run builds it, and that wheel installed like CI installs
    it; editable installs name extras that pyproject defines."""
    import tomllib

    ci = [  # .ci/run, and the container lane it calls
        _normalised(args)
        for script in (CI, CI.parent / "container")
        for args in _pip_calls(script.read_text(encoding="utf-8").splitlines())
    ]
    assert ["wheel", "--no-deps", "--wheel-dir", "<dir>", "."] in ci
    assert ["install", "<dir>/*.whl"] in ci
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = set(pyproject["project"]["optional-dependencies"])
    builds = {}
    for doc in DOCS:
        calls = _pip_calls(_shell_blocks(doc))
        for args in calls:
            where = f"{doc.relative_to(ROOT)}: pip {' '.join(args)}"
            if args[:1] == ["install"] and "-e" in args:
                target = args[args.index("-e") + 1]
                match = re.fullmatch(r"\.(?:\[([\w,]+)\])?", target)
                assert match, where
                assert set((match.group(1) or "").split(",")) - {""} <= extras, where
            elif args[:1] in (["install"], ["wheel"]):
                assert _normalised(args) in ci, f"{where}: not what .ci/run runs"
        builds[doc.name if doc == README else doc.parent.name] = [a[0] for a in calls]
    assert builds["systemd"].count("wheel") == 1 and "install" in builds["systemd"]


def test_ci_runs_the_readmes_test_command() -> None:
    """CI must run the README's test command, word for word (and fail the build on it)."""
    text = README.read_text(encoding="utf-8")
    (setup,) = [line for line in text.splitlines() if "&& python -m pytest" in line]
    command = setup.rsplit("&& ", 1)[1].strip()
    assert command.startswith("python -m pytest -q")
    assert f"`{command}`" in text, "the prose names the same command"
    ci = CI.read_text(encoding="utf-8").splitlines()
    assert command in ci, f"{command!r} is not a line of .ci/run"
    assert "set -euo pipefail" in ci


@pytest.mark.integration
def test_the_demo_is_reproducible_for_a_seed(tmp_path: Path) -> None:
    """Simulated time from a fixed start: the same seed, the same deltas, byte for byte;
    another seed, another run."""
    runs = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        out = tmp_path / f"{name}.jsonl"
        result = _run_demo(
            tmp_path, "--hours", "7", "--users", "60", "--seed", seed, "--out", str(out)
        )
        assert "simulated time (the same seed, the same run)" in result.stderr
        runs.append(out.read_bytes())
    assert runs[0] and runs[0] == runs[1]
    assert runs[2] != runs[0]
    deltas = [jsonlines.loads(line) for line in runs[0].decode().splitlines()]
    # the reset settles the old canvas: the pixels placed after the last observation
    assert {d.via for d in deltas} == {"toplist", "profile", "reset"}
    assert {d.canvas for d in deltas if d.via == "reset"} == {deltas[0].canvas}
    assert any(d.canvas != deltas[0].canvas for d in deltas), "the reset (hour 4.9) is in it"


@pytest.mark.integration
def test_the_demo_shows_two_instances(tmp_path: Path) -> None:
    """``demo --instances 2``: pxls.space's stand-in and an event canvas (another site
    name, the older page template, profiles from HTML) as two instance tables; every
    delta and every source log line names its instance, each conserves on its own."""
    out = tmp_path / "two.jsonl"
    result = _run_demo(
        tmp_path, "--hours", "4", "--users", "60", "--instances", "2", "--out", str(out)
    )
    deltas = [jsonlines.loads(line) for line in out.read_text().splitlines()]
    assert {d.instance for d in deltas} == {"space", "event"}
    for name in ("space", "event"):
        mine = [d for d in deltas if d.instance == name]
        assert [d.seq for d in mine] == list(range(1, len(mine) + 1))  # its own seqs
        total: dict[tuple[str, str], int] = {}
        for d in mine:
            total[(d.user, d.canvas)] = total.get((d.user, d.canvas), 0) + d.delta
            assert total[(d.user, d.canvas)] == d.score, d
    assert any(d.discord for d in deltas if d.instance == "event"), "read from HTML pages"
    lines = [_TIMESTAMP.sub("", line) for line in result.stderr.splitlines()]
    source = [line for line in lines if line.startswith("INFO neuro_chat_elo_pxls: [h")]
    tagged = [line for line in source if re.search(r"\] \[(space|event)\] ", line)]
    assert any("[event] pull at" in line for line in tagged)
    recap = [line for line in lines if "demo recap: instance event (Ironmouse Canvas" in line]
    assert recap and "at most 1 in flight" in recap[0]
    assert "is removed now (--keep keeps it)" in lines[-1], lines[-1]
    (in_all,) = [line for line in lines if "deltas in all, both instances" in line]
    assert "requests to the pxls.space stand-in" in in_all  # (one stand-in's requests)
