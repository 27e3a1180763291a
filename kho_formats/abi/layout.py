"""The KHO structures as Construct declarations, parametrized by page size,
byte order and ABI version (the way pyelftools' ``ELFStructs`` is
parametrized by endianness and word size).

``Layout(page_size, byteorder, version)`` hands out the structs with the
kernel's own names and field names, each field documented (``doc``).  What
the fast numpy paths need is *derived* from these declarations, once per
``Layout`` (cached properties), never written as a literal:

* capacities from ``sizeof()``: :attr:`Layout.khoser_mem_chunk_capacity`
  (``(PAGE_SIZE - sizeof(hdr)) / sizeof(khoser_mem_bitmap_ptr)``),
  :attr:`Layout.kho_vmalloc_chunk_capacity`, :meth:`Layout.kho_block_entries_per_page`;
* array lengths from the declared arrays: :attr:`Layout.radix_table_entries`;
* field offsets: ``lay.offsetof("khoser_mem_chunk", "bitmaps")``;
* numpy structured dtypes: ``lay.dtype_of("khoser_mem_bitmap_ptr")`` (see
  :func:`struct_dtype`), in the file's byte order.

**Versions.**  A struct that an ABI version changes gets its own
declaration: a function ``Layout -> Construct`` registered with
:func:`declare` under ``(struct name, variant)``.  The version's schema names
the variant in its ``[layout]`` table (``khoser_mem_chunk_hdr = "..."``);
structs it does not name use ``"default"``.  Declarations that embed another
struct (``khoser_mem_chunk`` embeds ``khoser_mem_chunk_hdr``) ask the
``Layout`` for it, so the variant propagates, and capacities follow.

Big homogeneous arrays (radix tables, leaf bitmaps, v1 bitmaps, vmalloc
chunk entries) are :class:`U64Array`\\ s, which parse to a read-only numpy
``uint64`` view instead of hundreds of Python ints; arrays of small structs
(the chunk's ``bitmaps[]``) are :class:`WordRows`.

Parsed structures are typed dataclasses (``KhoVmalloc``, ``KhoserMemChunkHdr``
...), bound to the Construct declaration by :class:`Typed`.  We looked at
``construct-typing``: its ``DataclassStruct`` binds each field's subcon at
class-definition time, so byte order and page size could not be parameters
without generating a class per layout; one dataclass per structure plus this
adapter keeps a single source of truth and stable ``isinstance`` checks.

Construct errors never escape: :func:`parse_struct` / :func:`build_struct`
(and :meth:`Layout.parse` / :meth:`Layout.build`) turn them into a
:class:`~kho_formats.errors.KhoFormatError` subclass naming what and where,
as pyelftools' ``struct_parse`` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar, cast, overload

import construct as cs
import numpy as np

from .. import abi
from ..errors import KhoFormatError, VersionError
from .versions import BYTE_ORDERS, page_shift

T = TypeVar("T")
C = TypeVar("C", bound=cs.Construct)

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


class _FixedString(cs.Adapter):  # type: ignore[misc]
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
    if isinstance(con, _FixedString):
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


def parse_struct(
    con: cs.Construct,
    data: bytes | bytearray | memoryview,
    *,
    what: str,
    phys: int | None = None,
    error: type[KhoFormatError] = KhoFormatError,
) -> Any:
    """``con.parse(data)``; any construct error becomes ``error`` naming
    ``what`` and ``phys`` (pyelftools' ``struct_parse``)."""
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


# -- typed results ---------------------------------------------------------


@dataclass(frozen=True)
class KhoserMemChunkHdr:
    next: int
    order: int
    num_elms: int


@dataclass(frozen=True)
class KhoserMemChunk:
    """A kho-v1 chunk: ``bitmaps`` is an (N, 2) view of (phys_start, bitmap)."""

    hdr: KhoserMemChunkHdr
    bitmaps: np.ndarray

    def used(self) -> np.ndarray:
        return self.bitmaps[: self.hdr.num_elms]


@dataclass(frozen=True)
class KhoVmalloc:
    first: int
    total_pages: int
    flags: int
    order: int


@dataclass(frozen=True)
class KhoVmallocChunk:
    next: int
    phys: np.ndarray


@dataclass(frozen=True)
class KhoScratch:
    addr: int
    size: int


@dataclass(frozen=True)
class KhoData:
    """x86 ``setup_data`` type ``SETUP_KEXEC_KHO`` payload."""

    fdt_addr: int
    fdt_size: int
    scratch_addr: int
    scratch_size: int


@dataclass(frozen=True)
class SetupDataHdr:
    next: int
    type: int
    len: int


@dataclass(frozen=True)
class KexecMetadata:
    version: int
    previous_release: str
    kexec_count: int


@dataclass(frozen=True)
class KhoBlockHeaderSer:
    next: int
    count: int


@dataclass(frozen=True)
class LuoSer:
    """``struct luo_ser`` (the ``LUO`` sub-blob); ``compatible`` raw bytes."""

    compatible: bytes
    liveupdate_num: int
    sessions_pa: int
    flbs_pa: int


@dataclass(frozen=True)
class LuoSessionSer:
    """``struct luo_session_ser``: ``name`` raw bytes, ``file_set_ser`` flattened."""

    name: bytes
    files: int
    count: int


@dataclass(frozen=True)
class LuoFileSer:
    compatible: bytes
    data: int
    token: int


@dataclass(frozen=True)
class LuoFlbHeaderSer:
    pgcnt: int
    count: int


@dataclass(frozen=True)
class LuoFlbSer:
    name: bytes
    data: int
    count: int


@dataclass(frozen=True)
class MemfdLuoSer:
    pos: int
    size: int
    seals: int
    flags: int
    nr_folios: int
    folios: KhoVmalloc


@dataclass(frozen=True)
class FdtHeader:
    magic: int
    totalsize: int
    off_dt_struct: int
    off_dt_strings: int
    off_mem_rsvmap: int
    version: int
    last_comp_version: int
    boot_cpuid_phys: int
    size_dt_strings: int
    size_dt_struct: int


SETUP_KEXEC_KHO = 10
KHO_VMALLOC_ALLOC = 0x0001
KHO_VMALLOC_HUGE_VMAP = 0x0002
KHO_VMALLOC_FLAGS_MASK = KHO_VMALLOC_ALLOC | KHO_VMALLOC_HUGE_VMAP
KEXEC_METADATA_VERSION = 1
FDT_MAGIC = 0xD00DFEED


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


def undeclare(struct: str, variant: str) -> None:
    """Remove a registered non-default declaration (tests)."""
    if variant == DEFAULT_VARIANT:
        raise VersionError(f"the default declaration of {struct!r} cannot be removed")
    _DECLARATIONS.pop((struct, variant), None)
    _LAYOUTS.clear()


def declared_variants(struct: str) -> list[str]:
    return sorted(v for s, v in _DECLARATIONS if s == struct)


class _Declared(Generic[C]):
    """``Layout`` attribute that resolves to the struct's declaration for the
    layout's version (built on first use, then cached per ``Layout``)."""

    def __init__(self) -> None:
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _Declared[C]: ...
    @overload
    def __get__(self, obj: Layout, owner: type) -> C: ...
    def __get__(self, obj: Layout | None, owner: type) -> _Declared[C] | C:
        if obj is None:
            return self
        return cast(C, obj.struct(self.name))


@dataclass(frozen=True)
class Layout:
    """All KHO structs for one ``(page_size, byteorder, version)``.

    ``version`` (an ABI version name) selects per-struct declaration
    variants through the version's schema (``[layout]``); ``None`` is the
    kernel layout every released version uses."""

    page_size: int = 4096
    byteorder: str = "little"
    version: str | None = None

    def __post_init__(self) -> None:
        page_shift(self.page_size)  # validates
        if self.byteorder not in BYTE_ORDERS:
            raise KhoFormatError(f"unknown byte order {self.byteorder!r}", expected="little or big")
        for struct, variant in self.variants.items():
            if (struct, variant) not in _DECLARATIONS:
                raise VersionError(
                    f"{self.version}: no {variant!r} layout declaration for struct {struct!r}",
                    expected=" or ".join(declared_variants(struct)) or "a struct kho_formats declares",
                )

    @cached_property
    def variants(self) -> Mapping[str, str]:
        """struct name -> declaration variant, from the version's schema."""
        if self.version is None:
            return {}
        return dict(abi.get_version(self.version).layout)

    def variant(self, struct: str) -> str:
        return self.variants.get(struct, DEFAULT_VARIANT)

    @cached_property
    def _structs(self) -> dict[str, cs.Construct]:
        return {}

    def struct(self, name: str) -> cs.Construct:
        """The declaration of ``name`` for this layout (cached)."""
        con = self._structs.get(name)
        if con is None:
            try:
                fn = _DECLARATIONS[(name, self.variant(name))]
            except KeyError:
                raise VersionError(f"no layout declaration for struct {name!r}") from None
            con = self._structs[name] = fn(self)
        return con

    def parse(
        self,
        name: str,
        data: bytes | bytearray | memoryview,
        *,
        phys: int | None = None,
        error: type[KhoFormatError] = KhoFormatError,
    ) -> Any:
        """:func:`parse_struct` of the struct ``name``."""
        return parse_struct(self.struct(name), data, what=f"struct {name}", phys=phys, error=error)

    def build(
        self, name: str, obj: Any, *, phys: int | None = None, error: type[KhoFormatError] = KhoFormatError
    ) -> bytes:
        """:func:`build_struct` of the struct ``name``."""
        return build_struct(self.struct(name), obj, what=f"struct {name}", phys=phys, error=error)

    @cached_property
    def _offsets(self) -> dict[str, dict[str, int]]:
        return {}

    def offsetof(self, struct: str, field: str) -> int:
        """``offsetof(struct <struct>, <field>)`` from the declaration."""
        offs = self._offsets.get(struct)
        if offs is None:
            offs = self._offsets[struct] = field_offsets(self.struct(struct))
        return offs[field]

    def sizeof(self, struct: str) -> int:
        return int(self.struct(struct).sizeof())

    @cached_property
    def _dtypes(self) -> dict[str, np.dtype]:
        return {}

    def dtype_of(self, struct: str) -> np.dtype:
        """Numpy structured dtype of ``struct`` (:func:`struct_dtype`)."""
        dt = self._dtypes.get(struct)
        if dt is None:
            dt = self._dtypes[struct] = struct_dtype(self.struct(struct))
        return dt

    # -- scalars ------------------------------------------------------------
    @property
    def page_shift(self) -> int:
        return page_shift(self.page_size)

    @cached_property
    def u16(self) -> cs.Construct:
        return cs.Int16ul if self.byteorder == "little" else cs.Int16ub

    @cached_property
    def u32(self) -> cs.Construct:
        return cs.Int32ul if self.byteorder == "little" else cs.Int32ub

    @cached_property
    def u64(self) -> cs.Construct:
        return cs.Int64ul if self.byteorder == "little" else cs.Int64ub

    @cached_property
    def dtype(self) -> np.dtype:
        """A u64 (``unsigned long``, ``phys_addr_t``) in this byte order."""
        return np.dtype("<u8" if self.byteorder == "little" else ">u8")

    def words(self, count: int) -> U64Array:
        return U64Array(count, self.byteorder)

    # -- the structs (declarations below, registered per variant) --------------
    khoser_mem_chunk_hdr = _Declared[Typed[KhoserMemChunkHdr]]()
    khoser_mem_bitmap_ptr = _Declared[cs.Construct]()
    khoser_mem_chunk = _Declared[Typed[KhoserMemChunk]]()
    kho_radix_node = _Declared[cs.Construct]()
    kho_radix_leaf = _Declared[cs.Construct]()
    kho_vmalloc = _Declared[Typed[KhoVmalloc]]()
    kho_vmalloc_hdr = _Declared[cs.Construct]()
    kho_vmalloc_chunk = _Declared[Typed[KhoVmallocChunk]]()
    kho_scratch = _Declared[Typed[KhoScratch]]()
    kho_data = _Declared[Typed[KhoData]]()
    setup_data_hdr = _Declared[Typed[SetupDataHdr]]()
    kexec_metadata = _Declared[Typed[KexecMetadata]]()
    kho_block_header_ser = _Declared[Typed[KhoBlockHeaderSer]]()
    luo_ser = _Declared[Typed[LuoSer]]()
    luo_session_ser = _Declared[Typed[LuoSessionSer]]()
    luo_file_ser = _Declared[Typed[LuoFileSer]]()
    luo_flb_header_ser = _Declared[Typed[LuoFlbHeaderSer]]()
    luo_flb_ser = _Declared[Typed[LuoFlbSer]]()
    memfd_luo_ser = _Declared[Typed[MemfdLuoSer]]()
    memfd_luo_folio_ser = _Declared[cs.Construct]()

    def kho_mem_phys_bits(self, bitmap_bytes: int) -> cs.Construct:
        """A v1 bitmap (``struct kho_mem_phys_bits``): 512 bytes (6.16) or one
        page (later v1); which one is not in the blob (KHO-ABI.md 3.2)."""
        return cs.Struct(
            "preserve" / self.words(bitmap_bytes // 8) * "unsigned long preserve[PRESERVE_BITS / 64]: bit b = page "
            "phys_start + (b << (order + PAGE_SHIFT)) of the chunk's order is preserved"
        )

    # -- derived numbers (once per Layout) -----------------------------------------
    @property
    def words_per_page(self) -> int:
        return self.page_size // 8

    @cached_property
    def khoser_mem_chunk_capacity(self) -> int:
        """``(PAGE_SIZE - sizeof(hdr)) / sizeof(khoser_mem_bitmap_ptr)``: 255 at 4 KiB."""
        return (self.page_size - self.sizeof("khoser_mem_chunk_hdr")) // self.sizeof("khoser_mem_bitmap_ptr")

    @cached_property
    def khoser_mem_bitmaps_offset(self) -> int:
        """``offsetof(struct khoser_mem_chunk, bitmaps)``."""
        return self.offsetof("khoser_mem_chunk", "bitmaps")

    @cached_property
    def khoser_mem_bitmap_ptr_size(self) -> int:
        return int(self.khoser_mem_bitmap_ptr.sizeof())

    @cached_property
    def khoser_mem_bitmap_ptr_dtype(self) -> np.dtype:
        """``struct khoser_mem_bitmap_ptr`` as a numpy structured dtype."""
        return self.dtype_of("khoser_mem_bitmap_ptr")

    def khoser_mem_entry_field(self, k: int, field: str) -> int:
        """Byte offset in a chunk of ``bitmaps[k].<field>`` (error addresses)."""
        return (
            self.khoser_mem_bitmaps_offset
            + k * self.khoser_mem_bitmap_ptr_size
            + self.offsetof("khoser_mem_bitmap_ptr", field)
        )

    @cached_property
    def kho_vmalloc_chunk_capacity(self) -> int:
        """``KHO_VMALLOC_SIZE = (PAGE_SIZE - sizeof(kho_vmalloc_hdr)) / sizeof(phys_addr_t)``: 511 at 4 KiB."""
        return (self.page_size - self.sizeof("kho_vmalloc_hdr")) // self.dtype.itemsize

    @cached_property
    def radix_table_entries(self) -> int:
        """Entries of ``kho_radix_node.table[]`` (``1 << KHO_TABLE_SIZE_LOG2``)."""
        return array_length(self.kho_radix_node, "table")

    @cached_property
    def radix_table_offset(self) -> int:
        return self.offsetof("kho_radix_node", "table")

    @cached_property
    def radix_leaf_words(self) -> int:
        """Words of ``kho_radix_leaf.bitmap[]`` (``1 << KHO_BITMAP_SIZE_LOG2`` bits)."""
        return array_length(self.kho_radix_leaf, "bitmap")

    @cached_property
    def kho_block_header_size(self) -> int:
        """``sizeof(struct kho_block_header_ser)``: entries start there."""
        return int(self.kho_block_header_ser.sizeof())

    def kho_block_entries_per_page(self, entry_size: int) -> int:
        """Entries of ``entry_size`` bytes that fit one serialization block."""
        return (self.page_size - self.kho_block_header_size) // entry_size

    @cached_property
    def kho_scratch_size(self) -> int:
        """``sizeof(struct kho_scratch)``: one element of the scratch array."""
        return int(self.kho_scratch.sizeof())

    def setup_data_kho(self, kd: KhoData) -> bytes:
        """One x86 ``struct setup_data`` of type ``SETUP_KEXEC_KHO`` (``next`` 0)
        carrying ``kd``: what a kexec'ing kernel chains into ``boot_params``."""
        payload = self.kho_data.build(kd)
        return self.setup_data_hdr.build(SetupDataHdr(next=0, type=SETUP_KEXEC_KHO, len=len(payload))) + payload

    def v1_preserve_bits(self, bitmap_bytes: int) -> int:
        """``PRESERVE_BITS`` of a v1 bitmap of ``bitmap_bytes`` bytes."""
        return int(self.kho_mem_phys_bits(bitmap_bytes).sizeof()) * 8

    # -- FDT (always big-endian, whatever the CPU) ---------------------------------
    @property
    def fdt_header(self) -> Typed[FdtHeader]:
        return fdt_header


# -- default declarations (the kernel's layout in every released version) -------------


@declare("khoser_mem_chunk_hdr")
def _khoser_mem_chunk_hdr(lay: Layout) -> cs.Construct:
    return Typed(
        cs.Struct(
            "next" / lay.u64 * "phys of the next khoser_mem_chunk, 0 = end of the list",
            "order" / lay.u32 * "order of every bitmap in this chunk",
            "num_elms" / lay.u32 * "used entries of bitmaps[]",
        ),
        KhoserMemChunkHdr,
    )


@declare("khoser_mem_bitmap_ptr")
def _khoser_mem_bitmap_ptr(lay: Layout) -> cs.Construct:
    return cs.Struct(
        "phys_start" / lay.u64 * "physical address covered by bit 0: (index * PRESERVE_BITS) << (order + PAGE_SHIFT)",
        "bitmap" / lay.u64 * "phys of the kho_mem_phys_bits bitmap",
    )


@declare("khoser_mem_chunk")
def _khoser_mem_chunk(lay: Layout) -> cs.Construct:
    hdr, ptr, cap = lay.khoser_mem_chunk_hdr, lay.khoser_mem_bitmap_ptr, lay.khoser_mem_chunk_capacity
    return Typed(
        cs.Struct(
            "hdr" / hdr * "struct khoser_mem_chunk_hdr",
            "bitmaps" / WordRows(ptr, cap, lay.byteorder) * "struct khoser_mem_bitmap_ptr bitmaps[KHOSER_BITMAP_SIZE]",
            cs.Padding(lay.page_size - hdr.sizeof() - cap * ptr.sizeof()),
        ),
        KhoserMemChunk,
    )


@declare("kho_radix_node")
def _kho_radix_node(lay: Layout) -> cs.Construct:
    return cs.Struct(
        "table" / lay.words(lay.page_size // 8) * "u64 table[1 << KHO_TABLE_SIZE_LOG2]: phys of each child, 0 = none"
    )


@declare("kho_radix_leaf")
def _kho_radix_leaf(lay: Layout) -> cs.Construct:
    return cs.Struct(
        "bitmap"
        / lay.words(lay.page_size // 8)
        * "unsigned long bitmap[]: bit b set = key (prefix | b) is preserved (1 << KHO_BITMAP_SIZE_LOG2 bits)"
    )


@declare("kho_vmalloc")
def _kho_vmalloc(lay: Layout) -> cs.Construct:
    return Typed(
        cs.Struct(
            "first" / lay.u64 * "phys of the first kho_vmalloc_chunk, 0 = none",
            "total_pages" / lay.u32 * "number of PAGE_SIZE pages in the area",
            "flags" / lay.u16 * "KHO_VMALLOC_ALLOC 0x1, KHO_VMALLOC_HUGE_VMAP 0x2",
            "order" / lay.u16 * "every entry is a group of 1 << order pages",
        ),
        KhoVmalloc,
    )


@declare("kho_vmalloc_hdr")
def _kho_vmalloc_hdr(lay: Layout) -> cs.Construct:
    return cs.Struct("next" / lay.u64 * "phys of the next kho_vmalloc_chunk, 0 = end")


@declare("kho_vmalloc_chunk")
def _kho_vmalloc_chunk(lay: Layout) -> cs.Construct:
    hdr = _unwrap(lay.kho_vmalloc_hdr)
    return Typed(
        cs.Struct(
            *hdr.subcons,  # struct kho_vmalloc_hdr hdr, flattened
            "phys"
            / lay.words(lay.kho_vmalloc_chunk_capacity)
            * "u64 phys[KHO_VMALLOC_SIZE]: group addresses, zero-terminated unless full",
        ),
        KhoVmallocChunk,
    )


@declare("kho_scratch")
def _kho_scratch(lay: Layout) -> cs.Construct:
    return Typed(
        cs.Struct("addr" / lay.u64 * "phys of the scratch area", "size" / lay.u64 * "its size in bytes"), KhoScratch
    )


@declare("kho_data")
def _kho_data(lay: Layout) -> cs.Construct:
    return Typed(
        cs.Struct(
            "fdt_addr" / lay.u64 * "phys of the root KHO FDT",
            "fdt_size" / lay.u64 * "its size in bytes",
            "scratch_addr" / lay.u64 * "phys of the kho_scratch array",
            "scratch_size" / lay.u64 * "byte size of the kho_scratch array",
        ),
        KhoData,
    )


@declare("setup_data_hdr")
def _setup_data_hdr(lay: Layout) -> cs.Construct:
    """x86 ``struct setup_data`` header (``data[]`` follows)."""
    return Typed(
        cs.Struct(
            "next" / lay.u64 * "phys of the next setup_data, 0 = end",
            "type" / lay.u32 * "SETUP_KEXEC_KHO (10) for KHO",
            "len" / lay.u32 * "bytes of data[] that follow",
        ),
        SetupDataHdr,
    )


@declare("kexec_metadata")
def _kexec_metadata(lay: Layout) -> cs.Construct:
    """``__packed { u32 version; char previous_release[65]; u32 kexec_count; }``."""
    return Typed(
        cs.Struct(
            "version" / lay.u32 * "KEXEC_METADATA_VERSION (1)",
            "previous_release" / _FixedString(65) * "char previous_release[65]: uname -r of the previous kernel",
            "kexec_count" / lay.u32 * "number of kexecs so far",
        ),
        KexecMetadata,
    )


@declare("kho_block_header_ser")
def _kho_block_header_ser(lay: Layout) -> cs.Construct:
    """``__packed struct kho_block_header_ser``; ``count`` entries follow."""
    return Typed(
        cs.Struct(
            "next" / lay.u64 * "phys of the next block, 0 = end",
            "count" / lay.u64 * "entries in this block",
        ),
        KhoBlockHeaderSer,
    )


#: ``LUO_ABI_COMPATIBLE`` of Linux 7.3 and ``ALIGN(sizeof(it), 8)``, the size of ``luo_ser.compatible``
LUO_ABI_COMPATIBLE = "luo-v5"
LUO_ABI_COMPAT_LEN = 8
#: ``LIVEUPDATE_SESSION_NAME_LENGTH``, ``LIVEUPDATE_HNDL_COMPAT_LENGTH``, ``LIVEUPDATE_FLB_COMPAT_LENGTH``
LIVEUPDATE_SESSION_NAME_LENGTH = 64
LIVEUPDATE_HNDL_COMPAT_LENGTH = 48
LIVEUPDATE_FLB_COMPAT_LENGTH = 48


@declare("luo_ser")
def _luo_ser(lay: Layout) -> cs.Construct:
    """``__packed struct luo_ser`` (include/linux/kho/abi/luo.h): the raw ``LUO`` sub-blob."""
    return Typed(
        cs.Struct(
            "compatible" / cs.Bytes(LUO_ABI_COMPAT_LEN) * 'char compatible[LUO_ABI_COMPAT_LEN]: "luo-v5", NUL padded',
            "liveupdate_num" / lay.u64 * "number of live updates so far (this one included)",
            "sessions_pa" / lay.u64 * "phys of the first session block (kho_block_header_ser); 0 until serialized",
            "flbs_pa" / lay.u64 * "phys of the FLB page (luo_flb_header_ser)",
        ),
        LuoSer,
    )


@declare("luo_session_ser")
def _luo_session_ser(lay: Layout) -> cs.Construct:
    """``__packed struct luo_session_ser``: one entry of a session block."""
    return Typed(
        cs.Struct(
            "name" / cs.Bytes(LIVEUPDATE_SESSION_NAME_LENGTH) * "char name[LIVEUPDATE_SESSION_NAME_LENGTH]",
            "files" / lay.u64 * "file_set_ser.files: phys of the session's first file block, 0 = none",
            "count" / lay.u64 * "file_set_ser.count: files in the session at serialization",
        ),
        LuoSessionSer,
    )


@declare("luo_file_ser")
def _luo_file_ser(lay: Layout) -> cs.Construct:
    """``__packed struct luo_file_ser``: one entry of a file block."""
    return Typed(
        cs.Struct(
            "compatible" / cs.Bytes(LIVEUPDATE_HNDL_COMPAT_LENGTH) * "char compatible[48]: the file handler",
            "data" / lay.u64 * "the handler's opaque handle (memfd-v2: phys of struct memfd_luo_ser)",
            "token" / lay.u64 * "the token userspace gave the file",
        ),
        LuoFileSer,
    )


@declare("luo_flb_header_ser")
def _luo_flb_header_ser(lay: Layout) -> cs.Construct:
    """``__packed struct luo_flb_header_ser`` at ``luo_ser.flbs_pa``; entries follow."""
    return Typed(
        cs.Struct(
            "pgcnt" / lay.u64 * "pages of the FLB region, this header included (LUO_FLB_PGCNT = 1)",
            "count" / lay.u64 * "luo_flb_ser entries that follow",
        ),
        LuoFlbHeaderSer,
    )


@declare("luo_flb_ser")
def _luo_flb_ser(lay: Layout) -> cs.Construct:
    """``__packed struct luo_flb_ser``: one File-Lifecycle-Bound global object."""
    return Typed(
        cs.Struct(
            "name" / cs.Bytes(LIVEUPDATE_FLB_COMPAT_LENGTH) * "char name[48]: the FLB's compatible string",
            "data" / lay.u64 * "the opaque handle its .preserve() returned",
            "count" / lay.u64 * "preserved files depending on it",
        ),
        LuoFlbSer,
    )


@declare("memfd_luo_ser")
def _memfd_luo_ser(lay: Layout) -> cs.Construct:
    """``__packed struct memfd_luo_ser`` (include/linux/kho/abi/memfd.h, ``memfd-v2``)."""
    return Typed(
        cs.Struct(
            "pos" / lay.u64 * "f_pos",
            "size" / lay.u64 * "i_size in bytes",
            "seals" / lay.u32 * "F_SEAL_* (uABI values)",
            "flags" / lay.u32 * "file flags; unused bits 0",
            "nr_folios" / lay.u64 * "entries of the folio array",
            "folios" / lay.kho_vmalloc * "struct kho_vmalloc: the memfd_luo_folio_ser array",
        ),
        MemfdLuoSer,
    )


@declare("memfd_luo_folio_ser")
def _memfd_luo_folio_ser(lay: Layout) -> cs.Construct:
    """``__packed struct memfd_luo_folio_ser { u64 pfn:52; u64 flags:12; u64 index; }``.

    The bit-fields share one u64 (``pfn_flags``): GCC allocates them from the
    least significant bit on little-endian targets (``pfn`` = low 52 bits)
    and from the most significant bit on big-endian ones (``pfn`` = high 52
    bits); see :func:`memfd_folio_fields`."""
    return cs.Struct(
        "pfn_flags" / lay.u64 * "u64 pfn:52; u64 flags:12 (MEMFD_LUO_FOLIO_DIRTY 1, _UPTODATE 2)",
        "index" / lay.u64 * "pgoff_t index of the folio in the file",
    )


#: width of ``memfd_luo_folio_ser.pfn`` and ``.flags``
MEMFD_FOLIO_PFN_BITS = 52
MEMFD_FOLIO_FLAGS_BITS = 12


def memfd_folio_fields(words: np.ndarray, byteorder: str) -> tuple[np.ndarray, np.ndarray]:
    """``pfn_flags`` words -> (pfn, flags) arrays, by the compiler's bit-field order."""
    w = words.astype(np.uint64)
    if byteorder == "little":
        return w & np.uint64((1 << MEMFD_FOLIO_PFN_BITS) - 1), w >> np.uint64(MEMFD_FOLIO_PFN_BITS)
    return w >> np.uint64(MEMFD_FOLIO_FLAGS_BITS), w & np.uint64((1 << MEMFD_FOLIO_FLAGS_BITS) - 1)


def memfd_folio_word(pfn: int, flags: int, byteorder: str) -> int:
    """The ``pfn_flags`` word of one folio record (inverse of :func:`memfd_folio_fields`)."""
    if byteorder == "little":
        return (pfn & ((1 << MEMFD_FOLIO_PFN_BITS) - 1)) | (flags << MEMFD_FOLIO_PFN_BITS)
    return (pfn << MEMFD_FOLIO_FLAGS_BITS) | (flags & ((1 << MEMFD_FOLIO_FLAGS_BITS) - 1))


_FDT_HEADER_DOCS = {
    "magic": "FDT_MAGIC 0xd00dfeed",
    "totalsize": "size of the whole blob",
    "off_dt_struct": "offset of the structure block",
    "off_dt_strings": "offset of the strings block",
    "off_mem_rsvmap": "offset of the memory reserve map",
    "version": "format version (17)",
    "last_comp_version": "oldest compatible version (16)",
    "boot_cpuid_phys": "physical id of the boot CPU",
    "size_dt_strings": "size of the strings block",
    "size_dt_struct": "size of the structure block",
}

#: ``struct fdt_header``: always big-endian
fdt_header: Typed[FdtHeader] = Typed(
    cs.Struct(*[n / cs.Int32ub * _FDT_HEADER_DOCS[n] for n in (f.name for f in dataclasses.fields(FdtHeader))]),
    FdtHeader,
)


_LAYOUTS: dict[tuple[int, str, str | None], Layout] = {}


def layout(page_size: int = 4096, byteorder: str = "little", version: str | None = None) -> Layout:
    """Cached ``Layout`` (structs are built once per parameter triple)."""
    key = (page_size, byteorder, version)
    lay = _LAYOUTS.get(key)
    if lay is None:
        lay = _LAYOUTS[key] = Layout(page_size, byteorder, version)
    return lay


abi.on_registry_change(_LAYOUTS.clear)
