"""KHO serialization blocks (Linux 7.3, used by LUO): a chain of pages, each
starting with ``__packed struct kho_block_header_ser { u64 next; u64 count; }``
followed by ``count`` entries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...abi.layout import Layout, layout
from ...errors import BlockError, KhoFormatError
from ...limits import Budget
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


def block_chain(phys: Sequence[int], n: int, cap: int, *, filled: bool = True) -> list[tuple[int, int, int]]:
    """``(phys, next, count)`` of the blocks at ``phys`` holding ``n`` entries, each block filled to
    ``cap`` before the next (``kho_block_set_it_reserve_entry`` in kernel/liveupdate/kho_block.c);
    ``filled=False``: every count 0 (blocks allocated, nothing serialized yet)."""
    out = []
    for i, p in enumerate(phys):
        count = max(0, min(cap, n - i * cap)) if filled else 0
        out.append((p, phys[i + 1] if i + 1 < len(phys) else 0, count))
    return out


def block_pages(
    entries: Sequence[bytes],
    blocks: Sequence[tuple[int, int, int]],
    lay: Layout,
    *,
    error: type[KhoFormatError] = BlockError,
) -> list[tuple[int, bytes]]:
    """The pages of a serialization block chain: each ``(phys, next, count)`` block (see
    :func:`block_chain`) holds the next ``count`` entries after its ``kho_block_header_ser``; the
    rest of the page is zero.  What :func:`read_block_chain` reads back."""
    out = []
    i = 0
    for phys, nxt, count in blocks:
        hdr = lay.build("kho_block_header_ser", dict(next=nxt, count=count), phys=phys, error=error)
        body = hdr + b"".join(entries[i : i + count])
        if len(body) > lay.page_size:
            raise error(f"block of {count} entries does not fit a page", phys=phys)
        i += count
        out.append((phys, body.ljust(lay.page_size, b"\0")))
    return out
