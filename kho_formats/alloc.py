"""Placing metadata pages: a deterministic bump allocator over free regions.

Builders never let chunks, bitmaps, radix nodes or vmalloc chunks overlap
preserved memory, scratch areas or anything else already placed: the caller
passes those as ``avoid`` ranges.
"""

from __future__ import annotations

import bisect
from typing import Iterable, List, Sequence, Tuple

from .errors import AllocationError


def merge_ranges(ranges: Iterable[Tuple[int, int]]) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in ranges if b > a):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class PageAllocator:
    """Hands out naturally aligned blocks from ``regions`` (``(start, size)``),
    skipping ``avoid`` byte ranges ``[start, end)``, lowest address first."""

    def __init__(
        self,
        regions: Sequence[Tuple[int, int]],
        page_size: int,
        avoid: Iterable[Tuple[int, int]] = (),
    ) -> None:
        self.page_size = page_size
        self.regions = [(int(a), int(a) + int(s)) for a, s in regions]
        if not self.regions:
            raise AllocationError("no free region given for metadata pages", expected="--alloc BASE:SIZE")
        self._avoid = merge_ranges(avoid)
        self._avoid_starts = [a for a, _ in self._avoid]
        self._region = 0
        self._cursor = self.regions[0][0]
        self.allocated: List[Tuple[int, int]] = []

    def avoid(self, start: int, end: int) -> None:
        self._avoid = merge_ranges(self._avoid + [(start, end)])
        self._avoid_starts = [a for a, _ in self._avoid]

    def _conflict(self, a: int, b: int) -> int:
        """End of an avoided range intersecting [a, b), or 0."""
        i = bisect.bisect_right(self._avoid_starts, a) - 1
        for j in (i, i + 1):
            if 0 <= j < len(self._avoid):
                s, e = self._avoid[j]
                if s < b and e > a:
                    return e
        # ranges starting inside [a, b)
        k = bisect.bisect_left(self._avoid_starts, a)
        if k < len(self._avoid) and self._avoid[k][0] < b:
            return self._avoid[k][1]
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
