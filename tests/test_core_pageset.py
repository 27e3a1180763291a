"""PageSet: runs per order, coalescing, ranges across orders, overlaps,
splitting into the largest aligned orders, equality."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kho_formats.errors import OverlapError, UnrepresentableError
from kho_formats.memory.pageset import PageSet, split_aligned

K4 = 4096


def test_coalescing():
    ps = PageSet(K4)
    for k in (3, 1, 2, 7):
        ps.add(k * K4, 0)
    r = ps.runs(0)
    assert r.starts.tolist() == [K4, 7 * K4] and r.counts.tolist() == [3, 1]
    assert ps.num_runs == 2 and ps.num_pages == 4
    ps.add(4 * K4, 0, count=3)  # fills the gap: one run
    assert ps.runs(0).starts.tolist() == [K4] and ps.runs(0).counts.tolist() == [7]
    ps.add(2 * K4, 0)  # already present: kept once
    assert ps.num_pages == 7
    # order-1 pages coalesce in units of two pages
    ps1 = PageSet.from_pages(K4, [(0x2000, 1), (0x4000, 1), (0x8000, 1)])
    assert ps1.runs(1).starts.tolist() == [0x2000, 0x8000] and ps1.runs(1).counts.tolist() == [2, 1]


def test_from_runs_rejects_overlap_within_an_order():
    with pytest.raises(OverlapError):
        PageSet.from_runs(K4, {0: ([0x1000, 0x2000], [2, 1])})


def test_from_arrays_checks_alignment_and_dedups():
    ps = PageSet.from_pages(K4, [(0x1000, 0), (0x1000, 0), (0x2000, 0)])
    assert ps.num_pages == 2 and ps.num_runs == 1
    with pytest.raises(UnrepresentableError):
        PageSet.from_pages(K4, [(0x1000, 1)])


def test_ranges_across_orders():
    # order-0 at 0x1000, order-1 at 0x2000, order-2 at 0x4000: one contiguous range
    ps = PageSet.from_pages(K4, [(0x1000, 0), (0x2000, 1), (0x4000, 2), (0x10_0000, 0)])
    assert ps.ranges() == [(0x1000, 0x8000), (0x10_0000, 0x10_1000)]
    assert ps.total_bytes == 0x7000 + 0x1000
    assert ps.counts_by_order() == {0: 2, 1: 1, 2: 1}
    assert ps.orders == [0, 1, 2]
    s, e, o = ps.byte_intervals()
    assert s.tolist() == [0x1000, 0x2000, 0x4000, 0x10_0000] and o.tolist() == [0, 1, 2, 0]


def test_find_overlap():
    assert PageSet.from_pages(K4, [(0x1000, 0), (0x2000, 1)]).find_overlap() is None
    ps = PageSet.from_pages(K4, [(0x3000, 0), (0x2000, 1)])  # order-1 page covers 0x2000-0x4000
    assert ps.find_overlap() == (0x2000, 1, 0x3000, 0)
    big = PageSet.from_pages(K4, [(0, 9), (0x10_0000, 0), (0x1F_F000, 0)])  # 2 MiB page covers both
    ov = big.find_overlap()
    assert ov is not None and ov[:2] == (0, 9) and ov[3] == 0
    assert big.overlaps_range(0x1F_F000, 0x20_0000) is not None
    assert big.overlaps_range(0x20_0000, 0x20_1000) is None


def test_from_ranges_splits_into_largest_aligned_orders():
    ps = PageSet.from_ranges(K4, [(0x1000, 0x1_0000)])
    assert sorted(ps.iter_pages()) == [(0x1000, 0), (0x2000, 1), (0x4000, 2), (0x8000, 3)]
    ps = PageSet.from_ranges(K4, [(0x20_0000, 0x40_3000)])  # 2 MiB aligned: order 9 then 0 and 1
    assert sorted(ps.iter_pages(), key=lambda x: x[0]) == [(0x20_0000, 9), (0x40_0000, 1), (0x40_2000, 0)]
    assert PageSet.from_ranges(K4, [(0, 0x40_0000)], max_order=9).counts_by_order() == {9: 2}
    assert PageSet.from_ranges(K4, [(0x3000, 0x3000)]).num_pages == 0
    with pytest.raises(UnrepresentableError):
        PageSet.from_ranges(K4, [(0x1001, 0x2000)])
    assert list(split_aligned(1, 15, 63)) == [(1, 0), (2, 1), (4, 2), (8, 3)]


def test_equality():
    a = PageSet.from_pages(K4, [(0x1000, 0), (0x2000, 0), (0x8000, 1)])
    b = PageSet.from_runs(K4, {1: ([0x8000], [1]), 0: ([0x1000], [2])})
    assert a == b
    assert a != PageSet.from_pages(K4, [(0x1000, 0), (0x2000, 0)])
    assert a != PageSet.from_pages(K4, [(0x1000, 0), (0x2000, 0), (0x8000, 0), (0x9000, 0)])  # same bytes, other orders
    assert PageSet.from_pages(16384, [(0x4000, 0)]) != PageSet.from_pages(K4, [(0x4000, 0)])
    assert PageSet(K4) == PageSet(K4)
    assert not PageSet(K4) and a


def test_contains_and_difference():
    a = PageSet.from_pages(K4, [(0x1000, 0), (0x2000, 0), (0x8000, 1)])
    assert a.contains(0x2000, 0) and a.contains(0x8000, 1)
    assert not a.contains(0x9000, 1) and not a.contains(0x8000, 0) and not a.contains(0x3000, 0)
    b = PageSet.from_pages(K4, [(0x2000, 0), (0x8000, 1), (0xA000, 1)])
    only_a, only_b = a.difference(b)
    assert list(only_a.iter_pages()) == [(0x1000, 0)]
    assert list(only_b.iter_pages()) == [(0xA000, 1)]


def test_update_is_a_union():
    a = PageSet.from_runs(K4, {0: ([0x1000], [4])})
    a.update(PageSet.from_runs(K4, {0: ([0x3000], [4]), 2: ([0x10_0000], [1])}))
    assert a.runs(0).starts.tolist() == [0x1000] and a.runs(0).counts.tolist() == [6]
    assert a.contains(0x10_0000, 2)
    c = a.copy()
    c.add(0x20_0000, 0)
    assert c != a and a.num_pages == 7


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200)), max_size=60))
def test_pages_model(items):
    pages = {(idx << (12 + o), o) for o, idx in items}
    ps = PageSet.from_pages(K4, pages)
    assert set(ps.iter_pages()) == pages
    assert ps.num_pages == len(pages)
    assert sum(c for _, _, c in ps.iter_run_tuples()) == len(pages)
    # runs are maximal: no two runs of one order touch
    for o in ps.orders:
        r = ps.runs(o)
        ends = (r.starts + r.counts * (K4 << o)).tolist()
        assert all(e < s for e, s in zip(ends, r.starts.tolist()[1:]))
    # ranges cover exactly the union of the pages' bytes
    covered = set()
    for p, o in pages:
        covered.update(range(p >> 12, (p >> 12) + (1 << o)))
    rng = set()
    for a, b in ps.ranges():
        rng.update(range(a >> 12, b >> 12))
    assert rng == covered
    # overlap across orders is detected exactly when some page bytes are shared
    total = sum(1 << o for _, o in pages)
    assert (ps.find_overlap() is not None) == (total != len(covered))


def test_run_ending_at_the_top_of_the_space():
    """A page that ends at 2**64 (order 51 at 2**63 with 4 KiB pages, or the last
    page) must not wrap its end to 0 in ranges, overlaps or the allocator."""
    from kho_formats.errors import AllocationError
    from kho_formats.model.state import KhoState, build

    top = PageSet.from_pages(K4, [(1 << 63, 51)])
    assert top.ranges() == [(1 << 63, 1 << 64)]
    assert top.total_bytes == 1 << 63
    both = PageSet.from_pages(K4, [(1 << 63, 51), ((1 << 63) + 0x1000, 0)])
    assert both.find_overlap() == (1 << 63, 51, (1 << 63) + 0x1000, 0)
    assert both.ranges() == [(1 << 63, 1 << 64)]
    last = PageSet.from_pages(K4, [((1 << 64) - K4, 0), ((1 << 64) - 2 * K4, 0), ((1 << 64) - 4 * K4, 1)])
    assert last.ranges() == [((1 << 64) - 4 * K4, 1 << 64)]
    assert last.find_overlap() is None
    assert last.overlaps_range((1 << 64) - K4, 1 << 64) == ((1 << 64) - 2 * K4, 0)  # the run holding it
    # metadata pages are never placed inside such a page
    st = KhoState("kho-v4", K4, "little", top)
    with pytest.raises(AllocationError):
        build(st, alloc=[((1 << 63) + 0x1000_0000, 0x100_0000)])
    b = build(st, alloc=[((1 << 63) - 0x100_0000, 0x200_0000)])
    assert all(p < 1 << 63 for p, _ in b.metadata)
    # and check() sees a blob in the top page as preserved
    from kho_formats.model.state import SubBlob
    from kho_formats.ops.check import check

    st.subblobs = [SubBlob("c", (1 << 64) - K4, K4, None, "blob-size")]
    assert not [f for f in check(st) if f.code == "blob-not-preserved"]
    st.preserved = PageSet.from_pages(K4, [(1 << 63, 50)])
    assert [f.code for f in check(st) if f.code == "blob-not-preserved"] == ["blob-not-preserved"]


def test_copy_shares_read_only_runs_and_stays_independent():
    a = PageSet.from_runs(4096, {0: ([0x10000, 0x40000], [2, 1]), 9: ([1 << 30], [3])})
    b = a.copy()
    r = b.runs(0)
    assert not r.starts.flags.writeable and not r.counts.flags.writeable
    with pytest.raises(ValueError):
        r.starts[0] = 0  # nothing may change a set's runs in place
    b.add(0x12000, 0)  # extends the first run of b only
    b.update(PageSet.from_runs(4096, {2: ([0x100000], [1])}))
    assert a.runs(0).counts.tolist() == [2, 1] and 2 not in a.orders
    assert b.runs(0).counts.tolist() == [3, 1] and b.orders == [0, 2, 9]
    # the caller's arrays stay writable, and writing them changes no set
    s = np.array([0x10000], dtype=np.uint64)
    c = PageSet.from_runs(4096, {0: (s, [1])})
    d = PageSet(4096)
    d.update(c)
    s[0] = 0x20000
    assert c.ranges() == d.ranges() == c.copy().ranges() == [(0x10000, 0x11000)]
