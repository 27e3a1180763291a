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

#: the image's pages asked for this much at a time before a gather (POSIX_FADV_WILLNEED)
PREFETCH_STEP = 64 << 20
#: a gather may read the page cache over this much more than twice the bytes it needs
SPAN_SLACK = 64 << 20
GATHER, ADDRESS = "gather", "address"
#: how small pieces are copied: GATHER (the output in its order), ADDRESS (the image in its order), None: chosen
METHOD: str | None = None

U64 = np.uint64


def _setup(lib: ctypes.CDLL) -> None:
    p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    fn = lib.kho_scatter_copy
    fn.argtypes = [c_int, c_int, p, p, p, i64, p, i64, i64, p, p]
    fn.restype = i64
    ga = lib.kho_gather_copy
    ga.argtypes = [c_int, c_int, p, p, p, i64, p, i64, p, p]
    ga.restype = i64
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


def plan(
    image: PhysImage, off: np.ndarray, phys: np.ndarray, length: np.ndarray, *, keep_order: bool = False
) -> list[Plan] | None:
    """Where in which mapped file each piece ``[phys, phys + length)`` lies,
    sorted by file offset per file (with ``keep_order``, when the pieces lie
    in one file: left in their order); None when a piece is not inside one
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
        if not keep_order:
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
        if keep_order:
            return [Plan(files[0], src, phys, off, length)]
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


def _mem_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes; None where it cannot be read."""
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        return None
    return None


def choose(span: int, needed: int) -> str:
    """The way to copy small pieces that read ``needed`` bytes from ``span``
    bytes of one image file (first to last byte): ``gather`` when the span is
    at most twice what is needed (plus :data:`SPAN_SLACK`) and half of
    MemAvailable (its pages are read into the page cache first); else
    ``address``.  :data:`METHOD` overrides the choice."""
    if METHOD is not None:
        return METHOD
    if span == 0:
        return GATHER
    avail = _mem_available()
    if avail is None or span > avail // 2 or span > 2 * needed + SPAN_SLACK:
        return ADDRESS
    return GATHER


def _small_span(p: Plan, small: np.ndarray) -> tuple[int, int, int]:
    """First byte, byte after the last, and bytes, of the small pieces' source ranges."""
    if not small.any():
        return 0, 0, 0
    src, length = p.src[small], p.length[small]
    return int(src.min()), int((src + length).max()), int(length.sum())


def _prefetch(in_fd: int, lo: int, hi: int) -> None:
    """Ask the kernel to read ``[lo, hi)`` of the image file into the page
    cache, in address order, :data:`PREFETCH_STEP` at a time (a sequential
    read of a cold image, not a random one a page at a time); then tell it
    the reads that follow are random (no readahead around a page that was
    dropped since)."""
    try:
        for a in range(lo, hi, PREFETCH_STEP):
            os.posix_fadvise(in_fd, a, min(PREFETCH_STEP, hi - a), os.POSIX_FADV_WILLNEED)
        os.posix_fadvise(in_fd, 0, 0, os.POSIX_FADV_RANDOM)
    except OSError:
        pass


def _to_address_order(p: Plan) -> None:
    order = np.argsort(p.src, kind="stable")
    _reorder(order, p.src, p.phys, p.dst, p.length)


def _read_all(fd: int, view: memoryview, at: int) -> int:
    """``view`` filled from ``fd`` at ``at``: 0, the errno, or -1 when the file ends first."""
    got = 0
    while got < len(view):
        try:
            r = os.preadv(fd, [view[got:]], at + got)
        except OSError as exc:
            return exc.errno or -1
        if r == 0:
            return -1
        got += r
    return 0


def _write_all(fd: int, view: memoryview, at: int) -> int:
    try:
        while view:
            w = os.pwrite(fd, view, at)
            view, at = view[w:], at + w
    except OSError as exc:
        return exc.errno or -1
    return 0


def _python_gather(
    in_fd: int, out_fd: int, src: np.ndarray, dst: np.ndarray, length: np.ndarray, buf: memoryview
) -> tuple[int, int, bool]:
    """The C gather in Python: the pieces (in output order) read into ``buf``
    one after another, written one buffer at a time."""
    s, d, n = src.tolist(), dst.tolist(), length.tolist()
    i, count, size = 0, len(s), len(buf)
    base = fill = first = 0
    while i < count:
        if fill and (d[i] != base + fill or fill + n[i] > size):
            e = _write_all(out_fd, buf[:fill], base)
            if e:
                return first, e, True
            fill = 0
        if not fill:
            base, first = d[i], i
        rlen, j = n[i], i + 1
        while j < count and s[j] == s[i] + rlen and d[j] == d[i] + rlen and fill + rlen + n[j] <= size:
            rlen, j = rlen + n[j], j + 1
        e = _read_all(in_fd, buf[fill : fill + rlen], s[i])
        if e:
            return i, e, False
        fill, i = fill + rlen, j
    if fill:
        e = _write_all(out_fd, buf[:fill], base)
        if e:
            return first, e, True
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
    # the output ranges to allocate (address order only), found before plan() may reorder the arrays
    cov = _covered(off, length) if lib is not None and off.size and METHOD != GATHER else None
    plans = plan(image, off, phys, length, keep_order=METHOD != ADDRESS)
    if plans is None:
        return False
    method = ADDRESS
    if len(plans) == 1 and METHOD != ADDRESS:  # in the output's order (one file)
        small = plans[0].length < U64(BIG)
        lo, hi, needed = _small_span(plans[0], small)
        del small
        method = choose(hi - lo, needed)
        if method == ADDRESS:
            _to_address_order(plans[0])
    with filecopy.RowReader() as sources:  # the image files, opened once each (read-only)
        fds = []
        for p in plans:
            got = sources.source(p.source)
            if got is None:  # not the file that was mapped any more
                return False
            fds.append(got)
        os.ftruncate(fd, size)
        if method == GATHER:
            _prefetch(fds[0], lo, hi)
        elif lib is not None and cov is not None:
            cov_off, cov_len = cov
            if cov_off.size <= MAX_FALLOCATE:
                cov_off, cov_len = np.ascontiguousarray(cov_off), np.ascontiguousarray(cov_len)
                lib.kho_fallocate_ranges(fd, cov_off.ctypes.data, cov_len.ctypes.data, cov_off.size)  # best effort
        del cov
        buf = np.empty(WINDOW, dtype=np.uint8)
        for p, in_fd in zip(plans, fds):
            if method == ADDRESS:
                try:  # read in order: a larger readahead window
                    os.posix_fadvise(in_fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                except OSError:
                    pass
            big = p.length >= U64(BIG)
            # alternate stretches of small pieces (windowed reads or gathers) and big ones (copy_file_range)
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
                    _small_copy(lib, in_fd, fd, p, c, e, buf, method == GATHER)
                    if update is not None:
                        update(int(p.length[c:e].sum()))
    return True


def _small_copy(
    lib: ctypes.CDLL | None, in_fd: int, out_fd: int, p: Plan, a: int, b: int, buf: np.ndarray, gather: bool
) -> None:
    src, dst, length = p.src[a:b], p.dst[a:b], p.length[a:b]
    if lib is not None:
        src, dst, length = (np.ascontiguousarray(x, dtype=U64) for x in (src, dst, length))
        err, err_write = ctypes.c_int64(0), ctypes.c_int64(0)
        if gather:
            done = lib.kho_gather_copy(
                in_fd,
                out_fd,
                src.ctypes.data,
                dst.ctypes.data,
                length.ctypes.data,
                src.size,
                buf.ctypes.data,
                buf.size,
                ctypes.byref(err),
                ctypes.byref(err_write),
            )
        else:
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
    elif gather:
        done, code, wrote = _python_gather(in_fd, out_fd, src, dst, length, buf.data)
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


__all__ = [
    "ADDRESS",
    "BIG",
    "GATHER",
    "MAX_GAP",
    "WINDOW",
    "Plan",
    "available",
    "choose",
    "copy_runs",
    "library",
    "plan",
]
