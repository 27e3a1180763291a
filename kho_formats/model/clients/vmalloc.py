"""``struct kho_vmalloc`` and its ``kho_vmalloc_chunk`` chain.

A descriptor names the first chunk, the area's size in pages, flags and the
order of every entry.  Each chunk is one page: ``next`` then a zero-terminated
array of group addresses (``KHO_VMALLOC_SIZE`` = 511 entries at 4 KiB).  When
the entry count is an exact multiple of the capacity, the writer has already
linked one more, empty chunk.

``kho_restore_vmalloc`` restores each group with ``kho_restore_pages``,
which clears the magic of the pages it restores: a group listed again (or a
group holding a chunk page) fails there, and the whole area with it.  The
decode keeps every entry (:attr:`VmallocArea.groups`) but reads contents only
from the groups the kernel restores before that failure
(:meth:`VmallocArea.restored_groups`), so an array that lists one group 511
times costs one group, not 511.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ...abi.layout import KHO_VMALLOC_FLAGS_MASK, KhoVmalloc, Layout
from ...errors import VmallocError
from ...limits import Budget
from ...memory.alloc import PageAllocator
from ...memory.chain import walk_page_chain
from ...memory.distinct import first_of_each
from ...memory.image import PhysImage
from ...memory.pageset import PageSet, split_aligned

U64 = np.uint64


@dataclass
class VmallocArea:
    desc: KhoVmalloc
    groups: np.ndarray  # phys of each group of 1 << order pages
    chunks: list[int] = field(default_factory=list)
    #: entries that repeat an earlier entry's group
    repeated: int = 0
    #: groups the kernel restores before ``kho_restore_vmalloc`` fails (all of them: ``groups.size``)
    restorable: int = -1
    #: why ``kho_restore_vmalloc`` fails on this area (None: it does not, for aliasing)
    alias_reason: str | None = None
    #: what the descriptor belongs to (for findings)
    where: str = ""

    def __post_init__(self) -> None:
        if self.restorable < 0:
            self.restorable = int(self.groups.size)

    @property
    def nr_pages(self) -> int:
        return int(self.groups.size) << self.desc.order

    @property
    def restored_nr_pages(self) -> int:
        """Pages of the groups the kernel restores (:attr:`restorable`)."""
        return self.restorable << self.desc.order

    def restored_groups(self) -> np.ndarray:
        return self.groups[: self.restorable]

    def page_addresses(self, page_size: int, *, restored: bool = False) -> np.ndarray:
        """Physical address of every page of the area, in area order
        (``restored``: of the groups the kernel restores only)."""
        n = 1 << self.desc.order
        g = self.restored_groups() if restored else self.groups
        return (g[:, None] + (np.arange(n, dtype=np.uint64) * U64(page_size))[None, :]).reshape(-1)

    def group_ranges(self, page_size: int) -> list[tuple[int, int]]:
        """``[start, end)`` of each distinct group (one range per group, not per page)."""
        grp = page_size << self.desc.order
        return [(g, g + grp) for g in np.unique(self.groups).tolist()]

    def read(self, image: PhysImage, page_size: int, what: str = "vmalloc area") -> bytes:
        """The contents of the groups the kernel restores (``total_pages``
        pages, in order, unless a group repeats: see :attr:`restorable`)."""
        grp = page_size << self.desc.order
        return b"".join(image.read(int(g), grp, f"{what} group") for g in self.restored_groups().tolist())

    def to_json(self) -> dict:
        return {
            "first": self.desc.first,
            "total_pages": self.desc.total_pages,
            "flags": self.desc.flags,
            "order": self.desc.order,
            "chunks": self.chunks,
            "groups": [int(g) for g in self.groups.tolist()],
        }


def read_vmalloc(
    image: PhysImage,
    desc: KhoVmalloc,
    lay: Layout,
    *,
    budget: Budget | None = None,
    where: str = "kho_vmalloc",
) -> VmallocArea:
    """Decode a ``kho_vmalloc`` descriptor into its page groups."""
    budget = budget or Budget()
    if desc.flags & ~KHO_VMALLOC_FLAGS_MASK:
        raise VmallocError(
            f"{where}: unknown flags {desc.flags:#06x}",
            phys=desc.first,
            expected=f"only bits {KHO_VMALLOC_FLAGS_MASK:#x} (ALLOC, HUGE_VMAP)",
        )
    if desc.order + lay.page_shift >= 64:
        raise VmallocError(
            f"{where}: order {desc.order} is impossible", phys=desc.first, expected=f"< {64 - lay.page_shift}"
        )
    if desc.total_pages % (1 << desc.order):
        raise VmallocError(
            f"{where}: total_pages {desc.total_pages} is not a multiple of 1 << order {desc.order}", phys=desc.first
        )
    want = desc.total_pages >> desc.order
    # entries are charged as chunks are read, not from ``total_pages``: a
    # descriptor that claims 2**32 - 1 pages costs only the chunks it really
    # has, and the disagreement is reported as such below
    cap = lay.kho_vmalloc_chunk_capacity
    group = lay.page_size << desc.order
    groups: list[np.ndarray] = []
    chunks: list[int] = []
    got = 0
    for phys, page in walk_page_chain(
        image,
        desc.first,
        lay.page_size,
        lay.byteorder,
        budget,
        noun="kho_vmalloc_chunk",
        error=VmallocError,
        where=where,
    ):
        chunk = lay.parse("kho_vmalloc_chunk", page, phys=phys, error=VmallocError)
        chunks.append(phys)
        z = np.flatnonzero(chunk.phys == 0)
        n = int(z[0]) if z.size else cap
        if z.size and np.any(chunk.phys[n:]):
            raise VmallocError(
                f"{where}: entries after the zero terminator in chunk", phys=phys, expected="a zero-terminated array"
            )
        entries = chunk.phys[:n].astype(np.uint64)
        budget.entries_add(n, where, phys)
        if got + n > want:
            raise VmallocError(
                f"{where}: chunks hold more than total_pages {desc.total_pages} pages",
                phys=phys,
                expected=f"{want} entries of order {desc.order}",
            )
        if n and np.any(entries % U64(group)):
            bad = int(entries[np.flatnonzero(entries % U64(group))[0]])
            raise VmallocError(
                f"{where}: group {bad:#x} is not aligned to its order-{desc.order} size",
                phys=bad,
                expected=f"alignment {group:#x}",
            )
        groups.append(entries)
        got += n
        if n < cap and chunk.next:
            raise VmallocError(
                f"{where}: chunk is not full but links to another",
                phys=phys,
                expected="next = 0 after a partly filled chunk",
            )
    if got != want:
        raise VmallocError(
            f"{where}: chunks hold {got} entries, total_pages {desc.total_pages} needs {want}",
            phys=desc.first,
            expected=f"{want} entries",
        )
    arr = np.concatenate(groups) if groups else np.zeros(0, np.uint64)
    area = VmallocArea(desc=desc, groups=arr, chunks=chunks, where=where)
    _find_aliases(area, group)
    return area


def _find_aliases(area: VmallocArea, group: int) -> None:
    """Groups listed more than once, and chunk pages inside a group: what
    ``kho_restore_vmalloc`` fails on (vectorized: one sort)."""
    arr = area.groups
    if arr.size == 0:
        return
    first = first_of_each(arr)
    rep = np.ones(arr.size, dtype=bool)
    rep[first] = False
    area.repeated = int(np.count_nonzero(rep))
    if area.repeated:
        k = int(np.flatnonzero(rep)[0])
        j = int(np.flatnonzero(arr[:k] == arr[k])[0])
        area.restorable = k
        area.alias_reason = (
            f"group {int(arr[k]):#x} is listed again at entry {k} (first at entry {j}; {area.repeated} repeated "
            "entries in all): kho_restore_vmalloc fails there, as kho_restore_pages finds its pages already "
            "restored, and the next kernel restores nothing of the area"
        )
        return
    srt = np.sort(arr)
    ch = np.array(area.chunks, dtype=np.uint64)
    i = np.searchsorted(srt, ch, side="right").astype(np.int64) - 1
    inside = (i >= 0) & (ch - srt[np.maximum(i, 0)] < U64(group))
    if np.any(inside):
        c = int(ch[np.flatnonzero(inside)[0]])
        g = int(srt[i[np.flatnonzero(inside)[0]]])
        area.restorable = int(np.flatnonzero(arr == U64(g))[0])
        area.alias_reason = (
            f"kho_vmalloc_chunk page {c:#x} lies in group {g:#x}: kho_restore_vmalloc restores (and frees) "
            "the one and fails on the other, and the next kernel restores nothing of the area"
        )


def encode_vmalloc_chunks(groups: Sequence[int], chunk_phys: Sequence[int], lay: Layout) -> list[tuple[int, bytes]]:
    """The chunk pages at ``chunk_phys`` (in chain order) listing ``groups``:
    each chunk full before the next, the rest of the last one zero."""
    cap = lay.kho_vmalloc_chunk_capacity
    if len(groups) > cap * len(chunk_phys):
        raise VmallocError(f"{len(groups)} groups do not fit {len(chunk_phys)} chunks of {cap}")
    out = []
    for i, cp in enumerate(chunk_phys):
        entries = np.zeros(cap, dtype=np.uint64)
        part = [int(g) for g in groups[i * cap : (i + 1) * cap]]
        entries[: len(part)] = part
        nxt = chunk_phys[i + 1] if i + 1 < len(chunk_phys) else 0
        out.append((cp, lay.build("kho_vmalloc_chunk", dict(next=nxt, phys=entries), phys=cp, error=VmallocError)))
    return out


def build_vmalloc(
    groups: Sequence[int],
    order: int,
    lay: Layout,
    alloc: PageAllocator,
    *,
    flags: int = 0x0001,
) -> tuple[KhoVmalloc, list[tuple[int, bytes]], PageSet]:
    """Groups -> descriptor, chunk pages, and the pages to preserve (chunks
    as order-0 pages, groups split into the largest aligned orders)."""
    if flags & ~KHO_VMALLOC_FLAGS_MASK:
        raise VmallocError(f"unknown flags {flags:#x}", expected=f"bits of {KHO_VMALLOC_FLAGS_MASK:#x}")
    groups = [int(g) for g in groups]
    grp = lay.page_size << order
    for g in groups:
        if g % grp or g == 0:
            raise VmallocError(f"group {g:#x} is not aligned to order {order}", phys=g, expected=f"alignment {grp:#x}")
    cap = lay.kho_vmalloc_chunk_capacity
    # the kernel links a fresh chunk as soon as one fills up
    nchunks = len(groups) // cap + 1
    chunk_phys = [alloc.alloc(what="kho_vmalloc_chunk") for _ in range(nchunks)]
    out = encode_vmalloc_chunks(groups, chunk_phys, lay)
    desc = KhoVmalloc(first=chunk_phys[0], total_pages=len(groups) << order, flags=flags, order=order)
    shift = lay.page_shift
    preserve = [(p, 0) for p in chunk_phys]
    for g in groups:
        for pfn, o in split_aligned(g >> shift, 1 << order, 63 - shift):
            preserve.append((pfn << shift, o))
    return desc, out, PageSet.from_pages(lay.page_size, preserve)
