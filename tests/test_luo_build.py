"""Building LUO state from a spec (``type = "LUO"``): what the spec says is
what decodes, at every page size and byte order; blocks span pages as the
kernel's do; the real capture re-encodes byte for byte; bad specs are
``SpecError``s; memfd contents are generated folio by folio."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from _luo import load_luo, luo_of

from kho_formats.errors import SpecError
from kho_formats.findings import ERROR, WARNING
from kho_formats.model.clients import decode_clients
from kho_formats.model.clients.luo import (
    FILE_HANDLERS,
    LuoParams,
    LuoState,
    content_digest,
    reencode,
)
from kho_formats.model.clients.memfd import MemfdContents, MemfdParams
from kho_formats.model.fixture import Fixture
from kho_formats.model.spec import build_spec, spec_from_dict
from kho_formats.model.state import build, parse
from kho_formats.ops.check import check


def luo_spec(sessions: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    blob: dict[str, Any] = {"name": "LUO", "sessions": sessions}
    blob.update(top.pop("blob", {}))
    d: dict[str, Any] = {"version": "kho-v4", "seed": 5, "alloc": [{"start": "64M", "size": "64M"}], "blob": [blob]}
    d.update(top)
    return d


def built(d: dict[str, Any]) -> tuple[Fixture, LuoState]:
    fx = build_spec(spec_from_dict(d, name="t"))
    st = parse(fx.root_fdt, fx.image, page_size=fx.page_size, byteorder=fx.state.byteorder)
    rep = decode_clients(st, fx.image)["LUO"]
    assert rep.error is None, rep.error
    assert isinstance(rep.decoded, LuoState)
    return fx, rep.decoded


def expected_digest(d: dict[str, Any], session: int, file: int, page_size: int) -> str:
    """What the spec says the file holds, from the spec side alone."""
    sp = spec_from_dict(d, name="t")
    p: LuoParams = sp.blobs[0].params
    s = p.sessions[session]
    f = s.files[file]
    assert isinstance(f.params, MemfdParams)
    h = hashlib.sha256()
    with MemfdContents(f.params, sp.blobs[0].seed or sp.seed, f"LUO/{s.name}/{f.token:016x}") as c:
        for chunk in c.chunks(page_size):
            h.update(chunk)
    return h.hexdigest()


SESSIONS: list[dict[str, Any]] = [
    {
        "name": "vm-a",
        "files": [
            {"token": 0},
            {"token": 0x1001, "size": 12388, "pos": 100, "seals": 1},
            {"token": (1 << 64) - 1, "size": "256K", "folio_order": 2, "seals": 7, "hex": "deadbeef"},
        ],
    },
    {
        "name": "vm-b",
        "files": [
            {"token": 7, "size": "1M", "folios": [{"index": 8, "order": 1}, {"index": 0, "order": 2, "flags": 1}]},
            {"token": 8, "size": 5000, "seed": 99, "fill": "seed", "hex": "00ff"},
        ],
    },
    {"name": "empty"},
]


@pytest.mark.parametrize(
    ("page_size", "byteorder"), [(4096, "little"), (4096, "big"), (16384, "little"), (65536, "big")]
)
def test_spec_decodes_to_its_sessions_files_and_contents(page_size: int, byteorder: str) -> None:
    d = luo_spec(
        SESSIONS,
        page_size=page_size,
        byte_order=byteorder,
        blob={"liveupdate_num": 9, "flbs": [{"name": "liveupdate-test-flb-v0", "data": "0xfeedf00d", "count": 5}]},
    )
    fx, st = built(d)
    assert (st.compatible, st.ser.liveupdate_num, st.serialized, st.problems, st.notes) == ("luo-v5", 9, True, [], [])
    assert [s.name for s in st.sessions] == ["vm-a", "vm-b", "empty"]
    assert [[f.token for f in s.files] for s in st.sessions] == [[0, 0x1001, (1 << 64) - 1], [7, 8], []]
    assert [(f.name, f.ser.data, f.ser.count) for f in st.flbs] == [("liveupdate-test-flb-v0", 0xFEEDF00D, 5)]
    assert st.flb_header is not None and st.flb_header.pgcnt == 1
    a, b = st.sessions[0].files, st.sessions[1].files
    sizes = [(f.decoded.size, f.decoded.ser.pos, f.decoded.ser.seals) for f in a + b]
    assert sizes == [(0, 0, 0), (12388, 100, 1), (256 << 10, 0, 7), (1 << 20, 0, 0), (5000, 0, 0)]
    assert a[0].decoded.ser.nr_folios == 0 and a[0].decoded.ser.folios.first == 0
    # folio orders come back from the memory map; explicit folios keep their array order
    ps = page_size
    assert a[1].decoded.order.tolist() == [0] * (-(-12388 // ps))
    assert set(a[2].decoded.order.tolist()) == {2}
    assert a[2].decoded.index.tolist() == list(range(0, -(-(256 << 10) // ps), 4))
    assert b[0].decoded.index.tolist() == [8, 0] and b[0].decoded.order.tolist() == [1, 2]
    assert b[0].decoded.flags.tolist() == [3, 1]
    for si, s in enumerate(st.sessions):
        for fi, f in enumerate(s.files):
            assert content_digest(f, fx.image, ps) == expected_digest(d, si, fi, ps), (s.name, f.token)
    # the contents really are what hex/seed/fill say
    c = bytearray()
    for _, piece in a[2].handler.contents(a[2].decoded, fx.image, ps):
        c += piece
    assert c[:4] == bytes.fromhex("deadbeef") and not any(c[4:])
    # a clean handover: nothing for check to complain about
    parsed = parse(fx.root_fdt, fx.image, page_size=ps, byteorder=byteorder)
    bad = [f for f in check(parsed, fx.image) if f.severity in (ERROR, WARNING)]
    assert bad == [], [str(f) for f in bad]


def test_layout_is_the_kernels() -> None:
    fx, st = built(luo_spec(SESSIONS))
    sb = fx.state.subblob("LUO")
    assert sb is not None and sb.size == 32 and sb.size_source == "blob-size"
    # luo_ser and its FLB page first (LUO init), every LUO structure an order-0 preserved page
    assert st.ser.flbs_pa == st.phys + 4096
    pres = fx.state.preserved
    pages = [st.phys, st.ser.flbs_pa] + [b.phys for b in st.session_blocks]
    pages += [b.phys for s in st.sessions for b in s.blocks]
    pages += [f.decoded.ser_phys for _, f in st.files()]
    assert all(pres.contains(p, 0) for p in pages)
    # folios at their order, aligned
    m = st.sessions[0].files[2].decoded
    assert all(pres.contains(int(p), 2) and int(p) % (4096 << 2) == 0 for p in m.phys)
    # a session without files has no file block
    assert st.sessions[2].ser.files == 0 and st.sessions[2].ser.count == 0
    # re-encoding the decoded state gives the built pages back
    for phys, data in reencode(st, fx.state.layout):
        assert fx.image.read(phys, 4096) == data, hex(phys)


def test_blocks_span_pages_at_capacity() -> None:
    files = [{"token": t} for t in range(64 + 63 + 1)]
    sessions: list[dict[str, Any]] = [{"name": "big", "files": files}]
    sessions += [{"name": f"s{k}"} for k in range(51)]
    fx, st = built(luo_spec(sessions))
    assert [(b.count, b.capacity) for b in st.session_blocks] == [(51, 51), (1, 51)]
    big = st.sessions[0]
    assert [(b.count, b.capacity) for b in big.blocks] == [(63, 63), (63, 63), (2, 63)]
    assert [f.token for f in big.files] == list(range(128))
    assert big.blocks[0].next == big.blocks[1].phys and big.blocks[2].next == 0
    assert st.problems == []


def test_not_serialized_is_the_state_before_reboot() -> None:
    fx, st = built(luo_spec(SESSIONS, blob={"serialized": False, "flbs": [{"name": "x"}]}))
    assert not st.serialized and st.sessions == [] and st.flbs == [] and st.notes
    assert st.flb_header is not None and (st.flb_header.pgcnt, st.flb_header.count) == (1, 0)


def test_real_capture_reencodes_byte_for_byte() -> None:
    cap, state, reps = load_luo()
    st = luo_of(reps)
    assert cap.image is not None
    pages = dict(reencode(st, state.layout))
    # luo_ser, FLB page, 1 session block, 1 file block, 3 memfd_luo_ser, 2 folio arrays + 2 chunks
    assert len(pages) == 11
    for phys, data in pages.items():
        assert cap.image.read(phys, 4096) == data, hex(phys)
    # and the handover around it: the root FDT and the radix pages at their own places
    b = build(state, reuse_placement=True)
    root = Path(__file__).resolve().parent.parent / "fixtures/captures/linux-7.3-x86_64-luo-v5-small/root.dtb"
    assert b.root_fdt == root.read_bytes()
    for phys, data in b.metadata:
        assert bytes(data) == cap.image.read(phys, 4096), hex(phys)


def test_memfd_contents_generated_folio_by_folio() -> None:
    size = 32 << 20
    d = luo_spec([{"name": "big", "files": [{"token": 1, "size": size, "folio_order": 9}]}])
    sp = spec_from_dict(d, name="t")
    tracemalloc.start()
    try:
        fx = build_spec(sp)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the image holds the contents once; nothing held them twice
    assert peak < size + (8 << 20), peak
    assert fx.image.total_bytes < size + (1 << 20)


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ([{"token": 1, "handler": "vfio-v1"}], "unknown LUO file handler 'vfio-v1'"),
        ([{"token": 1, "size": "4M", "folio_order": 10}], "above PMD order 9"),
        ([{"token": 1}, {"token": 1}], "already used"),
        ([{"token": 1, "size": "8K", "folios": [{"index": 0, "order": 1}, {"index": 1}]}], "overlaps"),
        ([{"token": 1, "size": "8K", "folios": [{"index": 2}]}], "past the file's size"),
        ([{"token": 1, "size": "8K", "folios": [{"index": 1, "order": 1}]}], "not aligned to order 1"),
        ([{"token": 1, "size": 2, "hex": "aabbcc"}], "smaller than the 3 bytes"),
        ([{"token": 1, "seals": 64}], "MEMFD_LUO_ALL_SEALS"),
        ([{"token": 1, "colour": "red"}], "not a key of a memfd-v2 file"),
        ([{"token": -1}], "out of range"),
    ],
)
def test_bad_file_specs(files: list[dict[str, Any]], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        build_spec(spec_from_dict(luo_spec([{"name": "s", "files": files}]), name="t"))


@pytest.mark.parametrize(
    ("d", "match"),
    [
        (luo_spec([{"name": "a"}, {"name": "a"}]), "duplicate session name"),
        (luo_spec([{"name": "x" * 64}]), "session name"),
        (luo_spec([{"name": ""}]), "session name"),
        (luo_spec([], blob={"compatible": "luo-v5-long"}), "compatible"),
        (luo_spec([{"name": "a"}], version="kho-v1"), "not an FDT"),
        (luo_spec([], blob={"flbs": [{"name": f"f{k}"} for k in range(64)]}), "FLB page holds 63"),
    ],
)
def test_bad_luo_specs(d: dict[str, Any], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        build_spec(spec_from_dict(d, name="t"))


def test_memfd_is_the_only_buildable_handler_and_listed() -> None:
    assert [h.compatible for h in FILE_HANDLERS if h.spec_fields is not None] == ["memfd-v2"]


def test_shipped_fixture_v4_4k_luo() -> None:
    from kho_formats.ops.capture import load_capture, parse_capture

    fix = Path(__file__).resolve().parent.parent / "fixtures" / "v4-4k-luo"
    cap = load_capture(fix)
    state = parse_capture(cap)
    rep = decode_clients(state, cap.image)["LUO"]
    st = rep.decoded
    assert isinstance(st, LuoState) and st.problems == []
    assert [s.name for s in st.sessions] == ["vm-a", "vm-b"]
    a, b = st.sessions
    assert [(blk.count, blk.capacity) for blk in a.blocks] == [(63, 63), (4, 63)]
    assert len(a.files) == 67 and [f.token for f in a.files][:3] == [0, 0x1001, (1 << 64) - 1]
    big = a.files[2].decoded
    assert (big.size, big.ser.seals, big.ser.pos, big.order.tolist()) == (2 << 20, 7, 9029, [8, 8])
    marker = bytes.fromhex("4b484f2d4c554f21")
    assert content_digest(a.files[2], cap.image, 4096) == hashlib.sha256(marker + bytes((2 << 20) - 8)).hexdigest()
    sparse = b.files[0].decoded
    assert sparse.index.tolist() == [0, 16] and sparse.order.tolist() == [2, 1]
    assert [(f.name, f.ser.data) for f in st.flbs] == [("liveupdate-test-flb-v0", 0xFEEDF00DCAFEBEE0)]


def test_readme_luo_example_builds() -> None:
    import re

    from kho_formats.model.spec import loads_spec

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = next(b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if 'type = "LUO"' in b)
    fx = build_spec(loads_spec('version = "kho-v4"\narch = "x86_64"\n' + block))
    st = parse(fx.root_fdt, fx.image)
    rep = decode_clients(st, fx.image)["LUO"].decoded
    assert isinstance(rep, LuoState)
    st = rep
    assert [len(s.files) for s in st.sessions] == [3, 1]
    assert st.sessions[0].files[2].decoded.order.tolist() == [9]
