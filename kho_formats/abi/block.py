"""``include/linux/kho/abi/block.h``: ``struct kho_block_header_ser``, the header of a KHO serialization
block (a page of fixed-size entries, chained by ``next``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import construct as cs

from .struct import Typed, declare

if TYPE_CHECKING:  # pragma: no cover
    from .layout import Layout


@dataclass(frozen=True)
class KhoBlockHeaderSer:
    next: int
    count: int


@declare("kho_block_header_ser")
def _kho_block_header_ser(lay: Layout) -> cs.Construct:
    """``__packed struct kho_block_header_ser``; ``count`` entries follow."""
    return Typed(
        cs.Struct(
            "next" / lay.u64 * "phys of the next block, 0 = end",
            "count" / lay.u64 * "entries in this block",
        ),
        KhoBlockHeaderSer,
    )
