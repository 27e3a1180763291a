"""TEST ONLY: the one layout declaration that the imaginary ``kho-v5c``
(``tests/schemas/kho-v5c.toml``) needs: a ``khoser_mem_chunk_hdr`` with one
more u64 word.  Everything else (``khoser_mem_chunk``, its capacity, the
entry offsets in error addresses) follows from it."""

from __future__ import annotations

import construct as cs

from kho_formats.abi.layout import KhoserMemChunkHdr, Layout, Typed, declare

VARIANT = "v5c-flags"


@declare("khoser_mem_chunk_hdr", VARIANT)
def khoser_mem_chunk_hdr_v5c(lay: Layout) -> cs.Construct:
    return Typed(
        cs.Struct(
            "next" / lay.u64 * "phys of the next khoser_mem_chunk, 0 = end of the list",
            "order" / lay.u32 * "order of every bitmap in this chunk",
            "num_elms" / lay.u32 * "used entries of bitmaps[]",
            "flags" / cs.Default(lay.u64, 0) * "imaginary kho-v5c header word (written 0)",
        ),
        KhoserMemChunkHdr,
    )
