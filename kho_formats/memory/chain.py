"""Walking a chain of pages linked by a u64 ``next`` at offset 0.

Three KHO structures are such chains: the kho-v1 ``khoser_mem_chunk`` list,
``kho_vmalloc_chunk`` lists and KHO serialization blocks.  One walker serves
them all: it refuses unaligned pointers, loops and pages the image lacks,
charges the budget once per page, and so reads each page at most once.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._types import as_byteorder
from ..errors import KhoFormatError
from ..limits import Budget
from .image import PhysImage


def walk_page_chain(
    image: PhysImage,
    first: int,
    page_size: int,
    byteorder: str,
    budget: Budget,
    *,
    noun: str,
    error: type[KhoFormatError],
    where: str = "",
    kind: str = "chain",
    short: str | None = None,
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(phys, page bytes)`` from ``first`` until ``next`` is 0.

    ``noun`` names the page in errors (``"khoser_mem_chunk"``), ``kind`` what
    the kernel calls the whole (``"list"``, ``"chain"``), ``short`` the page
    in "next of ..." (default ``noun``), ``where`` prefixes every message (a
    client's FDT path, for instance).
    """
    pre = f"{where}: " if where else ""
    bo = as_byteorder(byteorder)
    seen = set()
    phys, prev = first, None
    while phys:
        came = f" (next of {short or noun} {prev:#x})" if prev is not None else ""
        if phys % page_size:
            raise error(
                f"{pre}{noun} pointer is not page aligned{came}", phys=phys, expected=f"a multiple of {page_size:#x}"
            )
        if phys in seen:
            raise error(
                f"{pre}{noun} {kind} loops back to {phys:#x}{came}",
                phys=phys,
                expected=f"a {kind} ending with next = 0",
            )
        seen.add(phys)
        budget.page(phys, noun)
        if not image.has(phys, page_size):
            raise error(f"{pre}{noun} is outside the image{came}", phys=phys, expected="a page in the memory image")
        page = image.read(phys, page_size, noun)
        yield phys, page
        prev, phys = phys, int.from_bytes(page[:8], bo)


__all__ = ["walk_page_chain"]
