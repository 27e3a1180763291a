"""Every KHO structure, declared once with Construct, parametrized by page size
and byte order (the way pyelftools' ``ELFStructs`` is parametrized by
endianness and word size).

``Layout(page_size, byteorder)`` hands out the structs with the kernel's own
names.  Big homogeneous arrays (radix tables, leaf bitmaps, v1 bitmaps,
vmalloc chunk entries) are declared with :class:`U64Array`, an adapter that
parses to a read-only numpy ``uint64`` view instead of hundreds of Python
ints, so one 4 KiB page costs one object.

Parsed structures are typed dataclasses (``KhoVmalloc``, ``KhoserMemChunkHdr``
...), bound to the Construct declaration by :class:`Typed`.  We looked at
``construct-typing``: its ``DataclassStruct`` binds each field's subcon at
class-definition time, so byte order and page size could not be parameters
without generating a class per layout; one dataclass per structure plus this
adapter keeps a single source of truth and stable ``isinstance`` checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar

import construct as cs
import numpy as np

from .abi import BYTE_ORDERS, page_shift
from .errors import KhoFormatError

T = TypeVar("T")


class U64Array(cs.Adapter):
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


class Typed(cs.Adapter, Generic[T]):
    """Bind a ``Struct`` to a dataclass: parse gives ``cls(**fields)``."""

    def __init__(self, subcon: cs.Construct, cls: type[T]):
        super().__init__(subcon)
        self.cls = cls
        self.names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    def _decode(self, obj: Any, context: Any, path: Any) -> T:
        return self.cls(**{n: obj[n] for n in self.names})

    def _encode(self, obj: Any, context: Any, path: Any) -> dict:
        if isinstance(obj, dict):
            return obj
        return {n: getattr(obj, n) for n in self.names}


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


class _FixedString(cs.Adapter):
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


SETUP_KEXEC_KHO = 10
KHO_VMALLOC_ALLOC = 0x0001
KHO_VMALLOC_HUGE_VMAP = 0x0002
KHO_VMALLOC_FLAGS_MASK = KHO_VMALLOC_ALLOC | KHO_VMALLOC_HUGE_VMAP
KEXEC_METADATA_VERSION = 1
FDT_MAGIC = 0xD00DFEED


@dataclass(frozen=True)
class Layout:
    """All KHO structs for one ``(page_size, byteorder)``."""

    page_size: int = 4096
    byteorder: str = "little"

    def __post_init__(self) -> None:
        page_shift(self.page_size)  # validates
        if self.byteorder not in BYTE_ORDERS:
            raise KhoFormatError(f"unknown byte order {self.byteorder!r}", expected="little or big")

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
        return np.dtype("<u8" if self.byteorder == "little" else ">u8")

    def words(self, count: int) -> U64Array:
        return U64Array(count, self.byteorder)

    # -- derived capacities ---------------------------------------------------
    @property
    def words_per_page(self) -> int:
        return self.page_size // 8

    @property
    def khoser_mem_chunk_capacity(self) -> int:
        """``(PAGE_SIZE - sizeof(hdr)) / sizeof(bitmap_ptr)``: 255 at 4 KiB."""
        return (self.page_size - self.khoser_mem_chunk_hdr.sizeof()) // self.khoser_mem_bitmap_ptr.sizeof()

    @property
    def kho_vmalloc_chunk_capacity(self) -> int:
        """``KHO_VMALLOC_SIZE``: 511 at 4 KiB."""
        return (self.page_size - 8) // 8

    def v1_preserve_bits(self, bitmap_bytes: int) -> int:
        return bitmap_bytes * 8

    # -- v1 chunk list ----------------------------------------------------------
    @cached_property
    def khoser_mem_chunk_hdr(self) -> Typed[KhoserMemChunkHdr]:
        return Typed(
            cs.Struct("next" / self.u64, "order" / self.u32, "num_elms" / self.u32),
            KhoserMemChunkHdr,
        )

    @cached_property
    def khoser_mem_bitmap_ptr(self) -> cs.Construct:
        return cs.Struct("phys_start" / self.u64, "bitmap" / self.u64)

    @cached_property
    def khoser_mem_chunk(self) -> cs.Construct:
        cap = (self.page_size - 16) // 16
        words = self.words(2 * cap)
        return Typed(
            cs.Struct(
                "hdr" / self.khoser_mem_chunk_hdr,
                "bitmaps"
                / cs.ExprAdapter(
                    words, lambda obj, ctx: obj.reshape(cap, 2), lambda obj, ctx: np.asarray(obj).reshape(-1)
                ),
                cs.Padding(self.page_size - 16 - 16 * cap),
            ),
            KhoserMemChunk,
        )

    def kho_mem_phys_bits(self, bitmap_bytes: int) -> cs.Construct:
        """A v1 bitmap: 512 bytes (6.16) or one page (later v1)."""
        return cs.Struct("preserve" / self.words(bitmap_bytes // 8))

    # -- v2+ radix tree ---------------------------------------------------------
    @cached_property
    def kho_radix_node(self) -> cs.Construct:
        return cs.Struct("table" / self.words(self.words_per_page))

    @cached_property
    def kho_radix_leaf(self) -> cs.Construct:
        return cs.Struct("bitmap" / self.words(self.words_per_page))

    # -- vmalloc -----------------------------------------------------------------
    @cached_property
    def kho_vmalloc(self) -> Typed[KhoVmalloc]:
        return Typed(
            cs.Struct(
                "first" / self.u64,
                "total_pages" / self.u32,
                "flags" / self.u16,
                "order" / self.u16,
            ),
            KhoVmalloc,
        )

    @cached_property
    def kho_vmalloc_chunk(self) -> Typed[KhoVmallocChunk]:
        return Typed(
            cs.Struct("next" / self.u64, "phys" / self.words(self.kho_vmalloc_chunk_capacity)),
            KhoVmallocChunk,
        )

    # -- handover descriptors ----------------------------------------------------
    @cached_property
    def kho_scratch(self) -> Typed[KhoScratch]:
        return Typed(cs.Struct("addr" / self.u64, "size" / self.u64), KhoScratch)

    @cached_property
    def kho_data(self) -> Typed[KhoData]:
        return Typed(
            cs.Struct(
                "fdt_addr" / self.u64,
                "fdt_size" / self.u64,
                "scratch_addr" / self.u64,
                "scratch_size" / self.u64,
            ),
            KhoData,
        )

    @cached_property
    def setup_data_hdr(self) -> Typed[SetupDataHdr]:
        """x86 ``struct setup_data`` header (``data[]`` follows)."""
        return Typed(cs.Struct("next" / self.u64, "type" / self.u32, "len" / self.u32), SetupDataHdr)

    # -- clients ------------------------------------------------------------------
    @cached_property
    def kexec_metadata(self) -> Typed[KexecMetadata]:
        """``__packed { u32 version; char previous_release[65]; u32 kexec_count; }``."""
        return Typed(
            cs.Struct(
                "version" / self.u32,
                "previous_release" / _FixedString(65),
                "kexec_count" / self.u32,
            ),
            KexecMetadata,
        )

    @cached_property
    def kho_block_header_ser(self) -> Typed[KhoBlockHeaderSer]:
        return Typed(cs.Struct("next" / self.u64, "count" / self.u64), KhoBlockHeaderSer)

    # -- FDT (always big-endian, whatever the CPU) ---------------------------------
    @cached_property
    def fdt_header(self) -> Typed[FdtHeader]:
        return fdt_header


fdt_header: Typed[FdtHeader] = Typed(
    cs.Struct(*[n / cs.Int32ub for n in (f.name for f in dataclasses.fields(FdtHeader))]),
    FdtHeader,
)


_LAYOUTS: dict = {}


def layout(page_size: int = 4096, byteorder: str = "little") -> Layout:
    """Cached ``Layout`` (structs are built once per parameter pair)."""
    key = (page_size, byteorder)
    if key not in _LAYOUTS:
        _LAYOUTS[key] = Layout(page_size, byteorder)
    return _LAYOUTS[key]
