"""Bitmaps to runs with bounded memory, charged to a :class:`~kho_formats.limits.Budget`.

A maximally fragmented map (every other page preserved) turns each bitmap
bit pair into one run of 16 bytes (start and count, u64 each): 256 KiB per
4 KiB leaf.  Converting all bitmaps at once and concatenating the pieces
held two copies of the runs at the peak.  Here the bitmaps are converted a
slice at a time (:data:`SLICE_WORDS` bitmap words: at most 2 Mi runs) and
appended to one pair of arrays grown in place, so the peak is the runs
themselves plus one slice, and every slice's runs are charged to
``Limits.max_runs`` before the next slice is converted.
"""

from __future__ import annotations

import numpy as np

from ...limits import Budget
from ...memory.bits import bitmaps_to_runs
from ...memory.leafscan import leaf_runs
from ...memory.pageset import GrowingPair

U64 = np.uint64

#: bitmap words converted per call (512 KiB of bitmap: at most 2 Mi runs, 32 MiB)
SLICE_WORDS = 1 << 16


class RunsBuilder(GrowingPair):
    """Sorted ``(first, length)`` runs appended slice by slice into arrays
    grown in place; a run that ends where the next slice's first run starts
    is joined."""

    def append(self, first: np.ndarray, length: np.ndarray) -> None:
        if first.size and self.size and int(self.a[self.size - 1]) + int(self.b[self.size - 1]) == int(first[0]):
            self.b[self.size - 1] += length[0]
            first, length = first[1:], length[1:]
        if first.size:
            super().append(first, length)


def runs_of_bitmaps(words: np.ndarray, bases: np.ndarray, budget: Budget, what: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~kho_formats.memory.bits.bitmaps_to_runs` of ``words`` a slice at a
    time, each slice's runs charged to ``budget`` (``Limits.max_runs``)
    before the next is converted; or, when it is built, the C scan
    (:func:`~kho_formats.memory.leafscan.leaf_runs`), charged as its output grows.

    ``words``: (n, W) bitmaps; ``bases``: the bit index of bit 0 of each
    row, ascending.  Returns ``(first_bit, length)`` in the bases' units,
    sorted and merged across contiguous bitmaps."""
    got = leaf_runs(words, bases, charge=lambda k: budget.runs_add(k, what))
    if got is not None:  # the C scan: its output grows with the runs found, charged as it grows
        return got
    n, w = int(words.shape[0]), int(words.shape[1])
    step = max(1, SLICE_WORDS // max(1, w))
    if n <= step:
        f, l = bitmaps_to_runs(words, bases)
        budget.runs_add(int(f.size), what)
        return f, l
    acc = RunsBuilder()
    for i in range(0, n, step):
        f, l = bitmaps_to_runs(words[i : i + step], bases[i : i + step])
        budget.runs_add(int(f.size), what)
        acc.append(f, l)
        del f, l
    return acc.finish()


__all__ = ["RunsBuilder", "runs_of_bitmaps", "SLICE_WORDS"]
