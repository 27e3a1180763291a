"""Word-level bitmap <-> run conversion, vectorized over many bitmaps at once.

Both memory-map formats are, at the bottom, Linux bitmaps (arrays of
``unsigned long``) whose bit ``b`` stands for page ``base + b``.  These two
routines turn a stack of such bitmaps into runs of consecutive set bits and
back, without one Python object per page:

* :func:`bitmaps_to_runs` finds run starts and ends with shifted word masks
  (``w & ~(w << 1 | carry)``), carrying across word and bitmap boundaries
  when consecutive bitmaps are contiguous, and only unpacks the words that
  hold a start or an end;
* :func:`runs_to_bitmaps` marks ranges with a +1/-1 difference array and a
  cumulative sum, then packs bits.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

U64 = np.uint64
_ONE = U64(1)
_63 = U64(63)


def _bit_positions(mask: np.ndarray) -> np.ndarray:
    """Positions (word index * 64 + bit) of the set bits of a uint64 array, ascending.

    Dense masks are unpacked whole; sparse ones only at their nonzero words.
    (``flatnonzero`` on a *bool* view is several times faster than on uint8.)
    """
    nzw = np.flatnonzero(mask)
    if nzw.size == 0:
        return np.zeros(0, dtype=np.int64)
    if nzw.size * 4 > mask.size:
        le = mask if np.little_endian else mask.astype("<u8")
        return np.flatnonzero(np.unpackbits(le.view(np.uint8), bitorder="little").view(bool))
    sel = np.ascontiguousarray(mask[nzw].astype("<u8", copy=False))
    hit = np.flatnonzero(np.unpackbits(sel.view(np.uint8), bitorder="little").view(bool))
    out = nzw[hit >> 6]
    out <<= 6
    out |= hit & 63
    return out


def _runs_one(flat: np.ndarray, w: int, bases: np.ndarray, contiguous: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Runs in one stack of ``bases.size`` bitmaps of ``w`` words (flattened)."""
    n = bases.size
    m = np.empty_like(flat)  # run starts: w & ~(w << 1 | carry-in)
    m[0] = 0
    np.right_shift(flat[:-1], _63, out=m[1:])
    if not contiguous.all():
        m[::w][~contiguous] = 0
    m |= flat << _ONE
    np.invert(m, out=m)
    m &= flat
    starts = _bit_positions(m)
    m[-1] = 0  # run ends: w & ~(w >> 1 | carry-out)
    np.left_shift(flat[1:] & _ONE, _63, out=m[:-1])
    if n > 1 and not contiguous[1:].all():
        ends_at = np.arange(w - 1, (n - 1) * w, w)
        m[ends_at[~contiguous[1:]]] = 0
    m |= flat >> _ONE
    np.invert(m, out=m)
    m &= flat
    lasts = _bit_positions(m)
    if starts.size != lasts.size:  # pragma: no cover - impossible by construction
        raise AssertionError("run starts and ends disagree")
    nbits = w * 64
    lasts -= starts
    lasts += 1
    if contiguous[1:].all() and int(bases[0]) < 1 << 62:
        starts += np.int64(bases[0])
        return starts.view(np.uint64), lasts.view(np.uint64)
    shift = nbits.bit_length() - 1
    return bases[starts >> shift] + (starts & (nbits - 1)).view(np.uint64), lasts.view(np.uint64)


def bitmaps_to_runs(words: np.ndarray, bases: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Runs of set bits in a stack of bitmaps.

    ``words``: (n, W) uint64 in native numeric value (any byte order dtype);
    ``bases``: (n,) bit index of bit 0 of each bitmap, ascending.  Returns
    ``(first_bit, length)`` arrays in the bases' units, sorted, with runs that
    cross from one bitmap into the next contiguous one merged.
    """
    n, w = words.shape
    if n == 0:
        z = np.zeros(0, np.uint64)
        return z, z
    nbits = U64(w * 64)
    flat = np.ascontiguousarray(words.astype(np.uint64, copy=False)).reshape(-1)
    bases = np.asarray(bases, dtype=np.uint64)
    contiguous = np.zeros(n, dtype=bool)
    if n > 1:
        contiguous[1:] = bases[1:] == bases[:-1] + nbits
    if n < 256:
        return _runs_one(flat, w, bases, contiguous)
    # two halves on two threads (numpy releases the GIL), then stitch the seam
    h = n // 2
    c2 = contiguous[h:].copy()
    c2[0] = False
    parts = [(flat[: h * w], bases[:h], contiguous[:h]), (flat[h * w :], bases[h:], c2)]
    with _pool() as ex:
        (s1, l1), (s2, l2) = ex.map(lambda a: _runs_one(a[0], w, a[1], a[2]), parts)
    if s1.size and s2.size and contiguous[h] and int(s1[-1]) + int(l1[-1]) == int(s2[0]):
        l1[-1] += l2[0]
        s2, l2 = s2[1:], l2[1:]
    return np.concatenate([s1, s2]), np.concatenate([l1, l2])


def _pool():
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=2)


def _prefix_xor(x: np.ndarray) -> np.ndarray:
    """Inclusive prefix XOR over the bits of a uint64 array, in bit order
    (bit b of word k is stream bit 64k + b)."""
    for sh in (1, 2, 4, 8, 16, 32):
        x ^= x << U64(sh)
    # bit 63 now holds each word's parity; odd parity before a word flips it
    par = x >> _63
    carry = np.cumsum(par, dtype=np.uint64) - par
    flip = (carry & _ONE).astype(bool)
    x[flip] = ~x[flip]
    return x


def runs_to_bitmaps(first: np.ndarray, length: np.ndarray, nbits: int) -> Tuple[np.ndarray, np.ndarray]:
    """Runs (sorted, non-overlapping bit ranges) -> ``(bitmap ids, packed)``.

    ``packed`` is (m, nbits // 8) uint8, little-endian bit order (bit ``b`` is
    byte ``b // 8``, bit ``b % 8``), one row per touched bitmap id.  Runs are
    marked as toggles at their first and one-past-last bits, then a
    word-level prefix XOR fills them in (no per-bit cumulative sum).
    """
    first = np.asarray(first, dtype=np.uint64)
    length = np.asarray(length, dtype=np.uint64)
    if first.size == 0:
        return np.zeros(0, np.uint64), np.zeros((0, nbits // 8), np.uint8)
    shift = U64(nbits.bit_length() - 1)
    end = first + length
    lo = first >> shift
    hi = (end - _ONE) >> shift
    lo_min, hi_max = int(lo[0]), int(hi.max())
    span = hi_max - lo_min + 1
    if span * nbits <= max(1 << 28, 4 * int(length.sum())):
        # dense: the touched bitmaps lie close together; address them directly
        ids = None
        base = U64(lo_min) << shift
        a = (first - base).astype(np.int64)
        b = (end - base).astype(np.int64)
        nrows = span
    else:
        # sparse: number the touched bitmaps and address them by rank
        multi = np.flatnonzero(hi > lo)
        extra = [np.arange(int(lo[i]) + 1, int(hi[i]) + 1, dtype=np.uint64) for i in multi.tolist()]
        ids = np.unique(np.concatenate([lo] + extra)) if extra else np.unique(lo)
        mask = U64(nbits - 1)
        a = np.searchsorted(ids, lo).astype(np.int64) * nbits + (first & mask).astype(np.int64)
        last = end - _ONE
        b = np.searchsorted(ids, last >> shift).astype(np.int64) * nbits + (last & mask).astype(np.int64) + 1
        nrows = ids.size
    total = int(length.sum())
    if total * 32 < nrows * nbits:
        # sparse bits: set them one by one (as 64-bit word ORs), no per-bit scan
        starts_pos = a
        offs = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(length.astype(np.int64)) - length.astype(np.int64),
                                                             length.astype(np.int64))
        pos = np.repeat(starts_pos, length.astype(np.int64)) + offs
        words = np.zeros(nrows * nbits // 64, dtype=np.uint64)
        np.bitwise_or.at(words, pos >> 6, np.left_shift(_ONE, (pos & 63).astype(np.uint64)))
        rows = words.reshape(nrows, nbits // 64)
        if ids is None:
            keep = np.flatnonzero(rows.any(axis=1))
            ids = U64(lo_min) + keep.astype(np.uint64)
            rows = rows[keep]
        return ids, np.ascontiguousarray(rows.astype("<u8", copy=False)).view(np.uint8).reshape(ids.size, nbits // 8)
    toggles = np.zeros(nrows * nbits + 64, dtype=bool)
    toggles[a] = True
    toggles[b] ^= True  # an end can meet the next run's start: they cancel
    words = np.packbits(toggles, bitorder="little").view("<u8").astype(np.uint64)
    del toggles
    inside = _prefix_xor(words)[: nrows * nbits // 64]
    rows = inside.reshape(nrows, nbits // 64)
    if ids is None:
        keep = np.flatnonzero(rows.any(axis=1))
        ids = U64(lo_min) + keep.astype(np.uint64)
        rows = rows[keep]
    packed = np.ascontiguousarray(rows.astype("<u8", copy=False)).view(np.uint8).reshape(ids.size, nbits // 8)
    return ids, packed
