"""The documents a user of the tool reads speak to that user: no references to
the team's own tracker, tools or paths that a clone of the repository does not
have, and the terms they lean on are defined where they are first used."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _user_docs() -> list[Path]:
    """Every Markdown file in the repository outside tests/ (README, docs/,
    fixtures/, benchmarks/), and the generated checks table."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "*.md", "docs/*"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        files = [ROOT / p for p in out if not p.startswith("tests/")]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the same set by walking
        files = [p for p in ROOT.rglob("*.md") if "tests" not in p.relative_to(ROOT).parts]
        files += list((ROOT / "docs").iterdir())
    return sorted({p for p in files if p.is_file()})


#: phrases that point at the team's work rather than at the tool
INTERNAL = [
    (r"\b(project |the )?issues? #?\d+", "a tracker issue number"),
    (r"\bthe issue'?s?\b", "'the issue' (which one? the user has none)"),
    (r"\bissue note\b|\btell us\b|\byour note\b", "a request to report to the team"),
    (r"\bthe search tool\b", "a team-internal tool"),
    (r"\.\./shared\b|(?<![\w.…~-])/work/", "a path a clone does not have"),
    (r"\bthe lead\b|\bhelpers?\b (session|helper)|\bmilestone \d", "team organisation"),
]


def test_the_user_docs_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in _user_docs()}
    assert {"README.md", "docs/KHO-ABI.md", "docs/errors.md", "fixtures/captures/README.md"} <= names


@pytest.mark.parametrize("path", _user_docs(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_team_internal_phrases(path):
    text = path.read_text(encoding="utf-8", errors="replace")
    found = []
    for pattern, why in INTERNAL:
        for m in re.finditer(pattern, text, re.I):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"{path.name}:{line}: {m.group(0)!r}: {why}")
    assert found == []


@pytest.mark.parametrize(
    "pattern, why",
    INTERNAL,
    ids=[w for _, w in INTERNAL],
)
def test_each_pattern_catches_what_it_is_for(pattern, why):
    samples = {
        "a tracker issue number": "as project issue 4 says",
        "'the issue' (which one? the user has none)": "in the issue's quiet runs",
        "a request to report to the team": "tell us in your issue note",
        "a team-internal tool": "found with the search tool",
        "a path a clone does not have": "see ../shared/abi/KHO-ABI.md",
        "team organisation": "the lead merges it",
    }
    assert re.search(pattern, samples[why], re.I)


def test_cache_paths_are_not_taken_for_team_paths():
    pattern = dict((w, p) for p, w in INTERNAL)["a path a clone does not have"]
    assert not re.search(pattern, "kernels under ~/.cache/kho-formats/work/linux-source-7.3")
    assert not re.search(pattern, "the tree (`…/work/`)")
    assert re.search(pattern, "see /work/shared/DESIGN.md")


def test_flb_is_defined_where_the_readme_first_uses_it():
    readme = (ROOT / "README.md").read_text()
    first = readme.index("FLB")
    assert "File-Lifecycle-Bound" in readme[max(0, first - 200) : first + 200]


def test_abi_versions_are_dated():
    abi = (ROOT / "docs" / "KHO-ABI.md").read_text()
    table = abi[abi.index("## 2. ABI versions") :]
    table = table[: table.index("\n\n", table.index("| version"))]
    rows = {r.split("|")[1].strip(): r for r in table.splitlines() if r.startswith("| `kho-v")}
    assert set(rows) == {"`kho-v1`", "`kho-v2`", "`kho-v3`", "`kho-v4`"}
    assert "6.16" in rows["`kho-v1`"] and "7.3" in rows["`kho-v4`"]
    for v in ("`kho-v2`", "`kho-v3`"):  # by a patch series with its date, or a release
        assert re.search(r"\b20\d\d-\d\d-\d\d\b|Linux \d+\.\d+", rows[v]), rows[v]
