"""A client verification that was skipped says so, with the reason, in inspect text, inspect JSON and
``kho check``: the shipped kho-v4 capture holds only the handover's own pages, so kho_test's folios
(whose csum_partial the csum is) are not in it."""

from __future__ import annotations

import json
from pathlib import Path

from kho_formats.abi.layout import layout
from kho_formats.cli import main
from kho_formats.memory.image import PhysImage
from kho_formats.model.clients import kho_test
from kho_formats.ops.capture import load_capture, parse_capture

ROOT = Path(__file__).resolve().parent.parent
CAP = ROOT / "fixtures" / "captures" / "linux-7.3-x86_64-kho-v4"
V4 = ROOT / "fixtures" / "v4-4k"


def _run(capsys, *argv: object) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().out


def _kho_test(doc: dict) -> dict:
    return next(s for s in doc["subblobs"] if s["name"] == "kho_test")["decoded"]


def test_kho_test_csum_not_verified_is_said_everywhere(capsys) -> None:
    rc, text = _run(capsys, "inspect", CAP)
    assert rc == 0
    assert "29 folios, csum 0xaec98cb6 (not verified: folio data absent from the image)" in text
    _, out = _run(capsys, "inspect", "--json", CAP)
    d = _kho_test(json.loads(out))
    assert d["csum_check"] == {} and d["csum_verified"] is False
    assert d["csum_not_verified"].startswith("folio data absent from the image (folio 0x")
    rc, text = _run(capsys, "check", CAP)
    assert rc == 0
    assert "info: [csum-not-verified] /kho_test: kho_test csum 0xaec98cb6 not verified: folio data absent" in text
    _, out = _run(capsys, "check", "--json", CAP)
    found = [f for f in json.loads(out)["findings"] if f["code"] == "csum-not-verified"]
    assert [f["severity"] for f in found] == ["info"]


def test_a_verified_csum_says_so_and_nothing_else(capsys) -> None:
    _, out = _run(capsys, "inspect", "--json", V4)
    d = _kho_test(json.loads(out))
    assert d["csum_verified"] is True and d["csum_not_verified"] is None and d["csum_check"]["arm64"] == d["csum"]
    _, text = _run(capsys, "check", V4)
    assert "csum-not-verified" not in text and "[csum]" in text


def test_each_reason_a_csum_is_not_verified() -> None:
    cap = load_capture(V4)
    st = parse_capture(cap)
    sb = st.subblob("kho_test")
    assert sb is not None and sb.data is not None and cap.image is not None
    lay = layout(st.page_size, st.byteorder, st.version)
    assert kho_test.decode(sb.data, lay, None).csum_not_verified == kho_test.NO_IMAGE
    full = kho_test.decode(sb.data, lay, cap.image)
    assert full.csum_verified and full.csum_not_verified is None
    # the same image without one folio's page: the folio list still reads, its data does not
    phys, order = full.folios[0]
    cut = PhysImage()
    for seg in cap.image.segments:
        for a in range(seg.phys, seg.end, st.page_size):
            if not phys <= a < phys + (st.page_size << order):
                cut.add(a, bytes(seg.data[a - seg.phys : a - seg.phys + st.page_size]))
    kt = kho_test.decode(sb.data, lay, cut)
    assert not kt.csum_verified and kt.csum_not_verified == (
        f"{kho_test.FOLIOS_ABSENT} (folio {phys:#x} order {order} is not in it)"
    )
