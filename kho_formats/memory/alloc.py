"""Placing metadata pages: a deterministic bump allocator over free regions.

Builders never let chunks, bitmaps, radix nodes or vmalloc chunks overlap
preserved memory, scratch areas or anything else already placed: the caller
passes those as ``avoid`` ranges.  Avoided ranges are kept as sorted numpy
arrays, so millions of preserved runs cost a binary search per allocation.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import AllocationError
from .pageset import merge_sorted_intervals

RangeArrays = tuple[np.ndarray, np.ndarray]


def merge_range_arrays(starts: np.ndarray, ends: np.ndarray) -> RangeArrays:
    """Sort and merge ``[start, end)`` ranges given as two arrays."""
    starts = np.asarray(starts, dtype=np.uint64)
    ends = np.asarray(ends, dtype=np.uint64)
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    if starts.size == 0:
        return starts, ends
    o = np.argsort(starts, kind="stable")
    return merge_sorted_intervals(starts[o], ends[o])


#: the largest value a uint64 holds: range ends past it are clamped (nothing is allocated there)
_U64_MAX = (1 << 64) - 1


def _clamp(v: int) -> int:
    return 0 if v < 0 else min(v, _U64_MAX)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    rs = [(_clamp(int(a)), _clamp(int(b))) for a, b in ranges]
    if not rs:
        return []
    s, e = merge_range_arrays(
        np.array([a for a, _ in rs], dtype=np.uint64), np.array([b for _, b in rs], dtype=np.uint64)
    )
    return list(zip(s.tolist(), e.tolist()))


def disjoint_regions(regions: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(start, size)`` regions with the parts already named by an earlier
    region removed, preference order kept (the bump allocator walks regions in
    order and must never see one page twice).

    O(n log n) comparisons: the union of earlier regions is kept as sorted,
    disjoint intervals and each region is cut against its neighbours found
    by binary search (each interval is merged away at most once)."""
    starts: list[int] = []  # union of the regions so far: sorted, disjoint [start, end)
    ends: list[int] = []
    out: list[tuple[int, int]] = []
    for a, s in regions:
        a, b = int(a), int(a) + int(s)
        if b <= a:
            continue
        i = bisect.bisect_right(ends, a)  # first interval ending after a
        j = bisect.bisect_left(starts, b)  # intervals [i, j) intersect or touch [a, b)
        cur = a
        for k in range(i, j):
            if starts[k] > cur:
                out.append((cur, starts[k] - cur))
            cur = max(cur, ends[k])
        if cur < b:
            out.append((cur, b - cur))
        lo = min(a, starts[i]) if i < j else a
        hi = max(b, ends[j - 1]) if i < j else b
        starts[i:j] = [lo]
        ends[i:j] = [hi]
    return out


class PageAllocator:
    """Hands out naturally aligned blocks from ``regions`` (``(start, size)``),
    skipping ``avoid`` byte ranges ``[start, end)``, lowest address first.

    ``avoid`` is an iterable of ``(start, end)`` pairs or a tuple of two
    numpy arrays ``(starts, ends)``; ``avoid_merged`` takes sets that are
    already sorted and merged, without sorting them again.
    """

    def __init__(
        self,
        regions: Sequence[tuple[int, int]],
        page_size: int,
        avoid: Iterable[tuple[int, int]] | RangeArrays = (),
        *,
        avoid_merged: Sequence[RangeArrays] = (),
    ) -> None:
        self.page_size = page_size
        # a page named by two regions must not be handed out twice
        self.regions = [(a, a + s) for a, s in disjoint_regions(regions)]
        if not self.regions:
            raise AllocationError("no free region given for metadata pages", expected="--alloc BASE:SIZE")
        if isinstance(avoid, tuple) and len(avoid) == 2 and isinstance(avoid[0], np.ndarray):
            self._s, self._e = merge_range_arrays(*avoid)
        else:
            pairs = [(_clamp(int(a)), _clamp(int(b))) for a, b in avoid]
            self._s, self._e = merge_range_arrays(
                np.array([a for a, _ in pairs], dtype=np.uint64), np.array([b for _, b in pairs], dtype=np.uint64)
            )
        #: more sets of ranges already sorted and merged (e.g. a PageSet's range_arrays())
        self._sets: list[RangeArrays] = [(self._s, self._e)] + [
            (np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)) for a, b in avoid_merged
        ]
        self._extra: list[tuple[int, int]] = []  # small, added later with avoid()
        self._region = 0
        self._cursor = self.regions[0][0]
        self.allocated: list[tuple[int, int]] = []

    def avoid(self, start: int, end: int) -> None:
        bisect.insort(self._extra, (int(start), int(end)))

    def _conflict(self, a: int, b: int) -> int:
        """End of an avoided range intersecting [a, b), or 0."""
        if a < 1 << 64:
            for starts, ends in self._sets:
                if starts.size:
                    i = int(np.searchsorted(ends, np.uint64(a), side="right"))
                    if i < starts.size and int(starts[i]) < b:
                        return int(ends[i])
        for s, e in self._extra[max(0, bisect.bisect_left(self._extra, (a, a)) - 1) :]:
            if s >= b:
                break
            if e > a:
                return e
        return 0

    def alloc(self, size: int = 0, *, align: int = 0, what: str = "metadata page") -> int:
        size = size or self.page_size
        align = align or self.page_size
        while self._region < len(self.regions):
            lo, hi = self.regions[self._region]
            a = max(self._cursor, lo)
            a = (a + align - 1) // align * align
            while a + size <= hi:
                end = self._conflict(a, a + size)
                if not end:
                    self._cursor = a + size
                    self.allocated.append((a, a + size))
                    return a
                a = (end + align - 1) // align * align
            self._region += 1
            if self._region < len(self.regions):
                self._cursor = self.regions[self._region][0]
        raise AllocationError(
            f"free regions exhausted while placing {what} ({size} bytes)",
            expected="a larger --alloc region",
        )

    def alloc_pages(self, n: int, *, what: str = "metadata page") -> list[int]:
        """``n`` pages, lowest address first: whole free blocks at once, one
        page at a time only around avoided ranges."""
        out: list[int] = []
        ps = self.page_size
        while len(out) < n:
            if self._region >= len(self.regions):
                break
            lo, hi = self.regions[self._region]
            a = (max(self._cursor, lo) + ps - 1) // ps * ps
            k = min(n - len(out), (hi - a) // ps) if hi > a else 0
            if k > 1 and not self._conflict(a, a + k * ps):
                out.extend(range(a, a + k * ps, ps))
                self._cursor = a + k * ps
                self.allocated.append((a, a + k * ps))
                continue
            out.append(self.alloc(what=what))
        while len(out) < n:
            out.append(self.alloc(what=what))  # raises AllocationError with the usual message
        return out
