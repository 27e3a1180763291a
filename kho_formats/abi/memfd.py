"""``include/linux/kho/abi/memfd.h``: the ``memfd-v2`` LUO file handler's ``struct memfd_luo_ser`` and
its folio records ``struct memfd_luo_folio_ser``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import construct as cs
import numpy as np

from .kexec_handover import KhoVmalloc
from .struct import Typed, declare

if TYPE_CHECKING:  # pragma: no cover
    from .layout import Layout


@dataclass(frozen=True)
class MemfdLuoSer:
    pos: int
    size: int
    seals: int
    flags: int
    nr_folios: int
    folios: KhoVmalloc


#: ``MEMFD_LUO_FH_COMPATIBLE``: the ``luo_file_ser.compatible`` of a memfd
MEMFD_LUO_FH_COMPATIBLE = "memfd-v2"
#: ``memfd_luo_folio_ser.flags`` bits
MEMFD_LUO_FOLIO_DIRTY = 1 << 0
MEMFD_LUO_FOLIO_UPTODATE = 1 << 1
#: ``MEMFD_LUO_ALL_SEALS``: F_SEAL_SEAL, _SHRINK, _GROW, _WRITE, _FUTURE_WRITE, _EXEC (uAPI bits 0..5)
MEMFD_LUO_ALL_SEALS = (1 << 6) - 1


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
    w = words.astype(np.uint64, copy=False)
    if byteorder == "little":
        return w & np.uint64((1 << MEMFD_FOLIO_PFN_BITS) - 1), w >> np.uint64(MEMFD_FOLIO_PFN_BITS)
    return w >> np.uint64(MEMFD_FOLIO_FLAGS_BITS), w & np.uint64((1 << MEMFD_FOLIO_FLAGS_BITS) - 1)


def memfd_folio_word(pfn: int, flags: int, byteorder: str) -> int:
    """The ``pfn_flags`` word of one folio record (inverse of :func:`memfd_folio_fields`)."""
    if byteorder == "little":
        return (pfn & ((1 << MEMFD_FOLIO_PFN_BITS) - 1)) | (flags << MEMFD_FOLIO_PFN_BITS)
    return (pfn << MEMFD_FOLIO_FLAGS_BITS) | (flags & ((1 << MEMFD_FOLIO_FLAGS_BITS) - 1))
