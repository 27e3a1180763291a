"""One rule for the root FDT's address, the same in ``kho inspect`` and ``kho check``
(``model.state.root_fdt_alignment``): Linux 7.3's ``kho_populate()`` hands the FDT to libfdt's
``fdt_check_header()``, which refuses one that is not 8-byte aligned; an 8-byte aligned root FDT
that is not page aligned is read, but no kernel writes one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kho_formats.cli import main
from kho_formats.model.state import root_fdt_alignment

V4 = Path(__file__).resolve().parent.parent / "fixtures" / "v4-4k"


def _run(capsys, *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    got = capsys.readouterr()
    return rc, got.out, got.err


@pytest.mark.parametrize(
    "phys, severity, rc",
    [(0x1234, "error", 1), (0x78000008, "warning", 0), (0x78000000, None, 0)],
)
def test_one_rule_in_inspect_and_check(capsys, phys: int, severity: str | None, rc: int) -> None:
    rule = root_fdt_alignment(phys, 4096)
    assert (rule[0] if rule else None) == severity
    got_rc, out, err = _run(capsys, "inspect", "--root-phys", hex(phys), V4 / "root.dtb")
    assert got_rc == rc
    _, cout, _ = _run(capsys, "check", "--json", "--root-phys", hex(phys), V4 / "root.dtb")
    found = [f for f in json.loads(cout)["findings"] if f["code"] == "root-fdt-align"]
    if rule is None:
        assert "root-fdt-align" not in out and not found
        return
    # the same words: inspect's note is check's finding
    assert f"  - {severity}: [root-fdt-align] {rule[1]}\n" in out
    assert [(f["severity"], f["message"], f["phys"]) for f in found] == [(severity, rule[1], phys)]
    assert [f for f in json.loads(cout)["findings"] if f["code"] == "note" and "root-fdt-align" in f["message"]] == []
    if severity == "error":
        assert err == f"kho: error: {rule[1]}\n"
        assert "FDT_ERR_ALIGNMENT" in rule[1]
    assert main(["check", "--root-phys", hex(phys), str(V4 / "root.dtb")]) == rc
    capsys.readouterr()
