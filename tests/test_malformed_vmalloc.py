"""``kho_vmalloc`` chains and KHO serialization blocks that lie: cycles,
counts that disagree with ``total_pages`` or do not fit a page, unknown
flags, misaligned groups; and the client blobs that carry them."""

from __future__ import annotations

import tracemalloc

import pytest
from _malformed import fails, handover, parse, put64

from fuzz.blocks import build_block_chain
from kho_formats.abi.layout import KhoVmalloc, layout
from kho_formats.errors import BlockError, ClientError, FdtError, LimitExceeded, PropertyError, VmallocError
from kho_formats.limits import Budget, Limits
from kho_formats.memory.alloc import PageAllocator
from kho_formats.memory.image import PhysImage
from kho_formats.model import state as kstate
from kho_formats.model.clients import blocks, decode_clients, kexec_metadata, kho_test, memblock
from kho_formats.model.clients.vmalloc import build_vmalloc, read_vmalloc
from kho_formats.model.fdt import FdtNode, build_fdt, str_bytes, u32_bytes, u64_bytes
from kho_formats.ops import check as kcheck

LAY = layout(4096, "little")
CAP = LAY.kho_vmalloc_chunk_capacity  # 511


def area(n, order=0, flags=1, ps=4096, bo="little"):
    """(desc, image) of a vmalloc area of ``n`` groups."""
    lay = layout(ps, bo)
    unit = ps << order
    groups = [0x8000_0000 + 2 * k * unit for k in range(n)]
    desc, chunks, _ = build_vmalloc(groups, order, lay, PageAllocator([(0x1000_0000, 0x100_0000)], ps), flags=flags)
    return desc, PhysImage(chunks), [p for p, _ in chunks]


def with_desc(desc, **kw):
    d = dict(first=desc.first, total_pages=desc.total_pages, flags=desc.flags, order=desc.order)
    d.update(kw)
    return KhoVmalloc(**d)


def test_good_area_reads():
    desc, img, chunks = area(CAP + 3)
    a = read_vmalloc(img, desc, LAY)
    assert a.groups.size == CAP + 3 and a.chunks == chunks


def test_chain_cycle():
    desc, img, chunks = area(CAP * 2 + 1)
    put64(img, chunks[1], chunks[0])  # chunk 1 -> chunk 0
    with fails(VmallocError, "chunk chain loops back", phys=chunks[0]):
        read_vmalloc(img, with_desc(desc, total_pages=CAP * 5), LAY)


def test_self_cycle():
    desc, img, chunks = area(CAP)
    put64(img, chunks[0], chunks[0])
    with fails(VmallocError, "loops back", phys=chunks[0]):
        read_vmalloc(img, with_desc(desc, total_pages=CAP * 3), LAY)


@pytest.mark.parametrize("claimed", [0, 1, 6, 8, 100])
def test_total_pages_disagrees_with_entries(claimed):
    desc, img, chunks = area(7)
    with fails(VmallocError, "total_pages", phys=None):
        read_vmalloc(img, with_desc(desc, total_pages=claimed), LAY)


def test_total_pages_huge_costs_nothing_before_validation():
    # total_pages = 2**32 - 1 with a one-chunk chain: a clear VmallocError,
    # fast, and no allocation sized by the claim (entries are charged as read)
    desc, img, chunks = area(3)
    tracemalloc.start()
    with fails(VmallocError, "chunks hold 3 entries, total_pages 4294967295 needs 4294967295", phys=desc.first):
        read_vmalloc(img, with_desc(desc, total_pages=0xFFFFFFFF), LAY, budget=Budget())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 << 20


def test_entry_limit_trips_on_real_entries():
    desc, img, chunks = area(CAP + 10)
    with fails(LimitExceeded, "more than 100 entries expanded", phys=chunks[0]):
        read_vmalloc(img, desc, LAY, budget=Budget(Limits(max_entries=100)))


def test_more_entries_than_total_pages():
    desc, img, chunks = area(CAP + 5)
    with fails(VmallocError, "chunks hold more than total_pages 4", phys=chunks[0]):
        read_vmalloc(img, with_desc(desc, total_pages=4), LAY)


@pytest.mark.parametrize("flags", [0x4, 0x8000, 0xFFFF, 0x0101])
def test_unknown_flags(flags):
    desc, img, _ = area(2)
    with fails(VmallocError, f"unknown flags {flags:#06x}", phys=desc.first):
        read_vmalloc(img, with_desc(desc, flags=flags), LAY)


def test_misaligned_group():
    desc, img, chunks = area(4, order=2)
    put64(img, chunks[0] + 8 + 8 * 2, 0x8000_1000)  # entry 2: not 16 KiB aligned
    with fails(VmallocError, "group 0x80001000 is not aligned to its order-2 size", phys=0x8000_1000):
        read_vmalloc(img, desc, LAY)


@pytest.mark.parametrize("order", [52, 60, 0xFFFF])
def test_impossible_order(order):
    desc, img, _ = area(1)
    with fails(VmallocError, f"order {order} is impossible", phys=desc.first):
        read_vmalloc(img, with_desc(desc, order=order, total_pages=0), LAY)


def test_total_pages_not_a_multiple_of_the_order():
    desc, img, _ = area(2, order=1)
    with fails(VmallocError, "total_pages 3 is not a multiple of 1 << order 1", phys=desc.first):
        read_vmalloc(img, with_desc(desc, total_pages=3), LAY)


def test_entries_after_the_terminator():
    desc, img, chunks = area(3)
    put64(img, chunks[0] + 8 + 8 * 10, 0x9000_0000)
    with fails(VmallocError, "entries after the zero terminator", phys=chunks[0]):
        read_vmalloc(img, desc, LAY)


def test_partial_chunk_links_another():
    desc, img, chunks = area(3)
    put64(img, chunks[0], 0x1000_1000)
    img.add(0x1000_1000, bytes(4096))
    with fails(VmallocError, "chunk is not full but links to another", phys=chunks[0]):
        read_vmalloc(img, desc, LAY)


@pytest.mark.parametrize("first,msg", [(0x1000_0008, "not page aligned"), (0x7_0000_0000, "outside the image")])
def test_bad_chunk_pointers(first, msg):
    desc, img, _ = area(3)
    with fails(VmallocError, msg, phys=first):
        read_vmalloc(img, with_desc(desc, first=first), LAY)


def test_page_limit_on_long_chains():
    desc, img, chunks = area(CAP * 4)
    with fails(LimitExceeded, "more than 2 metadata pages", phys=chunks[2]):
        read_vmalloc(img, desc, LAY, budget=Budget(Limits(max_pages=2)))


# -- serialization blocks ----------------------------------------------------------------


def chain(n_entries, entry_size=32):
    entries = [bytes([k % 256]) * entry_size for k in range(n_entries)]
    first, pages = build_block_chain(entries, entry_size, LAY, PageAllocator([(0x2000_0000, 0x100_0000)], 4096))
    return first, PhysImage(pages), [p for p, _ in pages]


def test_block_chain_cycle():
    first, img, pages = chain(300)
    put64(img, pages[-1], pages[0])
    with fails(BlockError, "chain loops back", phys=pages[0]):
        blocks.read_block_chain(img, first, LAY, entry_size=32)


@pytest.mark.parametrize("count,entry_size,limit", [(128, 32, 127), (2**64 - 1, 32, 127), (4081, None, 4080)])
def test_block_count_past_a_page(count, entry_size, limit):
    first, img, pages = chain(3)
    put64(img, pages[0] + 8, count)
    with fails(BlockError, f"count {count} does not fit one page", f"<= {limit}", phys=pages[0]):
        blocks.read_block_chain(img, first, LAY, entry_size=entry_size)


@pytest.mark.parametrize("nxt,msg", [(0x2000_0010, "not page aligned"), (0x9_0000_0000, "outside the image")])
def test_block_bad_next(nxt, msg):
    first, img, pages = chain(3)
    put64(img, pages[0], nxt)
    with fails(BlockError, msg, phys=nxt):
        blocks.read_block_chain(img, first, LAY, entry_size=32)


def test_block_limits():
    first, img, pages = chain(127 * 3)
    with fails(LimitExceeded, "entries expanded", phys=pages[1]):
        blocks.read_block_chain(img, first, LAY, entry_size=32, budget=Budget(Limits(max_entries=200)))
    with fails(LimitExceeded, "metadata pages", phys=pages[2]):
        blocks.read_block_chain(img, first, LAY, entry_size=32, budget=Budget(Limits(max_pages=2)))


# -- clients carrying them (errors are reported per client, and by kho check) --------------


def kho_test_handover(nfolios=3, **mutate):
    lay = LAY
    alloc = PageAllocator([(0x2000_0000, 0x100_0000)], 4096)
    folios = [(0x3000_0000 + k * 0x10000, k % 3, bytes([k + 1]) * (4096 << (k % 3))) for k in range(nfolios)]
    kt = kho_test.encode(folios, lay, alloc, csum=0x1234)
    img = PhysImage(kt.segments)
    sb = kstate.SubBlob("kho_test", kt.fdt_phys, len(kt.fdt), kt.fdt, "blob-size")
    b = handover("kho-v4", list(kt.preserve.iter_pages()), subblobs=[sb], image=img)
    return b, kt


def client_error(b, limits=None):
    st = parse(b, limits=limits)
    reps = decode_clients(st, b.image, budget=Budget(limits))
    findings = kcheck.check(st, b.image, clients=reps)
    errs = [r.error for r in reps.values() if r.error is not None]
    assert len(errs) <= 1
    if errs:
        assert any(f.code == "client" and f.severity == "error" for f in findings)
    return errs[0] if errs else None, reps, findings


def test_kho_test_good():
    b, kt = kho_test_handover()
    err, reps, findings = client_error(b)
    assert err is None and len(reps["kho_test"].decoded.folios) == 3
    assert not [f for f in findings if f.severity == "error"]


def rewrite_kho_test_fdt(b, kt, edit):
    """Rebuild the kho_test FDT in place with ``edit(root)`` applied."""
    from kho_formats.model.fdt import parse_fdt

    root = parse_fdt(kt.fdt).root
    edit(root)
    blob = build_fdt(root, style="sequential-write")
    assert len(blob) <= 4096 << kt.fdt_order
    b.image.write(kt.fdt_phys, blob.ljust(4096 << kt.fdt_order, b"\0"))
    # and the root FDT's blob-size for it
    st = b.state
    sb = st.subblob("kho_test")
    sb.size, sb.data = len(blob), blob
    b.root_fdt = build_fdt(
        kstate.root_fdt_tree(st, b.memmap_phys), style="read-write", strings_order=st.abi.strings_order
    )


@pytest.mark.parametrize("nr", [30, 513, 0xFFFFFFFF])
def test_kho_test_nr_folios_past_the_area(nr):
    b, kt = kho_test_handover()
    rewrite_kho_test_fdt(b, kt, lambda r: r.child("data").set("nr_folios", u32_bytes(nr, "little")))
    tracemalloc.start()
    err, _, _ = client_error(b)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if nr == 30:  # 30 * 8 bytes fit the one-page area: the extra entries are zeros -> (0, 0) folios
        assert err is None
        return
    assert isinstance(err, ClientError) and f"nr_folios {nr}" in str(err)
    assert err.path.endswith("/data/nr_folios")
    assert peak < 8 << 20


def test_kho_test_total_pages_lie_through_the_client():
    b, kt = kho_test_handover()
    rewrite_kho_test_fdt(
        b,
        kt,
        lambda r: r.child("data").set("folios_info", LAY.kho_vmalloc.build(with_desc(kt.desc, total_pages=0xFFFFFFFF))),
    )
    err, _, _ = client_error(b)
    assert isinstance(err, VmallocError) and "total_pages 4294967295" in str(err)


@pytest.mark.parametrize(
    "edit,cls,frag",
    [
        (lambda r: r.set("compatible", str_bytes("kho-test-v2")), ClientError, "compatible"),
        (lambda r: r.set("magic", u32_bytes(0xDEAD, "little")), ClientError, "magic 0xdead"),
        (lambda r: r.set("magic", bytes(8)), PropertyError, "property is 8 bytes"),
        (lambda r: r.children.clear(), ClientError, "no /data node"),
        (lambda r: r.child("data").set("folios_info", bytes(15)), ClientError, "folios_info is 15 bytes"),
        (lambda r: r.child("data").props.pop(0), PropertyError, "missing property"),
    ],
)
def test_kho_test_fdt_lies(edit, cls, frag):
    b, kt = kho_test_handover()
    rewrite_kho_test_fdt(b, kt, edit)
    err, _, _ = client_error(b)
    assert isinstance(err, cls) and frag in str(err), err


def test_kho_test_repeated_folio_is_a_problem_not_a_csum_marathon():
    # every folios_info entry names the same order-2 folio: reported, and the
    # csum is not computed over the same bytes again and again
    b, kt = kho_test_handover(nfolios=3)
    a = read_vmalloc(b.image, kt.desc, LAY)
    info_page = int(a.groups[0])
    for k in range(3):
        put64(b.image, info_page + 8 * k, 0x3000_0000 | 2)
    err, reps, findings = client_error(b)
    dec = reps["kho_test"].decoded
    assert err is None
    assert any("overlaps folio" in p for p in dec.problems)
    assert dec.csum_check == {}
    assert any(f.code == "kho_test" and "overlaps" in f.message for f in findings)


def test_kho_test_folio_with_impossible_order():
    b, kt = kho_test_handover()
    a = read_vmalloc(b.image, kt.desc, LAY)
    put64(b.image, int(a.groups[0]), 0x3000_0000 | 0xFFF)  # order 4095
    err, reps, _ = client_error(b)
    assert err is None and any("not aligned to its size" in p for p in reps["kho_test"].decoded.problems)


def test_memblock_region_wrapping_the_space():
    regions = [memblock.ReserveMem("r", (1 << 64) - 4096, 8192)]
    with fails(ClientError, "wraps the address space", phys=(1 << 64) - 4096):
        memblock.decode(memblock.encode(regions, "little"), "little")


def test_memblock_bad_region_compatible_and_sizes():
    root = FdtNode("")
    root.set("compatible", str_bytes("memblock-v1"))
    c = root.add_child("r")
    c.set("compatible", str_bytes("reserve-mem-v1"))
    c.set("start", bytes(4))
    c.set("size", u64_bytes(1, "little"))
    with fails(PropertyError, "property is 4 bytes", path="memblock:/r/start"):
        memblock.decode(build_fdt(root), "little")
    c.set("compatible", str_bytes("nope"))
    with fails(ClientError, "region compatible", path="memblock:/r/compatible"):
        memblock.decode(build_fdt(root), "little")
    with fails(FdtError, "bad magic"):
        memblock.decode(b"\0" * 64, "little")


@pytest.mark.parametrize("blob,frag", [(b"\1\0\0\0" + b"x" * 10, "14 bytes"), (b"\2\0\0\0" + bytes(69), "version 2")])
def test_kexec_metadata_lies(blob, frag):
    with fails(ClientError, frag, path="kexec-metadata"):
        kexec_metadata.decode(blob, LAY)


def test_kexec_metadata_non_utf8_release_is_not_a_crash():
    md = kexec_metadata.decode(b"\1\0\0\0" + b"\xff\xfe7.3" + bytes(60) + b"\5\0\0\0", LAY)
    assert md.kexec_count == 5 and "7.3" in md.previous_release
