"""The initramfs of a boot that runs a userspace check (no root needed).

A client whose check needs userspace in the booted kernel (the ``LUO``
client: retrieving sessions and memfds through ``/dev/liveupdate``) names
the files its check reads (:attr:`kho_formats.model.clients.BootRule.initrd`);
the boot then gets an initramfs whose ``/init`` is :file:`luo_check.c` (next
to this module), a static program for the fixture's architecture: for arm64
cross-compiled with Debian's ``gcc-aarch64-linux-gnu`` +
``libc6-dev-arm64-cross``, for x86_64 with ``x86_64-linux-gnu-gcc`` (the
native compiler on an x86_64 host), cached under
``${KHO_KERNEL_CACHE:-~/.cache/kho-formats}/luo-check/<hash>/`` (the hash
covers the source, the compiler's version and the flags).

The archive is written by :func:`newc_archive`, a ``newc`` (``070701``) cpio
writer of its own: directories, regular files and the ``/dev/console``
character device the kernel opens for ``/init`` are plain headers, so no
root, ``mknod`` or ``cpio`` binary is involved.  :func:`read_newc` reads
such an archive back (tests, and ``kho boot --keep`` users).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import BootError

__all__ = [
    "CpioEntry",
    "newc_archive",
    "read_newc",
    "LUO_CHECK_SOURCE",
    "CROSS_CC",
    "COMPILERS",
    "CFLAGS",
    "cross_compiler",
    "luo_check_binary",
    "static_program",
    "initramfs",
]

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"
#: the C source of /init
LUO_CHECK_SOURCE = Path(__file__).with_name("luo_check.c")
#: the arm64 cross compiler (``$KHO_CROSS_CC`` overrides)
CROSS_CC = "aarch64-linux-gnu-gcc"
#: per arch: (compiler, environment override, Debian packages)
COMPILERS = {
    "arm64": (CROSS_CC, "KHO_CROSS_CC", "gcc-aarch64-linux-gnu libc6-dev-arm64-cross"),
    "x86_64": ("x86_64-linux-gnu-gcc", "KHO_CC_X86_64", "gcc libc6-dev"),
}
CFLAGS = ("-static", "-Os", "-Wall", "-Wextra", "-s")


@dataclass(frozen=True)
class CpioEntry:
    """One archive member: ``name`` without a leading ``/``; ``mode``
    includes the file type (``stat.S_IFREG | 0o755``...); ``rdev`` is
    ``(major, minor)`` of a device node."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)
    mtime: int = 0


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def newc_archive(entries: Iterable[CpioEntry]) -> bytes:
    """A ``newc`` cpio archive of ``entries`` (in order), with the trailer.
    Owner root, one link each, inode numbers from 1; deterministic bytes."""
    out = bytearray()
    ino = 0
    for e in [*entries, CpioEntry(TRAILER, 0)]:
        name = e.name.lstrip("/").encode()
        if not name or b"\0" in name:
            raise ValueError(f"cpio member name {e.name!r}")
        is_trailer = e.name == TRAILER
        if e.data and not stat.S_ISREG(e.mode):
            raise ValueError(f"cpio member {e.name!r}: only a regular file has data")
        ino = 0 if is_trailer else ino + 1
        fields = (
            ino,
            e.mode,
            0,  # uid
            0,  # gid
            0 if is_trailer else (2 if stat.S_ISDIR(e.mode) else 1),  # nlink
            e.mtime,
            len(e.data),
            0,  # dev major
            0,  # dev minor
            e.rdev[0],
            e.rdev[1],
            len(name) + 1,
            0,  # check (newc: always 0)
        )
        hdr = NEWC_MAGIC + b"".join(b"%08X" % v for v in fields)
        out += hdr + name + b"\0"
        out += _pad4(len(hdr) + len(name) + 1)
        out += e.data + _pad4(len(e.data))
    return bytes(out)


def read_newc(data: bytes) -> list[CpioEntry]:
    """The members of a ``newc`` archive up to its trailer (trailer excluded)."""
    out: list[CpioEntry] = []
    at = 0
    while True:
        hdr = data[at : at + 110]
        if len(hdr) < 110 or hdr[:6] != NEWC_MAGIC:
            raise ValueError(f"cpio: no newc header at {at}")
        f = [int(hdr[6 + 8 * k : 14 + 8 * k], 16) for k in range(13)]
        mode, mtime, size, rmaj, rmin, namesize = f[1], f[5], f[6], f[9], f[10], f[11]
        name_end = at + 110 + namesize
        name = data[at + 110 : name_end - 1].decode()
        at = name_end + (-name_end % 4)
        body = data[at : at + size]
        if len(body) < size:
            raise ValueError(f"cpio: member {name!r} is cut short")
        at += size + (-size % 4)
        if name == TRAILER:
            return out
        out.append(CpioEntry(name, mode, body, (rmaj, rmin), mtime))


# -- the /init program ---------------------------------------------------------------------------------------


def cross_compiler(arch: str = "arm64") -> str | None:
    """The compiler for ``arch``'s ``luo_check`` (its override variable, else
    :data:`COMPILERS`' name on PATH), None if missing."""
    cc, env, _ = COMPILERS[arch]
    return shutil.which(os.environ.get(env) or cc)


def _cache_root() -> Path:
    root = os.environ.get("KHO_KERNEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kho-formats")
    return Path(root)


def luo_check_binary(cache: Path | None = None, arch: str = "arm64") -> Path:
    """The static ``luo_check`` for ``arch`` (compiled once per source / compiler / flags)."""
    return static_program(LUO_CHECK_SOURCE, arch, cache)


def static_program(source: Path, arch: str = "arm64", cache: Path | None = None) -> Path:
    """``source`` (a C file next to this module) compiled into a static ``arch``
    program, once per source / compiler / flags, cached under ``<cache>/<stem>/<hash>/``."""
    if arch not in COMPILERS:
        raise BootError(f"no compiler for {source.name} on arch {arch!r}", expected=" or ".join(COMPILERS))
    name, env, pkgs = COMPILERS[arch]
    cc = cross_compiler(arch)
    if cc is None:
        raise BootError(
            f"{os.environ.get(env) or name} not found: {source.name} is compiled for {arch} (apt-get install {pkgs})"
        )
    src = source.read_bytes()
    ver = subprocess.run([cc, "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
    key = hashlib.sha256(src + ver.encode() + " ".join(CFLAGS).encode() + arch.encode()).hexdigest()[:16]
    out_dir = (cache or _cache_root()) / source.stem.replace("_", "-") / key
    binary = out_dir / source.stem
    if binary.is_file():
        return binary
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"{source.stem}.{os.getpid()}.tmp"
    r = subprocess.run(
        [cc, *CFLAGS, "-o", str(tmp), str(source)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if r.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        hint = f" (is {pkgs.split()[-1]} installed?)" if "No such file" in r.stderr else ""
        raise BootError(f"cannot build {source.name} with {cc}{hint}: {r.stderr.strip()[-600:]}")
    os.replace(tmp, binary)
    return binary


def initramfs(init: bytes, files: Mapping[str, bytes]) -> bytes:
    """The boot initramfs: ``/init`` (``init``'s bytes), ``/dev/console``
    (5, 1: the kernel opens it for /init's stdout), ``/dev``, ``/proc`` and
    ``/sys`` (mount points) and ``files`` (path -> bytes, read by /init)."""
    entries = [
        CpioEntry("dev", stat.S_IFDIR | 0o755),
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        CpioEntry("proc", stat.S_IFDIR | 0o555),
        CpioEntry("sys", stat.S_IFDIR | 0o555),
        CpioEntry("init", stat.S_IFREG | 0o755, init),
    ]
    dirs: set[str] = {"dev", "proc", "sys"}
    for path in sorted(files, key=lambda p: p.strip("/")):
        name = path.strip("/")
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") for p in parts) or name in ("init", "dev/console"):
            raise BootError(f"initramfs file {path!r}: not a plain path, or one the boot owns")
        for k in range(1, len(parts)):
            d = "/".join(parts[:k])
            if d not in dirs:
                dirs.add(d)
                entries.append(CpioEntry(d, stat.S_IFDIR | 0o755))
        entries.append(CpioEntry(name, stat.S_IFREG | 0o644, files[path]))
    return newc_archive(entries)
