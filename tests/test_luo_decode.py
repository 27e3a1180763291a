"""LUO decoding: the real Linux 7.3 capture against the kernel's own account
(luo-truth.json), field by field; the pre-serialization state; unknown file
handlers; synthesized state at 16 KiB / 64 KiB pages and big-endian."""

from __future__ import annotations

import numpy as np
import pytest
from _luo import LUO_CAP, TRUTH, SynthMemfd, SynthSession, h, load_luo, luo_of, synth

from kho_formats.abi.layout import layout, memfd_folio_fields, memfd_folio_word
from kho_formats.findings import ERROR
from kho_formats.memory.pageset import PageSet
from kho_formats.model.clients import DecodeContext, decode_clients, luo, memfd, registry
from kho_formats.model.clients.luo import FILE_HANDLERS, LuoState, UnknownFileHandler
from kho_formats.model.clients.memfd import MemfdFile, preserved_orders
from kho_formats.ops.check import _client_findings


@pytest.fixture(scope="module")
def real() -> LuoState:
    return luo_of(load_luo()[2])


def test_registered() -> None:
    assert registry.get("LUO") is luo.CLIENT and luo.CLIENT.report_key == "luo"
    assert FILE_HANDLERS.get("memfd-v2") is memfd.HANDLER
    assert isinstance(FILE_HANDLERS.lookup("iommufd-v1"), UnknownFileHandler)


def test_luo_ser_matches_truth(real: LuoState) -> None:
    t = TRUTH["luo_ser"]
    assert real.phys == h(t["phys"]) and real.compatible == t["compatible"] == "luo-v5" and real.known
    assert real.ser.liveupdate_num == t["liveupdate_num"] == TRUTH["liveupdate_num"]
    assert real.ser.sessions_pa == h(t["sessions_pa"]) and real.ser.flbs_pa == h(t["flbs_pa"])
    raw = bytes.fromhex(t["raw_hex"])
    assert real.ser.compatible == raw[:8] and real.serialized and not real.problems and not real.notes


def test_session_blocks_match_truth(real: LuoState) -> None:
    got = [(b.phys, b.next, b.count, b.capacity) for b in real.session_blocks]
    want = [(h(b["phys"]), h(b["next"]), b["count"], b["capacity"]) for b in TRUTH["session_blocks"]]
    assert got == want


def test_sessions_files_memfds_folios_match_truth(real: LuoState) -> None:
    assert [s.name for s in real.sessions] == [s["name"] for s in TRUTH["sessions"]]
    for s, ts in zip(real.sessions, TRUTH["sessions"]):
        assert s.entry_phys == h(ts["entry_phys"]) and s.ser.files == h(ts["files_pa"])
        assert s.ser.count == ts["file_count"] and s.error is None
        assert [(b.phys, b.next, b.count, b.capacity) for b in s.blocks] == [
            (h(b["phys"]), h(b["next"]), b["count"], b["capacity"]) for b in ts["file_blocks"]
        ]
        assert len(s.files) == len(ts["files"])
        for f, tf in zip(s.files, ts["files"]):
            assert (f.token, f.compatible, f.data, f.entry_phys) == (
                h(tf["token"]),
                tf["compatible"],
                h(tf["data"]),
                h(tf["entry_phys"]),
            )
            m, tm = f.decoded, tf["memfd"]
            assert isinstance(m, MemfdFile) and f.error is None and not m.problems
            assert m.ser_phys == h(tm["ser_phys"])
            assert (m.ser.size, m.ser.pos, m.ser.seals, m.ser.flags, m.ser.nr_folios) == (
                tm["size"],
                tm["pos"],
                tm["seals"],
                tm["flags"],
                tm["nr_folios"],
            )
            tv = tm["folios_vmalloc"]
            v = m.ser.folios
            assert (v.first, v.total_pages, v.flags, v.order) == (
                h(tv["first"]),
                tv["total_pages"],
                tv["flags"],
                tv["order"],
            )
            if m.area is not None:
                assert m.area.chunks == [h(c) for c in tv["chunks"]]
                assert m.area.groups.tolist() == [h(p) for p in tv["data_pages"]]
            else:
                assert tv["chunks"] == [] and tv["data_pages"] == []
            got = [
                (p, o, i, fl)
                for p, o, i, fl in zip(m.phys.tolist(), m.order.tolist(), m.index.tolist(), m.flags.tolist())
            ]
            assert got == [(h(x["phys"]), x["order"], x["index"], x["flags"]) for x in tm["folios"]]
            # and what userspace saw in both kernels
            for side in ("first_kernel", "second_kernel"):
                u = tf[side]
                assert (u["size"], u["seals"], u["pos"]) == (m.ser.size, m.ser.seals, m.ser.pos)
                assert [(h(p), o, i) for p, o, i in u["folios"]] == [(p, o, i) for p, o, i, _ in got]


def test_flbs_match_truth(real: LuoState) -> None:
    t = TRUTH["flbs"]
    assert real.flb_header is not None
    assert (real.ser.flbs_pa, real.flb_header.pgcnt, real.flb_header.count) == (h(t["phys"]), t["pgcnt"], t["count"])
    assert real.flb_capacity == (4096 - 16) // 64
    assert [(f.name, f.ser.data, f.ser.count) for f in real.flbs] == [
        (e["name"], h(e["data"]), e["count"]) for e in t["entries"]
    ]


def test_meta_summary_and_vmalloc_areas() -> None:
    _, st, reps = load_luo()
    rep = reps["LUO"]
    m = __import__("json").loads((LUO_CAP / "meta.json").read_text())["luo"]
    d = rep.decoded_json()
    assert d == {
        "compatible": m["compatible"],
        "liveupdate_num": m["liveupdate_num"],
        "serialized": True,
        "sessions": m["sessions"],
        "files": m["files"],
        "flbs": m["flbs"],
        "problems": 0,
    }
    # the memfd folio arrays are vmalloc areas of the client (checked like any other)
    assert [a.chunks for a in rep.vmalloc] == [[0x3126000], [0x3183000]]


def test_clean_capture_has_no_luo_findings() -> None:
    _, st, reps = load_luo()
    assert [f for f in _client_findings(st, reps["LUO"]) if f.severity != "info"] == []


def test_pre_serialization_debugfs_blob() -> None:
    """debugfs kho/out/sub_fdts/LUO was read before reboot: sessions_pa = 0."""
    blob = (LUO_CAP / "debugfs/kho/out/sub_fdts/LUO").read_bytes()
    cap, st, _ = load_luo()
    assert cap.image is not None
    img = cap.image.copy()
    img.write(h(TRUTH["luo_ser"]["phys"]), blob)
    # the session/file blocks exist but are zero before serialization
    for b in TRUTH["session_blocks"]:
        img.write(h(b["phys"]), bytes(4096))
    _, st, reps = load_luo(img)
    lu = luo_of(reps)
    assert not lu.serialized and lu.sessions == [] and lu.ser.sessions_pa == 0
    assert lu.ser.liveupdate_num == 1 and lu.ser.flbs_pa == h(TRUTH["luo_ser"]["flbs_pa"])
    assert any("not serialized" in n for n in lu.notes)
    assert not [f for f in _client_findings(st, reps["LUO"]) if f.severity == ERROR]
    j = lu.report_json()
    assert j["serialized"] is False and j["sessions"] == [] and j["notes"]


def test_without_image_only_luo_ser() -> None:
    # (the debugfs directory alone does not parse yet: its kho/out/fdt is a 233-byte prefix)
    blob = (LUO_CAP / "debugfs/kho/out/sub_fdts/LUO").read_bytes()
    lu = luo.decode(blob, DecodeContext(layout()), phys=0x1E8F000)
    assert not lu.read and lu.sessions == [] and any("no memory image" in n for n in lu.notes)
    assert lu.compatible == "luo-v5" and not lu.serialized and lu.report_json()["phys"] == 0x1E8F000


def test_unknown_handler_is_shown_not_error() -> None:
    cap, _, _ = load_luo()
    assert cap.image is not None
    img = cap.image.copy()
    f = TRUTH["sessions"][0]["files"][1]
    img.write(h(f["entry_phys"]), b"iommufd-v7".ljust(48, b"\0"))
    _, st, reps = load_luo(img)
    lu = luo_of(reps)
    x = lu.sessions[0].files[1]
    assert (x.compatible, x.token, x.data, x.decoded, x.error) == ("iommufd-v7", 0x1001, h(f["data"]), None, None)
    assert not x.known
    fj = x.to_json()
    assert (fj["token"], fj["compatible"], fj["data"], fj["memfd"]) == (0x1001, "iommufd-v7", h(f["data"]), None)
    fs = _client_findings(st, reps["LUO"])
    assert [f.code for f in fs if f.severity == ERROR] == []
    assert [(x.code, x.phys) for x in fs] == [("luo-file-unknown-handler", h(f["entry_phys"]))]


def test_folio_bitfields_both_byte_orders() -> None:
    for bo in ("little", "big"):
        w = np.array([memfd_folio_word(0x12345, 3, bo), memfd_folio_word((1 << 52) - 1, 0xFFF, bo)], dtype=np.uint64)
        pfn, fl = memfd_folio_fields(w, bo)
        assert pfn.tolist() == [0x12345, (1 << 52) - 1] and fl.tolist() == [3, 0xFFF]
    # little-endian: the pfn is the low 52 bits (as in the capture)
    assert memfd_folio_word(0x15D4, 3, "little") == 0x15D4 | 3 << 52


def test_preserved_orders() -> None:
    ps = PageSet.from_pages(4096, [(0x10000, 4), (0x20000, 0), (0x21000, 0), (0x40000, 2)])
    got = preserved_orders(ps, np.array([0x10000, 0x11000, 0x20000, 0x21000, 0x22000, 0x40000, 0], dtype=np.uint64))
    assert got.tolist() == [4, -1, 0, 0, -1, 2, -1]


@pytest.mark.parametrize(("page_size", "byteorder"), [(4096, "big"), (16384, "little"), (65536, "big"), (16384, "big")])
def test_synthesized_any_page_size_and_byte_order(page_size: int, byteorder: str) -> None:
    sessions = [
        SynthSession(
            b"vm-a", [SynthMemfd(0, 0), SynthMemfd(0x1001, 3 * page_size + 100, [(0, 0), (2, 0), (3, 0)], pos=7)]
        ),
        SynthSession(b"vm-b", [SynthMemfd(0xFFFFFFFFFFFFFFFF, 8 * page_size, [(4, 2), (0, 1)], seals=7)]),
    ]
    sy = synth(sessions, page_size=page_size, byteorder=byteorder, flbs=[("flb-a", 0xFEED, 2)])
    reps = decode_clients(sy.state, sy.image)
    lu = luo_of(reps)
    assert lu.ser.liveupdate_num == 3 and lu.serialized and not lu.problems
    assert [s.name for s in lu.sessions] == ["vm-a", "vm-b"]
    assert lu.session_blocks[0].capacity == layout(page_size).kho_block_entries_per_page(80)
    assert lu.sessions[0].blocks[0].capacity == (page_size - 16) // 64
    f = lu.sessions[0].files[1].decoded
    assert isinstance(f, MemfdFile) and (f.ser.size, f.ser.pos, f.ser.nr_folios) == (3 * page_size + 100, 7, 3)
    assert f.index.tolist() == [0, 2, 3] and f.order.tolist() == [0, 0, 0] and f.flags.tolist() == [3, 3, 3]
    g = lu.sessions[1].files[0].decoded
    assert isinstance(g, MemfdFile) and g.order.tolist() == [2, 1] and g.index.tolist() == [4, 0] and g.ser.seals == 7
    assert [(x.name, x.ser.data, x.ser.count) for x in lu.flbs] == [("flb-a", 0xFEED, 2)]
    assert lu.flb_capacity == (page_size - 16) // 64
    assert [x for x in _client_findings(sy.state, reps["LUO"]) if x.severity == ERROR] == []


def test_many_sessions_span_blocks() -> None:
    sessions = [SynthSession(f"s{i}".encode(), [SynthMemfd(i, 0)]) for i in range(120)]
    sy = synth(sessions)
    lu = luo_of(decode_clients(sy.state, sy.image))
    assert [b.count for b in lu.session_blocks] == [51, 51, 18]
    assert [s.name for s in lu.sessions] == [f"s{i}" for i in range(120)]
    assert lu.session_blocks[0].next == lu.session_blocks[1].phys and lu.session_blocks[2].next == 0
