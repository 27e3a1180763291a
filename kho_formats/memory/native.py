"""Small C helpers of the package, built on first use (memory layer).

A few hot loops (``_zhead.c``: zlib/zstd page heads; ``_leafscan.c``: the
radix tree's bitmap leaves to runs) are C files shipped inside the package.
:func:`library` compiles one of them with the C compiler Python was built
with (``cc`` otherwise) into ``$XDG_CACHE_HOME/kho-formats/native/``
(``~/.cache`` by default), under a name holding the hash of the source and
the platform, written atomically (a concurrent build writes the same bytes),
and loads it with :mod:`ctypes`.  Each library is tried once per process.

Without a compiler, when the build or the load fails, or with
``KHO_FORMATS_NATIVE=0`` in the environment, :func:`library` returns None
and every caller has a numpy or Python path that gives the same answers.
Installing the package needs nothing more.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

#: set to 0 to never build or load a C helper
ENV = "KHO_FORMATS_NATIVE"
HERE = Path(__file__).parent

_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL | None] = {}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kho-formats" / "native"


def enabled() -> bool:
    """False when ``KHO_FORMATS_NATIVE=0`` switches the C helpers off."""
    return os.environ.get(ENV, "1") != "0"


def _compiler() -> list[str] | None:
    cc = (sysconfig.get_config_var("CC") or "").split()
    if cc and shutil.which(cc[0]):
        return cc
    found = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    return [found] if found else None


def _build(src: bytes, out: Path, stem: str) -> bool:
    cc = _compiler()
    if cc is None:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        c, so = Path(tmp) / f"{stem}.c", Path(tmp) / out.name
        c.write_bytes(src)
        try:
            subprocess.run(
                [*cc, "-O2", "-shared", "-fPIC", "-o", str(so), str(c)],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError):
            return False
        os.replace(so, out)  # atomic: a concurrent build writes the same bytes
    return True


def built_path(source: Path) -> Path:
    """Where the library built from ``source`` is cached (its name holds the
    hash of the source and the platform)."""
    src = source.read_bytes()
    tag = hashlib.sha256(src + sysconfig.get_platform().encode()).hexdigest()[:16]
    return cache_dir() / f"{source.stem.lstrip('_')}-{tag}.so"


def _load(source: Path, setup: Callable[[ctypes.CDLL], None]) -> ctypes.CDLL | None:
    if not enabled():
        return None
    try:
        so = built_path(source)
        if not so.exists() and not _build(source.read_bytes(), so, source.stem.lstrip("_")):
            return None
        lib = ctypes.CDLL(str(so))
        setup(lib)  # declares the functions: AttributeError when one is missing
    except (OSError, AttributeError):
        return None
    return lib


def library(name: str, setup: Callable[[ctypes.CDLL], None]) -> ctypes.CDLL | None:
    """The C helper built from the package file ``name`` (e.g. ``"_zhead.c"``),
    compiled first if need be, after ``setup(lib)`` declared its functions;
    None without it.  Tried once per process."""
    with _lock:
        if name not in _libs:
            _libs[name] = _load(HERE / name, setup)
        return _libs[name]


__all__ = ["ENV", "built_path", "cache_dir", "enabled", "library"]
