"""The page cache of one file, for the benchmarks (``scale.py``, ``extract.py``).

:func:`evict` drops one file's pages (``fdatasync`` + ``POSIX_FADV_DONTNEED``:
``/proc/sys/vm/drop_caches`` would take every other user's cache too, and is often
not writable in a container), :func:`warm` reads one through once (what
``cat FILE > /dev/null`` does), :func:`resident` asks ``mincore`` how much of it
is in memory, and :func:`fadvise_works` whether evicting works here at all.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache: written back first (``fdatasync``: a dirty
    page is not dropped), then ``POSIX_FADV_DONTNEED``.  Only this file: the machine's
    other users keep their cache (``/proc/sys/vm/drop_caches`` would take it all, and is
    often not writable in a container)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path: Path) -> None:
    """Read all of ``path`` once (what ``cat path > /dev/null`` does), into the page cache."""
    buf = bytearray(8 << 20)
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass


_MINCORE_WINDOW = 1 << 30


def resident(path: Path) -> float | None:
    """The fraction of ``path``'s pages in the page cache (``mincore`` of a read-only shared
    mapping, 1 GiB at a time); ``None`` where that cannot be asked."""
    import ctypes
    import mmap

    import numpy as np

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mmap_fn, munmap, mincore = libc.mmap, libc.munmap, libc.mincore
    except (OSError, AttributeError):
        return None
    mmap_fn.restype = ctypes.c_void_p
    mmap_fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    size = path.stat().st_size
    ps = mmap.PAGESIZE
    pages = -(-size // ps)
    if pages == 0:
        return 1.0
    held = 0
    vec = np.zeros(_MINCORE_WINDOW // ps, dtype=np.uint8)
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in range(0, size, _MINCORE_WINDOW):
            n = min(_MINCORE_WINDOW, size - off)
            addr = mmap_fn(None, n, mmap.PROT_READ, mmap.MAP_SHARED, fd, off)
            if addr is None or addr == ctypes.c_void_p(-1).value:
                return None
            try:
                if mincore(addr, n, vec.ctypes.data) != 0:
                    return None
            finally:
                munmap(addr, n)
            held += int(np.count_nonzero(vec[: -(-n // ps)] & 1))
    finally:
        os.close(fd)
    return held / pages


def fadvise_works() -> bool:
    """Whether ``evict`` drops a file's pages here (a small file written, read, evicted)."""
    with tempfile.NamedTemporaryFile(prefix="kho-bench-fadvise-") as tf:
        tf.write(b"\x5a" * (1 << 20))
        tf.flush()
        p = Path(tf.name)
        warm(p)
        evict(p)
        got = resident(p)
        return got is not None and got < 0.5
