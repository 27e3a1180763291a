"""Preserved pages that overlap scratch, each other across orders, or the
memory map's own pages: ``kho check`` findings (errors) naming the address;
scratch areas no u64 can hold: a ScratchError from the parse."""

from __future__ import annotations

import pytest
from _malformed import ALLOC_BASE, fails, handover, parse

from kho_formats.errors import ScratchError
from kho_formats.model import state as kstate
from kho_formats.ops import check as kcheck

VERSIONS = ["kho-v1", "kho-v2", "kho-v3", "kho-v4"]


def codes(st, image, code):
    return [f for f in kcheck.check(st, image) if f.code == code]


@pytest.mark.parametrize("version", VERSIONS)
def test_preserved_page_in_scratch(version):
    b = handover(version, [(0x100000, 0), (0x200000, 2)])
    st = parse(b, scratch=[(0x1F0000, 0x20000)])
    hits = codes(st, b.image, "scratch-overlap")
    assert hits and hits[0].severity == "error" and hits[0].phys == 0x200000


@pytest.mark.parametrize("version", VERSIONS)
def test_scratch_next_to_preserved_is_fine(version):
    b = handover(version, [(0x100000, 0), (0x200000, 2)])
    st = parse(b, scratch=[(0x204000, 0x10000), (0x101000, 0x1000)])
    assert not codes(st, b.image, "scratch-overlap")


def test_scratch_areas_overlap_each_other_and_misaligned():
    b = handover("kho-v4", [(0x100000, 0)])
    st = parse(b, scratch=[(0x800000, 0x10000), (0x808000, 0x10000), (0x900800, 0x1000)])
    ov = codes(st, b.image, "scratch-overlap")
    assert [f.phys for f in ov] == [0x808000]
    al = codes(st, b.image, "scratch-align")
    assert [f.phys for f in al] == [0x900800]


@pytest.mark.parametrize(
    "area", [((1 << 64) - 4096, 8192), (0, (1 << 64) + 1), (-4096, 4096), (4096, -1), ((1 << 64) + 4096, 0)]
)
def test_scratch_that_no_u64_can_hold(area):
    # these used to reach numpy as np.uint64(addr + size) and escape as OverflowError
    b = handover("kho-v4", [(0x100000, 0)])
    with fails(ScratchError, "scratch area #1", "outside the 64-bit physical space", located=False):
        parse(b, scratch=[(0x800000, 0x1000), area])


@pytest.mark.parametrize("area", [("a", 1), (1,), None, (1, 2, 3)])
def test_scratch_that_is_not_a_pair(area):
    b = handover("kho-v4", [(0x100000, 0)])
    with fails(ScratchError, "is not an (addr, size) pair", located=False):
        parse(b, scratch=[area])


def test_scratch_ending_exactly_at_the_top_is_legal():
    b = handover("kho-v4", [(0x100000, 0)])
    st = parse(b, scratch=[((1 << 64) - 0x10000, 0x10000)])
    assert not codes(st, b.image, "scratch-overlap")


@pytest.mark.parametrize("version", VERSIONS)
def test_same_memory_at_two_orders(version):
    b = handover(version, [(0x400000, 3), (0x404000, 1), (0x900000, 0)])
    st = parse(b)
    hits = codes(st, b.image, "overlap-orders")
    assert hits and hits[0].phys == 0x404000 and "order-3 page at 0x400000" in hits[0].message


def test_map_page_inside_preserved_memory():
    # an order-9 page at ALLOC_BASE pushes the metadata pages to ALLOC_BASE + 2 MiB;
    # then the leaf bit of the *next* order-9 page is set: it covers the map itself
    b = handover("kho-v4", [(ALLOC_BASE, 9)])
    first_meta = min(p for p, _ in b.metadata)
    assert first_meta == ALLOC_BASE + (2 << 20)
    leaves = [p for (lv, _), p in b.memmap.placement.items() if lv == 0]
    (leaf,) = leaves
    word = bytearray(b.image.read(leaf + 8 * 8, 8))
    assert word[0] == 1  # bit 0x200 of the leaf: ALLOC_BASE, order 9
    word[0] |= 2  # bit 0x201: ALLOC_BASE + 2 MiB, order 9
    b.image.write(leaf + 8 * 8, bytes(word))
    st = parse(b)
    assert st.preserved.contains(ALLOC_BASE + (2 << 20), 9)
    hits = codes(st, b.image, "map-in-preserved")
    assert hits and hits[0].phys == first_meta and hits[0].severity == "error"


def test_map_page_in_scratch():
    b = handover("kho-v3", [(0x100000, 0)])
    meta = sorted(p for p, _ in b.metadata)
    st = parse(b, scratch=[(meta[1], 0x1000)])
    hits = codes(st, b.image, "map-in-scratch")
    assert len(hits) == 1 and hits[0].phys in meta and hits[0].phys <= meta[1] and hits[0].severity == "error"
    st = parse(b, scratch=[(meta[-1] + 0x10000, 0x1000)])
    assert not codes(st, b.image, "map-in-scratch")


def test_many_map_pages_in_preserved_memory_are_summed_up():
    # 100 separate metadata pages all inside one preserved order-18 page:
    # the first MAX_DETAILED are reported one by one, the rest summed up
    from kho_formats.memory.pageset import PageSet
    from kho_formats.model.memmap.radix import RadixTree

    base = 1 << 30
    st = kstate.KhoState(version="kho-v4", preserved=PageSet.from_pages(4096, [(base, 18)]))
    st.memmap = RadixTree(root=base, depth=6, placement={(0, k): base + 2 * 4096 * k for k in range(100)})
    hits = codes(st, None, "map-in-preserved")
    assert len(hits) == kcheck.MAX_DETAILED + 1
    assert hits[0].phys == base and "order-18 page 0x40000000" in hits[0].message
    assert "and 36 more" in hits[-1].message and hits[-1].phys == base + 2 * 4096 * kcheck.MAX_DETAILED
