"""One list of checks (docs/checks.toml, rendered into docs/errors.md): current, naming
tests that exist, and listing every finding code the package emits."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gen():
    spec = importlib.util.spec_from_file_location("gen_check_docs", ROOT / "scripts" / "gen_check_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_errors_md_is_current():
    gen = _gen()
    text = gen.DOC.read_text()
    assert gen.render(text) == text, "docs/errors.md is stale: run python scripts/gen_check_docs.py"


def test_readme_points_at_the_one_list():
    readme = (ROOT / "README.md").read_text()
    first_row = _gen().load()["section"][0]["rows"][0][0]
    assert first_row not in readme, "the README keeps a second copy of the check list"
    assert "docs/errors.md#every-check-the-error-it-raises-the-test-that-covers-it" in readme
    assert _gen().TITLE.strip("# \n") == "Every check: the error it raises, the test that covers it"


def test_every_named_test_exists():
    missing = []
    for s in _gen().load()["section"]:
        for row in s["rows"]:
            cell = row[-1]
            file = None
            for ref in re.findall(r"`([^`]*)`", cell):
                if "::" in ref:
                    f, _, name = ref.partition("::")
                    file = f or file
                    name = name.split("[")[0]
                elif ref.endswith(".py"):
                    file, name = ref, None
                else:
                    continue
                path = ROOT / "tests" / (file or "")
                if not path.is_file() or (name and not re.search(rf"^def {re.escape(name)}\(", path.read_text(), re.M)):
                    missing.append(ref)
    assert not missing, missing


_EMIT = re.compile(r'\b(?:ERROR|WARNING|INFO)\s*,\s*"([a-z][a-z0-9]*(?:-[a-z0-9]+)*)"')


def test_every_finding_code_is_listed():
    table = (ROOT / "docs" / "checks.toml").read_text()
    codes = {c for p in (ROOT / "kho_formats").rglob("*.py") for c in _EMIT.findall(p.read_text())}
    assert len(codes) > 30, sorted(codes)  # the pattern still finds the emitters
    assert sorted(c for c in codes if f"`{c}`" not in table) == []
