"""A LUO spec memfd with ``fill = "absent"``: its folios are allocated,
recorded and preserved like any others, but their contents are not in the
image (the metadata-only handovers of benchmarks/scale.py: 1 TiB of guest
memory built at the cost of its metadata)."""

from __future__ import annotations

import pytest

import kho_formats
from kho_formats.errors import KhoFormatError, SpecError

MiB = 1 << 20


def _spec(fill: str | None, size: int = 8 * MiB, order: int = 9) -> dict:
    f = {"token": 7, "size": size, "folio_order": order, "seals": 1}
    if fill is not None:
        f["fill"] = fill
    return {
        "version": "kho-v4",
        "alloc": [{"start": "0x40000000", "size": "64M"}],
        "blob": [
            {
                "name": "LUO",
                "type": "LUO",
                "sessions": [{"name": "vm", "files": [f, {"token": 8, "size": 4096, "hex": "4b48", "seals": 1}]}],
            }
        ],
    }


def _folios(h: kho_formats.Handover) -> list[tuple[int, int]]:
    luo = h.luo
    assert luo is not None
    m = luo.session("vm").files[0].decoded
    return list(zip(m.phys.tolist(), m.order.tolist()))


def test_absent_folios_are_preserved_but_not_in_the_image() -> None:
    absent = kho_formats.build(_spec("absent"))
    seeded = kho_formats.build(_spec(None))
    folios = _folios(absent)
    assert len(folios) == 4 and {o for _, o in folios} == {9}
    # the same layout as the seeded build: the same folios, recorded and preserved the same way
    assert folios == _folios(seeded)
    assert absent.preserved == seeded.preserved
    img = absent.image
    assert img is not None
    for phys, _ in folios:
        assert not img.has(phys, 2 * MiB)
        assert seeded.image is not None and seeded.image.has(phys, 2 * MiB)
    assert seeded.image is not None and img.total_bytes <= seeded.image.total_bytes - 8 * MiB
    assert absent.check().ok
    # the small file next to it keeps its contents
    luo = absent.luo
    assert luo is not None
    assert b"".join(luo.contents(luo.session("vm").files[1]))[:2] == b"KH"


def test_absent_contents_cannot_be_read_and_diff_says_so() -> None:
    absent = kho_formats.build(_spec("absent"))
    luo = absent.luo
    assert luo is not None
    with pytest.raises(KhoFormatError, match="no memory for memfd folio"):
        b"".join(luo.contents(luo.session("vm").files[0]))
    assert absent.diff(kho_formats.build(_spec("absent"))).identical
    d = absent.diff(kho_formats.build(_spec(None)))
    assert not d.identical
    (s,) = d.luo["sessions"]
    (f,) = s["files"]
    assert f["token"] == 7 and f["fields"] == ["contents"]
    assert f["a"]["contents_absent"] is True and "contents_absent" not in f["b"]


def test_absent_with_head_bytes_is_a_spec_error() -> None:
    spec = _spec("absent")
    spec["blob"][0]["sessions"][0]["files"][0]["hex"] = "00"
    with pytest.raises(SpecError, match=r"fill: absent contents cannot start with hex/file bytes"):
        kho_formats.build(spec)


def test_a_tebibyte_of_absent_folios_builds_only_its_metadata() -> None:
    # 4 x 256 GiB would take seconds; 64 GiB at order 9 (32768 folios) shows the same: the image
    # is the metadata (512 KiB of folio records and the LUO pages), not the 64 GiB
    spec = _spec("absent", size=64 << 30)
    spec["alloc"] = [{"start": "4G", "size": "65G"}]
    h = kho_formats.build(spec)
    assert len(_folios(h)) == 32768
    assert h.image is not None and h.image.total_bytes < 2 * MiB
    assert h.preserved.total_bytes >= 64 << 30


def test_folio_ranges_are_coalesced_exactly() -> None:
    import numpy as np

    from kho_formats.model.clients.memfd import folio_ranges

    ps = 4096
    phys = np.array([0x200000, 0x0, 0x400000, 0x1000, 0xA00000, 2**64 - 0x1000, 0x10000], dtype=np.uint64)
    order = np.array([9, 0, 9, 0, -1, 9, 0], dtype=np.int64)
    got = folio_ranges(phys, order, ps)
    # one-per-folio ranges, merged the slow way
    naive = sorted((int(p), int(p) + (ps << max(int(o), 0))) for p, o in zip(phys.tolist(), order.tolist()))
    merged: list[list[int]] = []
    for a, b in naive:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    assert sorted(got) == [tuple(m) for m in merged]
    assert (2**64 - 0x1000, 2**64 - 0x1000 + (ps << 9)) in got  # past 2**64: exact, not wrapped
    assert folio_ranges(np.zeros(0, np.uint64), np.zeros(0, np.int64), ps) == []


def test_diff_says_which_contents_it_could_not_compare() -> None:
    """Two handovers whose memfd folios are not in the images: the diff says how many files' contents it did
    not compare (identical otherwise); with the contents on both sides nothing is said."""
    from kho_formats.ops.report import render_diff

    absent, absent2, seeded = (kho_formats.build(_spec(f)) for f in ("absent", "absent", None))
    d = absent.diff(absent2).to_json()
    assert d["identical"] and d["luo"]["contents_not_compared"] == 1  # the 8 MiB memfd; the small file compared
    assert "  LUO: contents of 1 file in both not compared" in render_diff(d)
    d = seeded.diff(kho_formats.build(_spec(None))).to_json()
    assert d["identical"] and d["luo"]["contents_not_compared"] == 0
    assert "not compared" not in render_diff(d)
    d = absent.diff(seeded).to_json()  # contents on one side only: a difference, and not a comparison
    assert not d["identical"] and d["luo"]["contents_not_compared"] == 1
    text = render_diff(d)
    assert "file 0x7: contents differ" in text and "contents of 1 file in both not compared" in text
