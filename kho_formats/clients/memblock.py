"""``memblock``: an FDT with one ``reserve-mem-v1`` child per ``reserve_mem=`` region.

Root ``compatible = "memblock-v1"``; each child is named by the user and has
``compatible = "reserve-mem-v1"``, ``start`` (u64) and ``size`` (u64), native order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ClientError, KhoFormatError
from ..fdt import FdtNode, build_fdt, get_strings, get_u64, parse_fdt, str_bytes, u64_bytes

NAME = "memblock"
COMPATIBLE = "memblock-v1"
REGION_COMPATIBLE = "reserve-mem-v1"


@dataclass(frozen=True)
class ReserveMem:
    name: str
    start: int
    size: int


def decode(blob: bytes, byteorder: str, *, where: str = NAME) -> list[ReserveMem]:
    fdt = parse_fdt(blob, where=where)
    compat = get_strings(fdt.root, "compatible", where=where)
    if COMPATIBLE not in compat:
        raise ClientError(f"{where}: compatible {compat}", path=f"{where}:/compatible", expected=COMPATIBLE)
    out = []
    for child in fdt.root.children:
        ccompat = get_strings(child, "compatible", where=where)
        if REGION_COMPATIBLE not in ccompat:
            raise ClientError(
                f"{where}: region compatible {ccompat}",
                path=f"{where}:{child.path}/compatible",
                expected=REGION_COMPATIBLE,
            )
        start = get_u64(child, "start", byteorder, where=where)
        size = get_u64(child, "size", byteorder, where=where)
        assert start is not None and size is not None
        if start + size > 1 << 64:
            raise ClientError(
                f"{where}: region {child.name} wraps the address space", path=f"{where}:{child.path}", phys=start
            )
        out.append(ReserveMem(child.name, start, size))
    return out


def encode(regions: Sequence[ReserveMem], byteorder: str) -> bytes:
    root = FdtNode("")
    root.set("compatible", str_bytes(COMPATIBLE))
    for r in regions:
        if not r.name or "/" in r.name or "@" in r.name:
            raise KhoFormatError(f"bad reserve_mem region name {r.name!r}", path=NAME)
        c = root.add_child(r.name)
        c.set("compatible", str_bytes(REGION_COMPATIBLE))
        c.set("start", u64_bytes(r.start, byteorder))
        c.set("size", u64_bytes(r.size, byteorder))
    return build_fdt(root, style="sequential-write")


def to_json(regions: list[ReserveMem]) -> list:
    return [{"name": r.name, "start": r.start, "size": r.size} for r in regions]
