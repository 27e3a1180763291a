"""The metadata allocator: alignment, avoided ranges, region order, and no
page handed out twice when regions overlap."""

import numpy as np
import pytest

from kho_formats.errors import AllocationError
from kho_formats.memory.alloc import PageAllocator, disjoint_regions


def test_overlapping_regions_never_give_a_page_twice():
    a = PageAllocator([(0x1000, 0x3000), (0x2000, 0x3000), (0x1000, 0x1000)], 4096)
    got = [a.alloc() for _ in range(4)]
    assert got == [0x1000, 0x2000, 0x3000, 0x4000]
    with pytest.raises(AllocationError):
        a.alloc()


def test_region_order_is_preference_order():
    a = PageAllocator([(0x10000, 0x1000), (0x1000, 0x1000)], 4096)
    assert [a.alloc(), a.alloc()] == [0x10000, 0x1000]


def test_disjoint_regions_keeps_order_and_cuts_overlaps():
    assert disjoint_regions([(0x3000, 0x3000), (0x1000, 0x6000)]) == [
        (0x3000, 0x3000),
        (0x1000, 0x2000),
        (0x6000, 0x1000),
    ]


def test_avoided_ranges_and_merged_sets_are_skipped():
    starts = np.array([0x2000], dtype=np.uint64)
    ends = np.array([0x4000], dtype=np.uint64)
    a = PageAllocator([(0x1000, 0x10000)], 4096, avoid=[(0x5000, 0x6000)], avoid_merged=[(starts, ends)])
    assert [a.alloc() for _ in range(3)] == [0x1000, 0x4000, 0x6000]


def test_aligned_blocks():
    a = PageAllocator([(0x1000, 0x100000)], 4096)
    assert a.alloc(0x4000, align=0x4000) == 0x4000
    assert a.alloc() == 0x8000


def test_alloc_pages_takes_blocks_and_skips_avoided_ranges():
    a = PageAllocator([(0x1000, 0x8000), (0x20000, 0x2000)], 4096, avoid=[(0x3000, 0x4000)])
    assert a.alloc_pages(8) == [0x1000, 0x2000, 0x4000, 0x5000, 0x6000, 0x7000, 0x8000, 0x20000]
    assert a.alloc_pages(1) == [0x21000]
    with pytest.raises(AllocationError):
        a.alloc_pages(1)
