"""tests/conftest.py: under CI a skipped oracle test fails; elsewhere it skips, and
other skips stay skips."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py").read_text()
TESTS = """
import pytest

@pytest.mark.oracle
@pytest.mark.skipif(True, reason="no such tool")
def test_oracle_skipif():
    pass

@pytest.mark.oracle
def test_oracle_skip_call():
    pytest.skip("tool missing")

@pytest.mark.oracle
def test_oracle_runs():
    pass

@pytest.mark.skipif(True, reason="kernel missing")
def test_other_skip():
    pass
"""


@pytest.mark.parametrize(
    "ci, failed, skipped", [("true", 2, 1), ("1", 2, 1), ("", 0, 3), ("false", 0, 3), ("0", 0, 3), (None, 0, 3)]
)
def test_oracle_skips_fail_under_ci(pytester, monkeypatch, ci, failed, skipped):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    oracle: independent tool\n")
    pytester.makepyfile(test_x=TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    got = result.parseoutcomes()
    # a skipif skips in setup, so the failure shows as an error there; either fails the run
    assert (got.get("passed"), got.get("failed", 0) + got.get("errors", 0), got.get("skipped", 0)) == (
        1,
        failed,
        skipped,
    )
    assert result.ret == (1 if failed else 0)
    if failed:
        result.stdout.fnmatch_lines(["*oracle test skipped under CI*no such tool*"])


def test_the_oracles_are_marked():
    """The tests that use the independent tools carry the marker the hook looks at."""
    root = Path(__file__).parent
    for name in ("test_fdt_history.py", "test_interop_tools.py", "test_boot_dtb.py", "test_core_external.py"):
        assert "pytest.mark.oracle" in (root / name).read_text(), name
