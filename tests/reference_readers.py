"""Slow reference readers of the memory maps, written with nothing but the
Construct declarations of :mod:`kho_formats.abi.layout` and
:meth:`RadixGeometry.decode`: one ``parse`` per node, chunk and bitmap, one
Python step per set bit.  They exist to check the fast numpy readers
(``read_radix``, ``read_chunklist``) against the declarations: if a struct
changes (a new layout variant), both must follow it.

They assume a well-formed map (the malformed-input tests cover the rest)
and return the preserved pages as a set of ``(phys, order)``.
"""

from __future__ import annotations

from collections.abc import Iterator

from kho_formats.abi import RadixGeometry
from kho_formats.abi.layout import Layout
from kho_formats.memory.image import PhysImage


def set_bits(words: list[int]) -> Iterator[int]:
    """Bit numbers of a Linux bitmap (``unsigned long`` words)."""
    for w, word in enumerate(words):
        while word:
            low = word & -word
            yield w * 64 + low.bit_length() - 1
            word ^= low


def reference_read_radix(image: PhysImage, root: int, geom: RadixGeometry, lay: Layout) -> set[tuple[int, int]]:
    """Walk ``kho_radix_node`` tables from the root (level ``DEPTH - 1``) down
    to ``kho_radix_leaf`` bitmaps, rebuilding each key from the indexes."""
    pages: set[tuple[int, int]] = set()
    if root == 0:
        return pages
    node_decl, leaf_decl = lay.kho_radix_node, lay.kho_radix_leaf

    def walk(phys: int, level: int, key: int) -> None:
        if level == 0:
            leaf = leaf_decl.parse(image.read(phys, leaf_decl.sizeof()))
            for bit in set_bits(leaf.bitmap.tolist()):
                pages.add(geom.decode(key | bit))
            return
        node = node_decl.parse(image.read(phys, node_decl.sizeof()))
        for index, child in enumerate(node.table.tolist()):
            if child:
                walk(child, level - 1, key | (index << geom.level_shift(level)))

    walk(root, geom.depth - 1, 0)
    return pages


def reference_read_chunklist(image: PhysImage, first: int, lay: Layout, bitmap_bytes: int) -> set[tuple[int, int]]:
    """Follow ``khoser_mem_chunk.hdr.next``; every used ``bitmaps[k]`` names a
    ``kho_mem_phys_bits`` whose bit ``b`` is the page
    ``phys_start + (b << (order + PAGE_SHIFT))``."""
    pages: set[tuple[int, int]] = set()
    chunk_decl = lay.khoser_mem_chunk
    bits_decl = lay.kho_mem_phys_bits(bitmap_bytes)
    phys = first
    while phys:
        chunk = chunk_decl.parse(image.read(phys, chunk_decl.sizeof()))
        order = chunk.hdr.order
        for phys_start, bitmap in chunk.used().tolist():
            bm = bits_decl.parse(image.read(bitmap, bits_decl.sizeof()))
            for bit in set_bits(bm.preserve.tolist()):
                pages.add((phys_start + (bit << (order + lay.page_shift)), order))
        phys = chunk.hdr.next
    return pages
