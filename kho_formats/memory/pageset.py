"""The preserved set as coalesced runs, not pages.

A :class:`PageSet` holds, for every order, sorted runs of consecutive
same-order pages: ``starts[i]`` (physical address) and ``counts[i]`` (number
of order-``o`` pages).  Memory grows with fragmentation, not with the bytes
preserved: 1 TiB of order-9 pages is one run.

Everything bulk is numpy; nothing here creates one Python object per page.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import OverlapError, UnrepresentableError
from .distinct import distinct

U64 = np.uint64


def _u64(a: Iterable[int] | np.ndarray, what: str = "page address") -> np.ndarray:
    """``a`` as a flat uint64 array; a value outside ``[0, 2**64)`` is an
    :class:`UnrepresentableError` (numpy would raise ``OverflowError``)."""
    try:
        return np.ascontiguousarray(np.asarray(a, dtype=np.uint64).reshape(-1))
    except (OverflowError, ValueError, TypeError):
        bad = next((v for v in np.asarray(a, dtype=object).reshape(-1).tolist() if not 0 <= int(v) < 1 << 64), None)
        raise UnrepresentableError(
            f"{what} {bad!r} is outside the 64-bit physical space", expected="0 .. 2**64 - 1"
        ) from None


def _check_order(order: int, page_size: int) -> int:
    """``order`` of a page that fits the 64-bit space at ``page_size``."""
    shift = page_size.bit_length() - 1
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= int(order) < 64 - shift:
        raise UnrepresentableError(
            f"page order {order!r} is impossible at {page_size}-byte pages", expected=f"0 .. {63 - shift}"
        )
    return int(order)


#: stands for an exclusive end of 2**64 (a run ending at the top of the
#: physical space wraps a u64 to 0); no page-aligned end equals it
END_OF_SPACE = (1 << 64) - 1


def _frozen(a: np.ndarray) -> np.ndarray:
    """A read-only view (the array it views stays writable for its owner)."""
    v = a.view()
    v.flags.writeable = False
    return v


def _run_ends(starts: np.ndarray, counts: np.ndarray, unit: int) -> np.ndarray:
    """Exclusive byte ends of one order's runs (sorted, disjoint, non-empty:
    only the last can end at 2**64), with END_OF_SPACE for that end."""
    ends = counts * U64(unit)
    ends += starts
    if ends.size and int(starts[-1]) + int(counts[-1]) * unit >= 1 << 64:
        ends[-1] = U64(END_OF_SPACE)
    return ends


def merge_sorted_intervals(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge ``[start, end)`` intervals already sorted by start: overlapping or
    touching ones become one.  (The one interval merge of the package: the
    allocator, unions and coalesced ranges all use it.)"""
    if starts.size == 0:
        return starts, ends
    run_end = np.maximum.accumulate(ends)
    new = np.empty(starts.size, dtype=bool)
    new[0] = True
    new[1:] = starts[1:] > run_end[:-1]
    idx = np.flatnonzero(new)
    return starts[idx], np.append(run_end[idx[1:] - 1], run_end[-1])


def coalesce_runs(starts: np.ndarray, counts: np.ndarray, unit: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge sorted runs that touch: ``starts`` in bytes, ``counts`` in units.

    The input must be sorted by start and non-overlapping (checked).
    """
    starts = _u64(starts)
    counts = _u64(counts)
    if starts.size == 0:
        return starts, counts
    keep = counts != 0
    if not keep.all():
        starts, counts = starts[keep], counts[keep]
        if starts.size == 0:
            return starts, counts
    ends = starts + counts * U64(unit)
    if starts.size > 1:
        if np.any(starts[1:] < ends[:-1]):
            i = int(np.flatnonzero(starts[1:] < ends[:-1])[0])
            raise OverlapError(
                "pages of one order overlap or are unsorted",
                phys=int(starts[i + 1]),
                expected=f"start >= {int(ends[i]):#x}",
            )
        new = np.empty(starts.size, dtype=bool)
        new[0] = True
        new[1:] = starts[1:] != ends[:-1]
        if not new.all():
            idx = np.flatnonzero(new)
            return starts[idx], np.add.reduceat(counts, idx).astype(np.uint64)
    return starts, counts


def runs_from_sorted_indexes(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique page indexes -> (first index, length) runs."""
    idx = _u64(idx)
    if idx.size == 0:
        return idx, idx.copy()
    brk = np.empty(idx.size, dtype=bool)
    brk[0] = True
    np.not_equal(idx[1:], idx[:-1] + U64(1), out=brk[1:])
    first = np.flatnonzero(brk)
    lengths = np.diff(np.append(first, idx.size)).astype(np.uint64)
    return idx[first], lengths


class GrowingPair:
    """Two u64 arrays appended to in place (``ndarray.resize``: a ``realloc``,
    which large blocks do by remapping, not copying), so building N items
    a slice at a time never holds two copies of them.  Small arrays grow by
    a quarter, large ones (remapped) to exactly what they hold."""

    def __init__(self) -> None:
        self.a = np.empty(0, dtype=np.uint64)
        self.b = np.empty(0, dtype=np.uint64)
        self.size = 0

    def append(self, a: np.ndarray, b: np.ndarray) -> None:
        need = self.size + int(a.size)
        if need > self.a.size:
            cap = need if self.a.size >= _EXACT_GROWTH else max(need, self.a.size + self.a.size // 4)
            self.a.resize(cap, refcheck=False)
            self.b.resize(cap, refcheck=False)
        self.a[self.size : need] = a
        self.b[self.size : need] = b
        self.size = need

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Both arrays at exactly their size (the caller owns them)."""
        self.a.resize(self.size, refcheck=False)
        self.b.resize(self.size, refcheck=False)
        out = (self.a, self.b)
        self.a = self.b = np.empty(0, dtype=np.uint64)
        self.size = 0
        return out


#: from this many items (32 MiB per array) GrowingPair grows exactly: realloc remaps
_EXACT_GROWTH = 1 << 22

#: runs per numpy pass in the merges across orders (bounds their temporaries)
_SLICE_RUNS = 1 << 18


def split_aligned(start_pfn: int, nr_pages: int, max_order: int) -> Iterator[tuple[int, int]]:
    """Split a contiguous pfn range into the largest naturally aligned orders.

    This is how ``kho_preserve_pages()`` preserves a group of pages:
    ``order = min(ctz(pfn), ilog2(end - pfn))`` at each step.
    """
    pfn, end = start_pfn, start_pfn + nr_pages
    while pfn < end:
        ctz = (pfn & -pfn).bit_length() - 1 if pfn else max_order
        order = min(ctz, (end - pfn).bit_length() - 1, max_order)
        yield pfn, order
        pfn += 1 << order


@dataclass
class OrderRuns:
    order: int
    starts: np.ndarray  # phys, uint64, sorted
    counts: np.ndarray  # number of order pages, uint64

    @property
    def pages(self) -> int:
        return int(self.counts.sum())


class PageSet:
    """Preserved ``(phys, order)`` pages kept as coalesced runs per order."""

    __slots__ = ("page_size", "_runs")

    def __init__(self, page_size: int = 4096) -> None:
        self.page_size = page_size
        self._runs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- construction ------------------------------------------------------
    @classmethod
    def from_runs(
        cls, page_size: int, runs: dict[int, tuple[Sequence[int], Sequence[int]]], *, sort: bool = True
    ) -> PageSet:
        ps = cls(page_size)
        for order, (starts, counts) in runs.items():
            order = _check_order(order, page_size)
            # copies: the set's arrays are shared by its copies, so it must own them
            s, c = _u64(starts).copy(), _u64(counts, "run length").copy()
            if s.size != c.size:
                raise ValueError("starts and counts differ in length")
            if sort and s.size > 1 and np.any(s[1:] < s[:-1]):
                o = np.argsort(s, kind="stable")
                s, c = s[o], c[o]
            ps._set(order, s, c)
        return ps

    @classmethod
    def _from_coalesced(cls, page_size: int, runs: dict[int, tuple[np.ndarray, np.ndarray]]) -> PageSet:
        """Trusted constructor for runs already sorted, disjoint and merged
        (what the memory-map readers produce); skips the O(runs) re-check."""
        ps = cls(page_size)
        for order, (s, c) in runs.items():
            if s.size:
                ps._runs[order] = (_frozen(s), _frozen(c))
        return ps

    @classmethod
    def from_pages(cls, page_size: int, pages: Iterable[tuple[int, int]]) -> PageSet:
        by_order: dict[int, list[int]] = {}
        for phys, order in pages:
            by_order.setdefault(int(order), []).append(int(phys))
        return cls.from_arrays(page_size, {o: _u64(v) for o, v in by_order.items()})

    @classmethod
    def from_arrays(cls, page_size: int, phys_by_order: dict[int, np.ndarray]) -> PageSet:
        """Per order, an array of page physical addresses (any order, may repeat)."""
        ps = cls(page_size)
        shift = page_size.bit_length() - 1
        for order, phys in phys_by_order.items():
            order = _check_order(order, page_size)
            phys = distinct(_u64(phys))
            unit = 1 << (shift + order)
            if phys.size and np.any(phys % U64(unit)):
                bad = int(phys[np.flatnonzero(phys % U64(unit))[0]])
                raise UnrepresentableError(
                    f"page {bad:#x} is not aligned to its order-{order} size", phys=bad, expected=f"alignment {unit:#x}"
                )
            first, lengths = runs_from_sorted_indexes(phys >> U64(shift + order))
            ps._set(order, first << U64(shift + order), lengths)
        return ps

    @classmethod
    def from_ranges(cls, page_size: int, ranges: Iterable[tuple[int, int]], max_order: int = 63) -> PageSet:
        """Byte ranges ``[start, end)`` split into the largest aligned orders."""
        shift = page_size.bit_length() - 1
        pages = []
        for start, end in ranges:
            if start % page_size or end % page_size or end < start:
                raise UnrepresentableError(
                    f"range {start:#x}-{end:#x} is not page aligned",
                    phys=start,
                    expected=f"multiples of {page_size:#x}",
                )
            for pfn, order in split_aligned(start >> shift, (end - start) >> shift, max_order):
                pages.append((pfn << shift, order))
        return cls.from_pages(page_size, pages)

    def _set(self, order: int, starts: np.ndarray, counts: np.ndarray) -> None:
        unit = self.page_size << order
        s, c = coalesce_runs(starts, counts, unit)
        if s.size:
            self._runs[order] = (_frozen(s), _frozen(c))
        else:
            self._runs.pop(order, None)

    def add(self, phys: int, order: int, count: int = 1) -> None:
        self.update(PageSet.from_runs(self.page_size, {order: ([phys], [count])}))

    def update(self, other: PageSet) -> None:
        """Union with ``other`` (pages present in both are kept once)."""
        shift = self.page_size.bit_length() - 1
        for order, (s2, c2) in other._runs.items():
            if order not in self._runs:
                self._runs[order] = (s2, c2)  # read-only: shared, never changed in place
                continue
            s1, c1 = self._runs[order]
            # merge via page-index intervals
            sh = U64(shift + order)
            a = np.concatenate([s1 >> sh, s2 >> sh])
            b = np.concatenate([(s1 >> sh) + c1, (s2 >> sh) + c2])
            o = np.argsort(a, kind="stable")
            a, b = merge_sorted_intervals(a[o], b[o])
            self._set(order, a << sh, b - a)

    # -- queries ---------------------------------------------------------------
    @property
    def orders(self) -> list[int]:
        return sorted(self._runs)

    def runs(self, order: int) -> OrderRuns:
        s, c = self._runs.get(order, (np.zeros(0, np.uint64), np.zeros(0, np.uint64)))
        return OrderRuns(order, s, c)

    def iter_runs(self) -> Iterator[OrderRuns]:
        for o in self.orders:
            yield self.runs(o)

    def iter_run_tuples(self) -> Iterator[tuple[int, int, int]]:
        """``(phys, order, count)`` for each run, ascending order then phys."""
        for r in self.iter_runs():
            for s, c in zip(r.starts.tolist(), r.counts.tolist()):
                yield s, r.order, c

    def pages_of_order(self, order: int) -> np.ndarray:
        """Every page address of one order (expands runs: one u64 per page)."""
        r = self.runs(order)
        if r.starts.size == 0:
            return np.zeros(0, np.uint64)
        unit = U64(self.page_size << order)
        total = int(r.counts.sum())
        run_id = np.repeat(np.arange(r.starts.size), r.counts.astype(np.int64))
        offs = np.arange(total, dtype=np.uint64) - np.repeat(
            np.concatenate([[0], np.cumsum(r.counts)[:-1]]).astype(np.uint64), r.counts.astype(np.int64)
        )
        return r.starts[run_id] + offs * unit

    def iter_pages(self) -> Iterator[tuple[int, int]]:
        for o in self.orders:
            for p in self.pages_of_order(o).tolist():
                yield p, o

    def counts_by_order(self) -> dict[int, int]:
        return {o: self.runs(o).pages for o in self.orders}

    @property
    def num_pages(self) -> int:
        return sum(self.counts_by_order().values())

    @property
    def num_runs(self) -> int:
        return sum(s.size for s, _ in self._runs.values())

    @property
    def total_bytes(self) -> int:
        return sum(n * (self.page_size << o) for o, n in self.counts_by_order().items())

    def __len__(self) -> int:
        return self.num_pages

    def __bool__(self) -> bool:
        return bool(self._runs)

    def byte_intervals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All runs as (start, end, order) arrays sorted by start (not merged)."""
        if not self._runs:
            z = np.zeros(0, np.uint64)
            return z, z, np.zeros(0, np.int64)
        starts: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        orders: list[np.ndarray] = []
        for o, (s, c) in self._runs.items():
            starts.append(s)
            ends.append(_run_ends(s, c, self.page_size << o))
            orders.append(np.full(s.size, o, dtype=np.int64))
        if len(starts) == 1:
            return starts[0], ends[0], orders[0]
        all_s, all_e, all_o = np.concatenate(starts), np.concatenate(ends), np.concatenate(orders)
        idx = np.argsort(all_s, kind="stable")
        return all_s[idx], all_e[idx], all_o[idx]

    def range_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Coalesced byte ranges across all orders as (starts, ends) arrays."""
        if len(self._runs) == 1:  # one order: its runs are already merged
            ((o, (s, c)),) = self._runs.items()
            return s, _run_ends(s, c, self.page_size << o)
        out = GrowingPair()
        for ms, me in self._merged_slices():
            out.append(ms, me)
        return out.finish()

    def range_head(self, n: int | None) -> tuple[int, np.ndarray, np.ndarray]:
        """``(number of coalesced ranges, starts, ends of the first n)``
        (``None``: all) without materializing every range: one order's
        runs are its ranges, several orders are merged a slice at a time."""
        if len(self._runs) == 1:
            ((o, (s, c)),) = self._runs.items()
            return int(s.size), s[:n], _run_ends(s[:n], c[:n], self.page_size << o)
        if n is None:
            s, e = self.range_arrays()
            return int(s.size), s, e
        total = 0
        hs: list[np.ndarray] = []
        he: list[np.ndarray] = []
        for ms, me in self._merged_slices():
            if total < n:
                hs.append(ms[: n - total].copy())
                he.append(me[: n - total].copy())
            total += int(ms.size)
        if not hs:
            z = np.zeros(0, np.uint64)
            return 0, z, z
        return total, np.concatenate(hs), np.concatenate(he)

    def _merged_slices(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The coalesced ranges across orders, a slice at a time (a range
        reaching into later slices is held back until it is complete)."""
        pend: tuple[np.ndarray, np.ndarray] | None = None
        for s, e, _ in self._slices():
            s, e = merge_sorted_intervals(s, e)
            if pend is not None:
                # a slice's merged ranges are sorted with rising ends: the
                # first m start inside (or touch) the last range so far
                last_end = int(pend[1][-1])
                m = int(np.searchsorted(s, U64(last_end), side="right"))
                if m:
                    pend[1][-1] = U64(max(last_end, int(e[m - 1])))
                    s, e = s[m:], e[m:]
                if s.size == 0:
                    continue
                yield pend
            pend = (s, e.copy())
        if pend is not None:
            yield pend

    def _slices(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """All runs as (start, end, order) arrays sorted by start (stable over
        the orders' dict order), a slice of the address space at a time: each
        slice holds fewer than ``_SLICE_RUNS`` runs, a run belongs to the slice
        it starts in."""
        items = [(o, s, c) for o, (s, c) in self._runs.items() if s.size]
        if not items:
            return
        step = max(1, _SLICE_RUNS // len(items))
        cuts = np.unique(np.concatenate([s[step::step] for _, s, _ in items]))
        bounds = [None, *cuts.tolist(), None]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            ss: list[np.ndarray] = []
            es: list[np.ndarray] = []
            os_: list[np.ndarray] = []
            for o, s, c in items:
                i = 0 if lo is None else int(np.searchsorted(s, U64(lo), side="left"))
                j = s.size if hi is None else int(np.searchsorted(s, U64(hi), side="left"))
                if j > i:
                    ss.append(s[i:j])
                    es.append(_run_ends(s[i:j], c[i:j], self.page_size << o))
                    os_.append(np.full(j - i, o, dtype=np.int64))
            if not ss:
                continue
            if len(ss) == 1:
                yield ss[0], es[0], os_[0]
                continue
            a, b, k = np.concatenate(ss), np.concatenate(es), np.concatenate(os_)
            idx = np.argsort(a, kind="stable")
            yield a[idx], b[idx], k[idx]

    def ranges(self) -> list[tuple[int, int]]:
        """Coalesced byte ranges ``[start, end)`` across all orders."""
        s, e = self.range_arrays()
        return [(a, 1 << 64 if b == END_OF_SPACE else b) for a, b in zip(s.tolist(), e.tolist())]

    def copy(self) -> PageSet:
        """An independent set.  The run arrays are read-only views, replaced
        (never changed in place) by ``add``/``update``, so they are shared:
        copying a map of millions of runs costs nothing."""
        out = PageSet(self.page_size)
        out._runs = dict(self._runs)
        return out

    def find_overlap(self) -> tuple[int, int, int, int] | None:
        """First pair of runs of different orders that overlap:
        ``(phys_a, order_a, phys_b, order_b)`` or ``None``.  Runs are swept
        a slice at a time (bounded temporaries), carrying the run that ends
        last so far (before the first overlap, runs are disjoint: only it can
        reach into the next slice)."""
        if sum(1 for _, c in self._runs.values() if c.size) < 2:  # runs of one order are disjoint
            return None
        carry: tuple[int, int, int] | None = None  # (start, end, order) of the run ending last so far
        for s, e, o in self._slices():
            if carry is not None and int(s[0]) < carry[1]:
                return carry[0], carry[2], int(s[0]), int(o[0])
            if s.size > 1:
                run_end = np.maximum.accumulate(e)
                bad = np.flatnonzero(s[1:] < run_end[:-1])
                if bad.size:
                    j = int(bad[0]) + 1
                    i = int(np.flatnonzero(e[:j] > s[j])[0])
                    return int(s[i]), int(o[i]), int(s[j]), int(o[j])
            k = int(np.argmax(e))
            if carry is None or int(e[k]) > carry[1]:
                carry = (int(s[k]), int(e[k]), int(o[k]))
        return None

    def overlaps_range(self, start: int, end: int) -> tuple[int, int] | None:
        """First preserved run (phys, order) that intersects ``[start, end)``
        (two binary searches per order, no per-run temporary)."""
        if start >= end or start >= 1 << 64 or end <= 0:
            return None
        start = max(start, 0)
        for o, (s, c) in self._runs.items():
            if s.size == 0:
                continue
            hi = (
                s.size if end >= 1 << 64 else int(np.searchsorted(s, U64(end), side="left"))
            )  # runs starting before end
            j = int(np.searchsorted(s, U64(start), side="right")) - 1  # the run starting at or before start
            if j < 0 or int(s[j]) + int(c[j]) * (self.page_size << o) <= start:
                j += 1
            if j < hi:
                return int(s[j]), o
        return None

    def contains(self, phys: int, order: int) -> bool:
        run = self._runs.get(order)
        if run is None or not 0 <= phys < 1 << 64:
            return False
        s, c = run
        unit = self.page_size << order
        i = int(np.searchsorted(s, U64(phys), side="right")) - 1
        return i >= 0 and phys < int(s[i]) + int(c[i]) * unit and (phys - int(s[i])) % unit == 0

    def contains_many(self, phys: np.ndarray, order: np.ndarray) -> np.ndarray:
        """:meth:`contains` for arrays of addresses and orders (one binary search per order)."""
        phys = np.asarray(phys, dtype=np.uint64)
        order = np.asarray(order, dtype=np.int64)
        out = np.zeros(phys.size, dtype=bool)
        for o, (s, c) in self._runs.items():
            sel = np.flatnonzero(order == o)
            if sel.size == 0 or s.size == 0:
                continue
            p = phys[sel]
            unit = U64(self.page_size << o)
            i = np.searchsorted(s, p, side="right").astype(np.int64) - 1
            j = np.maximum(i, 0)
            d = p - s[j]
            out[sel] = (i >= 0) & (p >= s[j]) & (d // unit < c[j]) & (d % unit == 0)
        return out

    # -- comparison / presentation ----------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PageSet):
            return NotImplemented
        if self.page_size != other.page_size or self.orders != other.orders:
            return False
        return all(
            np.array_equal(self._runs[o][0], other._runs[o][0]) and np.array_equal(self._runs[o][1], other._runs[o][1])
            for o in self.orders
        )

    def difference(self, other: PageSet) -> tuple[PageSet, PageSet]:
        """(pages only in self, pages only in other), per order."""
        only_a: dict[int, np.ndarray] = {}
        only_b: dict[int, np.ndarray] = {}
        for o in sorted(set(self.orders) | set(other.orders)):
            a, b = self.pages_of_order(o), other.pages_of_order(o)
            da, db = np.setdiff1d(a, b, assume_unique=True), np.setdiff1d(b, a, assume_unique=True)
            if da.size:
                only_a[o] = da
            if db.size:
                only_b[o] = db
        return PageSet.from_arrays(self.page_size, only_a), PageSet.from_arrays(self.page_size, only_b)

    def __repr__(self) -> str:
        return f"PageSet(page_size={self.page_size}, pages={self.num_pages}, runs={self.num_runs}, orders={self.counts_by_order()})"
