"""Target ``memmap``: the input is a whole handover (:mod:`fuzz.guided.container`: parse options,
root FDT, scratch areas, memory pages), so the radix tree of kho-v2..v4 and the chunk list of
kho-v1 are read over an image the input writes, then the clients are decoded, the handover checked
and its LUO state (when it has one) followed (the seeds are every fixture and the fuzzer's built
handovers of every version, page size and byte order)."""

from __future__ import annotations

from fuzz.guided.common import exercise, expected, handover, scratch
from fuzz.guided.container import Handover
from kho_formats.memory.image import PhysImage


def TestOneInput(data: bytes) -> None:
    c = Handover.loads(data)
    img = expected(lambda: PhysImage(c.segments))
    if img is None:
        return
    opts = {"version": c.version, "v1_bitmap": c.v1_bitmap, "received": c.received}
    h = handover(
        c.root, img, opts, page_size=c.page_size, byte_order=c.byteorder, root_fdt_phys=c.root_fdt_phys,
        scratch=list(c.scratch),
    )  # fmt: skip
    exercise(h, scratch())
