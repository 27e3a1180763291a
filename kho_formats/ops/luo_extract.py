"""``kho luo extract``: LUO files' contents out of a capture, into a directory.

Every file whose handler can give its contents (``memfd-v2``) is written to
``DIR/<session>/<token>.bin``: exactly ``size`` bytes, the folios' bytes at
their index, zeros where no folio is (holes are left sparse).  ``<token>``
is the token as 16 lowercase hex digits.  ``DIR/index.json`` lists every
session and file (files of other handlers too, with ``"file": null``).

Session names come from the capture and are untrusted; :func:`safe_name`
maps each to one path component: bytes outside ``[A-Za-z0-9._-]`` (and
``%``), and a leading ``.``, become ``%XX`` (so ``../x`` is ``%2E.%2Fx``,
reversible by percent-decoding), an empty name is ``%``, a name longer
than 120 bytes is cut and gets ``~`` and 16 hex digits of its SHA-256, and
a name met again gets ``~2``, ``~3``, ... (also a token met twice in one
session).  Nothing is written outside ``DIR``: the directory is opened
once and every file is created relative to it (``O_NOFOLLOW``,
``O_EXCL``), so a symlink in ``DIR`` is never followed; an existing non-empty
``DIR`` is refused unless ``force`` (then files are replaced, symlinks
still refused).

Memory stays flat whatever the file size, and the image is read in
address order: a memfd's runs of folios (adjacent in the file and in
memory) are sorted by where they lie in the image file and copied in that
order (:mod:`kho_formats.memory.scatter`): the output is set to its size
first, small runs (an order-0 page cache scattered over memory) are read a
few MiB of the image at a time and written with one ``pwrite`` each at
their file offsets, big runs are copied file to file by the kernel
(``copy_file_range``, as ``cp`` does: :mod:`kho_formats.filecopy`).  A
scattered order-0 memfd is then one sequential read of the image, not a
random read per page.  No image page is mapped, so the resident size
(VmHWM) does not grow with the bytes; what grows with the folio count is a
few numpy arrays (about 19 bytes a folio held by the decoded file, 30-40
more while the runs are sorted).  Where the runs do not all lie in mapped
image files (kdump pages, an image built in memory, memory the image
lacks) the file is copied in its own order from the image's views, as
before, and a missing folio is named in the error.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import filecopy, progress
from .._version import __version__
from ..errors import KhoFormatError
from ..memory import scatter
from ..memory.image import PhysImage
from ..model.clients.digest import pieces
from ..model.clients.luo import LuoState
from ..model.clients.memfd import memfd_max_size
from ..safeio import refuse_touching_inputs

SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
MAX_NAME = 120
SCHEMA = "kho-formats/luo-extract/1"
#: False: every file copied in its own order (the path before :mod:`kho_formats.memory.scatter`; tests compare both)
ADDRESS_ORDER = True


class ExtractError(KhoFormatError):
    """``kho luo extract`` cannot write where it was asked to."""

    kind = "extract"


def safe_name(raw: bytes) -> str:
    """One safe path component for a session name (the module docstring says how)."""
    out = []
    for i, b in enumerate(raw):
        if b in SAFE and not (i == 0 and b == ord(".")):
            out.append(chr(b))
        else:
            out.append(f"%{b:02X}")
    name = "".join(out) or "%"
    if len(name) > MAX_NAME:
        cut = name[: MAX_NAME - 17]
        pct = cut.rfind("%")
        if pct > len(cut) - 3:  # do not cut a %XX escape in two
            cut = cut[:pct]
        name = cut + "~" + hashlib.sha256(raw).hexdigest()[:16]
    return name


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        k += 1
        out = f"{name}~{k}"
    taken.add(out)
    return out


@dataclass
class Written:
    path: str
    size: int


def _open_dir(path: Path, force: bool) -> int:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.mkdir(path, 0o755)
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise ExtractError(f"{path}: is a symlink", expected="a directory (symlinks are not followed)")
    if not stat.S_ISDIR(st.st_mode):
        raise ExtractError(f"{path}: exists and is not a directory", expected="a new or empty directory")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    if os.listdir(fd) and not force:
        os.close(fd)
        raise ExtractError(f"{path}: directory is not empty", expected="a new or empty directory, or --force")
    return fd


def _subdir(parent: int, name: str) -> int:
    try:
        os.mkdir(name, 0o755, dir_fd=parent)
    except FileExistsError:
        pass
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)


def _create(parent: int, name: str, force: bool) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(name, flags, 0o644, dir_fd=parent)
    except FileExistsError:
        if not force:
            raise
        st = os.lstat(name, dir_fd=parent)
        if not stat.S_ISREG(st.st_mode):
            raise ExtractError(f"{name}: exists and is not a regular file (not replaced)") from None
        os.unlink(name, dir_fd=parent)
        return os.open(name, flags, 0o644, dir_fd=parent)


def _write_contents(
    fd: int,
    size: int,
    runs: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    parts: Callable[[], Iterator[tuple[int, memoryview]]],
    image: PhysImage,
    name: str,
    copier: filecopy.Copier,
) -> None:
    bar = progress.current()
    try:
        # the image read in address order, each piece written at its offset (scatter.py says why)
        if runs is not None and ADDRESS_ORDER and scatter.copy_runs(image, fd, size, *runs, copier, update=bar.update):
            return
        for off, data in pieces(parts()):  # each byte once, whatever a folio list repeats
            if off >= size:
                break
            data = data[: size - off]
            copier.write(fd, off, data)  # file to file in the kernel where the image is a mapped file, as cp does
            bar.update(len(data))
        os.ftruncate(fd, size)
    except (OSError, OverflowError) as exc:
        raise ExtractError(
            f"{name}: cannot write {size} bytes ({getattr(exc, 'strerror', None) or exc})",
            expected="a file system that holds a sparse file of that size",
        ) from None


def _check_sizes(luo: LuoState, page_size: int) -> None:
    """Refuse, before anything is written, a file size no kernel preserves
    (the OS calls would fail half way through with an OverflowError or EFBIG)."""
    top = memfd_max_size(page_size)
    for s in luo.sessions:
        for f in s.files:
            if f.decoded is None:
                continue
            size = f.handler.content_size(f.decoded)
            if size is not None and not 0 <= size <= top:
                raise ExtractError(
                    f"session {s.name!r} file {f.token:#x}: size {size:#x} is more than a kernel preserves",
                    phys=getattr(f.decoded, "ser_phys", None),
                    expected=f"at most {top:#x} bytes (UINT_MAX pages of {page_size}, MAX_LFS_FILESIZE)",
                )


def extract(
    luo: LuoState,
    image: PhysImage,
    outdir: str | os.PathLike[str],
    *,
    page_size: int,
    force: bool = False,
    source: str = "",
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> dict[str, Any]:
    """Write every extractable file of ``luo`` under ``outdir``; returns the index (also ``index.json``)."""
    if not luo.read:
        raise ExtractError("LUO state was not read (no memory image)", expected="a capture with its memory image")
    _check_sizes(luo, page_size)
    out = Path(outdir)
    # an output that is, holds or lies inside an input (the --mem image, the capture) is refused, --force included
    refuse_touching_inputs(out, inputs, error=ExtractError)
    root = _open_dir(out, force)
    shown = progress.task("extracting LUO files")  # bytes written; entered here, left with the root fd
    shown.__enter__()
    copier = filecopy.Copier()
    try:
        taken: set[str] = {"index.json"}
        sessions = []
        written = 0
        for s in luo.sessions:
            dname = _unique(safe_name(s.ser.name.partition(b"\0")[0]), taken)
            files = []
            sfd: int | None = None
            tokens: set[str] = set()
            try:
                for f in s.files:
                    entry: dict[str, Any] = {"token": f.token, "compatible": f.compatible, "data": f.data, "file": None}
                    size = f.handler.content_size(f.decoded) if f.decoded is not None else None
                    if f.decoded is not None:
                        entry.update(f.handler.index_json(f.decoded))
                    if f.error is not None:
                        entry["error"] = str(f.error)
                    if size is not None:
                        if sfd is None:
                            sfd = _subdir(root, dname)
                        fname = _unique(f"{f.token:016x}", tokens) + ".bin"
                        fd = _create(sfd, fname, force)
                        try:
                            h, d = f.handler, f.decoded
                            _write_contents(
                                fd,
                                size,
                                h.content_runs(d, page_size),
                                lambda h=h, d=d: h.contents(d, image, page_size),
                                image,
                                f"{dname}/{fname}",
                                copier,
                            )
                        finally:
                            os.close(fd)
                        entry["file"] = f"{dname}/{fname}"
                        written += 1
                    files.append(entry)
            finally:
                if sfd is not None:
                    os.close(sfd)
            sessions.append({"name": s.name, "dir": dname, "files": files})
        index = {
            "schema": SCHEMA,
            "generator": f"kho-formats {__version__}",
            "source": source,
            "compatible": luo.compatible,
            "liveupdate_num": luo.ser.liveupdate_num,
            "serialized": luo.serialized,
            "sessions": sessions,
            "files_written": written,
            "notes": list(luo.notes),
        }
        fd = _create(root, "index.json", force)
        with os.fdopen(fd, "w") as fh:
            json.dump(index, fh, indent=2)
            fh.write("\n")
        return index
    finally:
        copier.close()
        shown.__exit__(None, None, None)
        os.close(root)


__all__ = ["extract", "safe_name", "ExtractError", "SCHEMA"]
