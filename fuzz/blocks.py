"""A KHO serialization block chain of arbitrary fixed-size entries, for the tests and the fuzz
seeds (no client of the package builds one this way: LUO lays out its blocks in the kernel's
order in ``kho_formats/model/clients/luo/build.py``).  Pages come from ``alloc`` in chain order and
are written by the package's own block writer (:func:`kho_formats.model.clients.blocks.block_pages`)."""

from __future__ import annotations

from collections.abc import Sequence

from kho_formats.abi.layout import Layout
from kho_formats.errors import BlockError
from kho_formats.memory.alloc import PageAllocator
from kho_formats.model.clients.blocks import block_chain, block_pages


def build_block_chain(
    entries: Sequence[bytes], entry_size: int, lay: Layout, alloc: PageAllocator
) -> tuple[int, list[tuple[int, bytes]]]:
    """``(phys of the first block, [(phys, page)])``: ``entries`` (each ``entry_size`` bytes) in
    blocks filled to capacity; no entries is one empty block."""
    if entry_size <= 0:
        raise BlockError(f"entry size {entry_size}", expected="a positive number of bytes")
    per = lay.kho_block_entries_per_page(entry_size)
    if per == 0:
        raise BlockError(f"entry size {entry_size} does not fit a page")
    for e in entries:
        if len(e) != entry_size:
            raise BlockError(f"entry of {len(e)} bytes", expected=f"{entry_size}")
    phys = [alloc.alloc(what="kho serialization block") for _ in range(max(1, -(-len(entries) // per)))]
    return phys[0], block_pages(entries, block_chain(phys, len(entries), per), lay)
