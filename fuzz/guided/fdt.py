"""Target ``fdt``: the input is a root FDT.  It is parsed as an FDT and rendered as DTS, then read
as the root of a handover over the ``v4-4k`` fixture's memory image (the version from its
``compatible``, so every version's property rules and memory-map reader are reached; the map
pointer lands in that image or outside it), and the result is checked."""

from __future__ import annotations

from fuzz.guided.common import FIX, exercise, expected, handover
from kho_formats.memory.image import PhysImage
from kho_formats.model.fdt import parse_fdt, to_dts

IMAGE = PhysImage.from_elf(FIX / "v4-4k" / "image.elf")


def TestOneInput(data: bytes) -> None:
    expected(lambda: parse_fdt(data, where="root FDT"))
    expected(lambda: to_dts(data, byteorder="little", where="root FDT"))
    exercise(handover(data, IMAGE, page_size=4096, byte_order="little"))
