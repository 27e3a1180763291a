"""Checked opening of input files: regular files only, sizes checked before reading.

Every file kho-formats reads from a capture, fixture or bundle goes through
these helpers, so that a hostile or careless input cannot make it block, read
gigabytes, or escape the directory it came from:

* the path is ``stat``-ed before it is opened and anything but a regular file
  (a FIFO, socket, device, directory) is refused without being opened;
* it is opened ``O_RDONLY | O_NONBLOCK | O_NOFOLLOW`` (a FIFO swapped in after
  the ``stat`` cannot block the open, a symlink swapped in for the last
  component is not followed) and ``fstat``-ed again: the file read is the one
  checked;
* with ``inside=DIR``, a path that resolves (through symlinks) outside ``DIR``
  is refused: a capture's ``sub_fdts/<name>`` or a bundle's segment cannot
  pull in ``/etc/shadow``;
* :func:`read_regular` refuses files larger than ``max_size`` *before*
  reading a byte; :func:`map_regular` maps the file read-only instead of
  reading it (an 8 GiB sparse file costs nothing until its pages are touched).

API (each raises ``error`` -- :class:`~kho_formats.errors.KhoFormatError` by
default -- naming the file and what it was meant to be):

``open_regular(path, what, *, inside=None, max_size=None, error=...) -> (fd, stat)``
    an open file descriptor (the caller closes it) and its ``fstat``.
``read_regular(path, what, *, inside=None, max_size=SMALL_FILE_LIMIT, error=...) -> bytes``
    the whole file, at most ``max_size`` bytes (``None``: no limit).
``map_regular(path, what, *, inside=None, error=...) -> mmap | bytes``
    a read-only ``mmap`` of the file (``b""`` for an empty file).
``drop_mapped(mm, start, end)``
    ``MADV_DONTNEED`` the whole pages of a read-only file mapping in ``[start, end)``:
    a scan that has read them lets them go from its resident set (not from the page cache).
``confined(path, inside, what, *, error=...) -> Path``
    ``path`` resolved, refused unless it lies inside ``inside``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from . import filecopy
from .errors import KhoFormatError, OutputError

PathLike = str | os.PathLike[str]

#: ``(st_dev, st_ino) -> path`` of every file opened through this module while
#: :func:`tracking_inputs` is active: the output guard
#: (:func:`kho_formats.outdir.refuse_touching_inputs`) refuses an output that
#: is, holds or lies inside any of them, whatever name reached it
_OPENED: list[dict[tuple[int, int], str]] = []


def note_input(path: PathLike, st: os.stat_result) -> None:
    """Record an input file that was opened some other way than :func:`open_regular`."""
    if _OPENED:
        _OPENED[-1].setdefault((st.st_dev, st.st_ino), os.fspath(path))


def opened_inputs() -> dict[tuple[int, int], str]:
    """The inputs recorded since the innermost :func:`tracking_inputs` began (empty outside one)."""
    return dict(_OPENED[-1]) if _OPENED else {}


@contextlib.contextmanager
def tracking_inputs() -> Iterator[dict[tuple[int, int], str]]:
    """Record every input file opened inside the block (the CLI runs each command in one)."""
    _OPENED.append({})
    try:
        yield _OPENED[-1]
    finally:
        _OPENED.pop()


#: default size limit of :func:`read_regular` (root FDTs, sub-blobs, JSON and text side files)
SMALL_FILE_LIMIT = 64 << 20

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def confined(path: PathLike, inside: PathLike, what: str, *, error: type[KhoFormatError] = KhoFormatError) -> Path:
    """``path`` with every symlink resolved; refused unless it lies in ``inside``."""
    try:
        real = Path(path).resolve(strict=False)
        root = Path(inside).resolve(strict=False)
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, NUL bytes
        raise error(f"{os.fspath(path)}: {what} cannot be resolved ({exc})") from None
    if real != root and root not in real.parents:
        raise error(f"{os.fspath(path)}: {what} leads outside {os.fspath(inside)} (to {real})")
    return real


def open_regular(
    path: PathLike,
    what: str,
    *,
    inside: PathLike | None = None,
    max_size: int | None = None,
    error: type[KhoFormatError] = KhoFormatError,
) -> tuple[int, os.stat_result]:
    """Open a regular file for reading (see the module doc); ``(fd, fstat)``."""
    name = os.fspath(path)
    target: PathLike = confined(path, inside, what, error=error) if inside is not None else path
    try:
        before = os.stat(target)
    except FileNotFoundError:
        raise error(f"cannot read {what} {name}: no such file") from None
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {what} {name}: {getattr(exc, 'strerror', None) or exc}") from None
    if not stat.S_ISREG(before.st_mode):
        raise error(f"cannot read {what} {name}: it is {_kind(before.st_mode)}, not a regular file")
    if max_size is not None and before.st_size > max_size:
        raise error(f"{name}: {before.st_size} bytes, more than the {max_size} allowed for {what}")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if inside is not None:
        flags |= getattr(os, "O_NOFOLLOW", 0)  # `target` is resolved: a symlink there now is a swap
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        raise error(f"cannot open {what} {name}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise error(f"{name}: changed while being opened ({_kind(st.st_mode)}), expected {what}")
        if max_size is not None and st.st_size > max_size:
            raise error(f"{name}: {st.st_size} bytes, more than the {max_size} allowed for {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        note_input(name, st)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_regular(
    path: PathLike,
    what: str,
    *,
    inside: PathLike | None = None,
    max_size: int | None = SMALL_FILE_LIMIT,
    error: type[KhoFormatError] = KhoFormatError,
) -> bytes:
    """The bytes of a regular file no larger than ``max_size``."""
    fd, st = open_regular(path, what, inside=inside, max_size=max_size, error=error)
    limit = st.st_size if max_size is None else max_size
    try:
        with os.fdopen(fd, "rb", closefd=True) as fh:
            # read(n) allocates n bytes first: ask for the size stat saw (plus
            # one, to notice growth), not for the limit (64 MiB per JSON file)
            want = min(st.st_size, limit) + 1
            data = fh.read(want)
            if len(data) == want and want <= limit:  # grew since the stat: the rest, up to the limit
                data += fh.read(limit + 1 - want)
    except OSError as exc:
        raise error(f"cannot read {what} {os.fspath(path)}: {exc.strerror or exc}") from None
    if max_size is not None and len(data) > max_size:  # grew since the stat
        raise error(f"{os.fspath(path)}: more than the {max_size} bytes allowed for {what}")
    return data


def drop_mapped(mm: mmap.mmap, start: int, end: int) -> None:
    """``MADV_DONTNEED`` the whole pages of the read-only file mapping ``mm`` in
    ``[start, end)``: they leave this process's resident set (a later read maps
    them again from the page cache).  Where the platform has no ``madvise``,
    nothing happens."""
    if not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    a = max(0, start) // mmap.PAGESIZE * mmap.PAGESIZE
    b = min(len(mm), end)
    if b > a:
        try:
            mm.madvise(mmap.MADV_DONTNEED, a, b - a)
        except (OSError, ValueError):
            pass


def map_regular(
    path: PathLike,
    what: str,
    *,
    inside: PathLike | None = None,
    error: type[KhoFormatError] = KhoFormatError,
) -> mmap.mmap | bytes:
    """A read-only shared mapping of a regular file (``b""`` when it is empty).

    Nothing is read: pages come in from the page cache when touched, so the
    resident size does not grow with the file.  Writes through the mapping
    are impossible (``ACCESS_READ``); the input file is never modified.
    """
    fd, st = open_regular(path, what, inside=inside, error=error)
    try:
        if st.st_size == 0:
            return b""
        try:
            m = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError, OverflowError) as exc:
            raise error(f"cannot map {what} {os.fspath(path)}: {getattr(exc, 'strerror', None) or exc}") from None
        filecopy.remember(m, path, st)  # so that its bytes can be copied file to file (kho luo extract)
        return m
    finally:
        os.close(fd)


# -- the output guard ----------------------------------------------------------------------------------------

#: at most this many entries of an existing target are looked at for hard links of an input
MAX_TARGET_ENTRIES = 100_000


def _real(p: PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(p)))


def _ident(p: PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(p)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _chain(p: Path) -> Iterable[Path]:
    """``p`` and each of its parents."""
    yield p
    yield from p.parents


def refuse_touching_inputs(
    target: PathLike,
    inputs: Iterable[PathLike] = (),
    *,
    error: type[KhoFormatError] = OutputError,
) -> None:
    """Refuse an output ``target`` that is, lies inside or holds an input.

    ``inputs`` are paths (files or directories); every file opened through
    :mod:`~kho_formats.safeio` inside :func:`~kho_formats.safeio.tracking_inputs`
    counts too.  Compared by ``(st_dev, st_ino)`` after resolving symlinks.
    """
    named = [os.fspath(i) for i in inputs]
    ids: dict[tuple[int, int], str] = {}
    for i in named:
        k = _ident(i)
        if k is not None:
            ids.setdefault(k, i)
    for k, i in opened_inputs().items():
        ids.setdefault(k, i)
    if not ids:
        return
    t = Path(os.path.abspath(os.fspath(target)))
    real = _real(t)
    expected = "an output that is not, does not hold and is not inside any input"
    # the target, or a directory it lies in, is an input
    for a in _chain(real):
        k = _ident(a)
        if k in ids:
            rel = "is the input" if a == real else "lies inside the input"
            raise error(f"{t}: output {rel} {ids[k]}", expected=expected)
    tk = _ident(real)
    if tk is None or not real.is_dir():
        return
    # the target holds an input: by path (after symlinks) ...
    for i in dict.fromkeys([*named, *ids.values()]):
        for a in _chain(_real(i)):
            if _ident(a) == tk:
                raise error(f"{t}: output holds the input {i}", expected=expected)
    # ... or by a hard link of an input file somewhere inside it
    seen = 0
    todo = [real]
    while todo:
        d = todo.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                seen += 1
                if seen > MAX_TARGET_ENTRIES:
                    raise error(
                        f"{t}: more than {MAX_TARGET_ENTRIES} entries to check for hard links of an input",
                        expected="a new or small output directory",
                    )
                try:
                    est = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if (est.st_dev, est.st_ino) in ids:
                    i = ids[(est.st_dev, est.st_ino)]
                    raise error(f"{t}: output holds {e.path}, which is the input {i} (a hard link)", expected=expected)
                if e.is_dir(follow_symlinks=False):
                    todo.append(Path(e.path))


__all__ = [
    "SMALL_FILE_LIMIT",
    "confined",
    "open_regular",
    "read_regular",
    "map_regular",
    "drop_mapped",
    "note_input",
    "opened_inputs",
    "tracking_inputs",
    "refuse_touching_inputs",
    "MAX_TARGET_ENTRIES",
]
