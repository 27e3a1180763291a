"""kho-v1 preserved memory map: a linked list of ``khoser_mem_chunk`` pages,
each pointing at per-order bitmaps (``kho_mem_phys_bits``).

Two bitmap sizes exist under the same ``kho-v1`` string (KHO-ABI.md 3.2):
512-byte ``kzalloc`` objects (6.16) and whole pages (later v1).  Nothing in
the blob names the variant; :func:`detect_bitmap_bytes` narrows it down from
the alignment of ``phys_start`` values and bitmap pointers and says why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import numpy as np

from ... import abi
from ...abi.layout import KhoserMemChunk, Layout
from ...errors import ImageError, MemoryMapError, UnrepresentableError
from ...limits import Budget
from ...memory.alloc import PageAllocator, merge_ranges
from ...memory.bits import runs_to_bitmaps
from ...memory.chain import walk_page_chain
from ...memory.distinct import distinct
from ...memory.image import PhysImage
from ...memory.pageset import PageSet
from .codec import MapBuilt, MapContext, MapRead, MemoryMap, register
from .runs import runs_of_bitmaps

U64 = np.uint64
#: the kho-v1 bitmap variants of the shipped schema (KHO-ABI.md 3.2), for callers without a version
BITMAP_VARIANTS = {"page": None, "512": 512}


def bitmap_sizes(lay: Layout) -> tuple[int, ...]:
    """v1 bitmap sizes in bytes that ``lay``'s version allows (its schema's
    ``bitmap_variants``); both kernel sizes for a layout without a version."""
    if lay.version is not None:
        sizes = abi.get_version(lay.version).bitmap_sizes(lay.page_size)
        if sizes:
            return sizes
    return (lay.page_size, 512)


def _sizes_text(sizes: tuple[int, ...]) -> str:
    return " or ".join(str(b) for b in sorted(sizes))


@dataclass
class ChunkList:
    """What a walk saw (or a build wrote)."""

    kind: ClassVar[str] = "chunk-list"

    first: int
    bitmap_bytes: int
    chunks: list[int] = field(default_factory=list)
    #: (order, bitmap index) -> bitmap phys
    bitmaps: dict[tuple[int, int], int] = field(default_factory=dict)
    detection: str = ""

    def copy(self) -> ChunkList:
        """Independent copy (keys and values are immutable: no deep copy)."""
        return dataclasses.replace(self, chunks=list(self.chunks), bitmaps=dict(self.bitmaps))

    def metadata_ranges(self, page_size: int) -> list[tuple[int, int]]:
        rng = [(p, p + page_size) for p in self.chunks]
        rng += [(p, p + self.bitmap_bytes) for p in self.bitmaps.values()]
        return merge_ranges(rng)

    def to_json(self) -> dict[str, object]:
        return {
            "first": self.first,
            "bitmap_bytes": self.bitmap_bytes,
            "bitmap_variant_reason": self.detection,
            "chunks": self.chunks,
            "bitmaps": len(self.bitmaps),
        }


def bitmap_bytes_for(variant: str | None, page_size: int) -> int | None:
    if variant is None or variant == "auto":
        return None
    if variant == "page" or variant == str(page_size):
        return page_size
    if variant == "512":
        return 512
    raise MemoryMapError(f"unknown v1 bitmap variant {variant!r}", expected="auto, page or 512")


def _walk_chunks(image: PhysImage, first: int, lay: Layout, budget: Budget) -> Iterator[tuple[int, KhoserMemChunk]]:
    for phys, page in walk_page_chain(
        image,
        first,
        lay.page_size,
        lay.byteorder,
        budget,
        noun="khoser_mem_chunk",
        error=MemoryMapError,
        kind="list",
        short="chunk",
    ):
        chunk: KhoserMemChunk = lay.parse("khoser_mem_chunk", page, phys=phys, error=MemoryMapError)
        if chunk.hdr.num_elms > lay.khoser_mem_chunk_capacity:
            raise MemoryMapError(
                f"num_elms {chunk.hdr.num_elms} is past the chunk capacity",
                phys=phys,
                expected=f"<= {lay.khoser_mem_chunk_capacity}",
            )
        if chunk.hdr.order + lay.page_shift >= 64:
            raise MemoryMapError(
                f"order {chunk.hdr.order} is impossible with {lay.page_size // 1024} KiB pages",
                phys=phys,
                expected=f"order < {64 - lay.page_shift}",
            )
        yield phys, chunk


def detect_bitmap_bytes(image: PhysImage, first: int, lay: Layout, budget: Budget | None = None) -> tuple[int, str]:
    """Guess the v1 bitmap size and say why."""
    budget = budget or Budget()
    sizes = bitmap_sizes(lay)
    if len(sizes) == 1:
        return sizes[0], f"{sizes[0]}-byte bitmaps: the only size {lay.version} has"
    small = min(sizes)
    page_bits = lay.v1_preserve_bits(lay.page_size)
    entries = 0
    for phys, chunk in _walk_chunks(image, first, lay, Budget(budget.limits)):
        used = chunk.used()
        if used.size == 0:
            continue
        entries += used.shape[0]
        # page_bits << (order + PAGE_SHIFT) must fit a u64 (the log2 of page_bits
        # is PAGE_SHIFT + 3, not the 15 of 4 KiB pages)
        fits = chunk.hdr.order + lay.page_shift + page_bits.bit_length() - 1 < 64
        cover = U64(page_bits) << U64(chunk.hdr.order + lay.page_shift) if fits else None
        starts, bms = used[:, 0], used[:, 1]
        if cover is not None and np.any(starts % cover):
            i = int(np.flatnonzero(starts % cover)[0])
            return small, (
                f"{small}-byte bitmaps: phys_start {int(starts[i]):#x} in chunk {phys:#x} is not a multiple "
                f"of the {lay.page_size}-byte bitmap coverage"
            )
        if np.any(bms % U64(lay.page_size)):
            i = int(np.flatnonzero(bms % U64(lay.page_size))[0])
            return (
                small,
                f"{small}-byte bitmaps: bitmap pointer {int(bms[i]):#x} in chunk {phys:#x} is not page aligned",
            )
    if entries == 0:
        return lay.page_size, "page-sized bitmaps: no bitmaps to tell from (default)"
    return lay.page_size, (
        "page-sized bitmaps: every phys_start and bitmap pointer is page-variant aligned "
        "(ambiguous with 512-byte bitmaps that happen to align; override with --v1-bitmap 512)"
    )


def read_chunklist(
    image: PhysImage,
    first: int,
    lay: Layout,
    *,
    bitmap_bytes: int | None = None,
    budget: Budget | None = None,
) -> tuple[PageSet, ChunkList]:
    budget = budget or Budget()
    if first == 0:
        return PageSet(lay.page_size), ChunkList(
            first=0,
            bitmap_bytes=bitmap_bytes or lay.page_size,
            detection="map is 0: nothing preserved, or not finalized yet",
        )
    if bitmap_bytes is None:
        bitmap_bytes, why = detect_bitmap_bytes(image, first, lay, budget)
    else:
        why = f"{bitmap_bytes}-byte bitmaps: chosen by the caller"
    if bitmap_bytes not in bitmap_sizes(lay):
        raise MemoryMapError(f"v1 bitmap size {bitmap_bytes}", expected=_sizes_text(bitmap_sizes(lay)))
    bits = lay.v1_preserve_bits(bitmap_bytes)
    cl = ChunkList(first=first, bitmap_bytes=bitmap_bytes, detection=why)
    per_order: dict[int, list[tuple[int, np.ndarray]]] = {}
    seen_bitmaps: dict[int, int] = {}
    for phys, chunk in _walk_chunks(image, first, lay, budget):
        cl.chunks.append(phys)
        order = chunk.hdr.order
        shift = order + lay.page_shift
        cover = bits << shift
        used = chunk.used()
        try:  # every bitmap of the chunk in one gather; the loop below names any that is missing
            rows = image.gather(used[:, 1].astype(np.uint64), bitmap_bytes, "v1 bitmap").view(lay.dtype)
            rows = rows.reshape(used.shape[0], bitmap_bytes // 8)
            nonempty = cast("list[bool]", rows.any(axis=1).tolist())
        except ImageError:
            rows = None
        for k, (start, bm) in enumerate(used.tolist()):
            where = f"entry {k} of the order-{order} chunk at {phys:#x}"
            if start % cover:
                raise MemoryMapError(
                    f"phys_start {start:#x} of {where} is not a multiple of {cover:#x}",
                    phys=phys + lay.khoser_mem_entry_field(k, "phys_start"),
                    expected="(index * PRESERVE_BITS) << (order + PAGE_SHIFT)",
                )
            if bm % bitmap_bytes or bm == 0:
                raise MemoryMapError(
                    f"bitmap pointer {bm:#x} of {where} is not {bitmap_bytes}-byte aligned",
                    phys=phys + lay.khoser_mem_entry_field(k, "bitmap"),
                    expected=f"a multiple of {bitmap_bytes}",
                )
            if bm in seen_bitmaps:
                raise MemoryMapError(
                    f"bitmap {bm:#x} of {where} is shared with another entry", phys=bm, expected="one bitmap per entry"
                )
            seen_bitmaps[bm] = k
            if rows is None and not image.has(bm, bitmap_bytes):
                raise MemoryMapError(
                    f"bitmap of {where} is outside the image",
                    phys=bm,
                    expected="bitmap bytes present in the memory image",
                )
            budget.page(bm, "v1 bitmap")
            index = start // cover
            if (order, index) in cl.bitmaps:
                raise MemoryMapError(
                    f"{where} repeats bitmap index {index} of order {order}",
                    phys=phys,
                    expected="each bitmap index once per order",
                )
            cl.bitmaps[(order, index)] = bm
            if rows is not None:
                if not nonempty[k]:
                    continue
                words = rows[k]
            else:
                words = np.frombuffer(image.view(bm, bitmap_bytes, "v1 bitmap"), dtype=lay.dtype)
                if not words.any():
                    continue
            if ((index + 1) * bits) << shift > 1 << 64:  # coverage runs past the top of the address space
                nz = np.flatnonzero(words)
                w = int(nz[-1])
                top = index * bits + w * 64 + int(words[w]).bit_length() - 1
                if top << shift >= 1 << 64:
                    raise MemoryMapError(
                        f"bit {top - index * bits} of the bitmap of {where} names an order-{order} "
                        "page past the 64-bit physical space",
                        phys=bm,
                        expected=f"pages below 2**64 (bits < {((1 << 64) >> shift) - index * bits})",
                    )
            per_order.setdefault(order, []).append((index * bits, words))
    runs = {}
    for order, group in per_order.items():
        group.sort(key=lambda g: g[0])
        stack, bases = np.stack([w for _, w in group]), np.array([b for b, _ in group], dtype=np.uint64)
        group.clear()
        f, l = runs_of_bitmaps(stack, bases, budget, f"order-{order} v1 bitmaps")
        del stack
        f <<= U64(lay.page_shift + order)
        runs[order] = (f, l)
    return PageSet._from_coalesced(lay.page_size, runs), cl


def build_chunklist(
    pages: PageSet,
    lay: Layout,
    alloc: PageAllocator | None,
    *,
    bitmap_bytes: int | None = None,
    placement: ChunkList | None = None,
) -> tuple[int, list[tuple[int, bytes | memoryview]], ChunkList]:
    """Pages -> chunk list in the kernel's order: ascending orders, ascending
    bitmap indexes, a new chunk for every order and when one is full.

    Smaller bitmaps (512 bytes) are packed into slab pages (``kzalloc``
    objects, aligned to their size); page-sized bitmaps take one page each.  Chunk pages come
    first as ``bytes``, then bitmap pages as read-only ``memoryview``s.
    """
    bitmap_bytes = bitmap_bytes or lay.page_size
    if bitmap_bytes not in bitmap_sizes(lay):
        raise UnrepresentableError(f"v1 bitmap size {bitmap_bytes}", expected=_sizes_text(bitmap_sizes(lay)))
    bits = lay.v1_preserve_bits(bitmap_bytes)
    cap = lay.khoser_mem_chunk_capacity
    row = len(lay.khoser_mem_bitmap_ptr_dtype.names or ())  # words per bitmaps[] entry
    cl = ChunkList(first=0, bitmap_bytes=bitmap_bytes, detection="built")
    if not pages:
        return 0, [], cl
    if alloc is not None and placement is not None:
        for p in placement.chunks:
            alloc.avoid(p, p + lay.page_size)
        for p in placement.bitmaps.values():
            alloc.avoid(p, p + bitmap_bytes)
    out_bitmaps: list[tuple[np.ndarray, np.ndarray]] = []  # per order: (phys, rows)
    # per order: its chunk entries (phys_start, bitmap phys), ascending
    per_order: list[tuple[int, Sequence[tuple[int, int]] | np.ndarray]] = []
    slab: list[int] = []  # free 512-byte slots in the current slab page

    def new_bitmap(order: int, index: int) -> int:
        if placement is not None and (order, index) in placement.bitmaps:
            return placement.bitmaps[(order, index)]
        if alloc is None:
            raise MemoryMapError("no allocator for v1 bitmaps")
        if bitmap_bytes == lay.page_size:
            return alloc.alloc(what="v1 bitmap page")
        if not slab:
            base = alloc.alloc(what="v1 small-bitmap slab page")
            slab.extend(range(base + lay.page_size - bitmap_bytes, base - 1, -bitmap_bytes))
        return slab.pop()

    slab_next, slab_end = 0, 0  # the current slab page of small bitmaps: next free slot, end
    for order in pages.orders:
        shift = lay.page_shift + order
        if shift >= 64:
            raise UnrepresentableError(f"order {order} with {lay.page_size} byte pages")
        r = pages.runs(order)
        ids, packed = runs_to_bitmaps(r.starts >> U64(shift), r.counts, bits)
        if lay.byteorder == "big":
            packed = packed.view("<u8").astype(">u8").view(np.uint8).reshape(packed.shape)
        if placement is not None or alloc is None:
            entries: list[tuple[int, int]] = []
            placed: list[int] = []
            for index in ids.tolist():
                bm_phys = new_bitmap(order, index)
                cl.bitmaps[(order, index)] = bm_phys
                placed.append(bm_phys)
                entries.append(((index * bits) << shift, bm_phys))
            out_bitmaps.append((np.array(placed, dtype=np.uint64), packed))
            per_order.append((order, entries))
            continue
        # fresh build, vectorized: bitmap addresses from the allocator in bulk
        n = int(ids.size)
        if bitmap_bytes == lay.page_size:
            phys = np.array(alloc.alloc_pages(n, what="v1 bitmap page"), dtype=np.uint64)
        else:
            per_page = lay.page_size // bitmap_bytes
            slots: list[np.ndarray] = []
            left = (slab_end - slab_next) // bitmap_bytes
            take = min(left, n)
            if take:
                slots.append(np.uint64(slab_next) + np.arange(take, dtype=np.uint64) * U64(bitmap_bytes))
                slab_next += take * bitmap_bytes
            need = n - take
            if need:
                npages = -(-need // per_page)
                bases = np.array(alloc.alloc_pages(npages, what="v1 small-bitmap slab page"), dtype=np.uint64)
                k = np.arange(need, dtype=np.uint64)
                slots.append(bases[(k // U64(per_page)).astype(np.intp)] + (k % U64(per_page)) * U64(bitmap_bytes))
                last_used = need - (npages - 1) * per_page
                slab_next = int(bases[-1]) + last_used * bitmap_bytes
                slab_end = int(bases[-1]) + lay.page_size
            phys = np.concatenate(slots) if slots else np.zeros(0, np.uint64)
        cl.bitmaps.update(zip(zip([order] * n, ids.tolist()), phys.tolist()))
        out_bitmaps.append((phys, packed))  # expanded into pages below
        per_order.append((order, np.column_stack(((ids * U64(bits)) << U64(shift), phys))))
    # chunks
    chunk_plan: list[tuple[int, Sequence[tuple[int, int]] | np.ndarray]] = []
    for order, order_entries in per_order:
        for at in range(0, max(len(order_entries), 1), cap):
            chunk_plan.append((order, order_entries[at : at + cap]))
    reuse = list(placement.chunks) if placement else []
    phys_list: list[int] = []
    for n in range(len(chunk_plan)):
        if n < len(reuse):
            phys_list.append(reuse[n])
        else:
            if alloc is None:
                raise MemoryMapError("no allocator for v1 chunks")
            phys_list.append(alloc.alloc(what="khoser_mem_chunk"))
    out: list[tuple[int, bytes | memoryview]] = []
    for n, (order, chunk_entries) in enumerate(chunk_plan):
        nxt = phys_list[n + 1] if n + 1 < len(phys_list) else 0
        arr = np.zeros((cap, row), dtype=np.uint64)
        if len(chunk_entries):
            arr[: len(chunk_entries)] = np.asarray(chunk_entries, dtype=np.uint64)
        chunk = dict(hdr=dict(next=nxt, order=order, num_elms=len(chunk_entries)), bitmaps=arr)
        out.append((phys_list[n], lay.build("khoser_mem_chunk", chunk, phys=phys_list[n], error=MemoryMapError)))
    cl.first = phys_list[0]
    cl.chunks = phys_list
    out += _bitmap_pages(out_bitmaps, bitmap_bytes, lay.page_size)
    return cl.first, out, cl


def _bitmap_pages(
    placed: list[tuple[np.ndarray, np.ndarray]], bitmap_bytes: int, page_size: int
) -> list[tuple[int, memoryview]]:
    """``(phys array, rows)`` per order -> ``(page phys, page bytes)``.

    Page-sized bitmaps are their own pages (read-only views of the rows);
    512-byte ones share pages (eight ``kzalloc`` slots each) and are laid
    into whole pages, ascending."""
    placed = [(p, r) for p, r in placed if p.size]
    if not placed:
        return []
    if bitmap_bytes == page_size:
        out: list[tuple[int, memoryview]] = []
        for phys, rows in placed:
            flat = np.ascontiguousarray(rows).reshape(-1).data.toreadonly()
            out.extend((p, flat[k * page_size : (k + 1) * page_size]) for k, p in enumerate(phys.tolist()))
        return out
    phys = np.concatenate([p for p, _ in placed])
    rows = np.concatenate([r for _, r in placed]) if len(placed) > 1 else placed[0][1]
    base = phys - phys % np.uint64(page_size)
    bases = distinct(base)
    page = np.searchsorted(bases, base)
    buf = np.zeros((bases.size, page_size // bitmap_bytes, bitmap_bytes), dtype=np.uint8)
    buf[page, ((phys - base) // np.uint64(bitmap_bytes)).astype(np.intp)] = rows
    flat = buf.reshape(-1).data.toreadonly()
    return [(p, flat[k * page_size : (k + 1) * page_size]) for k, p in enumerate(bases.tolist())]


class ChunkListCodec:
    """kho-v1: the ``khoser_mem_chunk`` list and its per-order bitmaps.

    Nothing in the blob says how big a bitmap is (512 bytes in 6.16, a page
    later): the ``v1_bitmap_bytes`` parameter carries it, and a read without
    it detects it (:func:`detect_bitmap_bytes`).
    """

    kind: ClassVar[str] = "chunk-list"
    params: ClassVar[Mapping[str, str]] = {
        "v1_bitmap_bytes": "size of one kho_mem_phys_bits bitmap: 512 (Linux 6.16) or PAGE_SIZE (later kho-v1)",
    }
    #: v1 kernels hand the root FDT over at finalize; nothing requires its page preserved
    root_fdt_must_be_preserved: ClassVar[bool] = False
    unpreserved_blob_severity: ClassVar[str] = "warning"

    def check_schema(self, version: abi.AbiVersion, where: str) -> None:
        abi.check_chunk_list_schema(version, where)

    def read(
        self,
        image: PhysImage,
        first: int,
        ctx: MapContext,
        *,
        budget: Budget,
        params: Mapping[str, int],
        options: Mapping[str, Any],
    ) -> MapRead:
        variant = options.get("v1_bitmap")
        if variant is None and params.get("v1_bitmap_bytes"):
            variant = "512" if params["v1_bitmap_bytes"] == 512 else "page"
        bb = bitmap_bytes_for(variant, ctx.page_size)
        pages, cl = read_chunklist(image, first, ctx.layout, bitmap_bytes=bb, budget=budget)
        notes = [f"v1 bitmaps: {cl.detection}"]
        if first == 0:
            notes.append("preserved-memory-map is 0: nothing preserved, or the v1 handover was not finalized yet")
        return MapRead(pages, cl, {"v1_bitmap_bytes": cl.bitmap_bytes}, notes)

    def build(
        self,
        pages: PageSet,
        ctx: MapContext,
        alloc: PageAllocator | None,
        *,
        params: Mapping[str, int],
        placement: MemoryMap | None = None,
        keep_empty: bool = False,
    ) -> MapBuilt:
        where = placement if isinstance(placement, ChunkList) else None
        first, out, cl = build_chunklist(
            pages, ctx.layout, alloc, bitmap_bytes=params.get("v1_bitmap_bytes"), placement=where
        )
        return MapBuilt(first, list(out), cl)

    def check_representable(self, pages: PageSet, ctx: MapContext) -> None:
        for order in pages.orders:
            if ctx.layout.page_shift + order >= 64:
                raise UnrepresentableError(f"order {order} with {ctx.page_size} byte pages")

    def params_for(self, ctx: MapContext, source: Mapping[str, int], options: Mapping[str, Any]) -> dict[str, int]:
        variant = options.get("v1_bitmap")
        if variant in ("512", "page"):
            return {"v1_bitmap_bytes": 512 if variant == "512" else ctx.page_size}
        return {"v1_bitmap_bytes": source.get("v1_bitmap_bytes") or ctx.page_size}

    def summary(self, ctx: MapContext, m: MemoryMap | None) -> dict[str, Any]:
        if not isinstance(m, ChunkList):
            return {}
        return {"chunks": len(m.chunks), "bitmaps": len(m.bitmaps), "bitmap_bytes": m.bitmap_bytes}

    def describe(self, summary: Mapping[str, Any]) -> str:
        # keys the report fills with null (the map was not read) say nothing
        chunks, bitmaps, nbytes = summary.get("chunks"), summary.get("bitmaps"), summary.get("bitmap_bytes")
        if chunks is None or bitmaps is None or nbytes is None:
            return ""
        return f", {chunks} chunks, {bitmaps} bitmaps of {nbytes} bytes"

    def param_lines(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        bb = params.get("v1_bitmap_bytes")
        return [("v1 bitmaps", f"{bb} bytes")] if bb else []

    def changes(self, old: MapContext, new: MapContext) -> list[str]:
        return []


CODEC = register(ChunkListCodec())
