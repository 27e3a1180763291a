"""Byte-range set arithmetic on coalesced ``[start, end)`` arrays (memory layer).

The arrays are what :meth:`~kho_formats.memory.pageset.PageSet.range_arrays`
gives: u64, sorted by start, disjoint and not touching, with
:data:`~kho_formats.memory.pageset.END_OF_SPACE` standing for an end of
2**64.  Everything is vectorized (sorts and binary searches over all the
boundaries at once), so two maps of millions of ranges compare in numpy time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .pageset import END_OF_SPACE, merge_sorted_intervals


def _covered(starts: np.ndarray, ends: np.ndarray, points: np.ndarray) -> np.ndarray:
    """For each point, whether it lies in one of the ``[start, end)`` ranges."""
    i = np.searchsorted(starts, points, side="right").astype(np.int64) - 1
    out = np.zeros(points.size, dtype=bool)
    ok = i >= 0
    out[ok] = points[ok] < ends[i[ok]]
    return out


def range_difference(
    starts: np.ndarray, ends: np.ndarray, other_starts: np.ndarray, other_ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The bytes in ``[starts, ends)`` and not in ``[other_starts, other_ends)``,
    as coalesced ``(starts, ends)`` arrays.

    Every boundary of either side cuts the address space into elementary
    intervals, each wholly inside or outside each side; the ones inside the
    first and outside the second are kept and merged where they touch."""
    s = np.asarray(starts, dtype=np.uint64)
    e = np.asarray(ends, dtype=np.uint64)
    if s.size == 0 or np.asarray(other_starts).size == 0:
        return s.copy(), e.copy()
    os_ = np.asarray(other_starts, dtype=np.uint64)
    oe = np.asarray(other_ends, dtype=np.uint64)
    points = np.sort(np.concatenate([s, e, os_, oe]))
    points = points[np.concatenate(([True], points[1:] != points[:-1]))]  # np.unique, minus its cost
    lo, hi = points[:-1], points[1:]
    keep = _covered(s, e, lo) & ~_covered(os_, oe, lo)
    return merge_sorted_intervals(lo[keep], hi[keep])


def range_list(starts: np.ndarray, ends: np.ndarray, limit: int | None = None) -> list[dict[str, int]]:
    """The first ``limit`` ranges (``None``: all) as ``{start, end, size}`` dicts (an end of 2**64 as such)."""
    n = starts.size if limit is None else min(limit, int(starts.size))
    out = []
    for a, b in zip(starts[:n].tolist(), ends[:n].tolist()):
        end = 1 << 64 if b == END_OF_SPACE else b
        out.append({"start": a, "end": end, "size": end - a})
    return out


def range_bytes(starts: np.ndarray, ends: np.ndarray) -> int:
    """How many bytes the ranges cover (an end of 2**64 counted as such)."""
    if starts.size == 0:
        return 0
    total = int((ends - starts).sum(dtype=np.uint64))  # disjoint ranges: below 2**64, no wrap
    if int(ends[-1]) == END_OF_SPACE:
        total += 1
    return total


__all__ = ["range_difference", "range_list", "range_bytes"]


def intersect(ranges: Sequence[tuple[int, int]], covered: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts of sorted, disjoint ``ranges`` inside sorted, disjoint ``covered``."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(ranges) and j < len(covered):
        a, b = max(ranges[i][0], covered[j][0]), min(ranges[i][1], covered[j][1])
        if a < b:
            out.append((a, b))
        if ranges[i][1] < covered[j][1]:
            i += 1
        else:
            j += 1
    return out
