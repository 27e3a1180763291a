"""``include/linux/kho/abi/kexec_handover.h``: the KHO memory-map structs (the kho-v1 chunk list and
bitmaps, the kho-v2+ radix tree), ``struct kho_vmalloc`` and its chunks, and the scratch array entry.

Each struct is a declaration ``Layout -> Construct`` registered with :func:`~.struct.declare`;
:class:`~.layout.Layout` hands them out by name and derives capacities and offsets from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import construct as cs
import numpy as np

from .struct import Typed, WordRows, _unwrap, declare

if TYPE_CHECKING:  # pragma: no cover
    from .layout import Layout


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


KHO_VMALLOC_ALLOC = 0x0001
KHO_VMALLOC_HUGE_VMAP = 0x0002
KHO_VMALLOC_FLAGS_MASK = KHO_VMALLOC_ALLOC | KHO_VMALLOC_HUGE_VMAP


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
