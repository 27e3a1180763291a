"""KHO serialization blocks (Linux 7.3, used by LUO): a chain of pages, each
starting with ``__packed struct kho_block_header_ser { u64 next; u64 count; }``
followed by ``count`` entries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...abi.layout import Layout, layout
from ...errors import BlockError
from ...limits import Budget
from ...memory.alloc import PageAllocator
from ...memory.chain import walk_page_chain
from ...memory.image import PhysImage

#: ``sizeof(struct kho_block_header_ser)`` (from the declaration; use ``lay.kho_block_header_size``)
HEADER_SIZE = layout().kho_block_header_size
#: ``KHO_MAX_BLOCKS`` (kernel/liveupdate/kho_block.c): the next kernel refuses longer chains
KHO_MAX_BLOCKS = 10000


@dataclass(frozen=True)
class Block:
    phys: int
    count: int
    payload: bytes  # count * entry_size bytes (or the rest of the page when entry_size is unknown)
    #: the header's ``next`` (phys of the following block, 0 = last)
    next: int = 0


def read_block_chain(
    image: PhysImage,
    first: int,
    lay: Layout,
    *,
    entry_size: int | None = None,
    budget: Budget | None = None,
    where: str = "kho block chain",
    max_blocks: int | None = None,
) -> list[Block]:
    """The blocks of the chain at ``first``; ``max_blocks``: refuse longer
    chains (the kernel's ``KHO_MAX_BLOCKS`` safeguard, :data:`KHO_MAX_BLOCKS`)."""
    budget = budget or Budget()
    head = lay.kho_block_header_size
    room = lay.page_size - head
    max_count = lay.kho_block_entries_per_page(entry_size) if entry_size else room
    out: list[Block] = []
    for phys, page in walk_page_chain(
        image,
        first,
        lay.page_size,
        lay.byteorder,
        budget,
        noun="kho serialization block",
        error=BlockError,
        where=where,
    ):
        if max_blocks is not None and len(out) >= max_blocks:
            raise BlockError(
                f"{where}: more than {max_blocks} serialization blocks", phys=phys, expected=f"<= {max_blocks} blocks"
            )
        hdr = lay.parse("kho_block_header_ser", page[:head], phys=phys, error=BlockError)
        if hdr.count > max_count:
            raise BlockError(
                f"{where}: count {hdr.count} does not fit one page",
                phys=phys,
                expected=f"<= {max_count}" + (f" entries of {entry_size} bytes" if entry_size else ""),
            )
        budget.entries_add(hdr.count, where, phys)
        n = hdr.count * entry_size if entry_size else room
        out.append(Block(phys, hdr.count, page[head : head + n], hdr.next))
    return out


def build_block_chain(
    entries: Sequence[bytes], entry_size: int, lay: Layout, alloc: PageAllocator
) -> tuple[int, list[tuple[int, bytes]]]:
    if entry_size <= 0:
        raise BlockError(f"entry size {entry_size}", expected="a positive number of bytes")
    per = lay.kho_block_entries_per_page(entry_size)
    if per == 0:
        raise BlockError(f"entry size {entry_size} does not fit a page")
    groups = [list(entries[i : i + per]) for i in range(0, len(entries), per)] or [[]]
    phys = [alloc.alloc(what="kho serialization block") for _ in groups]
    out = []
    for i, g in enumerate(groups):
        for e in g:
            if len(e) != entry_size:
                raise BlockError(f"entry of {len(e)} bytes", expected=f"{entry_size}")
        nxt = phys[i + 1] if i + 1 < len(phys) else 0
        body = lay.build("kho_block_header_ser", dict(next=nxt, count=len(g)), phys=phys[i], error=BlockError)
        body += b"".join(g)
        out.append((phys[i], body.ljust(lay.page_size, b"\0")))
    return phys[0], out
