"""Bitmap leaves to runs in C, when a C compiler is there (memory layer).

:func:`leaf_runs` is :func:`kho_formats.memory.bits.bitmaps_to_runs` for a
stack of bitmaps read where they lie (the radix tree's leaves in a memory
image): one pass of ``_leafscan.c`` over the words, writing each run of set
bits as it is found, the way the kernel's walk hands every set bit to its
callback, instead of numpy's mask, unpack and nonzero passes.

Where the output goes depends on a sample of the bitmaps (64 of them):

* dense stacks (two runs or more per word sampled: the runs written
  outweigh the bitmaps read) are counted first by a C pass, the count
  charged (``charge``, e.g. ``Limits.max_runs``), and the runs written into
  arrays of exactly that size, in two halves on two threads when there are
  a million or more (cut at a bitmap no run crosses into);
* sparser ones are scanned once into arrays sized by the sample's guess;
  the C loop stops when the next word's runs do not fit and says where,
  the arrays grow (doubled, by realloc) and the loop goes on, each growth
  charged first.

Either way memory follows the runs present (at most 32 per 64-bit word
read), never a count the input claims.

Built on first use by :mod:`kho_formats.memory.native` (no compiler, a
failed build or ``KHO_FORMATS_NATIVE=0``: :func:`leaf_runs` returns None and
the caller uses the numpy path, which gives the same runs; the tests compare
both on every fixture, random radix trees and v1 maps, both byte orders and
4K/16K/64K pages: ``tests/test_leafscan.py``).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import native

SOURCE = Path(__file__).with_name("_leafscan.c")
#: runs one 64-bit word can open
_SLOTS = 32
_SAMPLE = 64


def _setup(lib: ctypes.CDLL) -> None:
    p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    stack: list[Any] = [p, i64, p, p, i64, i64, c_int]
    lib.kho_leaf_runs.argtypes = [*stack, i64, p, p, p, i64, i64]
    lib.kho_leaf_runs.restype = i64
    lib.kho_leaf_count.argtypes = [*stack, i64, i64]
    lib.kho_leaf_count.restype = i64


def library() -> ctypes.CDLL | None:
    return native.library(SOURCE.name, _setup)


def available() -> bool:
    return library() is not None


def _estimate(words: np.ndarray, rows: np.ndarray | None, n: int) -> int:
    """Runs a sample of the bitmaps suggests for all ``n`` (run starts per
    word, counted word by word: an upper bound for the sampled ones)."""
    pick = np.linspace(0, n - 1, min(n, _SAMPLE)).astype(np.intp)
    sample = words[pick if rows is None else rows[pick]].astype(np.uint64)
    starts = sample & ~(sample << np.uint64(1))
    if hasattr(np, "bitwise_count"):
        got = int(np.bitwise_count(starts).sum(dtype=np.int64))
    else:  # pragma: no cover - numpy < 2.0
        got = int(np.unpackbits(starts.view(np.uint8)).sum(dtype=np.int64))
    return got * n // pick.size + got // 4 + 4 * _SLOTS


#: runs per word from which the output is sized by a counting pass and written
#: by two threads (the counting pass reads the bitmaps once more: worth it
#: when the runs written outweigh the bitmaps read)
_DENSE_RUNS_PER_WORD = 2
_PARALLEL_RUNS = 1 << 20


class _Scan:
    """One stack of bitmaps as the C functions take it."""

    def __init__(self, lib: ctypes.CDLL, words: np.ndarray, bases: np.ndarray, rows: np.ndarray | None) -> None:
        self.lib = lib
        self.words, self.bases, self.rows = words, bases, rows
        self.n = int(words.shape[0]) if rows is None else int(rows.size)
        self.w = int(words.shape[1])
        swap = int(not words.dtype.isnative)
        rp = rows.ctypes.data if rows is not None else None
        self.args = (words.ctypes.data, words.strides[0], rp, bases.ctypes.data, self.n, self.w, swap)

    def count(self, lo: int, hi: int) -> int:
        return int(self.lib.kho_leaf_count(*self.args, lo, hi))

    def runs(self, hi: int, state: np.ndarray, first: np.ndarray, length: np.ndarray, cap: int, nout: int) -> int:
        return int(
            self.lib.kho_leaf_runs(*self.args, hi, state.ctypes.data, first.ctypes.data, length.ctypes.data, cap, nout)
        )

    def native(self, idx: np.ndarray, word: int) -> np.ndarray:
        rows = idx if self.rows is None else self.rows[idx]
        return self.words[rows, word].astype(np.uint64)

    def cut(self) -> int:
        """A leaf near the middle that no run crosses into (0: none found)."""
        n, nbits = self.n, self.w * 64
        lo, hi = n // 2, min(n, n // 2 + 256)
        if lo < 1:
            return 0
        i = np.arange(lo, hi)
        cont = self.bases[i] == self.bases[i - 1] + np.uint64(nbits)
        cross = cont & ((self.native(i - 1, -1) >> np.uint64(63)) == 1) & ((self.native(i, 0) & np.uint64(1)) == 1)
        ok = np.flatnonzero(~cross)
        return int(i[ok[0]]) if ok.size else 0


def _new_state(start: int) -> np.ndarray:
    """The scan's state: position, runs closed, leaves holding bits, the last of them."""
    return np.array([start, 0, 0, -1], dtype=np.int64)


def _exact(
    scan: _Scan, charge: Callable[[int], None] | None, threads: bool, stats: dict[str, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Count, allocate the runs' exact size, write (two halves on two threads)."""
    from .bits import _executor

    n = scan.n
    cut = scan.cut() if threads else 0
    parts = [(0, cut), (cut, n)] if cut else [(0, n)]
    counts = list(_executor().map(lambda r: scan.count(*r), parts)) if cut else [scan.count(0, n)]
    total = sum(counts)
    if charge is not None:
        charge(total)
    first = np.empty(total, dtype=np.uint64)
    length = np.empty(total, dtype=np.uint64)

    nonempty = [0] * len(parts)

    def write(k: int) -> None:
        lo, hi = parts[k]
        at = sum(counts[:k])
        state = _new_state(lo * scan.w)
        got = scan.runs(hi, state, first[at:], length[at:], counts[k], 0)
        if got != counts[k] or int(state[1]) != got or int(state[0]) != hi * scan.w:  # pragma: no cover
            raise AssertionError("the leaf scan wrote other runs than it counted")
        nonempty[k] = int(state[2])

    if cut:
        list(_executor().map(write, range(2)))
    else:
        write(0)
    if stats is not None:
        stats["nonempty"] = sum(nonempty)
    return first, length


def leaf_runs(
    words: np.ndarray,
    bases: np.ndarray,
    rows: np.ndarray | None = None,
    *,
    charge: Callable[[int], None] | None = None,
    stats: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Runs of set bits of a stack of bitmaps, as ``bitmaps_to_runs(words,
    bases, rows)`` gives them (``(first, length)`` uint64 in the bases' units,
    sorted, runs across contiguous bitmaps joined); None without the C scan.

    ``words``: (m, W) 64-bit words in either byte order; ``rows``: the
    stack's bitmaps as rows of ``words`` (None: every row); ``bases``:
    ascending key of each bitmap's bit 0.  ``charge(k)`` is called with the
    runs found since its last call, before the output grows and at the end
    (it may raise to stop the scan).  ``stats``, when given, gets
    ``"nonempty"``: how many of the bitmaps hold a set bit."""
    lib = library()
    if lib is None:
        return None
    if words.ndim != 2 or words.dtype.itemsize != 8 or words.dtype.kind != "u":
        raise ValueError("leaf_runs wants (m, W) 64-bit unsigned words")
    if words.strides[1] != 8 or words.strides[0] < 0:
        words = np.ascontiguousarray(words)
    n = int(words.shape[0]) if rows is None else int(rows.size)
    b = np.ascontiguousarray(bases, dtype=np.uint64)
    if b.size != n:
        raise ValueError("one base per bitmap")
    r = None if rows is None else np.ascontiguousarray(rows, dtype=np.int64)
    if n == 0 or words.shape[1] == 0:
        if stats is not None:
            stats["nonempty"] = 0
        z = np.zeros(0, np.uint64)
        return z, z.copy()
    if r is not None and (int(r.min()) < 0 or int(r.max()) >= words.shape[0]):
        raise IndexError("a bitmap row outside the words")
    scan = _Scan(lib, words, b, r)
    w = scan.w
    est = _estimate(words, r, n)
    if est >= _DENSE_RUNS_PER_WORD * n * w:
        return _exact(scan, charge, est >= _PARALLEL_RUNS, stats)
    cap = max(_SLOTS + 1, est)
    first = np.empty(cap, dtype=np.uint64)
    length = np.empty(cap, dtype=np.uint64)
    state = _new_state(0)
    nout = charged = 0
    done = n * w
    while True:
        nout = scan.runs(n, state, first, length, cap, nout)
        if int(state[0]) >= done:
            break
        if charge is not None:
            charge(nout - charged)
            charged = nout
        # the bitmaps left open at most 32 runs per word: never grow past that
        cap = min(2 * cap, nout + _SLOTS * (done - int(state[0])) + _SLOTS)
        first.resize(cap, refcheck=False)  # realloc: the runs found stay in place
        length.resize(cap, refcheck=False)
    if charge is not None:
        charge(nout - charged)
    if stats is not None:
        stats["nonempty"] = int(state[2])
    first.resize(nout, refcheck=False)
    length.resize(nout, refcheck=False)
    return first, length


__all__ = ["available", "leaf_runs", "library", "SOURCE"]
