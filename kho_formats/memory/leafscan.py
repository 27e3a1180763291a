"""Bitmap leaves to runs in C, when a C compiler is there (memory layer).

:func:`leaf_runs` is :func:`kho_formats.memory.bits.bitmaps_to_runs` for a
stack of bitmaps read where they lie (the radix tree's leaves in a memory
image): one pass of ``_leafscan.c`` over the words, writing each run of set
bits as it is found, the way the kernel's walk hands every set bit to its
callback, instead of numpy's mask, unpack and nonzero passes.

The output grows with the runs found: the C loop stops when the arrays are
nearly full and says where, they are grown (doubled) and the loop goes on,
so memory follows the runs present (at most 32 per 64-bit word read), never
a count the input claims; each growth is charged first (``charge``, e.g.
``Limits.max_runs``).

Built on first use by :mod:`kho_formats.memory.native` (no compiler, a
failed build or ``KHO_FORMATS_NATIVE=0``: :func:`leaf_runs` returns None and
the caller uses the numpy path, which gives the same runs; the tests compare
both on every radix fixture, random trees, both byte orders and 4K/16K/64K
pages).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import native

SOURCE = Path(__file__).with_name("_leafscan.c")
#: free output slots the C loop wants before a nonzero word (a word holds at most 32 runs)
_SLOTS = 33
_SAMPLE = 64


def _setup(lib: ctypes.CDLL) -> None:
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    fn = lib.kho_leaf_runs
    fn.argtypes = [p, i64, p, p, i64, i64, ctypes.c_int, p, p, p, i64, i64]
    fn.restype = i64


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


def leaf_runs(
    words: np.ndarray,
    bases: np.ndarray,
    rows: np.ndarray | None = None,
    *,
    charge: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Runs of set bits of a stack of bitmaps, as ``bitmaps_to_runs(words,
    bases, rows)`` gives them (``(first, length)`` uint64 in the bases' units,
    sorted, runs across contiguous bitmaps joined); None without the C scan.

    ``words``: (m, W) 64-bit words in either byte order; ``rows``: the
    stack's bitmaps as rows of ``words`` (None: every row); ``bases``:
    ascending key of each bitmap's bit 0.  ``charge(k)`` is called with the
    runs found since its last call, before the output grows and at the end
    (it may raise to stop the scan)."""
    lib = library()
    if lib is None:
        return None
    if words.ndim != 2 or words.dtype.itemsize != 8 or words.dtype.kind != "u":
        raise ValueError("leaf_runs wants (m, W) 64-bit unsigned words")
    if words.strides[1] != 8 or words.strides[0] < 0:
        words = np.ascontiguousarray(words)
    w = int(words.shape[1])
    n = int(words.shape[0]) if rows is None else int(rows.size)
    b = np.ascontiguousarray(bases, dtype=np.uint64)
    if b.size != n:
        raise ValueError("one base per bitmap")
    r = None if rows is None else np.ascontiguousarray(rows, dtype=np.int64)
    if n == 0 or w == 0:
        z = np.zeros(0, np.uint64)
        return z, z.copy()
    if r is not None and (int(r.min()) < 0 or int(r.max()) >= words.shape[0]):
        raise IndexError("a bitmap row outside the words")
    swap = int(not words.dtype.isnative)
    cap = max(_SLOTS + 1, _estimate(words, r, n))
    first = np.empty(cap, dtype=np.uint64)
    length = np.empty(cap, dtype=np.uint64)
    pos = ctypes.c_int64(0)
    nout = charged = 0
    done = n * w
    rp = r.ctypes.data if r is not None else None
    while True:
        nout = lib.kho_leaf_runs(
            words.ctypes.data, words.strides[0], rp, b.ctypes.data, n, w, swap,
            ctypes.byref(pos), first.ctypes.data, length.ctypes.data, cap, nout,
        )  # fmt: skip
        if pos.value >= done:
            break
        if charge is not None:
            charge(nout - charged)
            charged = nout
        # the bitmaps left hold at most 32 runs per word: never grow past that
        cap = min(2 * cap, nout + _SLOTS * (done - pos.value) + _SLOTS)
        first.resize(cap, refcheck=False)  # realloc: the runs found stay in place
        length.resize(cap, refcheck=False)
    if charge is not None:
        charge(nout - charged)
    first.resize(nout, refcheck=False)
    length.resize(nout, refcheck=False)
    return first, length


__all__ = ["available", "leaf_runs", "library", "SOURCE"]
