"""One exception family for everything kho-formats refuses.

Every error names *where* (a physical address, an FDT path or a file) and
*what was expected*, so a kernel engineer can go straight to the bytes.
Nothing else is allowed to escape a parse: untrusted input that trips a
low-level library (``struct.error``, ``IndexError`` ...) is re-raised as one
of these.
"""

from __future__ import annotations

import reprlib


class KhoFormatError(Exception):
    """Base class: the input is not what the KHO ABI says it should be.

    >>> err = KhoFormatError("bad magic 0x0", path="root FDT", expected="0xd00dfeed")
    >>> str(err), err.to_json()["kind"]
    ('root FDT: bad magic 0x0 (expected 0xd00dfeed)', 'format')
    """

    kind = "format"

    def __init__(
        self,
        message: str,
        *,
        phys: int | None = None,
        path: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.message = message
        self.phys = phys
        self.path = path
        self.expected = expected
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.phys is not None:
            where.append(f"phys {self.phys:#x}")
        text = self.message
        if self.expected:
            text += f" (expected {self.expected})"
        if where:
            return f"{' @ '.join(where)}: {text}"
        return text

    def to_json(self) -> dict[str, object]:
        return {
            "error": type(self).__name__,
            "kind": self.kind,
            "message": self.message,
            "phys": self.phys,
            "path": self.path,
            "expected": self.expected,
        }


class FdtError(KhoFormatError):
    """A flattened device tree is malformed (header, tokens, strings)."""

    kind = "fdt"


class PropertyError(FdtError):
    """A KHO property is missing, has the wrong length or a bad value."""

    kind = "property"


class VersionError(KhoFormatError):
    """Unknown, missing or unsupported ABI version / ``compatible``."""

    kind = "version"


class ImageError(KhoFormatError):
    """The physical memory image lacks bytes, or its container is corrupt."""

    kind = "image"


class MemoryMapError(KhoFormatError):
    """The preserved memory map (v1 chunk list or v2+ radix tree) is corrupt."""

    kind = "memory-map"


class VmallocError(KhoFormatError):
    """A ``kho_vmalloc`` descriptor or its chunk chain is corrupt."""

    kind = "vmalloc"


class BlockError(KhoFormatError):
    """A KHO serialization block chain (``kho_block_header_ser``) is corrupt."""

    kind = "block"


class ClientError(KhoFormatError):
    """A known client's sub-blob (kho_test, memblock, kexec-metadata) is corrupt."""

    kind = "client"


class OverlapError(KhoFormatError):
    """Preserved pages overlap each other or a scratch area."""

    kind = "overlap"


class ScratchError(KhoFormatError):
    """A scratch area (``struct kho_scratch``: addr, size) is impossible:
    negative, or wrapping past the end of the 64-bit physical space."""

    kind = "scratch"


class UnrepresentableError(KhoFormatError):
    """The target format cannot hold this state (e.g. kho-v2, 16 KiB, order 0)."""

    kind = "unrepresentable"


class LimitExceeded(KhoFormatError):
    """A resource bound (pages visited, entries, bytes) was exceeded."""

    kind = "limit"


class SpecError(KhoFormatError):
    """A fixture spec (YAML/TOML) is invalid."""

    kind = "spec"


class AllocationError(KhoFormatError):
    """The metadata allocator ran out of room in the given free regions."""

    kind = "alloc"


class BootError(KhoFormatError):
    """``kho boot`` cannot boot: a missing tool or kernel Image, a fixture
    directory it refuses (foreign arch, unsafe segment file, layout that does
    not fit QEMU virt), or QEMU failing before the kernel ran."""

    kind = "boot"


class OutputError(KhoFormatError):
    """An output directory the command refuses to write: not empty (without
    ``--force``), a symlink, or equal to or inside an input."""

    kind = "output"


class LiveCaptureError(KhoFormatError):
    """``kho capture`` of the running system cannot start: debugfs ``kho/out`` (or
    ``kho/in``) or ``/proc/kcore`` missing or unreadable (not root)."""

    kind = "live"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 3, 8, 4, 8


def short_repr(v: object, limit: int = 60) -> str:
    """``repr(v)`` of at most ``limit`` characters, computed without building
    the whole repr: an input value in an error message (a megabyte string,
    a nested list of millions of items, a 5000-digit integer) stays short."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 128:
        return f"an integer of {v.bit_length()} bits"
    if isinstance(v, (list, dict, tuple)):
        r = _REPR.repr(v)  # bounded: reprlib stops at a few levels and items
        if "..." not in r and len(r) <= limit:
            return r
        return f"a {type(v).__name__} of {len(v)} items"
    if isinstance(v, (str, bytes)) and len(v) > limit:
        return repr(v[: limit - 3])[: limit - 3] + "..."
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."
