"""Word-level bitmap <-> run conversion, vectorized over many bitmaps at once.

Both memory-map formats are, at the bottom, Linux bitmaps (arrays of
``unsigned long``) whose bit ``b`` stands for page ``base + b``.  These two
routines turn a stack of such bitmaps into runs of consecutive set bits and
back, without one Python object per page and without an array as large as
the bitmaps' bit count:

* :func:`bitmaps_to_runs` scans a cache-sized block of bitmaps at a time,
  read where they lie (``rows`` of a bigger array, e.g. leaves in a memory
  image: views, or a block-sized scratch).  Dense stacks: run starts and
  ends from shifted word masks (``w & ~(w << 1 | carry)``), carried across
  blocks and contiguous bitmaps, counted in a first pass and written at
  their ranks into the final arrays in a second.  Sparse stacks: each
  block's nonzero words, whose bits are read a streak of blocks at once and
  grouped into runs of consecutive ones; runs crossing from a sparse streak
  into a dense block are joined afterwards.
* :func:`runs_to_bitmaps` numbers the touched bitmaps, then sets the runs
  64 Ki at a time: close runs as toggles at their ends filled by a
  word-level prefix XOR, sparse runs a word at a time (head, tail and
  all-ones words).

Big inputs are split over two threads (numpy releases the GIL), cut where
the halves touch disjoint words.  Blocks matter here: every fresh
multi-MiB temporary costs its page faults, more than the arithmetic.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .pageset import runs_from_sorted_indexes

U64 = np.uint64
_ONE = U64(1)
_63 = U64(63)


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(v: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(v)
    return _POP8[np.ascontiguousarray(v).view(np.uint8)].reshape(-1, 8).sum(axis=1, dtype=np.uint8)


if hasattr(np, "bitwise_count"):

    def _low_bit_index(low: np.ndarray) -> np.ndarray:
        """Bit index of each power of two in a uint64 array."""
        return np.bitwise_count(low - _ONE).astype(np.int64)

else:  # pragma: no cover - numpy < 2.0

    def _low_bit_index(low: np.ndarray) -> np.ndarray:
        return np.frexp(low.astype(np.float64))[1].astype(np.int64) - 1  # exact: a power of two


def _bit_positions(mask: np.ndarray) -> np.ndarray:
    """Positions (word index * 64 + bit) of the set bits of a uint64 array, ascending.

    Words holding many bits are unpacked (``flatnonzero`` on a *bool* view
    is several times faster than on uint8); words holding few have their
    lowest set bit peeled off, one round per bit rank, each bit written
    straight to its sorted place (so sparse maps cost per bit, not per word;
    a map whose words hold one bit each takes a single round).
    """
    nzw = np.flatnonzero(mask != 0)  # on bool: several times faster than on uint64
    if nzw.size == 0:
        return np.zeros(0, dtype=np.int64)
    return _positions_in_words(nzw, mask[nzw].astype(np.uint64, copy=False), mask)


def _positions_in_words(nzw: np.ndarray, vals: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """:func:`_bit_positions` of the nonzero words ``vals`` (native uint64)
    at the ascending word indexes ``nzw``; ``mask``, when given, is the
    whole array they come from (unpacked whole when most of it is set)."""
    rest = vals & (vals - _ONE)  # each word without its lowest bit
    multi = np.flatnonzero(rest != 0)
    base = nzw << 6
    if multi.size == 0:  # one bit per word
        base += _low_bit_index(vals)
        return base
    pc = _popcount(vals)
    total = int(pc.sum(dtype=np.int64))
    if total > 8 * nzw.size:
        if mask is not None and nzw.size * 4 > mask.size:
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
    out[slot] = base + _low_bit_index(vals ^ rest)
    v, slot, base = rest[multi], slot[multi], base[multi]
    while v.size:
        slot += 1
        low = v & (~v + _ONE)
        out[slot] = base + _low_bit_index(low)
        v ^= low
        keep = np.flatnonzero(v != 0)
        if keep.size < v.size:
            v, slot, base = v[keep], slot[keep], base[keep]
    return out


def _run_masks(flat: np.ndarray, w: int, contiguous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


_BLOCK_WORDS = 1 << 15  # bitmap words per numpy pass (256 KiB): temporaries stay in cache
#: blocks with fewer than one set bit in this many are read bit by bit
_SPARSE_BITS = 8


def _runs_of_block(words: np.ndarray, bases: np.ndarray, contiguous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of one block of bitmaps (first bitmap not continued from before)."""
    n, w = words.shape
    nbits = w * 64
    flat = np.ascontiguousarray(words.astype(np.uint64, copy=False)).reshape(-1)
    if int(_popcount(flat).sum(dtype=np.int64)) * _SPARSE_BITS < flat.size * 64:
        # few bits: their positions, then runs of consecutive ones (runs are
        # about as many as bits, so one scan beats scanning starts and ends)
        return runs_from_sorted_indexes(_in_bases_units(_bit_positions(flat), bases, contiguous, nbits))
    ms, ml = _run_masks(flat, w, contiguous)
    starts, lasts = _bit_positions(ms), _bit_positions(ml)
    if starts.size != lasts.size:  # pragma: no cover - impossible by construction
        raise AssertionError("run starts and ends disagree")
    lasts -= starts
    lasts += 1
    return _in_bases_units(starts, bases, contiguous, nbits), lasts.view(np.uint64)


def _in_bases_units(pos: np.ndarray, bases: np.ndarray, contiguous: np.ndarray, nbits: int) -> np.ndarray:
    """Bit positions in a block of stacked bitmaps -> the bases' units
    (``pos`` is reused when the bitmaps are contiguous)."""
    if contiguous[1:].all() and int(bases[0]) < 1 << 62:
        pos += np.int64(bases[0])
        return pos.view(np.uint64)
    shift = nbits.bit_length() - 1
    return bases[pos >> shift] + (pos & (nbits - 1)).view(np.uint64)


class _Stack:
    """The bitmaps of a stack, read a block at a time: bitmap ``i`` is row
    ``rows[i]`` of ``words`` (row ``i`` when ``rows`` is None).  A block of
    consecutive rows is a view of ``words``; any other block is copied into
    a block-sized scratch, so a map is never gathered whole."""

    def __init__(self, words: np.ndarray, rows: np.ndarray | None) -> None:
        self.words = words
        self.rows = rows
        self.breaks: np.ndarray | None = None
        if rows is not None:
            # breaks[i]: rows that do not follow the one before, up to bitmap i
            step = np.ones(rows.size, dtype=bool)
            np.not_equal(rows[1:], rows[:-1] + 1, out=step[1:])
            step[0] = False
            self.breaks = np.cumsum(step, dtype=np.int64)

    def scratch(self, k: int) -> np.ndarray | None:
        return None if self.rows is None else np.empty((k, self.words.shape[1]), dtype=self.words.dtype)

    def block(self, i: int, j: int, scratch: np.ndarray | None) -> np.ndarray:
        if self.rows is None:
            return self.words[i:j]
        assert self.breaks is not None and scratch is not None
        if self.breaks[j - 1] == self.breaks[i]:
            r = int(self.rows[i])
            return self.words[r : r + j - i]
        out = scratch[: j - i]
        np.take(self.words, self.rows[i:j], axis=0, out=out, mode="clip")  # rows are valid: no bounds pass
        return out

    def word(self, i: int, k: int) -> int:
        """Word ``k`` of bitmap ``i``, as a native integer."""
        return int(self.words[i if self.rows is None else int(self.rows[i]), k])

    def sample(self, idx: np.ndarray) -> np.ndarray:
        return self.words[idx if self.rows is None else self.rows[idx]]


def _runs_of_blocks(
    stack: _Stack, bases: np.ndarray, contiguous: np.ndarray, k: int, lo: int, hi: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    scratch = stack.scratch(k)
    for i in range(lo, hi, k):
        c = contiguous[i : i + k].copy()
        c[0] = False  # a run continued from the block before is joined afterwards
        out.append(_runs_of_block(stack.block(i, min(hi, i + k), scratch), bases[i : i + k], c))
    return out


def _edge_masks(
    stack: _Stack, contiguous: np.ndarray, i: int, j: int, scratch: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block ``[i, j)`` of a dense stack: its words (flat, native uint64)
    and the masks of its runs' first and last bits, with the carries of
    the whole stack (a run continued from the bitmap before the block has
    no start here, one continued into the bitmap after has no end here)."""
    n, w = contiguous.size, stack.words.shape[1]
    flat = np.ascontiguousarray(stack.block(i, j, scratch).astype(np.uint64, copy=False)).reshape(-1)
    c = contiguous[i:j].copy()
    c[0] = False
    ms, ml = _run_masks(flat, w, c)
    if i > 0 and contiguous[i] and int(stack.word(i - 1, w - 1)) >> 63:
        ms[0] &= ~_ONE
    if j < n and contiguous[j] and int(stack.word(j, 0)) & 1:
        ml[-1] &= ~(_ONE << _63)
    return flat, ms, ml


def _count_edges(stack: _Stack, contiguous: np.ndarray, k: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """(run starts, run ends) in each block of ``[lo, hi)``."""
    scratch = stack.scratch(k)
    out = []
    for i in range(lo, hi, k):
        _, ms, ml = _edge_masks(stack, contiguous, i, min(hi, i + k), scratch)
        out.append((int(_popcount(ms).sum(dtype=np.int64)), int(_popcount(ml).sum(dtype=np.int64))))
    return out


def _write_edges(
    stack: _Stack,
    bases: np.ndarray,
    contiguous: np.ndarray,
    k: int,
    lo: int,
    hi: int,
    at: list[tuple[int, int, int, int]],
    first: np.ndarray,
    end: np.ndarray,
) -> None:
    """Second pass over ``[lo, hi)``: each block's run starts written into
    ``first`` and its run ends (one past the last bit) into ``end``, in the
    bases' units, at the ranks counted by the first pass (``at``: starts
    and ends before the block, starts and ends in it); no per-block result
    is kept.  A block of contiguous bitmaps unpacks one mask, its
    transitions (a bit unlike the one before it), which alternate start,
    end, start...: one ``flatnonzero`` per block instead of two."""
    scratch = stack.scratch(k)
    n, w = contiguous.size, stack.words.shape[1]
    nbits = w * 64
    for b, i in enumerate(range(lo, hi, k)):
        j = min(hi, i + k)
        s_at, e_at, s_n, e_n = at[b]
        if contiguous[i + 1 : j].all() and int(bases[i]) < 1 << 62:
            flat = np.ascontiguousarray(stack.block(i, j, scratch).astype(np.uint64, copy=False)).reshape(-1)
            tr = flat << _ONE
            np.bitwise_or(tr[1:], flat[:-1] >> _63, out=tr[1:])
            carry = i > 0 and bool(contiguous[i]) and stack.word(i - 1, w - 1) >> 63
            if carry:
                tr[0] |= _ONE
            tr ^= flat
            le = tr if np.little_endian else tr.astype("<u8")
            pos = np.flatnonzero(np.unpackbits(le.view(np.uint8), bitorder="little").view(bool)).view(np.uint64)
            if carry and not int(flat[0]) & 1:  # the end of a run of the block before: written there
                pos = pos[1:]
            base = bases[i]
            if int(flat[-1]) >> 63 and (j == n or not contiguous[j] or not stack.word(j, 0) & 1):
                end[e_at + e_n - 1] = base + U64((j - i) * nbits)  # a run ends with the block: its end is here
            opened = s_at != e_at  # a run started before the block: its first transition is an end
            starts, ends = (pos[1::2], pos[0::2]) if opened else (pos[0::2], pos[1::2])
            np.add(starts, base, out=first[s_at : s_at + s_n])
            np.add(ends, base, out=end[e_at : e_at + ends.size])
            continue
        _, ms, ml = _edge_masks(stack, contiguous, i, j, scratch)
        shift = nbits.bit_length() - 1
        for mask, out, r, one in ((ms, first, s_at, 0), (ml, end, e_at, 1)):
            bit = _bit_positions(mask)
            dst = out[r : r + bit.size]
            np.add(bases[i:j][bit >> shift], (bit & (nbits - 1)).view(np.uint64), out=dst)
            if one:
                dst += _ONE


def _runs_of_dense_stack(
    stack: _Stack, bases: np.ndarray, contiguous: np.ndarray, k: int, n: int, threads: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Runs of a dense stack written straight into two arrays of their
    final size: a first pass counts each block's run starts and ends (the
    masks are cheap; carries cross blocks, so no run is cut), a second
    recomputes the masks and writes the positions at their ranks.  No
    per-block results are kept and nothing is concatenated: at millions of
    runs, the page faults of those copies cost more than the masks."""
    nblocks = -(-n // k)
    mid = (nblocks + 1) // 2 * k if threads and nblocks > 1 else n
    # the counting pass is cheap: one thread, so the threads meet only once
    # (on a loaded machine every meeting waits for the slower of the two)
    cs = np.array(_count_edges(stack, contiguous, k, 0, n), dtype=np.int64).reshape(-1, 2)
    total = int(cs[:, 0].sum())
    if total != int(cs[:, 1].sum()):  # pragma: no cover - impossible by construction
        raise AssertionError("run starts and ends disagree")
    at = np.cumsum(cs, axis=0) - cs
    first = np.empty(total, dtype=np.uint64)
    last = np.empty(total, dtype=np.uint64)
    if total == 0:
        return first, last
    ranks = [(a, b, c, d) for (a, b), (c, d) in zip(at.tolist(), cs.tolist())]
    if mid < n:
        hb = mid // k
        s_mid, e_mid = int(at[hb, 0]), int(at[hb, 1])  # ranks where the second half starts writing

        def half(r: tuple[int, int, list[tuple[int, int, int, int]], slice]) -> None:
            _write_edges(stack, bases, contiguous, k, r[0], r[1], r[2], first, last)
            own = last[r[3]]  # runs whose start and end this half wrote: lengths now
            own -= first[r[3]]

        jobs = [(0, mid, ranks[:hb], slice(0, e_mid)), (mid, n, ranks[hb:], slice(s_mid, None))]
        list(_executor().map(half, jobs))
        if e_mid < s_mid:  # the run across the cut: started in the first half, ended in the second
            last[e_mid] -= first[e_mid]
        return first, last
    else:
        _write_edges(stack, bases, contiguous, k, 0, n, ranks, first, last)
        last -= first
    return first, last


#: in a sparse stack, a block with more than one nonzero word in this many
#: is scanned with the run masks instead of bit by bit
_SPARSE_WORDS = 8


def _runs_of_sparse_stack(
    stack: _Stack, bases: np.ndarray, contiguous: np.ndarray, k: int, lo: int, hi: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Runs of a stack that looks sparse: each block contributes only its
    nonzero words (index and value: two numpy passes over the block, in
    place when its rows are consecutive), and the bits of a whole streak
    of such blocks are read at once, so the cost per block stays a few
    numpy calls.  A block that turns out dense is scanned with the masks."""
    n_words = stack.words.shape[1]
    nbits = n_words * 64
    scratch = stack.scratch(k)
    flags = np.empty(k * n_words, dtype=bool)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    idx: list[np.ndarray] = []
    val: list[np.ndarray] = []
    first = lo  # first bitmap of the current streak of sparse blocks

    def flush(end: int) -> None:
        if idx:
            nzw = np.concatenate(idx) if len(idx) > 1 else idx[0]
            vals = np.concatenate(val) if len(val) > 1 else val[0]
            pos = _positions_in_words(nzw, vals.astype(np.uint64, copy=False))
            c = contiguous[first:end].copy()
            c[0] = False
            parts.append(runs_from_sorted_indexes(_in_bases_units(pos, bases[first:end], c, nbits)))
        idx.clear()
        val.clear()

    for i in range(lo, hi, k):
        j = min(hi, i + k)
        flat = stack.block(i, j, scratch).reshape(-1)
        f = flags[: flat.size]
        np.not_equal(flat, 0, out=f)
        nz = np.flatnonzero(f)
        if nz.size * _SPARSE_WORDS > flat.size:  # dense after all: its runs from the masks
            flush(i)
            c = contiguous[i:j].copy()
            c[0] = False
            parts.append(_runs_of_block(flat.reshape(j - i, n_words), bases[i:j], c))
            first = j
            continue
        if nz.size:
            val.append(flat[nz])
            nz += (i - first) * n_words
            idx.append(nz)
    flush(hi)
    return parts


_SCAN_WORDS = 1 << 18  # words per pass of a span scan (2 MiB): its bool scratch stays in cache


def _sparse_span_words(stack: _Stack, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The nonzero words of a sparse stack whose bitmaps are ascending rows
    of ``words`` lying close together (leaves between their tables, as a
    tree is placed): the span of rows they cover is scanned in place, once,
    with no copy and a few numpy calls per 2 MiB, and the words of rows
    outside the stack are dropped.  Returns ``(word index in the stack,
    value)``, or None when the rows are not such a span or the stack holds
    more than one nonzero word in ``_SPARSE_WORDS`` after all."""
    words = stack.words
    w = words.shape[1]
    rows = stack.rows
    if not words.flags.c_contiguous or w & (w - 1):
        return None
    if rows is None:
        r0, span = 0, n
    else:
        if rows.size > 1 and not bool(np.all(rows[1:] > rows[:-1])):
            return None
        r0 = int(rows[0])
        span = int(rows[-1]) - r0 + 1
        if span > n + n // 4:
            return None
    flat = words[r0 : r0 + span].reshape(-1)
    limit = n * w // _SPARSE_WORDS
    flags = np.empty(min(flat.size, _SCAN_WORDS), dtype=bool)
    found: list[np.ndarray] = []
    count = 0
    for b in range(0, flat.size, _SCAN_WORDS):
        part = flat[b : b + _SCAN_WORDS]
        f = flags[: part.size]
        np.not_equal(part, 0, out=f)
        nz = np.flatnonzero(f)
        count += nz.size
        if count > limit:
            return None
        if nz.size:
            nz += b
            found.append(nz)
    nzw = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    vals = flat[nzw].astype(np.uint64, copy=False)
    if rows is None:
        return nzw, vals
    wshift = w.bit_length() - 1
    in_stack = np.full(span, -1, dtype=np.int64)
    in_stack[rows - r0] = np.arange(n, dtype=np.int64)
    at = in_stack[nzw >> wshift]
    keep = np.flatnonzero(at >= 0)
    if keep.size < at.size:
        nzw, vals, at = nzw[keep], vals[keep], at[keep]
    at <<= wshift
    at |= nzw & (w - 1)
    return at, vals


def _looks_sparse(stack: _Stack, n: int) -> bool:
    """Whether a sample of the bitmaps holds fewer than one set bit in
    ``_SPARSE_BITS``.  Sparse blocks are many small numpy calls, which two
    threads only slow down (they contend for the GIL)."""
    sample = stack.sample(np.linspace(0, n - 1, min(n, 64)).astype(np.intp)).astype(np.uint64, copy=False)
    return int(_popcount(sample.reshape(-1)).sum(dtype=np.int64)) * _SPARSE_BITS < sample.size * 64


def bitmaps_to_runs(
    words: np.ndarray, bases: np.ndarray, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Runs of set bits in a stack of bitmaps.

    ``words``: (m, W) uint64 in native numeric value (any byte order dtype);
    ``rows``: (n,) the stack's bitmaps as row indexes of ``words`` (None:
    every row, n = m), e.g. leaves where they lie in a memory image, read
    without a whole copy; ``bases``: (n,) bit index of bit 0 of each
    bitmap, ascending.  Returns ``(first_bit, length)`` arrays in the
    bases' units, sorted, with runs that cross from one bitmap into the
    next contiguous one merged.  Bitmaps are scanned a cache-sized block
    at a time, dense stacks on two threads; a run crossing a block
    boundary is joined at the end.
    """
    w = words.shape[1]
    n = words.shape[0] if rows is None else rows.size
    if n == 0:
        z = np.zeros(0, np.uint64)
        return z, z
    stack = _Stack(words, None if rows is None else np.asarray(rows, dtype=np.intp))
    nbits = w * 64
    bases = np.asarray(bases, dtype=np.uint64)
    contiguous = np.zeros(n, dtype=bool)
    if n > 1:
        contiguous[1:] = bases[1:] == bases[:-1] + U64(nbits)
    k = max(1, _BLOCK_WORDS // w)
    if n > k and _looks_sparse(stack, n):
        got = _sparse_span_words(stack, n)
        if got is not None:
            c = contiguous.copy()
            c[0] = False
            pos = _positions_in_words(got[0], got[1])
            parts = [runs_from_sorted_indexes(_in_bases_units(pos, bases, c, nbits))]
        else:
            parts = _runs_of_sparse_stack(stack, bases, contiguous, k, 0, n)
    elif n > k:
        return _runs_of_dense_stack(stack, bases, contiguous, k, n, n * w >= _PARALLEL_WORDS)
    else:
        parts = _runs_of_blocks(stack, bases, contiguous, k, 0, n)
    parts = [p for p in parts if p[0].size]
    if not parts:
        z = np.zeros(0, np.uint64)
        return z, z
    # join runs that end exactly where the next block's first run starts
    for j in range(1, len(parts)):
        ps, pl = parts[j - 1]
        s, l = parts[j]
        if int(ps[-1]) + int(pl[-1]) == int(s[0]):  # parts are fresh arrays: joined in place
            l[0] += pl[-1]
            s[0] = ps[-1]
            parts[j - 1] = (ps[:-1], pl[:-1])
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


_EXECUTOR: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    """One process-wide pool of two threads (numpy releases the GIL)."""
    global _EXECUTOR
    if _EXECUTOR is None:
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


def _store_words(words: np.ndarray, idx: np.ndarray, vals: np.ndarray) -> None:
    """``words[idx] = OR of vals`` per distinct index, for ascending ``idx``
    that may repeat (several runs starting in one word): the last of each
    group is stored, the others ORed in with ``ufunc.at`` (few: only words
    shared by runs)."""
    shared = np.empty(idx.size, dtype=bool)
    shared[-1] = False
    np.equal(idx[1:], idx[:-1], out=shared[:-1])
    dup = np.flatnonzero(shared)
    if dup.size == 0:
        words[idx] = vals
        return
    last = np.flatnonzero(~shared)
    words[idx[last]] = vals[last]
    np.bitwise_or.at(words, idx[dup], vals[dup])


_TWO = U64(2)
_ALL = ~U64(0)


def _fill_runs(words: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Set bits ``[a, b)`` of ``words`` (a flat uint64 bitmap) for sorted,
    disjoint, non-empty runs, a word at a time: each run stores a head word
    (bits from its start), ORs a tail word when it ends in a later word, and
    stores all-ones in the words between.  Cost is per run plus per full
    word, never per bit.  Words past the first one of ``a`` must be zero
    (blocks are filled in ascending order)."""
    last = b - 1
    ws = a >> 6
    we = last >> 6
    # head: bits a&63 .. min(last - 64*ws, 63); 2 << 63 wraps to 0, which still gives the mask
    hi = last - (ws << 6)
    np.minimum(hi, 63, out=hi)
    head = np.left_shift(_TWO, hi.view(np.uint64))
    head -= np.left_shift(_ONE, (a & 63).view(np.uint64))
    # runs come in ascending order, so of the words from here on only the
    # first can hold bits already (the end of an earlier block): head words
    # are stored, not ORed, and that one word's bits put back
    w0 = int(ws[0])
    before = words[w0]
    _store_words(words, ws, head)
    if before:
        words[w0] |= before
    t = np.flatnonzero(we != ws)
    if t.size == 0:
        return
    wt = we[t]
    tail = np.left_shift(_TWO, (last[t] & 63).view(np.uint64))
    tail -= _ONE
    words[wt] |= tail  # tails are strictly ascending: one per word
    span = wt - ws[t] - 1
    f = np.flatnonzero(span > 0)
    if f.size:
        k = span[f]
        n = int(k.sum())
        first = ws[t][f] + 1
        idx = np.repeat(first - (np.cumsum(k) - k), k)
        idx += np.arange(n, dtype=np.int64)
        words[idx] = _ALL


_BLOCK = 1 << 16  # runs per numpy pass: temporaries stay in cache and reuse the heap


#: a block whose runs average at most this many bits of span is filled
#: with toggles and a prefix XOR (cost per bit of span), sparser ones a
#: word at a time (cost per run)
_TOGGLE_BITS_PER_RUN = 64


def _fill_toggles(words: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Set bits ``[a, b)`` of ``words`` for sorted, disjoint runs lying close
    together: toggles at each run's first and one-past-last bit in a
    block-sized bool scratch, packed, then a word-level prefix XOR fills
    the runs in.  Runs are whole inside the block, so no parity carries
    out of it; its first and last words may be shared with neighbours and
    are ORed in.  ``a`` and ``b`` are scratch: they are rebased in place."""
    w0 = int(a[0]) >> 6
    w1 = ((int(b[-1]) - 1) >> 6) + 1
    base = np.int64(w0 << 6)
    a -= base
    b -= base
    toggles = np.zeros((w1 - w0 + 1) * 64, dtype=bool)
    toggles[a] = True
    if np.any(b[:-1] == a[1:]):  # an end meeting the next run's start: the two toggles cancel
        toggles[b] ^= True
    else:
        toggles[b] = True
    x = np.packbits(toggles[: (w1 - w0) * 64], bitorder="little").view("<u8")
    words[w0:w1] |= _prefix_xor(x.astype(np.uint64, copy=False))


def _distinct_rows(f64: np.ndarray, l64: np.ndarray, shift: int) -> tuple[np.ndarray, bool]:
    """Sorted distinct ``f64 >> shift`` of sorted runs, and whether any run
    ``[f64, f64 + l64)`` crosses into a later bitmap; a block at a time."""
    parts = []
    prev = -1
    cross = False
    mask = (1 << shift) - 1
    for i in range(0, f64.size, _BLOCK):
        fb = f64[i : i + _BLOCK]
        lo = fb >> shift
        if not cross:
            off = fb & mask
            off += l64[i : i + _BLOCK]
            cross = bool((off > (mask + 1)).any())
        if int(lo[0]) != prev:
            parts.append(lo[:1])
        chg = np.flatnonzero(lo[1:] != lo[:-1])
        if chg.size:
            chg += 1
            parts.append(lo[chg])
        prev = int(lo[-1])
    return (np.concatenate(parts) if parts else np.zeros(0, np.int64)), cross


def _distinct_rows_parallel(f64: np.ndarray, l64: np.ndarray, shift: int) -> tuple[np.ndarray, bool]:
    """:func:`_distinct_rows` over two halves on two threads, joined."""
    if f64.size < 4 * _BLOCK:
        return _distinct_rows(f64, l64, shift)
    h = f64.size // 2
    (r0, c0), (r1, c1) = _executor().map(lambda s: _distinct_rows(f64[s], l64[s], shift), (slice(0, h), slice(h, None)))
    if r0.size and r1.size and r0[-1] == r1[0]:
        r1 = r1[1:]
    return np.concatenate((r0, r1)), c0 or c1


def _word_disjoint_cut(f64: np.ndarray, l64: np.ndarray) -> int:
    """An index near the middle where a run starts in a later 64-bit word
    than the one before it ends (0 if none is found quickly): two threads
    filling the halves then never write the same word."""
    n = f64.size
    mid = n // 2
    hi = min(n, mid + 4096)
    if mid == 0:
        return 0
    ok = np.flatnonzero((f64[mid:hi] >> 6) > ((f64[mid - 1 : hi - 1] + l64[mid - 1 : hi - 1] - 1) >> 6))
    return mid + int(ok[0]) if ok.size else 0


def _fill_blocks(
    words: np.ndarray, f64: np.ndarray, l64: np.ndarray, shift: int, base: int, ids: np.ndarray | None
) -> None:
    """Set the runs ``[f64, f64 + l64)`` in ``words``, a block of runs at a
    time.  Bits are addressed as ``f64 - base`` (``ids`` None) or, with
    ``ids`` the sorted touched bitmap ids, as rank of the run's bitmap in
    ``ids`` times the bitmap size plus the offset inside it (runs must not
    cross bitmaps then)."""
    for i in range(0, f64.size, _BLOCK):
        fb = f64[i : i + _BLOCK]
        if ids is None:
            a = fb - np.int64(base)
        else:
            lo = fb >> shift
            s = np.flatnonzero(lo[1:] != lo[:-1])
            s += 1
            s = np.concatenate((np.zeros(1, np.int64), s))
            rank0 = int(np.searchsorted(ids, lo[0]))
            gap = lo[s] - np.arange(rank0, rank0 + s.size, dtype=np.int64)
            gap <<= shift
            a = fb - np.repeat(gap, np.diff(s, append=fb.size))
        b = a + l64[i : i + _BLOCK]
        if (int(b[-1]) - int(a[0])) <= _TOGGLE_BITS_PER_RUN * a.size:
            _fill_toggles(words, a, b)
        else:
            _fill_runs(words, a, b)


def _fill_parallel(
    words: np.ndarray, f64: np.ndarray, l64: np.ndarray, shift: int, base: int, ids: np.ndarray | None
) -> None:
    """:func:`_fill_blocks` on two threads for big inputs, cut where the
    halves write disjoint words."""
    cut = _word_disjoint_cut(f64, l64) if f64.size >= 4 * _BLOCK else 0
    if cut == 0:
        _fill_blocks(words, f64, l64, shift, base, ids)
        return
    halves = (slice(0, cut), slice(cut, None))
    list(_executor().map(lambda h: _fill_blocks(words, f64[h], l64[h], shift, base, ids), halves))


def runs_to_bitmaps(first: np.ndarray, length: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs (sorted, non-overlapping bit ranges) -> ``(bitmap ids, packed)``.

    ``packed`` is (m, nbits // 8) uint8, little-endian bit order (bit ``b`` is
    byte ``b // 8``, bit ``b % 8``), one row per touched bitmap id.  Runs are
    first given addresses in a space of touched bitmaps only (the bitmap's
    rank times ``nbits``), then set: dense sets as toggles at each run's
    first and one-past-last bits, filled by a word-level prefix XOR; sparse
    sets a word at a time (:func:`_fill_runs`), at a cost per run, not per
    bit.  Whole-array temporaries are kept few: at these sizes each one
    costs its page faults.
    """
    first = np.asarray(first, dtype=np.uint64)
    length = np.asarray(length, dtype=np.uint64)
    if first.size and not length.all():  # empty runs set nothing
        keep = np.flatnonzero(length)
        first, length = first[keep], length[keep]
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
        nrows = span
        addr: tuple[np.ndarray, np.ndarray, int, np.ndarray | None] = (f64, l64, lo_min << shift, None)
    else:
        # sparse: number the touched bitmaps and address them by rank
        rows, crossing = _distinct_rows_parallel(f64, l64, shift)
        if not crossing:
            ids = rows.view(np.uint64)
            nrows = ids.size
            addr = (f64, l64, 0, ids.view(np.int64))
        else:
            del rows
            lo = f64 >> shift
            hi = (f64 + l64 - 1) >> shift
            cross = np.flatnonzero(hi > lo)
            k = hi[cross] - lo[cross]  # later bitmaps each crossing run covers (distinct per run)
            extra = np.repeat(lo[cross] + 1 - (np.cumsum(k) - k), k) + np.arange(int(k.sum()), dtype=np.int64)
            ids = np.unique(np.concatenate([lo, extra])).view(np.uint64)
            nrows = ids.size
            # a crossing run is contiguous in rank space (every bitmap it covers is numbered)
            a = np.searchsorted(ids.view(np.int64), lo) * nbits + (f64 & (nbits - 1))
            del lo, hi
            addr = (a, l64, 0, None)
    words = np.zeros(nrows * nbits // 64, dtype=np.uint64)
    _fill_parallel(words, addr[0], addr[1], shift, addr[2], addr[3])
    del addr
    rows = words.reshape(nrows, nbits // 64)
    if ids is None:
        keep = np.flatnonzero(rows.any(axis=1))
        ids = U64(lo_min) + keep.astype(np.uint64)
        if keep.size < nrows:
            rows = rows[keep]
    packed = np.ascontiguousarray(rows.astype("<u8", copy=False)).view(np.uint8).reshape(ids.size, nbits // 8)
    return ids, packed
