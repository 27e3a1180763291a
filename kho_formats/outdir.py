"""Writing output directories without destroying anything (``-o DIR``).

Every command that writes files (``kho build``, ``kho convert``,
``kho dts -o`` and any later one) goes through :class:`OutputDir`::

    with OutputDir(target, force=args.force, inputs=[args.input]) as out:
        out.write("root.dtb", blob)          # or write into out.path yourself
    out.written                               # the names, in order

The rules:

* a target that exists and is not an empty directory is refused unless
  ``force`` is given; with ``force`` only the files this command writes are
  replaced, nothing else in the directory is touched or deleted;
* a target that is (or whose last component is) a symlink is refused, and
  so is a target equal to or inside one of the ``inputs``, or one that
  would replace an input file;
* files are written into a fresh temporary directory next to the target
  (``.<name>.tmp-XXXX``, created with mode 0700) and then renamed into
  place: a new target is the renamed temporary directory, an existing one
  gets each file by ``os.replace``, which replaces a symlink in the target
  rather than writing through it;
* a failure before the renames leaves the target untouched and removes the
  temporary directory.

Refusals raise :class:`~kho_formats.errors.OutputError`.

The one output guard, :func:`refuse_touching_inputs`, is what every writer
(this module, ``kho capture``'s capture directory, ``kho luo extract``) calls
before it writes and again right before it commits: an output that *is*,
*lies inside* or *holds* any input is refused, ``--force`` included.  Inputs
are the paths the command was given and every file it opened through
:mod:`kho_formats.safeio` (the CLI tracks them per command); they are compared
by ``(st_dev, st_ino)`` after resolving symlinks, so a symlinked, hard-linked
or bind-mounted path to an input is the input.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from .errors import OutputError
from .safeio import MAX_TARGET_ENTRIES, refuse_touching_inputs


def check_output_target(
    target: str | os.PathLike[str], *, force: bool = False, inputs: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """The checks of :class:`OutputDir` before anything is written; returns
    the target as a :class:`~pathlib.Path`."""
    t = Path(os.fspath(target))
    if not os.fspath(t) or t.name in ("", ".", ".."):
        t = Path(os.path.abspath(os.fspath(t)))
    if t.is_symlink():
        raise OutputError(f"{t}: is a symlink; refusing to write through it", expected="a real directory")
    refuse_touching_inputs(t, inputs)
    if t.exists():
        if not t.is_dir():
            raise OutputError(f"{t}: exists and is not a directory")
        if not force:
            try:
                nonempty = any(os.scandir(t))
            except OSError as exc:
                raise OutputError(f"{t}: cannot list the directory ({exc.strerror or exc})") from None
            if nonempty:
                raise OutputError(
                    f"{t}: directory exists and is not empty",
                    expected="a new or empty directory, or --force to replace only the files this command writes",
                )
    return t


class OutputDir:
    """Stage files in a temporary directory next to ``target``; on a clean
    exit of the ``with`` block, move them into ``target`` (see the module doc)."""

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        force: bool = False,
        inputs: Iterable[str | os.PathLike[str]] = (),
    ) -> None:
        self.inputs = [os.fspath(i) for i in inputs]
        self.target = check_output_target(target, force=force, inputs=self.inputs)
        self.force = force
        self.path: Path | None = None
        self.written: list[str] = []

    def __enter__(self) -> OutputDir:
        parent = self.target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=parent))
        except OSError as exc:
            raise OutputError(f"{self.target}: cannot create a directory next to it ({exc.strerror or exc})") from None
        return self

    def write(self, name: str, data: str | bytes) -> None:
        """Write one file (a plain name, no directories) into the staging directory."""
        if self.path is None:
            raise RuntimeError("OutputDir.write outside its with block")
        if not name or name in (".", "..") or "/" in name or "\0" in name or os.sep in name:
            raise OutputError(f"{name!r}: not a plain file name")
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self.write_with(name, lambda f: f.write(raw))

    def write_with(self, name: str, produce: Callable[[BinaryIO], object]) -> None:
        """Write one file by ``produce(file)``: a big file streamed, never held whole."""
        if self.path is None:
            raise RuntimeError("OutputDir.write outside its with block")
        if not name or name in (".", "..") or "/" in name or "\0" in name or os.sep in name:
            raise OutputError(f"{name!r}: not a plain file name")
        fd = os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "wb") as f:
            produce(f)

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self.path is not None
        stage, self.path = self.path, None
        if typ is not None:
            shutil.rmtree(stage, ignore_errors=True)
            return
        try:
            self._commit(stage)
        finally:
            if stage.exists():  # renamed into place when the target was new
                shutil.rmtree(stage, ignore_errors=True)

    def _commit(self, stage: Path) -> None:
        names = sorted(os.listdir(stage))
        for n in names:
            if (stage / n).is_dir() and not (stage / n).is_symlink():
                raise OutputError(f"{n}: a command staged a directory; only files are written")
        # re-check right before the renames: nothing may have appeared meanwhile
        t = check_output_target(self.target, force=self.force, inputs=self.inputs)
        os.chmod(stage, 0o755 & ~_umask())
        if not t.exists():
            try:
                os.rename(stage, t)
            except OSError as exc:
                raise OutputError(f"{t}: cannot move the output into place ({exc.strerror or exc})") from None
            self.written = names
            return
        for n in names:
            dst = t / n
            if dst.is_dir() and not dst.is_symlink():
                raise OutputError(f"{dst}: is a directory; refusing to replace it with a file")
        for n in names:
            try:
                os.replace(stage / n, t / n)  # replaces a symlink, never writes through it
            except OSError as exc:
                raise OutputError(f"{t / n}: cannot move the output into place ({exc.strerror or exc})") from None
            self.written.append(n)


def write_output_file(
    target: str | os.PathLike[str], data: str | bytes, *, inputs: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """Write one output file (``kho dts -o FILE``), the way ``dtc -o FILE``
    does, but safely: an existing regular file is replaced (by a rename of a
    fresh temporary file next to it, so a failure leaves it untouched); a
    target that is a symlink, a directory, or one of ``inputs`` (or inside
    one) is refused with :class:`~kho_formats.errors.OutputError`."""
    t = Path(os.fspath(target))
    if not os.fspath(t) or t.name in ("", ".", ".."):
        raise OutputError(f"{os.fspath(target) or repr('')}: not a file name", expected="-o FILE (or -o - for stdout)")
    if t.is_symlink():
        raise OutputError(f"{t}: is a symlink; refusing to write through it", expected="a regular file")
    if t.is_dir():
        raise OutputError(
            f"{t}: is a directory", expected="a file name (several files go into a directory with -O DIR)"
        )
    if t.exists() and not t.is_file():
        raise OutputError(f"{t}: exists and is not a regular file")
    refuse_touching_inputs(t, inputs)
    raw = data.encode() if isinstance(data, str) else bytes(data)
    parent = t.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{t.name}.tmp-", dir=parent)
    except OSError as exc:
        raise OutputError(f"{t}: cannot create a file next to it ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, t)  # replaces a symlink that appeared meanwhile, never writes through it
    except OSError as exc:
        raise OutputError(f"{t}: cannot write the file ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return t


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


__all__ = ["OutputDir", "check_output_target", "write_output_file", "refuse_touching_inputs", "MAX_TARGET_ENTRIES"]
