"""The mechanism every struct declaration of :mod:`kho_formats.abi` uses: Construct adapters
(:class:`U64Array`, :class:`WordRows`, :class:`Typed`, :class:`FixedString`), reading a
declaration (fields, offsets, numpy dtypes), construct errors turned into
:class:`~kho_formats.errors.KhoFormatError`, and the registry of declarations
(:func:`declare`) that :class:`~kho_formats.abi.layout.Layout` resolves per ABI version.

A declaration is ``fn(lay) -> Construct`` registered under ``(struct name, variant)``; ``lay`` gives
the parameters (``lay.u32``, ``lay.u64``, ``lay.page_size``, ``lay.byteorder``) and the other
structs (``lay.struct(name)``).  The per-header modules (``kexec_handover.py``, ``luo.py``,
``memfd.py``, ``elf.py``, ``kdump.py`` ...) hold the declarations.
"""

from __future__ import annotations

import dataclasses
import struct as struct_module
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import construct as cs
import numpy as np

from ..errors import KhoFormatError, VersionError

if TYPE_CHECKING:  # pragma: no cover
    from .layout import Layout

T = TypeVar("T")

#: the variant every struct has, used unless a version's ``[layout]`` names another
DEFAULT_VARIANT = "default"


# -- adapters --------------------------------------------------------------------


class U64Array(cs.Adapter):  # type: ignore[misc]
    """``count`` unsigned 64-bit words <-> a numpy ``uint64`` array view.

    Parsing yields a read-only array of the *file's* byte order (``<u8`` or
    ``>u8``); numeric values are right either way.  Building accepts any
    integer sequence or array.
    """

    def __init__(self, count: int, byteorder: str):
        self.count = count
        self.dtype = np.dtype("<u8" if byteorder == "little" else ">u8")
        super().__init__(cs.Bytes(8 * count))

    def _decode(self, obj: bytes, context: Any, path: Any) -> np.ndarray:
        return np.frombuffer(obj, dtype=self.dtype, count=self.count)

    def _encode(self, obj: Any, context: Any, path: Any) -> bytes:
        arr = np.asarray(obj, dtype=np.uint64)
        if arr.shape != (self.count,):
            raise cs.ExplicitError(f"expected {self.count} words, got shape {arr.shape}")
        return arr.astype(self.dtype, copy=False).tobytes()


class WordRows(cs.Adapter):  # type: ignore[misc]
    """``struct elem[count]`` where ``elem`` is all u64 fields <-> a read-only
    ``(count, fields)`` numpy array in the file's byte order (row ``k`` is
    element ``k``, columns in declaration order).  ``elem`` is kept so the
    field names and the structured dtype stay with the declaration."""

    def __init__(self, elem: cs.Construct, count: int, byteorder: str):
        self.elem = elem
        self.count = count
        self.dtype = np.dtype("<u8" if byteorder == "little" else ">u8")
        width = elem.sizeof()
        rec = struct_dtype(elem)
        fields: Mapping[str, Any] = rec.fields or {}
        if width % 8 or any(f[0] != self.dtype for f in fields.values()) or len(fields) * 8 != width:
            raise TypeError("WordRows needs a struct of u64 fields only")
        self.fields = len(fields)
        super().__init__(cs.Bytes(width * count))

    def _decode(self, obj: bytes, context: Any, path: Any) -> np.ndarray:
        return np.frombuffer(obj, dtype=self.dtype, count=self.count * self.fields).reshape(self.count, self.fields)

    def _encode(self, obj: Any, context: Any, path: Any) -> bytes:
        arr = np.asarray(obj, dtype=np.uint64)
        if arr.shape != (self.count, self.fields):
            raise cs.ExplicitError(f"expected {self.count} x {self.fields} words, got shape {arr.shape}")
        return arr.astype(self.dtype, copy=False).tobytes()


class Typed(cs.Adapter, Generic[T]):  # type: ignore[misc]
    """Bind a ``Struct`` to a dataclass: parse gives ``cls(**fields)``.

    Fields of the struct that the dataclass does not name are parsed and
    dropped, and must have a default to be built (``cs.Default``)."""

    def __init__(self, subcon: cs.Construct, cls: type[T]):
        super().__init__(subcon)
        self.cls = cls
        self.names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    def _decode(self, obj: Any, context: Any, path: Any) -> T:
        return self.cls(**{n: obj[n] for n in self.names})

    def _encode(self, obj: Any, context: Any, path: Any) -> dict[str, Any]:
        if isinstance(obj, dict):
            return obj
        return {n: getattr(obj, n) for n in self.names}


class FixedString(cs.Adapter):  # type: ignore[misc]
    """``char name[N]``: NUL-padded, decoded up to the first NUL."""

    def __init__(self, n: int):
        super().__init__(cs.Bytes(n))
        self.n = n

    def _decode(self, obj: bytes, context: Any, path: Any) -> str:
        return obj.split(b"\0", 1)[0].decode("utf-8", "replace")

    def _encode(self, obj: str, context: Any, path: Any) -> bytes:
        raw = obj.encode()
        if len(raw) >= self.n:
            raise cs.ExplicitError(f"string of {len(raw)} bytes does not fit char[{self.n}]")
        return raw.ljust(self.n, b"\0")


# -- reading a declaration: fields, offsets, numpy dtypes ------------------------


def _unwrap(con: cs.Construct) -> cs.Construct:
    """The struct under ``Typed``/``Renamed`` wrappers (adapters of a Struct)."""
    while not isinstance(con, cs.Struct) and isinstance(con, (cs.Renamed, Typed)):
        con = con.subcon
    return con


def _base(con: cs.Construct) -> cs.Construct:
    """A field's construct under its name and docs (``Renamed`` chain)."""
    while isinstance(con, cs.Renamed):
        con = con.subcon
    return con


def struct_fields(con: cs.Construct) -> list[tuple[str | None, int, cs.Construct]]:
    """``(name, offset, construct)`` of every field of a fixed-size ``Struct``
    (``None`` for padding), in declaration order."""
    st = _unwrap(con)
    if not isinstance(st, cs.Struct):
        raise TypeError(f"not a Struct: {con!r}")
    out: list[tuple[str | None, int, cs.Construct]] = []
    off = 0
    for sc in st.subcons:
        out.append((sc.name, off, _base(sc)))
        off += sc.sizeof()
    return out


def field_offsets(con: cs.Construct) -> dict[str, int]:
    """``offsetof`` of every named field of a fixed-size ``Struct``."""
    return {name: off for name, off, _ in struct_fields(con) if name}


_NP_KIND = {
    "B": "u1",
    "H": "u2",
    "I": "u4",
    "L": "u4",
    "Q": "u8",
    "b": "i1",
    "h": "i2",
    "i": "i4",
    "l": "i4",
    "q": "i8",
}


def _field_dtype(con: cs.Construct) -> np.dtype | tuple[np.dtype, tuple[int, ...]]:
    if isinstance(con, (cs.Default, cs.Const)):
        return _field_dtype(con.subcon)
    if isinstance(con, cs.FormatField) and con.fmtstr[1:] in _NP_KIND:
        return np.dtype(str(con.fmtstr[0]) + _NP_KIND[con.fmtstr[1:]])
    if isinstance(con, U64Array):
        return (con.dtype, (con.count,))
    if isinstance(con, WordRows):
        return (con.dtype, (con.count, con.fields))
    if isinstance(con, cs.Bytes) and isinstance(con.length, int):
        return (np.dtype("u1"), (con.length,))
    if isinstance(con, FixedString):
        return np.dtype(f"S{con.n}")
    if isinstance(_unwrap(con), cs.Struct):
        return struct_dtype(con)
    raise TypeError(f"no numpy dtype for {con!r}")


def struct_dtype(con: cs.Construct) -> np.dtype:
    """A numpy structured dtype with the fields, offsets and size of a
    fixed-size ``Struct`` of integer fields (nested structs, ``U64Array``,
    ``Bytes`` and padding allowed), each integer in its declared byte order.
    ``np.frombuffer(buf, struct_dtype(con))`` then reads what ``con.parse``
    would, for a whole array at once."""
    names, formats, offsets = [], [], []
    for name, off, sub in struct_fields(con):
        if name is None:
            continue
        names.append(name)
        formats.append(_field_dtype(sub))
        offsets.append(off)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": con.sizeof()})


def array_length(con: cs.Construct, field: str) -> int:
    """Number of elements of the array ``field`` of a ``Struct``."""
    for name, _, sub in struct_fields(con):
        if name == field:
            if isinstance(sub, (U64Array, WordRows)):
                return sub.count
            raise TypeError(f"field {field!r} is not an array")
    raise KeyError(field)


# -- construct errors -> KhoFormatError --------------------------------------------


# -- a direct reader for fixed-size declarations ------------------------------------

_Reader = Callable[[Any, int], Any]  # (buffer, offset) -> value
_NONE = (0, None)  # cached "no direct reader"


def _compile(con: cs.Construct) -> tuple[int, _Reader] | None:
    """``(size, reader)`` for a fixed-size declaration made only of integer
    fields, byte strings, padding, nested ``Typed`` structs and this
    module's array and string adapters: what ``con.parse`` gives, read with
    :mod:`struct` and numpy instead of construct's per-field machinery
    (construct costs tens of microseconds a struct, which thousands of LUO
    files pay several times each).  None for anything else (construct then
    parses it)."""
    if getattr(con, "parsed", None) is not None:
        return None
    if isinstance(con, cs.Renamed):
        return _compile(con.subcon)
    if isinstance(con, cs.FormatField):
        fmt = struct_module.Struct(con.fmtstr)
        unpack = fmt.unpack_from
        return fmt.size, lambda buf, off: unpack(buf, off)[0]
    if type(con) is cs.Bytes and isinstance(con.length, int):
        n = con.length
        return n, lambda buf, off: bytes(buf[off : off + n])
    if isinstance(con, cs.Padded) and isinstance(con.subcon, type(cs.Pass)) and isinstance(con.length, int):
        return con.length, lambda buf, off: None
    if isinstance(con, (U64Array, WordRows, FixedString)):
        inner = _compile(con.subcon)
        if inner is None:
            return None
        size, read = inner
        decode = con._decode
        return size, lambda buf, off: decode(read(buf, off), None, None)
    if isinstance(con, Typed) and isinstance(con.subcon, cs.Struct):
        fields: list[tuple[str, int, _Reader]] = []
        off = 0
        for sub in con.subcon.subcons:
            got = _compile(sub)
            if got is None:
                return None
            if sub.name is not None:
                fields.append((sub.name, off, got[1]))
            off += got[0]
        if set(con.names) - {n for n, _, _ in fields}:
            return None
        cls, keep = con.cls, set(con.names)
        used = [(n, o, r) for n, o, r in fields if n in keep]
        return off, lambda buf, at: cls(**{n: r(buf, at + o) for n, o, r in used})
    return None


def _reader(con: cs.Construct) -> tuple[int, _Reader] | None:
    """The construct's direct reader, compiled once and kept on it."""
    hit = con.__dict__.get("_kho_reader")
    if hit is None:
        hit = _compile(con) or _NONE
        con.__dict__["_kho_reader"] = hit
    return None if hit is _NONE else hit


def parse_struct(
    con: cs.Construct,
    data: bytes | bytearray | memoryview,
    *,
    what: str,
    phys: int | None = None,
    error: type[KhoFormatError] = KhoFormatError,
) -> Any:
    """``con.parse(data)``; any construct error becomes ``error`` naming
    ``what`` and ``phys`` (pyelftools' ``struct_parse``).  A fixed-size
    declaration of plain fields is read directly (:func:`_compile`), with
    the same result."""
    direct = _reader(con)
    if direct is not None and len(data) >= direct[0]:
        return direct[1](data, 0)
    try:
        return con.parse(data)
    except (cs.ConstructError, ValueError, TypeError) as exc:
        raise error(
            f"cannot parse {what}: {str(exc).splitlines()[-1] if str(exc) else type(exc).__name__}",
            phys=phys,
            expected=f"{con.sizeof()} bytes" if _sized(con) else None,
        ) from None


def build_struct(
    con: cs.Construct,
    obj: Any,
    *,
    what: str,
    phys: int | None = None,
    error: type[KhoFormatError] = KhoFormatError,
) -> bytes:
    """``con.build(obj)``; any construct error (a value that does not fit its
    field, a missing field ...) becomes ``error`` naming ``what``."""
    try:
        return cast(bytes, con.build(obj))
    except (cs.ConstructError, ValueError, TypeError, OverflowError, KeyError, AttributeError) as exc:
        raise error(
            f"cannot build {what}: {str(exc).splitlines()[-1] if str(exc) else type(exc).__name__}", phys=phys
        ) from None


def _sized(con: cs.Construct) -> bool:
    try:
        con.sizeof()
        return True
    except cs.SizeofError:
        return False


# -- the registry of declarations ----------------------------------------------------

Declaration = Callable[["Layout"], cs.Construct]
_DECLARATIONS: dict[tuple[str, str], Declaration] = {}


def declare(struct: str, variant: str = DEFAULT_VARIANT) -> Callable[[Declaration], Declaration]:
    """Register ``fn(lay) -> Construct`` as the declaration of ``struct`` in
    layout ``variant``.  A version whose schema says
    ``[layout] struct = "variant"`` gets it; everything derived from the
    struct (embedding structs, capacities, offsets, dtypes) follows."""

    def register(fn: Declaration) -> Declaration:
        key = (struct, variant)
        if key in _DECLARATIONS and _DECLARATIONS[key] is not fn:
            raise VersionError(f"struct {struct!r} already has a {variant!r} layout declaration")
        _DECLARATIONS[key] = fn
        return fn

    return register


def declared_variants(struct: str) -> list[str]:
    return sorted(v for s, v in _DECLARATIONS if s == struct)
