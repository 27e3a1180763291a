"""``kho convert`` carries LUO state (the converted capture decodes to the
same sessions, files and contents; kho-v1 refuses it with a typed error);
``kho diff`` compares LUO state by session name and token."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from _luo import LUO_CAP, load_luo, luo_of

from kho_formats.cli import main
from kho_formats.errors import VersionError
from kho_formats.model.clients import decode_clients
from kho_formats.model.clients.luo import LuoState, content_digest
from kho_formats.model.fixture import Fixture, write_fixture
from kho_formats.model.spec import build_spec, spec_from_dict
from kho_formats.model.state import KhoState, parse
from kho_formats.ops.migrate import convert_capture
from kho_formats.ops.report import diff_report, render_diff


def _luo_json(st: LuoState, image: Any) -> dict[str, Any]:
    j = st.report_json()
    j["digests"] = [content_digest(f, image, 4096) for _, f in st.files()]
    return j


@pytest.mark.parametrize("target", ["kho-v3", "kho-v2"])
def test_convert_keeps_luo_state(target: str) -> None:
    cap, state, reps = load_luo()
    before = luo_of(reps)
    fx, summary = convert_capture(cap, state, target)
    assert summary["to"]["version"] == target
    st = parse(fx.root_fdt, fx.image, root_fdt_phys=fx.fdt_phys)
    assert st.version == target
    after = decode_clients(st, fx.image)["LUO"].decoded
    assert isinstance(after, LuoState)
    assert _luo_json(after, fx.image) == _luo_json(before, cap.image)
    # the orders came from the new memory map and agree
    assert [f.decoded.order.tolist() for _, f in after.files()] == [f.decoded.order.tolist() for _, f in before.files()]
    rep = diff_report(state, st, images=(cap.image, fx.image))
    assert rep["luo"]["identical"] and rep["luo"]["sessions"] == []


def test_convert_to_v1_is_refused_clearly() -> None:
    cap, state, _ = load_luo()
    with pytest.raises(VersionError, match=r"sub-blob 'LUO' is 32 bytes of raw data, not an FDT"):
        convert_capture(cap, state, "kho-v1")


def test_cli_convert_to_v1_fails_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "--to", "kho-v1", str(LUO_CAP), str(tmp_path / "out")]) == 1
    assert "cannot hold" in capsys.readouterr().err


BASE: dict[str, Any] = {
    "version": "kho-v4",
    "seed": 2,
    "blob": [
        {
            "name": "LUO",
            "sessions": [
                {
                    "name": "vm-a",
                    "files": [
                        {"token": 1, "size": "16K", "hex": "deadbeef", "seals": 1},
                        {"token": 2, "size": "8K"},
                        {"token": 3},
                    ],
                },
                {"name": "vm-b", "files": [{"token": 1, "size": 100}]},
            ],
        }
    ],
}


def _built(d: dict[str, Any]) -> tuple[Fixture, KhoState]:
    fx = build_spec(spec_from_dict(d, name="t"))
    return fx, parse(fx.root_fdt, fx.image, root_fdt_phys=fx.fdt_phys)


def _variant(**change: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    files = d["blob"][0]["sessions"][0]["files"]
    if "hex" in change:
        files[0]["hex"] = change["hex"]
    if "seals" in change:
        files[0]["seals"] = change["seals"]
    if change.get("drop"):
        del files[1]
    if change.get("drop_session"):
        del d["blob"][0]["sessions"][1]
    return d


def test_diff_identical_luo() -> None:
    fa, a = _built(BASE)
    fb, b = _built(BASE)
    rep = diff_report(a, b, images=(fa.image, fb.image))
    assert rep["identical"] and rep["luo"]["identical"]
    assert rep["luo"]["a"]["sessions"] == 2 and rep["luo"]["a"]["files"] == 4


def test_diff_reports_a_changed_byte_a_missing_file_and_a_seal() -> None:
    fa, a = _built(BASE)
    fb, b = _built(_variant(hex="deadbeee", seals=5, drop=True, drop_session=True))
    rep = diff_report(a, b, images=(fa.image, fb.image))
    assert not rep["identical"]
    # the preserved sets differ too (file 2 is gone), but LUO says what it means
    luo = rep["luo"]
    assert not luo["identical"]
    by = {s["name"]: s for s in luo["sessions"]}
    assert by["vm-b"]["change"] == "only-a"
    files = {f["token"]: f for f in by["vm-a"]["files"]}
    assert files[2]["change"] == "only-a"
    assert files[1]["change"] == "differs" and files[1]["fields"] == ["seals", "contents"]
    assert (files[1]["a"]["seals"], files[1]["b"]["seals"]) == (1, 5)
    assert 3 not in files  # the empty memfd is the same on both sides
    text = render_diff(rep)
    assert "LUO session 'vm-a' file 0x1: seals 0x1 -> 0x5, contents differ" in text
    assert "LUO session 'vm-a' file 0x2: only in A" in text
    assert "LUO session 'vm-b': only in A" in text


def test_diff_contents_only_at_the_same_addresses() -> None:
    # one changed byte and nothing else: the preserved sets and sub-blobs are equal
    fa, a = _built(BASE)
    fb, b = _built(_variant(hex="deadbeee"))
    rep = diff_report(a, b, images=(fa.image, fb.image))
    assert rep["preserved_identical"] and rep["subblobs"] == []
    assert not rep["identical"]
    [s] = rep["luo"]["sessions"]
    assert s["files"] == [
        {
            "token": 1,
            "change": "differs",
            "fields": ["contents"],
            "a": s["files"][0]["a"],
            "b": s["files"][0]["b"],
        }
    ]
    # without images the contents are not compared
    assert diff_report(a, b)["luo"]["identical"]


def test_cli_diff_json_has_luo_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fa, _ = _built(BASE)
    fb, _ = _built(_variant(seals=3))
    write_fixture(fa, tmp_path / "a")
    write_fixture(fb, tmp_path / "b")
    assert main(["--json", "diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["luo"]["sessions"][0]["files"][0]["fields"] == ["seals"]
    # no LUO on either side: the key is there, null
    fx = Path(__file__).resolve().parent.parent / "fixtures" / "v4-4k"
    assert main(["--json", "diff", str(fx), str(fx)]) == 0
    assert json.loads(capsys.readouterr().out)["luo"] is None
