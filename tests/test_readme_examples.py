"""The README's worked examples, run as a user runs them: every
``console`` block whose commands all print what the README shows is run from the
top of the tree with ``tmp=$(mktemp -d)``, twice (a second run gets a new ``$tmp``
and must print the same), and its output compared line for line (``$tmp`` stands
for the directory; a ``...`` line stands for lines left out)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks() -> list[tuple[int, list[tuple[str, list[str]]]]]:
    out = []
    for m in re.finditer(r"```console\n(.*?)```", README, re.S):
        cmds: list[tuple[str, list[str]]] = []
        for line in m.group(1).splitlines():
            if line.startswith("$ "):
                cmds.append((line[2:], []))
            elif cmds and cmds[-1][0].endswith("\\"):
                cmds[-1] = (cmds[-1][0][:-1] + line.strip(), [])
            elif cmds:
                cmds[-1][1].append(line)
        out.append((README[: m.start()].count("\n") + 1, cmds))
    return out


def _runnable(cmds) -> bool:
    return bool(cmds) and all((c.startswith("kho ") or c == "echo $?") and want for c, want in cmds)


RUNNABLE = [(line, cmds) for line, cmds in _blocks() if _runnable(cmds)]


def test_the_examples_are_found():
    assert len(RUNNABLE) >= 6, [line for line, _ in RUNNABLE]
    assert "tmp=$(mktemp -d)" in README
    assert not re.search(r"-o /tmp/|into /tmp/| /tmp/v", README), "examples write into $tmp, not fixed /tmp paths"


def _matches(got: list[str], want: list[str]) -> bool:
    chunks, cur = [], []
    for w in want:
        if w.strip() == "...":
            chunks.append(cur)
            cur = []
        else:
            cur.append(w)
    chunks.append(cur)
    if "..." not in [w.strip() for w in want]:
        return got == want
    pos = 0
    for k, chunk in enumerate(chunks):
        if not chunk:
            continue
        while pos + len(chunk) <= len(got) and got[pos : pos + len(chunk)] != chunk:
            if k == 0 and want[0].strip() != "...":
                return False
            pos += 1
        if pos + len(chunk) > len(got):
            return False
        pos += len(chunk)
    return pos == len(got) or want[-1].strip() == "..."


def _run_block(cmds) -> list[str]:
    tmp = tempfile.mkdtemp(prefix="kho-readme-")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "tmp": tmp}
    problems, rc = [], None
    for cmd, want in cmds:
        if cmd == "echo $?":
            got = [str(rc)]
        else:
            r = subprocess.run(
                ["bash", "-c", f'kho() {{ "{sys.executable}" -m kho_formats.cli "$@"; }}; {cmd}'],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            rc = r.returncode
            got = (r.stdout + r.stderr).replace(tmp, "$tmp").splitlines()
        if not _matches(got, want):
            problems.append(f"$ {cmd}\n--- README\n" + "\n".join(want) + "\n--- got\n" + "\n".join(got))
    return problems


@pytest.mark.parametrize("line, cmds", RUNNABLE, ids=[f"line-{line}" for line, _ in RUNNABLE])
def test_readme_example(line, cmds):
    for run in (1, 2):
        problems = _run_block(cmds)
        assert not problems, f"README line {line}, run {run}:\n" + "\n\n".join(problems)
