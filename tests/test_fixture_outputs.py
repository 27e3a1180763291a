"""Fixture outputs sized to their use (issue 19, item 5): ``kho_fixture.h`` only
for small images unless asked for; and the benchmark, not the tests, times things."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kho_formats.cli import build_parser, main
from kho_formats.model.fixture import C_HEADER_MAX_IMAGE
from kho_formats.model.spec import build_spec, load_spec
from kho_formats.ops.report import human_size

ROOT = Path(__file__).resolve().parents[1]
BIG = ROOT / "fixtures" / "specs" / "kernel" / "many-folios.toml"
SMALL = ROOT / "fixtures" / "specs" / "v4-4k.toml"


def test_big_image_skips_the_header_with_a_note(tmp_path, capsys):
    assert build_spec(load_spec(BIG)).image.total_bytes > C_HEADER_MAX_IMAGE
    assert main(["build", str(BIG), "-o", str(tmp_path / "a"), "--json"]) == 0
    out = capsys.readouterr()
    j = json.loads(out.out)
    assert not (tmp_path / "a" / "kho_fixture.h").exists() and "kho_fixture.h" not in j["files"]
    assert sorted(j["files"]) == sorted(p.name for p in (tmp_path / "a").iterdir())
    assert any("kho_fixture.h not written" in n and "--c-header" in n for n in j["notes"])
    assert "kho: note: kho_fixture.h not written" in out.err


def test_c_header_on_request_and_off_on_request(tmp_path, capsys):
    assert main(["build", str(BIG), "-o", str(tmp_path / "a"), "--c-header"]) == 0
    assert (tmp_path / "a" / "kho_fixture.h").stat().st_size > 10 << 20  # why it is not the default
    assert main(["build", str(SMALL), "-o", str(tmp_path / "b"), "--no-c-header"]) == 0
    assert not (tmp_path / "b" / "kho_fixture.h").exists()
    assert main(["build", str(SMALL), "-o", str(tmp_path / "c")]) == 0
    shipped = (ROOT / "fixtures" / "v4-4k" / "kho_fixture.h").read_bytes()
    assert (tmp_path / "c" / "kho_fixture.h").read_bytes() == shipped
    assert "note" not in capsys.readouterr().err


def test_every_shipped_fixture_is_below_the_threshold():
    """So regenerating them (scripts/gen_fixtures.py, checked by test_cli_fixtures.py)
    still writes their kho_fixture.h."""
    for d in sorted((ROOT / "fixtures").glob("*/manifest.json")):
        size = sum(s["size"] for s in json.loads(d.read_text())["segments"])
        assert size <= C_HEADER_MAX_IMAGE and (d.parent / "kho_fixture.h").is_file(), d.parent.name


@pytest.mark.parametrize("cmd", ["build", "convert"])
def test_help_names_the_threshold(cmd):
    text = " ".join(build_parser()._subparsers._group_actions[0].choices[cmd].format_help().split())
    assert "--c-header, --no-c-header" in text and human_size(C_HEADER_MAX_IMAGE) in text


def test_no_timed_asserts_in_the_tests():
    """Speed is benchmarks/hostile.py's (and benchmarks/run.py's), never an assert."""
    timed = re.compile(r"assert[^\n]*(perf_counter|time\.time|monotonic)\(\)|assert\s+(took|elapsed|wall|dt)\s*<")
    hits = [
        f"{p.name}:{n}"
        for p in sorted(Path(__file__).parent.glob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if timed.search(line) and p.name != Path(__file__).name
    ]
    assert not hits, hits
