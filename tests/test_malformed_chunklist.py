"""kho-v1 chunk lists that lie: cycles, num_elms past capacity, bitmap
pointers outside the image or misaligned, unaligned phys_start, orders no
page size can have.  Each is one MemoryMapError naming the address."""

from __future__ import annotations

import pytest
from _malformed import fails, get64, handover, parse, put32, put64

from kho_formats.errors import LimitExceeded, MemoryMapError
from kho_formats.limits import Limits
from kho_formats.ops import check as kcheck

PAGES = [(0x100000, 0), (0x101000, 0), (0x200000, 2), (0x40000000 + 0x800000, 0)]


def v1(page_size=4096, byteorder="little", bitmap=None, pages=PAGES):
    ps = page_size
    pages = [(p * (ps // 4096), o) for p, o in pages]
    return handover("kho-v1", pages, page_size=ps, byteorder=byteorder, v1_bitmap_bytes=bitmap)


@pytest.mark.parametrize("ps", [4096, 16384, 65536])
@pytest.mark.parametrize("bo", ["little", "big"])
@pytest.mark.parametrize("bm", [512, None])
def test_built_lists_parse(ps, bo, bm):
    b = v1(ps, bo, bm)
    st = parse(b, v1_bitmap="512" if bm else "page")
    assert st.preserved == b.state.preserved
    assert len(b.memmap.chunks) == 2  # one chunk per order


def test_cycle_to_itself():
    b = v1()
    c0 = b.memmap.chunks[0]
    put64(b.image, c0, c0)
    with fails(MemoryMapError, "loops back", phys=c0):
        parse(b)


def test_cycle_to_the_first_chunk():
    b = v1()
    c0, c1 = b.memmap.chunks
    assert get64(b.image, c1) == 0
    put64(b.image, c1, c0)
    with fails(MemoryMapError, "khoser_mem_chunk list loops back", f"next of chunk {c1:#x}", phys=c0):
        parse(b)


@pytest.mark.parametrize("ps,cap", [(4096, 255), (16384, 1023), (65536, 4095)])
def test_num_elms_past_capacity(ps, cap):
    b = v1(ps)
    c0 = b.memmap.chunks[0]
    put32(b.image, c0 + 12, cap + 1)
    with fails(MemoryMapError, f"num_elms {cap + 1} is past the chunk capacity", phys=c0):
        parse(b, v1_bitmap="page")
    put32(b.image, c0 + 12, 0xFFFFFFFF)
    with fails(MemoryMapError, "num_elms 4294967295", phys=c0):
        parse(b, v1_bitmap="page")


def test_num_elms_at_capacity_reads_zero_entries_as_bad_bitmaps():
    b = v1()
    c0 = b.memmap.chunks[0]
    put32(b.image, c0 + 12, 255)
    with fails(MemoryMapError, "bitmap pointer 0x0 of entry 2", phys=c0 + 16 + 16 * 2 + 8):
        parse(b, v1_bitmap="page")


@pytest.mark.parametrize("ps,bad_order", [(4096, 52), (4096, 0xFFFFFFFF), (16384, 50), (65536, 48)])
def test_orders_the_page_size_cannot_have(ps, bad_order):
    b = v1(ps)
    c0 = b.memmap.chunks[0]
    put32(b.image, c0 + 8, bad_order)
    with fails(MemoryMapError, f"order {bad_order} is impossible with {ps // 1024} KiB pages", phys=c0):
        parse(b, v1_bitmap="page")


def test_large_legal_order_at_64k_does_not_overflow_detection():
    # order 30 with 64 KiB pages: PRESERVE_BITS << (order + PAGE_SHIFT) is past
    # 2**64; the bitmap-size detection must not wrap a u64 (it used to compute
    # `U64 << U64` that silently wrapped) and the read must not crash
    b = v1(65536)
    c0 = b.memmap.chunks[0]
    put32(b.image, c0 + 8, 30)
    # the bitmap's bit for phys 0x4_0800_0000 now names an order-30 page at
    # 0x40800 << 46, past 2**64: this used to wrap silently to a bogus page
    bm = get64(b.image, c0 + 24, "little")
    with fails(MemoryMapError, "past the 64-bit physical space", phys=bm):
        parse(b)  # auto-detect, then the walk


@pytest.mark.parametrize("where", ["outside", "unaligned", "zero"])
def test_bitmap_pointers(where):
    b = v1()
    c0 = b.memmap.chunks[0]
    entry = c0 + 16
    bm = get64(b.image, entry + 8)
    value = {"outside": 0x7_0000_0000, "unaligned": bm + 8, "zero": 0}[where]
    put64(b.image, entry + 8, value)
    if where == "outside":
        with fails(MemoryMapError, "bitmap of entry 0", "is outside the image", phys=value):
            parse(b, v1_bitmap="page")
    else:
        with fails(MemoryMapError, f"bitmap pointer {value:#x}", "is not 4096-byte aligned", phys=entry + 8):
            parse(b, v1_bitmap="page")


def test_bitmap_pointer_unaligned_for_512_byte_bitmaps():
    b = v1(bitmap=512)
    c0 = b.memmap.chunks[0]
    bm = get64(b.image, c0 + 24)
    put64(b.image, c0 + 24, bm + 256)
    with fails(MemoryMapError, "is not 512-byte aligned", phys=c0 + 24):
        parse(b, v1_bitmap="512")


def test_bitmap_shared_by_two_entries():
    b = v1(pages=[(0x100000, 0), (0x100000 + (4096 * 8 * 4096), 0)])  # two bitmaps of order 0
    c0 = b.memmap.chunks[0]
    bm0 = get64(b.image, c0 + 24)
    put64(b.image, c0 + 40, bm0)
    with fails(MemoryMapError, "is shared with another entry", phys=bm0):
        parse(b, v1_bitmap="page")


def test_repeated_bitmap_index():
    b = v1(pages=[(0x100000, 0), (0x100000 + (4096 * 8 * 4096), 0)])
    c0 = b.memmap.chunks[0]
    put64(b.image, c0 + 32, get64(b.image, c0 + 16))  # same phys_start twice
    with fails(MemoryMapError, "repeats bitmap index", phys=c0):
        parse(b, v1_bitmap="page")


@pytest.mark.parametrize("delta", [4096, 1, 0x800_1000])
def test_unaligned_phys_start(delta):
    b = v1()
    c0 = b.memmap.chunks[0]
    start = get64(b.image, c0 + 16)
    put64(b.image, c0 + 16, start + delta)
    with fails(MemoryMapError, f"phys_start {start + delta:#x}", "is not a multiple of", phys=c0 + 16):
        parse(b, v1_bitmap="page")


def test_unaligned_phys_start_makes_auto_detection_pick_512():
    b = v1()
    c0 = b.memmap.chunks[0]
    put64(b.image, c0 + 16, get64(b.image, c0 + 16) + 512 * 8 * 4096)
    st = parse(b)  # auto: a phys_start that only 512-byte coverage explains
    assert st.map_params["v1_bitmap_bytes"] == 512
    assert "512-byte bitmaps" in st.memmap.detection


@pytest.mark.parametrize("value,msg", [(0x123, "not page aligned"), (0x7_0000_0000, "outside the image")])
def test_next_pointer(value, msg):
    b = v1()
    c0 = b.memmap.chunks[0]
    put64(b.image, c0, value)
    with fails(MemoryMapError, msg, phys=value):
        parse(b)


def test_first_chunk_pointer_unaligned():
    b = v1()
    from _malformed import root_fdt

    from kho_formats.model import state as kstate
    from kho_formats.model.fdt import str_bytes, u64_bytes

    fdt = root_fdt(
        [("compatible", str_bytes("kho-v1")), ("preserved-memory-map", u64_bytes(b.memmap.chunks[0] + 16, "little"))]
    )
    with fails(MemoryMapError, "khoser_mem_chunk pointer is not page aligned", phys=b.memmap.chunks[0] + 16):
        kstate.parse(fdt, b.image)


def test_long_chain_hits_the_page_limit():
    b = v1()
    with fails(LimitExceeded, "more than 2 metadata pages", "Limits(max_pages"):
        parse(b, limits=Limits(max_pages=2), v1_bitmap="page")


def test_overlapping_orders_are_a_check_finding():
    # order-0 page inside an order-2 page: legal bytes, a broken handover
    b = v1(pages=[(0x200000, 2), (0x201000, 0)])
    st = parse(b, v1_bitmap="page")
    findings = kcheck.check(st, b.image)
    hits = [f for f in findings if f.code == "overlap-orders"]
    assert hits and hits[0].severity == "error" and hits[0].phys == 0x201000
