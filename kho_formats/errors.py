"""One exception family for everything kho-formats refuses.

Every error names *where* (a physical address, an FDT path or a file) and
*what was expected*, so a kernel engineer can go straight to the bytes.
Nothing else is allowed to escape a parse: untrusted input that trips a
low-level library (``struct.error``, ``IndexError`` ...) is re-raised as one
of these.
"""

from __future__ import annotations

import json
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


def input_value(v: object, limit: int = 60) -> str:
    """A value read from a spec, manifest or JSON file, written as such a file writes it
    (``true``, ``null``, ``"text"``, ``[1, 2]``, ``{"a": 1}``), at most ``limit`` characters:
    an error quotes the input in the input's own syntax, never a Python repr.

    >>> input_value(True), input_value(None), input_value("16M"), input_value([1, 2]), input_value({"a": None})
    ('true', 'null', '"16M"', '[1, 2]', '{"a": null}')
    >>> input_value(list(range(100)))
    'a list of 100 items'
    """
    r = _input_text(v, limit, 3)
    if r is not None and len(r) <= limit:
        return r
    n = len(v) if isinstance(v, (list, tuple, dict)) else None
    return input_kind(v) + ("" if n is None else f" of {n} item" + ("" if n == 1 else "s"))


def input_kind(v: object) -> str:
    """What a value read from an input file is, in the file's words: "a string", "a table", "true/false"..."""
    if isinstance(v, bool):
        return "true/false"
    if v is None:
        return "null"
    for t, word in ((int, "an integer"), (float, "a number"), (str, "a string"), (bytes, "bytes")):
        if isinstance(v, t):
            return word
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, dict):
        return "a table"
    return "a value of another kind"


def _input_text(v: object, limit: int, depth: int) -> str | None:
    """``v`` in JSON-like syntax, or None once it passes ``limit`` characters or ``depth`` levels."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v) if v.bit_length() <= 128 else f"an integer of {v.bit_length()} bits"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (str, bytes)):
        t = v if isinstance(v, str) else v.decode("latin-1")
        if len(t) > limit:
            return json.dumps(t[: limit - 5])[:-1] + '..."'
        return json.dumps(t)
    if depth == 0 or not isinstance(v, (list, tuple, dict)) or len(v) > limit // 2:
        return None
    parts: list[str] = []
    size = 2
    items = v.items() if isinstance(v, dict) else ((None, x) for x in v)
    for k, x in items:
        part = _input_text(x, limit, depth - 1)
        if part is None:
            return None
        if k is not None:
            part = f"{json.dumps(str(k))}: {part}"
        size += len(part) + 2
        if size > limit:
            return None
        parts.append(part)
    return ("{%s}" if isinstance(v, dict) else "[%s]") % ", ".join(parts)


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
