"""Memory-map bytes checked by hand (KHO-ABI.md 3 and 4): radix tables and
leaves, v1 chunks and bitmaps, Linux unsigned-long bitmaps in both byte
orders, the v1 bitmap variants and their detection."""

from __future__ import annotations

import struct

import pytest

from kho_formats.abi.layout import layout
from kho_formats.errors import UnrepresentableError
from kho_formats.memory.pageset import PageSet
from kho_formats.model.state import KhoState, build, parse

FMT = {"little": "<", "big": ">"}
ALLOC = [(0x4000_0000, 0x400_0000)]


def words(raw: bytes, bo: str):
    return struct.unpack(f"{FMT[bo]}{len(raw) // 8}Q", raw)


def set_bits(raw: bytes, bo: str):
    """Bits of a Linux bitmap (unsigned long array), decoded by hand."""
    out = []
    for w, val in enumerate(words(raw, bo)):
        for b in range(64):
            if val >> b & 1:
                out.append(w * 64 + b)
    return out


def bit_byte(b: int, bo: str):
    """(byte offset, byte value) holding bit ``b`` of an unsigned-long bitmap."""
    word, bit = divmod(b, 64)
    byte_in_word = bit // 8 if bo == "little" else 7 - bit // 8
    return word * 8 + byte_in_word, 1 << (bit % 8)


def _build(version, pages, page_size=4096, bo="little", **kw):
    if "v1_bitmap_bytes" in kw:
        kw["map_params"] = {"v1_bitmap_bytes": kw.pop("v1_bitmap_bytes")}
    st = KhoState(
        version=version, page_size=page_size, byteorder=bo, preserved=PageSet.from_pages(page_size, pages), **kw
    )
    return st, build(st, alloc=ALLOC)


def _root_prop(fdt_bytes, name):
    from kho_formats.model.fdt import parse_fdt

    return parse_fdt(fdt_bytes).root.get(name)


# -- radix ---------------------------------------------------------------------------


@pytest.mark.parametrize("bo", ["little", "big"])
@pytest.mark.parametrize("version", ["kho-v2", "kho-v3", "kho-v4"])
def test_radix_worked_example_bytes(version, bo):
    """phys 0x1_0000_0000 order 0 and order 9 (4 KiB): walk the built pages by hand."""
    for order, path, bit in ((0, [2, 0, 0, 0, 32], 0), (9, [0, 2, 0, 0, 0], 2048)):
        st, b = _build(version, [(0x1_0000_0000, order)], bo=bo)
        # preserved-memory-map is a native-order u64
        assert _root_prop(b.root_fdt, "preserved-memory-map") == b.memmap_phys.to_bytes(8, bo)
        node = b.memmap_phys
        assert node != 0
        for idx in path:  # levels 5 .. 1
            tbl = words(b.image.read(node, 4096), bo)
            nz = [i for i, v in enumerate(tbl) if v]
            assert nz == [idx]
            node = tbl[idx]
        leaf = b.image.read(node, 4096)
        assert set_bits(leaf, bo) == [bit]
        off, val = bit_byte(bit, bo)
        assert leaf[off] == val
        assert sum(1 for x in leaf if x) == 1
        # depth 6: five tables and a leaf, nothing else
        assert len(b.metadata) == 6
        assert b.memmap.tables == 5 and b.memmap.leaves == 1
        assert parse(b.root_fdt, b.image, byteorder=bo).preserved == st.preserved


@pytest.mark.parametrize("bo", ["little", "big"])
def test_leaf_is_unsigned_long_bitmap(bo):
    """Bits 1, 9, 63, 64 and 100 of one order-0 leaf, byte by byte."""
    base = 0x1_0000_0000  # leaf bit 0
    bits = [1, 9, 63, 64, 100]
    st, b = _build("kho-v4", [(base + k * 4096, 0) for k in bits], bo=bo)
    leaf_phys = b.memmap.placement[(0, ((1 << 52) | (base >> 12)) >> 15)]
    leaf = b.image.read(leaf_phys, 4096)
    assert set_bits(leaf, bo) == bits
    expect = bytearray(4096)
    for x in bits:
        off, val = bit_byte(x, bo)
        expect[off] |= val
    assert leaf == bytes(expect)
    if bo == "big":  # bit 1 is the lowest bit of the *last* byte of word 0
        assert leaf[7] == 0x02 and leaf[0] == 0x80  # bit 63 is the top bit of byte 0
        assert leaf[15] == 0x01  # bit 64
    else:
        assert leaf[0] == 0x02 and leaf[7] == 0x80 and leaf[8] == 0x01


@pytest.mark.parametrize("bo", ["little", "big"])
def test_radix_table_entries_native_order(bo):
    st, b = _build("kho-v4", [(0x2000_0000, 0)], page_size=16384, bo=bo)
    raw = b.image.read(b.memmap_phys, 16384)
    tbl = words(raw, bo)
    nz = [i for i, v in enumerate(tbl) if v]
    assert len(nz) == 1
    child = tbl[nz[0]]
    assert raw[8 * nz[0] : 8 * nz[0] + 8] == child.to_bytes(8, bo)
    assert child in b.memmap.pages
    assert child % 16384 == 0


def test_radix_pages_of_all_orders_share_one_tree():
    pages = [(0x1_0000_0000, 0), (0x1_0020_0000, 9), (0x2_0000_0000, 18), (1 << 42, 30)]
    st, b = _build("kho-v4", pages)
    assert b.memmap.depth == 6
    # one root, shared by all four keys
    assert sum(1 for (lvl, _) in b.memmap.placement if lvl == 5) == 1
    got = parse(b.root_fdt, b.image)
    assert sorted(got.preserved.iter_pages()) == sorted(pages)


@pytest.mark.parametrize("page_size", [4096, 16384, 65536])
@pytest.mark.parametrize("version", ["kho-v2", "kho-v3"])
def test_radix_highest_orders(page_size, version):
    """Orders whose order bit falls inside the leaf's own bits (no table prefix)."""
    shift = page_size.bit_length() - 1
    g_o0 = 64 - shift
    for order in (g_o0 - 1, g_o0 - 2, g_o0 - 5):
        if shift + order > 62:
            continue
        phys = 1 << (shift + order)
        st, b = _build(version, [(phys, order)], page_size=page_size)
        got = parse(b.root_fdt, b.image, page_size=page_size)
        assert list(got.preserved.iter_pages()) == [(phys, order)]


def test_v2_16k_order0_refused_order1_accepted():
    st = KhoState("kho-v2", 16384, "little", PageSet.from_pages(16384, [(0x4000, 0)]))
    with pytest.raises(UnrepresentableError) as ei:
        build(st, alloc=ALLOC)
    assert ei.value.phys == 0x4000
    st = KhoState("kho-v2", 16384, "little", PageSet.from_pages(16384, [(0x8000, 1), (0x10_0000, 3)]))
    b = build(st, alloc=ALLOC)
    assert b.memmap.depth == 4
    assert parse(b.root_fdt, b.image, page_size=16384).preserved == st.preserved
    # the same order-0 page is fine under kho-v3 (depth 5)
    st = KhoState("kho-v3", 16384, "little", PageSet.from_pages(16384, [(0x4000, 0)]))
    b = build(st, alloc=ALLOC)
    assert b.memmap.depth == 5
    assert parse(b.root_fdt, b.image, page_size=16384).preserved == st.preserved


def test_radix_metadata_never_over_preserved_memory():
    # the preserved set covers the start of the alloc region: nodes go after it
    ps = PageSet.from_ranges(4096, [(0x4000_0000, 0x4010_0000)])
    st = KhoState("kho-v4", preserved=ps)
    b = build(st, alloc=ALLOC)
    for p in b.memmap.pages:
        assert p >= 0x4010_0000
        assert ps.overlaps_range(p, p + 4096) is None


def test_empty_radix_map_is_zero():
    st = KhoState("kho-v4")
    b = build(st, alloc=ALLOC)
    assert b.memmap_phys == 0 and b.metadata == []
    assert _root_prop(b.root_fdt, "preserved-memory-map") == bytes(8)
    got = parse(b.root_fdt, b.image)
    assert not got.preserved and got.version == "kho-v4"


# -- kho-v1 chunk list -------------------------------------------------------------------


def _chunks(b, bo, page_size=4096):
    """Walk the v1 chunk list by hand: [(order, [(phys_start, bitmap)...])]."""
    out = []
    phys = b.memmap_phys
    while phys:
        raw = b.image.read(phys, page_size)
        nxt, order, n = struct.unpack(FMT[bo] + "QII", raw[:16])
        ent = [struct.unpack(FMT[bo] + "QQ", raw[16 + 16 * k : 32 + 16 * k]) for k in range(n)]
        # unused entries are zero
        assert raw[16 + 16 * n :] == bytes(page_size - 16 - 16 * n)
        out.append((order, ent))
        phys = nxt
    return out


@pytest.mark.parametrize("bo", ["little", "big"])
@pytest.mark.parametrize("variant,bits", [("page", 4096 * 8), ("512", 512 * 8)])
def test_v1_chunk_list_by_hand(variant, bits, bo):
    pages = [
        (0x10_5000, 0),  # pfn 0x105
        ((5 * 32768 + 3) << 12, 0),
        ((32768 + 7) << 14, 2),  # order-2 pfn 32775
    ]
    bb = 4096 if variant == "page" else 512
    st, b = _build("kho-v1", pages, bo=bo, v1_bitmap_bytes=bb)
    ch = _chunks(b, bo)
    assert [o for o, _ in ch] == [0, 2]  # a chunk per order, ascending
    # phys_start = (index * PRESERVE_BITS) << (order + PAGE_SHIFT)
    expect_idx = {0: sorted({0x105 // bits, (5 * 32768 + 3) // bits}), 2: [32775 // bits]}
    for order, ent in ch:
        starts = [s for s, _ in ent]
        assert starts == [(i * bits) << (order + 12) for i in expect_idx[order]]
        for _s, bm in ent:
            assert bm % bb == 0
            assert 0x4000_0000 <= bm < 0x4400_0000
    assert ch[0][1][1][0] == 0x2800_0000  # index 5 (page) or 40 (512): the same address
    assert ch[1][1][0][0] == 0x2000_0000  # (1 * 32768) << 14, or (8 * 4096) << 14
    # bitmap bits, by hand, in the unsigned-long layout
    got = set()
    for order, ent in ch:
        for s, bm in ent:
            raw = b.image.read(bm, bb)
            for bit in set_bits(raw, bo):
                got.add((s + (bit << (order + 12)), order))
    assert got == set(pages)
    bm0 = b.image.read(ch[0][1][0][1], bb)
    off, val = bit_byte(0x105 % bits, bo)
    assert bm0[off] == val
    # and the library reads it back, with the variant named explicitly
    back = parse(b.root_fdt, b.image, byteorder=bo, v1_bitmap=variant)
    assert back.preserved == st.preserved
    assert back.map_params["v1_bitmap_bytes"] == bb
    assert "chosen by the caller" in back.memmap.detection


@pytest.mark.parametrize("page_size", [4096, 16384])
def test_v1_chunk_splits_when_full(page_size):
    lay = layout(page_size, "little")
    cap = lay.khoser_mem_chunk_capacity
    bits = page_size * 8
    shift = page_size.bit_length() - 1
    # cap + 1 bitmaps of order 0, and one of order 1
    pages = [((i * bits) << shift, 0) for i in range(cap + 1)] + [(1 << 50, 1)]
    st, b = _build("kho-v1", pages, page_size=page_size, v1_bitmap_bytes=page_size)
    ch = _chunks(b, "little", page_size)
    assert [(o, len(e)) for o, e in ch] == [(0, cap), (0, 1), (1, 1)]
    assert ch[1][1][0][0] == (cap * bits) << shift
    assert parse(b.root_fdt, b.image, page_size=page_size, v1_bitmap="page").preserved == st.preserved


def test_v1_512_bitmaps_share_pages():
    pages = [((i * 4096) << 12, 0) for i in range(10)]  # ten 512-byte bitmaps
    st, b = _build("kho-v1", pages, v1_bitmap_bytes=512)
    ptrs = sorted(b.memmap.bitmaps.values())
    assert len(ptrs) == 10
    assert all(p % 512 == 0 for p in ptrs)
    assert len({p // 4096 for p in ptrs}) == 2  # eight to a page
    assert any(p % 4096 for p in ptrs)


def test_v1_bitmap_detection_and_override():
    # several 512-byte bitmaps: detection sees the 512-byte alignment
    pages = [((i * 4096) << 12, 0) for i in range(3)]
    st, b = _build("kho-v1", pages, v1_bitmap_bytes=512)
    got = parse(b.root_fdt, b.image)
    assert got.map_params["v1_bitmap_bytes"] == 512
    assert got.memmap.detection.startswith("512-byte")
    assert got.preserved == st.preserved
    assert any("v1 bitmaps: 512-byte" in n for n in got.notes)
    # page-sized bitmaps are detected as such
    st, b = _build("kho-v1", [((i * 32768) << 12, 0) for i in range(3)], v1_bitmap_bytes=4096)
    got = parse(b.root_fdt, b.image)
    assert got.map_params["v1_bitmap_bytes"] == 4096
    assert got.memmap.detection.startswith("page-sized")
    assert got.preserved == st.preserved
    # phys_start not a multiple of a page bitmap's coverage tells 512 apart
    st, b = _build("kho-v1", [((4096 * 1 + 5) << 12, 0)], v1_bitmap_bytes=512)
    got = parse(b.root_fdt, b.image)
    assert got.map_params["v1_bitmap_bytes"] == 512 and "phys_start" in got.memmap.detection
    assert got.preserved == st.preserved


def test_v1_ambiguous_variant_needs_the_override():
    # one 512-byte bitmap at a page-aligned address, index 0: looks page-sized
    st, b = _build("kho-v1", [(0x5000, 0)], v1_bitmap_bytes=512)
    (bm,) = b.memmap.bitmaps.values()
    assert bm % 4096 == 0
    auto = parse(b.root_fdt, b.image)
    assert auto.map_params["v1_bitmap_bytes"] == 4096
    assert "ambiguous" in auto.memmap.detection
    forced = parse(b.root_fdt, b.image, v1_bitmap="512")
    assert forced.map_params["v1_bitmap_bytes"] == 512
    assert forced.preserved == st.preserved


def test_v1_override_changes_the_reading():
    # a page-sized bitmap with a bit past the first 512 bytes
    st, b = _build("kho-v1", [(5000 << 12, 0), (3 << 12, 0)], v1_bitmap_bytes=4096)
    assert parse(b.root_fdt, b.image, v1_bitmap="page").preserved == st.preserved
    as512 = parse(b.root_fdt, b.image, v1_bitmap="512")
    assert as512.map_params["v1_bitmap_bytes"] == 512
    assert list(as512.preserved.iter_pages()) == [(3 << 12, 0)]


def test_v1_map_zero_note():
    st, b = _build("kho-v1", [])
    assert b.memmap_phys == 0
    assert _root_prop(b.root_fdt, "preserved-memory-map") == bytes(8)
    got = parse(b.root_fdt, b.image)
    assert not got.preserved
    assert got.memmap_phys == 0
    assert any("not finalized" in n for n in got.notes)
    assert "not finalized" in got.memmap.detection
    # a v2+ map of 0 is simply empty: no such note
    st, b = _build("kho-v4", [])
    assert not any("finalized" in n for n in parse(b.root_fdt, b.image).notes)


@pytest.mark.parametrize("page_size,orders", [(16384, (32, 33, 34)), (65536, (28, 29, 30, 32))])
def test_v1_detection_high_orders_no_overflow(page_size, orders):
    """A page bitmap's coverage ``PAGE_SIZE * 8 << (order + PAGE_SHIFT)`` can exceed
    64 bits at 16/64 KiB pages; detection must not divide by a wrapped 0."""
    import warnings

    shift = page_size.bit_length() - 1
    for order in orders:
        pages = [(1 << (shift + order), order)]
        st, b = _build("kho-v1", pages, page_size=page_size, v1_bitmap_bytes=page_size)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = parse(b.root_fdt, b.image, page_size=page_size)
        assert got.map_params["v1_bitmap_bytes"] == page_size
        assert got.preserved == st.preserved


@pytest.mark.parametrize("bo", ["little", "big"])
def test_empty_leaves_kept_with_reuse_placement(bo):
    """The kernel never frees radix nodes: a page removed from the set leaves
    an empty leaf behind, which a rebuild at the parsed placement keeps."""
    a, b_ = (0x1_0000_0000, 0), (0x2_0000_0000, 0)  # different leaves
    st, b = _build("kho-v4", [a, b_], bo=bo)
    got = parse(b.root_fdt, b.image, byteorder=bo)
    assert got.memmap.leaves == 2 and got.memmap.empty_leaves == 0
    got.preserved = PageSet.from_pages(4096, [a])
    b2 = build(got, reuse_placement=True)
    assert b2.memmap_phys == b.memmap_phys
    assert sorted(p for p, _ in b2.metadata) == sorted(p for p, _ in b.metadata)
    leaf_b = b.memmap.placement[(0, ((1 << 52) | (b_[0] >> 12)) >> 15)]
    assert dict(b2.metadata)[leaf_b] == bytes(4096)
    # every other page is unchanged
    for p, d in b.metadata:
        if p != leaf_b:
            assert dict(b2.metadata)[p] == d
    back = parse(b2.root_fdt, b2.image, byteorder=bo)
    assert list(back.preserved.iter_pages()) == [a]
    assert back.memmap.empty_leaves == 1
    assert any("empty leaves" in n for n in back.notes)
    # and rebuilding that again is byte-identical
    b3 = build(back, reuse_placement=True)
    assert dict(b3.metadata) == dict(b2.metadata) and b3.root_fdt == b2.root_fdt
    # a fresh build drops the empty leaf and its now-empty parents
    fresh = build(back, alloc=ALLOC)
    assert fresh.memmap.empty_leaves == 0 and fresh.memmap.leaves == 1
