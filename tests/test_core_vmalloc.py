"""``struct kho_vmalloc`` and its chunk chain (KHO-ABI.md 5), serialization
blocks (6.4) and the client blobs (6.1 - 6.3)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from fuzz.blocks import build_block_chain
from kho_formats.abi.layout import KhoVmalloc, layout
from kho_formats.errors import VmallocError
from kho_formats.memory.alloc import PageAllocator
from kho_formats.memory.image import PhysImage
from kho_formats.model.clients import kho_test, memblock
from kho_formats.model.clients.blocks import read_block_chain
from kho_formats.model.clients.vmalloc import build_vmalloc, read_vmalloc
from kho_formats.model.fdt import parse_fdt

FMT = {"little": "<", "big": ">"}


def _alloc(page_size):
    return PageAllocator([(0x1000_0000, 0x100_0000)], page_size)


def _image(chunks):
    img = PhysImage()
    for p, d in chunks:
        img.add(p, d)
    return img


def _groups(n, order, page_size, base=0x8000_0000):
    unit = page_size << order
    return [base + 3 * k * unit for k in range(n)]


@pytest.mark.parametrize("page_size", [4096, 16384, 65536])
@pytest.mark.parametrize("bo", ["little", "big"])
def test_exact_multiple_links_an_empty_chunk(page_size, bo):
    lay = layout(page_size, bo)
    cap = lay.kho_vmalloc_chunk_capacity
    assert cap == page_size // 8 - 1
    groups = _groups(cap, 0, page_size)
    desc, chunks, pres = build_vmalloc(groups, 0, lay, _alloc(page_size))
    assert len(chunks) == 2
    (p0, c0), (p1, c1) = chunks
    assert desc.first == p0
    # chunk 0: next = chunk 1, then cap entries, full (no terminator)
    assert struct.unpack(FMT[bo] + "Q", c0[:8])[0] == p1
    assert list(struct.unpack(f"{FMT[bo]}{cap}Q", c0[8:])) == groups
    # chunk 1: next = 0 and no entries
    assert c1 == bytes(page_size)
    area = read_vmalloc(_image(chunks), desc, lay)
    assert area.groups.tolist() == groups
    assert area.chunks == [p0, p1]
    assert area.nr_pages == desc.total_pages == cap
    # the chunk pages are preserved as order-0 pages
    assert pres.contains(p0, 0) and pres.contains(p1, 0)


def test_chunk_counts_4k():
    lay = layout(4096, "little")
    for n, nchunks in ((0, 1), (1, 1), (510, 1), (511, 2), (512, 2), (1022, 3)):
        desc, chunks, _ = build_vmalloc(_groups(n, 0, 4096), 0, lay, _alloc(4096))
        assert len(chunks) == nchunks, n
        area = read_vmalloc(_image(chunks), desc, lay)
        assert area.groups.size == n
        assert area.nr_pages == desc.total_pages == n


@pytest.mark.parametrize("order", [0, 1, 3, 9])
@pytest.mark.parametrize("bo", ["little", "big"])
def test_entries_times_group_size_is_total_pages(order, bo):
    lay = layout(4096, bo)
    groups = _groups(7, order, 4096)
    desc, chunks, pres = build_vmalloc(groups, order, lay, _alloc(4096), flags=3)
    assert desc.order == order and desc.flags == 3
    assert desc.total_pages == 7 * (1 << order)
    raw = lay.kho_vmalloc.build(desc)
    assert raw == struct.pack(FMT[bo] + "QIHH", desc.first, 7 << order, 3, order)
    area = read_vmalloc(_image(chunks), desc, lay)
    assert area.groups.size * (1 << order) == desc.total_pages
    assert area.page_addresses(4096).size == desc.total_pages
    assert area.page_addresses(4096)[1] == (groups[0] + 4096 if order else groups[1])
    # aligned groups are preserved as one page of their order each
    for g in groups:
        assert pres.contains(g, order)


def test_unaligned_group_split_into_largest_orders():
    lay = layout(4096, "little")
    # a 4-page group is preserved as 4 pages split into the largest aligned orders
    desc, chunks, pres = build_vmalloc([0x8000_0000], 2, lay, _alloc(4096))
    assert pres.contains(0x8000_0000, 2)
    with pytest.raises(VmallocError):
        build_vmalloc([0x8000_1000], 2, lay, _alloc(4096))  # not order-2 aligned


def test_unknown_flags_rejected():
    lay = layout(4096, "little")
    with pytest.raises(VmallocError):
        build_vmalloc([0x8000_0000], 0, lay, _alloc(4096), flags=0x4)
    desc, chunks, _ = build_vmalloc([0x8000_0000], 0, lay, _alloc(4096))
    bad = KhoVmalloc(desc.first, desc.total_pages, 0x4, 0)
    with pytest.raises(VmallocError):
        read_vmalloc(_image(chunks), bad, lay)


def test_empty_area_reads_back():
    lay = layout(4096, "little")
    area = read_vmalloc(PhysImage(), KhoVmalloc(0, 0, 0, 0), lay)
    assert area.groups.size == 0 and area.chunks == []


# -- serialization blocks --------------------------------------------------------------


@pytest.mark.parametrize("bo", ["little", "big"])
def test_block_chain_round_trip(bo):
    lay = layout(4096, bo)
    per = (4096 - 16) // 24
    entries = [bytes([k % 256]) * 24 for k in range(per + 5)]
    first, pages = build_block_chain(entries, 24, lay, _alloc(4096))
    assert len(pages) == 2
    nxt, count = struct.unpack(FMT[bo] + "QQ", pages[0][1][:16])
    assert (nxt, count) == (pages[1][0], per)
    assert struct.unpack(FMT[bo] + "QQ", pages[1][1][:16]) == (0, 5)
    blocks = read_block_chain(_image(pages), first, lay, entry_size=24)
    assert [b.count for b in blocks] == [per, 5]
    assert b"".join(b.payload for b in blocks) == b"".join(entries)


# -- client blobs --------------------------------------------------------------------------


@pytest.mark.parametrize("bo", ["little", "big"])
def test_memblock_round_trip(bo):
    regs = [memblock.ReserveMem("trace_buf", 0x3E80_0000, 0x40_0000), memblock.ReserveMem("r2", 0x1000, 0x2000)]
    blob = memblock.encode(regs, bo)
    fdt = parse_fdt(blob)
    assert fdt.root.get("compatible") == b"memblock-v1\0"
    node = fdt.root.child("trace_buf")
    assert node.get("compatible") == b"reserve-mem-v1\0"
    assert node.get("start") == (0x3E80_0000).to_bytes(8, bo)
    assert node.get("size") == (0x40_0000).to_bytes(8, bo)
    assert memblock.decode(blob, bo) == regs


@pytest.mark.parametrize("page_size", [4096, 16384])
@pytest.mark.parametrize("bo", ["little", "big"])
def test_kho_test_round_trip(page_size, bo):
    lay = layout(page_size, bo)
    folios = [(0x2000_0000, 0, b"\x11" * page_size), (0x2010_0000, 2, b"\x22" * (page_size << 2))]
    kb = kho_test.encode(folios, lay, _alloc(page_size), csum=0xB68CC9AE)
    fdt = parse_fdt(kb.fdt)
    assert fdt.root.get("compatible") == b"kho-test-v1\0"
    assert fdt.root.get("magic") == struct.pack(FMT[bo] + "I", 0x4B484F21)
    data = fdt.root.child("data")
    assert data.get("nr_folios") == struct.pack(FMT[bo] + "I", 2)
    assert data.get("csum") == struct.pack(FMT[bo] + "I", 0xB68CC9AE)
    assert len(data.get("folios_info")) == 16
    img = _image(kb.segments)
    kt = kho_test.decode(kb.fdt, lay, img)
    assert kt.nr_folios == 2 and kt.csum == 0xB68CC9AE
    assert kt.folios == [(p, o) for p, o, _ in folios]
    assert kt.problems == []
    assert kt.folios_info == kb.desc
    # the folio array is u64 phys | order, native order
    first_group = int(kt.area.groups[0])
    assert img.read(first_group, 16) == struct.pack(FMT[bo] + "QQ", 0x2000_0000 | 0, 0x2010_0000 | 2)
    # folios, the FDT folio and the folios_info pages and chunk are preserved
    for p, o, _ in folios:
        assert kb.preserve.contains(p, o)
    assert kb.preserve.contains(kb.fdt_phys, kb.fdt_order)
    for c in kt.area.chunks:
        assert kb.preserve.contains(c, 0)
    assert np.all([kb.preserve.contains(int(g), 0) for g in kt.area.groups])
