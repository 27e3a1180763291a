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


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(v: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(v)
    return _POP8[np.ascontiguousarray(v).view(np.uint8)].reshape(-1, 8).sum(axis=1, dtype=np.uint8)


def _bit_positions(mask: np.ndarray) -> np.ndarray:
    """Positions (word index * 64 + bit) of the set bits of a uint64 array, ascending.

    Words holding many bits are unpacked (``flatnonzero`` on a *bool* view
    is several times faster than on uint8); words holding few have their
    lowest set bit peeled off, one round per bit rank, each bit written
    straight to its sorted place (so sparse maps cost per bit, not per word).
    """
    nzw = np.flatnonzero(mask)
    if nzw.size == 0:
        return np.zeros(0, dtype=np.int64)
    vals = mask[nzw].astype(np.uint64, copy=False)
    pc = _popcount(vals)
    total = int(pc.sum(dtype=np.int64))
    if total > 8 * nzw.size:
        if nzw.size * 4 > mask.size:
            le = mask if np.little_endian else mask.astype("<u8")
            return np.flatnonzero(np.unpackbits(le.view(np.uint8), bitorder="little").view(bool))
        sel = np.ascontiguousarray(vals.astype("<u8", copy=False))
        hit = np.flatnonzero(np.unpackbits(sel.view(np.uint8), bitorder="little").view(bool))
        out = nzw[hit >> 6]
        out <<= 6
        out |= hit & 63
        return out
    out = np.empty(total, dtype=np.int64)
    slot = np.cumsum(pc, dtype=np.int64)
    slot -= pc
    base = nzw << 6
    v = vals.copy()
    while v.size:
        low = v & (~v + _ONE)
        out[slot] = base + (np.frexp(low.astype(np.float64))[1] - 1)  # exact: a power of two
        v ^= low
        keep = v != 0
        if not keep.all():
            v, slot, base = v[keep], slot[keep], base[keep]
        slot += 1
    return out


def _run_masks(flat: np.ndarray, w: int, contiguous: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Masks of the first and of the last bit of every run, over the whole
    stack (carries cross word boundaries, and bitmap boundaries only where
    the next bitmap is contiguous)."""
    n = contiguous.size
    ms = np.empty_like(flat)  # run starts: w & ~(w << 1 | carry-in)
    ms[0] = 0
    np.right_shift(flat[:-1], _63, out=ms[1:])
    if not contiguous.all():
        ms[::w][~contiguous] = 0
    ms |= flat << _ONE
    np.invert(ms, out=ms)
    ms &= flat
    ml = np.empty_like(flat)  # run ends: w & ~(w >> 1 | carry-out)
    ml[-1] = 0
    np.left_shift(flat[1:] & _ONE, _63, out=ml[:-1])
    if n > 1 and not contiguous[1:].all():
        ends_at = np.arange(w - 1, (n - 1) * w, w)
        ml[ends_at[~contiguous[1:]]] = 0
    ml |= flat >> _ONE
    np.invert(ml, out=ml)
    ml &= flat
    return ms, ml


_PARALLEL_WORDS = 1 << 16  # below this, threads cost more than they save


def _positions(mask: np.ndarray) -> np.ndarray:
    """:func:`_bit_positions`, split over two threads for big masks, each
    half written straight into its place in the result."""
    if mask.size < _PARALLEL_WORDS:
        return _bit_positions(mask)
    h = mask.size // 2
    first = int(_popcount(mask[:h]).sum(dtype=np.int64))
    total = first + int(_popcount(mask[h:]).sum(dtype=np.int64))
    out = np.empty(total, dtype=np.int64)

    def part(k: int) -> None:
        if k == 0:
            out[:first] = _bit_positions(mask[:h])
        else:
            tail = out[first:]
            tail[:] = _bit_positions(mask[h:])
            tail += h << 6

    list(_executor().map(part, (0, 1)))
    return out


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
    nbits = w * 64
    flat = np.ascontiguousarray(words.astype(np.uint64, copy=False)).reshape(-1)
    bases = np.asarray(bases, dtype=np.uint64)
    contiguous = np.zeros(n, dtype=bool)
    if n > 1:
        contiguous[1:] = bases[1:] == bases[:-1] + U64(nbits)
    ms, ml = _run_masks(flat, w, contiguous)
    if flat.size >= _PARALLEL_WORDS:  # starts on one thread, ends on the other
        starts, lasts = _executor().map(_bit_positions, (ms, ml))
    else:
        starts, lasts = _bit_positions(ms), _bit_positions(ml)
    if starts.size != lasts.size:  # pragma: no cover - impossible by construction
        raise AssertionError("run starts and ends disagree")
    lasts -= starts
    lasts += 1
    if contiguous[1:].all() and int(bases[0]) < 1 << 62:
        starts += np.int64(bases[0])
        return starts.view(np.uint64), lasts.view(np.uint64)
    shift = nbits.bit_length() - 1
    return bases[starts >> shift] + (starts & (nbits - 1)).view(np.uint64), lasts.view(np.uint64)


_EXECUTOR = None


def _executor():
    """One process-wide pool of two threads (numpy releases the GIL)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        from concurrent.futures import ThreadPoolExecutor

        _EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kho-bits")
    return _EXECUTOR


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


def _scatter_toggles(toggles: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Set bits ``a`` then flip bits ``b`` (an end can meet the next run's
    start: they cancel).  Both are ascending, so their halves touch disjoint
    parts of ``toggles``: big inputs go to two threads, a phase at a time."""
    if a.size < (1 << 20):
        toggles[a] = True
        toggles[b] ^= True
        return
    h = a.size // 2

    def set_a(part: slice) -> None:
        toggles[a[part]] = True

    def flip_b(part: slice) -> None:
        toggles[b[part]] ^= True

    halves = (slice(0, h), slice(h, None))
    list(_executor().map(set_a, halves))
    list(_executor().map(flip_b, halves))


def runs_to_bitmaps(first: np.ndarray, length: np.ndarray, nbits: int) -> Tuple[np.ndarray, np.ndarray]:
    """Runs (sorted, non-overlapping bit ranges) -> ``(bitmap ids, packed)``.

    ``packed`` is (m, nbits // 8) uint8, little-endian bit order (bit ``b`` is
    byte ``b // 8``, bit ``b % 8``), one row per touched bitmap id.  Runs are
    marked as toggles at their first and one-past-last bits, then a
    word-level prefix XOR fills them in (no per-bit cumulative sum).  Sparse
    sets are written bit by bit instead.  Whole-array temporaries are kept
    few: at these sizes each one costs its page faults.
    """
    first = np.asarray(first, dtype=np.uint64)
    length = np.asarray(length, dtype=np.uint64)
    if first.size == 0:
        return np.zeros(0, np.uint64), np.zeros((0, nbits // 8), np.uint8)
    if int(first[-1]) + int(length[-1]) > 1 << 63:
        raise ValueError("bit ranges must stay below 2**63")
    shift = nbits.bit_length() - 1
    lo_min = int(first[0]) >> shift
    hi_max = (int(first[-1]) + int(length[-1]) - 1) >> shift  # sorted and disjoint
    span = hi_max - lo_min + 1
    total = int(length.sum(dtype=np.uint64))
    f64 = first.view(np.int64)
    l64 = length.view(np.int64)
    if span * nbits <= max(1 << 28, 4 * total):
        # dense: the touched bitmaps lie close together; address them directly
        ids = None
        a = f64 - np.int64(lo_min << shift)
        nrows = span
    else:
        # sparse: number the touched bitmaps and address them by rank
        lo = f64 >> shift
        hi = (f64 + l64 - 1) >> shift
        new = np.empty(lo.size, dtype=bool)
        new[0] = True
        np.not_equal(lo[1:], lo[:-1], out=new[1:])
        multi = np.flatnonzero(hi > lo)
        if multi.size == 0:
            ids = lo[new].view(np.uint64)
            rank = np.cumsum(new, dtype=np.int64)
            rank -= 1
        else:
            extra = [np.arange(int(lo[i]) + 1, int(hi[i]) + 1, dtype=np.int64) for i in multi.tolist()]
            ids = np.unique(np.concatenate([lo] + extra)).view(np.uint64)
            rank = np.searchsorted(ids.view(np.int64), lo)
        a = rank * nbits + (f64 & (nbits - 1))
        if multi.size:
            # a run crossing into later bitmaps: its end is addressed by the rank of its last bitmap
            a_end = np.searchsorted(ids.view(np.int64), hi) * nbits + ((f64 + l64 - 1) & (nbits - 1)) + 1
        nrows = ids.size
    if total * 32 < nrows * nbits:
        # sparse bits: set them one by one (as 64-bit word ORs), no per-bit scan
        if int(length.max()) == 1:
            pos = a
        else:
            # bits of a run are consecutive in the rank space unless the run crosses
            # into a bitmap that is not the next rank: expand per bitmap piece
            pos = np.repeat(a - np.cumsum(l64) + l64, l64) + np.arange(total, dtype=np.int64)
            if ids is not None and multi.size:
                key = np.repeat(f64 - np.cumsum(l64) + l64, l64) + np.arange(total, dtype=np.int64)
                pos = np.searchsorted(ids.view(np.int64), key >> shift) * nbits + (key & (nbits - 1))
        words = np.zeros(nrows * nbits // 64, dtype=np.uint64)
        np.bitwise_or.at(words, pos >> 6, np.left_shift(_ONE, (pos & 63).astype(np.uint64)))
        rows = words.reshape(nrows, nbits // 64)
    else:
        b = a + l64 if (ids is None or multi.size == 0) else a_end
        toggles = np.zeros(nrows * nbits + 64, dtype=bool)
        _scatter_toggles(toggles, a, b)
        del a, b
        words = np.packbits(toggles, bitorder="little").view("<u8").astype(np.uint64, copy=False)
        del toggles
        rows = _prefix_xor(words)[: nrows * nbits // 64].reshape(nrows, nbits // 64)
    if ids is None:
        keep = np.flatnonzero(rows.any(axis=1))
        ids = U64(lo_min) + keep.astype(np.uint64)
        rows = rows[keep]
    packed = np.ascontiguousarray(rows.astype("<u8", copy=False)).view(np.uint8).reshape(ids.size, nbits // 8)
    return ids, packed
