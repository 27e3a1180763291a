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

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar, cast, overload

import construct as cs
import numpy as np

from ..errors import KhoFormatError, VersionError

# the per-header modules: importing them registers their declarations; their names are re-exported
from .block import KhoBlockHeaderSer
from .elf import ELF_ARCHS, ELF_MACHINES, ELFMAG, ET_CORE, PT_LOAD
from .fdt_header import FDT_MAGIC, FdtHeader, fdt_header
from .kdump import KDUMP_SIGNATURE
from .kexec_handover import (
    KHO_VMALLOC_ALLOC,
    KHO_VMALLOC_FLAGS_MASK,
    KHO_VMALLOC_HUGE_VMAP,
    KhoScratch,
    KhoserMemChunk,
    KhoserMemChunkHdr,
    KhoVmalloc,
    KhoVmallocChunk,
)
from .kexec_metadata import KEXEC_METADATA_VERSION, KexecMetadata
from .luo import (
    LIVEUPDATE_FLB_COMPAT_LENGTH,
    LIVEUPDATE_HNDL_COMPAT_LENGTH,
    LIVEUPDATE_SESSION_NAME_LENGTH,
    LUO_ABI_COMPAT_LEN,
    LUO_ABI_COMPATIBLE,
    LuoFileSer,
    LuoFlbHeaderSer,
    LuoFlbSer,
    LuoSer,
    LuoSessionSer,
)
from .memfd import (
    MEMFD_FOLIO_FLAGS_BITS,
    MEMFD_FOLIO_PFN_BITS,
    MemfdLuoSer,
    memfd_folio_fields,
    memfd_folio_word,
)
from .struct import (
    _DECLARATIONS,
    DEFAULT_VARIANT,
    Declaration,
    FixedString,
    Typed,
    U64Array,
    WordRows,
    array_length,
    build_struct,
    declare,
    declared_variants,
    field_offsets,
    parse_struct,
    struct_dtype,
    struct_fields,
)
from .versions import BYTE_ORDERS, get_version, on_registry_change, page_shift
from .x86_boot import SETUP_KEXEC_KHO, KhoData, SetupDataHdr

C = TypeVar("C", bound=cs.Construct)


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
        return dict(get_version(self.version).layout)

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

    @cached_property
    def _sizes(self) -> dict[str, int]:
        return {}

    def sizeof(self, struct: str) -> int:
        """``sizeof(struct <struct>)`` (cached: construct computes it anew on every call)."""
        size = self._sizes.get(struct)
        if size is None:
            size = self._sizes[struct] = int(self.struct(struct).sizeof())
        return size

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
    def s32(self) -> cs.Construct:
        return cs.Int32sl if self.byteorder == "little" else cs.Int32sb

    @cached_property
    def s64(self) -> cs.Construct:
        return cs.Int64sl if self.byteorder == "little" else cs.Int64sb

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
    # ELF cores (abi/elf.py) and makedumpfile's kdump (abi/kdump.py): byte order only
    elf64_hdr = _Declared[cs.Construct]()
    elf64_phdr = _Declared[cs.Construct]()
    disk_dump_header = _Declared[cs.Construct]()
    kdump_sub_header = _Declared[cs.Construct]()
    page_desc = _Declared[cs.Construct]()

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


_LAYOUTS: dict[tuple[int, str, str | None], Layout] = {}


def layout(page_size: int = 4096, byteorder: str = "little", version: str | None = None) -> Layout:
    """Cached ``Layout`` (structs are built once per parameter triple)."""
    key = (page_size, byteorder, version)
    lay = _LAYOUTS.get(key)
    if lay is None:
        lay = _LAYOUTS[key] = Layout(page_size, byteorder, version)
    return lay


on_registry_change(_LAYOUTS.clear)

__all__ = [
    "Layout",
    "layout",
    "DEFAULT_VARIANT",
    "Declaration",
    "declare",
    "declared_variants",
    "Typed",
    "U64Array",
    "WordRows",
    "FixedString",
    "array_length",
    "build_struct",
    "parse_struct",
    "field_offsets",
    "struct_dtype",
    "struct_fields",
    "KhoBlockHeaderSer",
    "ELF_ARCHS",
    "ELF_MACHINES",
    "ELFMAG",
    "ET_CORE",
    "PT_LOAD",
    "KDUMP_SIGNATURE",
    "FDT_MAGIC",
    "FdtHeader",
    "fdt_header",
    "KHO_VMALLOC_ALLOC",
    "KHO_VMALLOC_FLAGS_MASK",
    "KHO_VMALLOC_HUGE_VMAP",
    "KhoScratch",
    "KhoserMemChunk",
    "KhoserMemChunkHdr",
    "KhoVmalloc",
    "KhoVmallocChunk",
    "KEXEC_METADATA_VERSION",
    "KexecMetadata",
    "LIVEUPDATE_FLB_COMPAT_LENGTH",
    "LIVEUPDATE_HNDL_COMPAT_LENGTH",
    "LIVEUPDATE_SESSION_NAME_LENGTH",
    "LUO_ABI_COMPAT_LEN",
    "LUO_ABI_COMPATIBLE",
    "LuoFileSer",
    "LuoFlbHeaderSer",
    "LuoFlbSer",
    "LuoSer",
    "LuoSessionSer",
    "MEMFD_FOLIO_FLAGS_BITS",
    "MEMFD_FOLIO_PFN_BITS",
    "MemfdLuoSer",
    "memfd_folio_fields",
    "memfd_folio_word",
    "SETUP_KEXEC_KHO",
    "KhoData",
    "SetupDataHdr",
]
