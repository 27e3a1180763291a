"""Resource bounds: every walk reads each metadata page once (linear in the
bytes actually read); Limits(max_pages, max_entries) trip with a clear
LimitExceeded; huge counts in headers allocate nothing before validation."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from _malformed import fails, handover, parse, put32, put64, root_fdt, set_header

from kho_formats.abi import get_version
from kho_formats.abi.layout import layout
from kho_formats.errors import FdtError, LimitExceeded, MemoryMapError
from kho_formats.limits import Budget, Limits
from kho_formats.model import state as kstate
from kho_formats.model.fdt import FdtNode, build_fdt, parse_fdt, str_bytes, u64_bytes
from kho_formats.model.memmap.chunklist import read_chunklist
from kho_formats.model.memmap.radix import read_radix

SPREAD = [((k * 0x1234567) % (1 << 34)) // 4096 * 4096 for k in range(1, 400)]


def peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    except Exception:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("ps", [4096, 65536])
def test_radix_walk_reads_each_node_once(ps):
    b = handover("kho-v4", [(p * (ps // 4096), 0) for p in SPREAD], page_size=ps)
    budget = Budget()
    pages, tree = read_radix(
        b.image, b.memmap_phys, get_version("kho-v4").radix(ps), layout(ps, "little"), budget=budget
    )
    assert budget.pages == len(tree.placement) == len(b.memmap.placement)
    assert pages == b.state.preserved


@pytest.mark.parametrize("bm", [512, 4096])
def test_chunk_list_walk_reads_each_page_once(bm):
    b = handover("kho-v1", [(p, 0) for p in SPREAD] + [(0x4000_0000, 3)], v1_bitmap_bytes=bm)
    budget = Budget()
    pages, cl = read_chunklist(b.image, b.memmap_phys, layout(4096, "little"), bitmap_bytes=bm, budget=budget)
    assert budget.pages == len(cl.chunks) + len(cl.bitmaps)
    assert pages == b.state.preserved


@pytest.mark.parametrize("version", ["kho-v1", "kho-v2", "kho-v3", "kho-v4"])
def test_small_page_limit_trips_with_a_clear_error(version):
    b = handover(version, [(p, 0) for p in SPREAD[:50]])
    with fails(LimitExceeded, "more than 4 metadata pages read", "Limits(max_pages=...)"):
        parse(b, limits=Limits(max_pages=4), v1_bitmap="page")
    assert parse(b, limits=Limits(max_pages=10_000), v1_bitmap="page").preserved == b.state.preserved


def test_limit_exceeded_is_a_kho_format_error_with_json():
    b = handover("kho-v4", [(0x100000, 0)])
    with pytest.raises(LimitExceeded) as info:
        parse(b, limits=Limits(max_pages=1))
    j = info.value.to_json()
    assert j["error"] == "LimitExceeded" and j["kind"] == "limit" and j["phys"] is not None


def test_fdt_size_fields_allocate_nothing():
    blob = build_fdt(FdtNode("", [("compatible", b"kho-v4\0")]))
    for field in ("totalsize", "size_dt_struct", "size_dt_strings", "off_dt_struct"):
        bad = set_header(blob, field, 0xFFFFFFFF)
        t0 = time.perf_counter()
        assert peak_bytes(lambda bad=bad: parse_fdt(bad)) < 64 << 10
        assert time.perf_counter() - t0 < 2.0
        with pytest.raises(FdtError):
            parse_fdt(bad)


def test_property_length_allocates_nothing():
    from _malformed import end_node, fdt_end, node, prop, raw_fdt

    blob = raw_fdt(node("") + prop(0, b"x\0", length=0xFFFFFFF0) + end_node() + fdt_end(), b"compatible\0")
    assert peak_bytes(lambda: parse_fdt(blob)) < 64 << 10


def test_blob_size_of_2_64_allocates_nothing():
    b = handover("kho-v4", [(0x100000, 0)])
    fdt = root_fdt(
        [("compatible", str_bytes("kho-v4")), ("preserved-memory-map", u64_bytes(b.memmap_phys, "little"))],
        [
            (
                "big",
                [("blob-size", u64_bytes((1 << 64) - 1, "little")), ("preserved-data", u64_bytes(0x100000, "little"))],
            )
        ],
    )
    peak = peak_bytes(lambda: kstate.parse(fdt, b.image))
    assert peak < 1 << 20
    st = kstate.parse(fdt, b.image)
    assert st.subblobs[0].data is None


def test_v1_num_elms_huge_is_refused_before_reading_entries():
    b = handover("kho-v1", [(0x100000, 0)])
    c0 = b.memmap.chunks[0]
    put32(b.image, c0 + 12, 0xFFFFFFFF)
    assert peak_bytes(lambda: parse(b, v1_bitmap="page")) < 1 << 20
    with fails(MemoryMapError, "num_elms 4294967295", phys=c0):
        parse(b, v1_bitmap="page")


def test_radix_tree_with_every_entry_pointing_at_fresh_full_leaves_is_bounded():
    # the worst legal-looking tree the image can hold: N full leaves; the
    # parse is bounded by the image (pages read) and the limit stops it early
    b = handover("kho-v4", [(0x1_0000_0000 + k * 0x8000000, 0) for k in range(64)])
    leaves = sorted(p for (lv, _), p in b.memmap.placement.items() if lv == 0)
    for leaf in leaves:
        b.image.write(leaf, b"\xff" * 4096)
    t0 = time.perf_counter()
    st = parse(b)
    assert time.perf_counter() - t0 < 5.0
    assert st.preserved.num_pages == 64 * 4096 * 8
    with fails(LimitExceeded, "metadata pages"):
        parse(b, limits=Limits(max_pages=20))


def test_vmalloc_entry_limit_through_a_client():
    from kho_formats.memory.alloc import PageAllocator
    from kho_formats.memory.image import PhysImage
    from kho_formats.model.clients import decode_clients, kho_test

    lay = layout(4096, "little")
    alloc = PageAllocator([(0x2000_0000, 0x100_0000)], 4096)
    folios = [(0x3000_0000 + k * 0x1000, 0, bytes(4096)) for k in range(600)]  # folios_info needs 2 pages
    kt = kho_test.encode(folios, lay, alloc, csum=0)
    sb = kstate.SubBlob("kho_test", kt.fdt_phys, len(kt.fdt), kt.fdt, "blob-size")
    b = handover("kho-v4", list(kt.preserve.iter_pages()), subblobs=[sb], image=PhysImage(kt.segments))
    st = parse(b)
    rep = decode_clients(st, b.image, budget=Budget(Limits(max_entries=100)))["kho_test"]
    assert isinstance(rep.error, LimitExceeded) and "more than 100 entries" in str(rep.error)
    rep = decode_clients(st, b.image, budget=Budget(Limits(max_entries=10_000)))["kho_test"]
    assert rep.error is None and len(rep.decoded.folios) == 600


def test_chain_of_chunks_pointing_forward_forever_stops_at_the_image_edge():
    b = handover("kho-v1", [(0x100000, 0)])
    c0 = b.memmap.chunks[0]
    # make every page after c0 a chunk pointing at the next one, for 2000 pages
    for k in range(2000):
        page = c0 + (k + 1) * 4096
        data = bytearray(4096)
        data[0:8] = (page + 4096).to_bytes(8, "little")
        b.image.write(page, bytes(data)) if b.image.has(page, 4096) else b.image.add(page, bytes(data))
    put64(b.image, c0, c0 + 4096)
    t0 = time.perf_counter()
    with fails(MemoryMapError, "khoser_mem_chunk is outside the image", phys=c0 + 2001 * 4096):
        parse(b, v1_bitmap="page")
    assert time.perf_counter() - t0 < 5.0
    with fails(LimitExceeded, "more than 500 metadata pages"):
        parse(b, v1_bitmap="page", limits=Limits(max_pages=500))
