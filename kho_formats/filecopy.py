"""Bytes of a mapped input file copied into an output file by the kernel.

Inputs are mapped, not read (:func:`kho_formats.safeio.map_regular`), so a
memory image's bytes are views of an ``mmap``.  Writing such a view with
``pwrite`` makes the kernel fault the mapping's pages in and copy them from
user memory; ``cp`` instead asks the kernel to copy file to file
(``copy_file_range``), which on the same file system is one in-kernel copy
of page-cache pages (or a reflink).  :class:`Copier` does what ``cp`` does
for any view that lies in a mapping :func:`remember` was told about, and
falls back to ``pwrite`` for everything else (bytes built in memory, lazily
decompressed kdump pages, a pair of file systems that cannot copy between
them), so the output bytes are the same either way.

The source file is opened again by the path it was mapped from and used
only if it is still the same file (``st_dev``, ``st_ino``); no descriptor is
kept open for a mapping that nobody copies from.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import weakref
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import numpy as np


@dataclass(frozen=True)
class MappedFile:
    """Where a mapping came from: the path it was opened by and that file's identity."""

    path: str
    dev: int
    ino: int
    size: int


_MAPPED: weakref.WeakKeyDictionary[mmap.mmap, MappedFile] = weakref.WeakKeyDictionary()

#: copy_file_range errors that mean "not between these files": fall back to pwrite
_NO_COPY = frozenset(
    e
    for e in (
        errno.EXDEV,
        errno.EINVAL,
        errno.ENOSYS,
        errno.EOPNOTSUPP,
        getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
        errno.EBADF,
        errno.EPERM,
        errno.ETXTBSY,
        errno.EOVERFLOW,
    )
)


def remember(m: mmap.mmap, path: str | os.PathLike[str], st: os.stat_result) -> None:
    """Record that ``m`` maps the whole of the regular file ``st`` opened at ``path``."""
    _MAPPED[m] = MappedFile(os.path.abspath(os.fspath(path)), st.st_dev, st.st_ino, st.st_size)


def _address(buf: memoryview | mmap.mmap) -> int:
    return int(np.frombuffer(buf, dtype=np.uint8, count=1).__array_interface__["data"][0])


def file_range(view: memoryview) -> tuple[MappedFile, int] | None:
    """The file and file offset of the bytes ``view`` shows, when it is a
    contiguous byte view of a remembered mapping; else None."""
    obj = view.obj
    if not isinstance(obj, mmap.mmap) or len(view) == 0 or not view.contiguous or view.itemsize != 1:
        return None
    src = _MAPPED.get(obj)
    if src is None:
        return None
    try:
        off = _address(view) - _address(obj)
    except (ValueError, TypeError):  # a closed mapping
        return None
    if off < 0 or off + len(view) > src.size:
        return None
    return src, off


_S = TypeVar("_S", bound="_Sources")


class _Sources:
    """The files behind mapped sources, opened once each and closed on exit (a context manager)."""

    def __init__(self) -> None:
        self._fds: dict[MappedFile, int | None] = {}

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds.values():
            if fd is not None:
                os.close(fd)
        self._fds.clear()

    def source(self, src: MappedFile) -> int | None:
        """A read-only fd of the file behind ``src``, opened once; None when the
        path no longer names the file that was mapped (then read the mapping)."""
        if src not in self._fds:
            self._fds[src] = _open_same(src)  # None: not the file that was mapped any more, use the mapping
        return self._fds[src]


class Copier(_Sources):
    """Writes views into output files, in-kernel where it can (a context manager:
    the sources it opened are closed on exit)."""

    def __init__(self) -> None:
        super().__init__()
        #: bytes copied by copy_file_range, and written by pwrite
        self.copied = 0
        self.written = 0
        self._kernel_copy = hasattr(os, "copy_file_range")

    def write(self, fd: int, offset: int, data: memoryview) -> None:
        """All of ``data`` into ``fd`` at ``offset`` (OS errors of the output propagate)."""
        done = 0
        if self._kernel_copy:
            where = file_range(data)
            sfd = self.source(where[0]) if where is not None else None
            if where is not None and sfd is not None:
                base = where[1]
                try:
                    while done < len(data):
                        got = os.copy_file_range(sfd, fd, len(data) - done, base + done, offset + done)
                        if got <= 0:  # the source shrank under us: the mapping says what is left
                            break
                        done += got
                except OSError as exc:
                    if exc.errno not in _NO_COPY:
                        raise  # the output's own errors (ENOSPC, EFBIG, EIO): as pwrite would raise them
                    if exc.errno == errno.ENOSYS:
                        self._kernel_copy = False
                    else:  # not between these two files: pwrite from the mapping from now on
                        os.close(sfd)
                        self._fds[where[0]] = None
                self.copied += done
        rest = len(data) - done
        while done < len(data):
            done += os.pwrite(fd, data[done:], offset + done)
        self.written += rest


def array_file_range(arr: np.ndarray) -> tuple[MappedFile, int] | None:
    """:func:`file_range` for a C-contiguous numpy view of a remembered
    mapping (``np.frombuffer`` of a memoryview of it, reshaped): the file and
    the file offset of ``arr``'s first byte; else None."""
    base: object = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if not isinstance(base, memoryview) or not arr.flags.c_contiguous or arr.size == 0:
        return None
    where = file_range(base)
    if where is None:
        return None
    try:
        delta = int(arr.__array_interface__["data"][0]) - _address(base)
    except (ValueError, TypeError):
        return None
    if delta < 0 or delta + arr.nbytes > len(base):
        return None
    return where[0], where[1] + delta


class RowReader(_Sources):
    """Rows of a mapped file gathered by ``pread`` into a new buffer, not read
    through the mapping: a gather of pages scattered over a big image then
    maps none of them (the process's resident size stays that of the buffer;
    read through the mapping, every page touched, and the large folio around
    it, would stay mapped).  A context manager: the sources it opened are
    closed on exit."""

    def take(self, rows: np.ndarray, index: np.ndarray) -> np.ndarray:
        """``rows[index]`` (rows: an (m, size) uint8 view) as one flat new
        array: read from the file where ``rows`` lies in a remembered mapping
        (runs of consecutive rows in one ``preadv`` each), else through the
        mapping."""
        size = rows.shape[1] if rows.ndim == 2 else 0
        where = array_file_range(rows) if size and index.size else None
        fd = self.source(where[0]) if where is not None else None
        if where is None or fd is None:
            return rows[index].reshape(-1)
        out = np.empty(index.size * size, dtype=np.uint8)
        view = out.data  # a writable memoryview of the array
        # runs of rows that follow each other in the file: one read each
        brk = np.flatnonzero(index[1:] != index[:-1] + 1) + 1
        starts = np.concatenate(([0], brk)).tolist()
        stops = np.concatenate((brk, [index.size])).tolist()
        first = (index[starts] * size + where[1]).tolist() if starts else []
        preadv = os.preadv
        try:
            for a, b, off in zip(starts, stops, first):
                want = (b - a) * size
                if preadv(fd, [view[a * size : b * size]], off) != want:
                    return rows[index].reshape(-1)  # the file shrank under us: the mapping says what is left
        except OSError:
            return rows[index].reshape(-1)
        return out


def _open_same(src: MappedFile) -> int | None:
    """``src.path`` opened read-only if it is still the file that was mapped, else None."""
    fd: int | None = None
    try:
        fd = os.open(src.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (src.dev, src.ino):
            os.close(fd)  # not the file that was mapped any more: read from the mapping
            fd = None
    except OSError:
        if fd is not None:
            os.close(fd)
        fd = None
    return fd


__all__ = ["Copier", "MappedFile", "RowReader", "array_file_range", "file_range", "remember"]
