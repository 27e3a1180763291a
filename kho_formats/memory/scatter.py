"""Pieces of a memory image written to their places in an output file, the
image read in address order (memory layer).

``kho luo extract`` writes a memfd's folios at their file offsets.  When the
folios are small and scattered over memory (an order-0 page cache: the
folio at file page ``k`` anywhere in the image), reading them in the file's
order reads the image at random, one page at a time: from a disk, a seek per
page.  :func:`copy_runs` instead sorts the pieces by where they lie in the
image file and reads it in order, a window of :data:`WINDOW` bytes at a time
(gaps under :data:`MAX_GAP` read through), asking the kernel for the next
eight windows while one is written (``POSIX_FADV_WILLNEED``; the descriptor
read ``POSIX_FADV_SEQUENTIAL``), so the disk reads while the pages are
written, and writes each
piece with one ``pwrite`` at its file offset (one ``pwritev`` where pieces
follow each other in the output too).  Pieces of :data:`BIG` bytes or more are
copied file to file by the kernel (``copy_file_range``, as ``cp`` does:
:class:`kho_formats.filecopy.Copier`), also in address order.

The output is first set to its size (``ftruncate``) and, where the C helper
is there, the ranges the pieces cover are allocated (``fallocate``: the
holes between them stay holes); a page written into allocated space costs
the file system less than one that needs a block found for it.

The per-piece loop is C (``_scatter.c``, built on first use by
:mod:`kho_formats.memory.native`) when a compiler is there; otherwise, or
with ``KHO_FORMATS_NATIVE=0``, the same loop runs in Python (``preadv`` and
``pwrite``), and writes the same bytes.

Memory: the window buffer and a few 8-byte arrays per piece (its source,
destination and length, and their sort); no image page is mapped.

:func:`copy_runs` copies only when every piece lies in one segment of the
image that is a mapped file still there to be opened; otherwise it returns
False before writing anything and the caller copies the old way (kdump
pages, images built in memory, a piece of memory the image lacks: the caller
then raises the error naming the folio).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import filecopy
from ..errors import ImageError
from . import native
from .image import LazyData, PhysImage, SegmentTable

SOURCE = Path(__file__).with_name("_scatter.c")
#: bytes read from the image at once (the window buffer)
WINDOW = 8 << 20
#: gaps between pieces read through rather than read around
MAX_GAP = 64 << 10
#: pieces this large are copied by the kernel (copy_file_range), one call each
BIG = 1 << 20
#: a big piece is copied this much at a time (the progress bar moves between)
BIG_STEP = 64 << 20
#: pieces handed to one C call (the progress bar moves between calls)
BATCH = 1 << 15
#: at most this many fallocate calls (more: a file of many holes, left to the writes)
MAX_FALLOCATE = 1 << 16

U64 = np.uint64


def _setup(lib: ctypes.CDLL) -> None:
    p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    fn = lib.kho_scatter_copy
    fn.argtypes = [c_int, c_int, p, p, p, i64, p, i64, i64, p, p]
    fn.restype = i64
    fa = lib.kho_fallocate_ranges
    fa.argtypes = [c_int, p, p, i64]
    fa.restype = i64


def library() -> ctypes.CDLL | None:
    return native.library(SOURCE.name, _setup)


def available() -> bool:
    return library() is not None


@dataclass
class Plan:
    """The pieces in the image file's order: source offset, destination offset and length."""

    source: filecopy.MappedFile
    src: np.ndarray
    phys: np.ndarray
    dst: np.ndarray
    length: np.ndarray


def plan(image: PhysImage, off: np.ndarray, phys: np.ndarray, length: np.ndarray) -> list[Plan] | None:
    """Where in which mapped file each piece ``[phys, phys + length)`` lies,
    sorted by file offset per file; None when a piece is not inside one
    segment that is a view of a remembered mapping.  The three arrays
    (uint64) are reordered in place (the plan's arrays are views of them
    when the pieces lie in one file): a few 8-byte arrays per piece alive at
    a time, not a copy of each."""
    if phys.size == 0:
        return []
    if isinstance(getattr(image, "_segs", None), SegmentTable):  # a kdump's lazy pages: never a mapped file
        return None
    segs = image.segments
    if not segs:
        return None
    if np.any(length == 0) or np.any(phys + length <= phys):  # empty, or wrapping past 2**64
        return None
    starts = np.fromiter((s.phys for s in segs), dtype=U64, count=len(segs))
    ends = np.fromiter((s.end for s in segs), dtype=U64, count=len(segs))
    lo_phys, hi_end = int(phys.min()), int((phys + length).max())
    k = int(np.searchsorted(starts, U64(lo_phys), side="right")) - 1
    if k >= 0 and hi_end <= int(ends[k]):  # all in one segment (the usual case): no per-piece segment arrays
        one = _one_file(segs[k].data, segs[k].phys)
        if one is None:
            return None
        order = np.argsort(phys)  # the file offsets' order (phys + one constant); ties cannot reorder a write
        _reorder(order, phys, off, length)
        del order
        src = phys + U64(one[1])
        return [Plan(one[0], src, phys, off, length)]
    seg = np.searchsorted(starts, phys, side="right").astype(np.int64) - 1
    if seg.min() < 0:
        return None
    top = ends[seg]
    top -= phys
    if np.any(length > top):  # reaches past its segment's end
        return None
    del top
    lo, hi = int(seg.min()), int(seg.max())
    used: list[int] = [lo] if lo == hi else (np.flatnonzero(np.bincount(seg - lo)) + lo).tolist()
    base = np.zeros(len(segs), dtype=U64)
    fid = np.zeros(len(segs), dtype=np.int64)
    files: list[filecopy.MappedFile] = []
    for k in used:
        got = _one_file(segs[k].data, segs[k].phys)
        if got is None:
            return None
        if got[0] not in files:
            files.append(got[0])
        fid[int(k)] = files.index(got[0])
        base[int(k)] = got[1]
    src = base[seg]
    src += phys
    if len(files) > 1:  # grouped by file, then in file offset order
        key = fid[seg]
        del seg
        order = np.lexsort((src, key))
        bounds = np.searchsorted(key[order], np.arange(len(files) + 1))
        del key
    else:
        del seg
        order = np.argsort(src, kind="stable")
        bounds = np.array([0, src.size])
    _reorder(order, src, phys, off, length)
    del order
    b = bounds.tolist()
    return [Plan(f, src[b[i] : b[i + 1]], phys[b[i] : b[i + 1]], off[b[i] : b[i + 1]], length[b[i] : b[i + 1]])
            for i, f in enumerate(files)]  # fmt: skip


def _one_file(data: object, seg_phys: int) -> tuple[filecopy.MappedFile, int] | None:
    """The mapped file a segment's bytes are a view of, and ``base`` such
    that file offset = phys + base (modulo 2**64); None if not a mapped file."""
    if isinstance(data, LazyData) or not isinstance(data, memoryview):
        return None
    where = filecopy.file_range(data)
    if where is None or where[1] + len(data) > where[0].size:
        return None
    return where[0], (where[1] - seg_phys) % (1 << 64)


def _reorder(order: np.ndarray, *arrays: np.ndarray) -> None:
    """Each array put in ``order``, in place, through one scratch array."""
    tmp = np.empty(order.size, dtype=U64)
    for arr in arrays:
        np.take(arr, order, out=tmp)
        arr[:] = tmp


def _covered(off: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The output ranges the pieces cover, adjacent ones joined (``off`` ascending, not overlapping)."""
    end = off + length
    brk = np.flatnonzero(off[1:] != end[:-1]) + 1
    first = np.concatenate(([0], brk))
    last = np.concatenate((brk - 1, [off.size - 1]))
    return off[first], end[last] - off[first]


def _python_copy(
    in_fd: int, out_fd: int, src: np.ndarray, dst: np.ndarray, length: np.ndarray, buf: memoryview
) -> tuple[int, int, bool]:
    """The C loop's work in Python: (entries done, errno or -1 or 0, whether the output failed)."""
    s, d, n = src.tolist(), dst.tolist(), length.tolist()
    i, count = 0, len(s)
    while i < count:
        lo, hi = s[i], s[i] + n[i]
        j = i + 1
        while j < count:
            top = max(hi, s[j] + n[j])
            if s[j] > hi + MAX_GAP or top - lo > len(buf):
                break
            hi, j = top, j + 1
        got = 0
        while got < hi - lo:
            try:
                r = os.preadv(in_fd, [buf[got : hi - lo]], lo + got)
            except OSError as exc:
                return i, exc.errno or -1, False
            if r == 0:
                return i, -1, False
            got += r
        for k in range(i, j):
            a = s[k] - lo
            view, at = buf[a : a + n[k]], d[k]
            try:
                while view:
                    w = os.pwrite(out_fd, view, at)
                    view, at = view[w:], at + w
            except OSError as exc:
                return k, exc.errno or -1, True
        i = j
    return count, 0, False


def copy_runs(
    image: PhysImage,
    fd: int,
    size: int,
    off: np.ndarray,
    phys: np.ndarray,
    length: np.ndarray,
    copier: filecopy.Copier,
    *,
    update: Callable[[int], None] | None = None,
    use_native: bool | None = None,
) -> bool:
    """Write ``size`` bytes into ``fd`` (a new, empty file): piece ``i`` is
    ``length[i]`` image bytes from ``phys[i]`` at file offset ``off[i]``
    (ascending, not overlapping, inside ``size``; uint64 arrays, reordered
    in place), zeros elsewhere (holes).
    False, before anything is written, when the pieces are not all in mapped
    files of the image (the caller then copies them another way).

    OS errors of the output propagate as :class:`OSError`; the image file
    failing to read raises :class:`ImageError`.  ``update(n)`` is told the
    bytes written as they go; ``use_native`` False forces the Python loop."""
    off, phys, length = (np.asarray(x, dtype=U64) for x in (off, phys, length))
    lib = library() if use_native is not False else None
    # the output ranges to allocate, found before plan() reorders the arrays
    cov = _covered(off, length) if lib is not None and off.size else None
    plans = plan(image, off, phys, length)
    if plans is None:
        return False
    with filecopy.RowReader() as sources:  # the image files, opened once each (read-only)
        fds = []
        for p in plans:
            got = sources.source(p.source)
            if got is None:  # not the file that was mapped any more
                return False
            fds.append(got)
        os.ftruncate(fd, size)
        if lib is not None and cov is not None:
            cov_off, cov_len = cov
            if cov_off.size <= MAX_FALLOCATE:
                cov_off, cov_len = np.ascontiguousarray(cov_off), np.ascontiguousarray(cov_len)
                lib.kho_fallocate_ranges(fd, cov_off.ctypes.data, cov_len.ctypes.data, cov_off.size)  # best effort
        buf = np.empty(WINDOW, dtype=np.uint8)
        for p, in_fd in zip(plans, fds):
            try:  # read in order: a larger readahead window
                os.posix_fadvise(in_fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError:
                pass
            big = p.length >= U64(BIG)
            # alternate stretches of small pieces (windowed reads) and big ones (copy_file_range), in address order
            brk = np.flatnonzero(big[1:] != big[:-1]) + 1
            bounds = np.concatenate(([0], brk, [big.size])).tolist()
            for a, b in zip(bounds[:-1], bounds[1:]):
                if big[a]:
                    for s, d, n in zip(p.phys[a:b].tolist(), p.dst[a:b].tolist(), p.length[a:b].tolist()):
                        for k in range(0, n, BIG_STEP):  # file to file in the kernel where it can, as cp does
                            m = min(BIG_STEP, n - k)
                            copier.write(fd, d + k, image.view(s + k, m, "memfd folio"))
                            if update is not None:
                                update(m)
                    continue
                for c in range(a, b, BATCH):
                    e = min(b, c + BATCH)
                    _small_copy(lib, in_fd, fd, p, c, e, buf)
                    if update is not None:
                        update(int(p.length[c:e].sum()))
    return True


def _small_copy(lib: ctypes.CDLL | None, in_fd: int, out_fd: int, p: Plan, a: int, b: int, buf: np.ndarray) -> None:
    src, dst, length = p.src[a:b], p.dst[a:b], p.length[a:b]
    if lib is not None:
        src, dst, length = (np.ascontiguousarray(x, dtype=U64) for x in (src, dst, length))
        err, err_write = ctypes.c_int64(0), ctypes.c_int64(0)
        done = lib.kho_scatter_copy(
            in_fd,
            out_fd,
            src.ctypes.data,
            dst.ctypes.data,
            length.ctypes.data,
            src.size,
            buf.ctypes.data,
            buf.size,
            MAX_GAP,
            ctypes.byref(err),
            ctypes.byref(err_write),
        )
        code, wrote = int(err.value), bool(err_write.value)
    else:
        done, code, wrote = _python_copy(in_fd, out_fd, src, dst, length, buf.data)
    if done == src.size:
        return
    if wrote:
        raise OSError(code, os.strerror(code))
    at = int(src[done])
    why = "the file ends before it" if code == -1 else os.strerror(code)
    raise ImageError(
        f"{p.source.path}: cannot read {int(length[done])} bytes at file offset {at:#x} ({why})",
        expected="the image file as it was when mapped",
    )


__all__ = ["BIG", "MAX_GAP", "WINDOW", "Plan", "available", "copy_runs", "library", "plan"]
