"""The first four bytes of many zlib streams, and the first byte of many zstd
frames, at once, in C when a C compiler is there.

The root-FDT scan of a zlib-compressed kdump file needs the first four bytes
of every dumped page.  In Python that is one ``zlib.decompressobj()`` call per
page (about 3-5 us: zlib builds the block's whole decoding tables first); the
small decoder in ``_zhead.c`` (written for this project from RFC 1951) reads
only the dynamic block's code lengths and four literals, for a whole window of
pages in one call.

It is optional and built on first use (:mod:`kho_formats.memory.native`):
:func:`heads` compiles ``_zhead.c`` with the C compiler Python was built with
(``cc`` otherwise) into ``$XDG_CACHE_HOME/kho-formats/native/`` (``~/.cache``
by default; a name with the source's hash, written atomically) and loads it
with :mod:`ctypes`.  Without a compiler, when the build fails, or with
``KHO_FORMATS_NATIVE=0`` in the environment, :func:`available` is False and
the caller inflates in Python.
Installing the package needs nothing more; no zlib headers are needed.

The C code decides only the common case (see the comment at its top) and says
which streams it left alone; those are inflated by :mod:`zlib` as before, so
the heads and the errors are the plain path's (``tests/test_zhead.py``).

For zstd (:func:`zstd_first_bytes`, written from RFC 8878) only the first
output byte is decoded: the first byte of a raw or RLE first block, or the
first literal of a compressed one (raw, RLE or Huffman-coded literals; the
Huffman tree is read and checked, then the first symbol of stream 1).  That is enough to reject a page that cannot
start with the FDT magic; the scan decompresses the others as before.  It
reads only the literals section's start, so a frame damaged further on is
not seen as damaged here (``tests/test_zhead_zstd.py``).

A call over many streams is split over :func:`threads` threads (ctypes lets go
of the GIL while C runs); the answers do not depend on how many.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import numpy as np

from . import native

SOURCE = Path(__file__).with_name("_zhead.c")
#: set to 0 to never build or load the C decoder
ENV = native.ENV
cache_dir = native.cache_dir


def _setup(lib: ctypes.CDLL) -> None:
    p = ctypes.c_void_p
    for name in ("kho_zlib_heads", "kho_zstd_first_bytes"):  # both functions, or neither
        fn = getattr(lib, name)
        fn.argtypes = [p, ctypes.c_int64, p, p, ctypes.c_int64, p, p]
        fn.restype = ctypes.c_int64
    lib.kho_zlib_heads_init.argtypes = []
    lib.kho_zlib_heads_init.restype = None
    lib.kho_zlib_heads_init()


def library() -> ctypes.CDLL | None:
    """The loaded C decoder (built first if need be), or None."""
    return native.library(SOURCE.name, _setup)


def available() -> bool:
    return library() is not None


def heads(buf: np.ndarray, off: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """For each stream ``buf[off[i] : off[i] + size[i]]``: (its first four bytes as a
    big-endian u32, whether it was decided here); None without the C decoder.  The
    streams not decided (``False``) are left to :mod:`zlib`."""
    return _batch("kho_zlib_heads", np.uint32, buf, off, size)


def zstd_first_bytes(buf: np.ndarray, off: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """For each zstd frame ``buf[off[i] : off[i] + size[i]]``: (the first byte it
    decompresses to, whether it was decided here); None without the C decoder.  Only
    that byte is decoded (the first literal of the first block): the caller can reject
    a page that does not start with the FDT magic, and decompresses the others, and
    the frames not decided (``False``), as before."""
    return _batch("kho_zstd_first_bytes", np.uint8, buf, off, size)


#: set to the number of threads a C call may use (default: the CPUs this process may run on, at most 4)
THREADS_ENV = "KHO_FORMATS_THREADS"
#: streams per thread below which one thread decides them all (a thread costs ~50 us)
SPLIT_MIN = 4096


def threads() -> int:
    """Threads one call of the C decoder is split over: ``KHO_FORMATS_THREADS``, else the
    CPUs this process may run on (at most 4).  ctypes lets go of the GIL during the call,
    so the parts run at once."""
    text = os.environ.get(THREADS_ENV, "")
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


def _batch(
    name: str, dtype: type[np.unsignedinteger], buf: np.ndarray, off: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The C function ``name`` over the streams ``buf[off[i] : off[i] + size[i]]``, split over
    :func:`threads` threads: (its answer per stream, as ``dtype``; whether it decided the
    stream), None without the library."""
    lib = library()
    if lib is None:
        return None
    b = np.ascontiguousarray(buf, dtype=np.uint8)
    o = np.ascontiguousarray(off, dtype=np.int64)
    z = np.ascontiguousarray(size, dtype=np.int64)
    n = o.size
    out = np.zeros(n, dtype=dtype)
    status = np.zeros(n, dtype=np.uint8)
    fn = getattr(lib, name)

    def part(a: int, e: int) -> None:
        if e > a:
            fn(
                b.ctypes.data,
                b.size,
                o[a:].ctypes.data,
                z[a:].ctypes.data,
                e - a,
                out[a:].ctypes.data,
                status[a:].ctypes.data,
            )

    k = max(1, min(threads(), n // SPLIT_MIN))
    cuts = [n * i // k for i in range(k + 1)]
    helpers = [threading.Thread(target=part, args=(cuts[i], cuts[i + 1])) for i in range(1, k)]
    for t in helpers:
        t.start()
    part(cuts[0], cuts[1])
    for t in helpers:
        t.join()
    return out, status.view(bool)


__all__ = ["available", "heads", "zstd_first_bytes", "library", "cache_dir", "threads", "SOURCE", "ENV", "THREADS_ENV"]
