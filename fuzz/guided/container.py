"""A handover as one flat byte string, for the ``memmap`` target: the parse options, the root FDT,
scratch areas and the memory image page by page.  Uncompressed and field by field, so libFuzzer's
byte mutations land on the handover's own bytes (a root FDT property, a radix-tree entry, a chunk
list's ``next`` pointer) and not on a compressor's.

Layout (little-endian; a truncated input simply ends the image)::

    u8   flags       bits 0-2 version (0 auto, 1..4 kho-v1..v4), bits 3-4 page size (4/16/64 KiB),
                     bit 5 big-endian, bit 6 kho-v1 bitmap "512" (else "page"), bit 7 received
    u64  root_fdt_phys   (0: unknown)
    u16  root FDT length, then the root FDT
    u8   scratch areas, then (u64 start, u64 size) each
    then segments: u64 phys, u32 length, u32 stored, stored bytes (the rest of length is zeros)

The harness caps a segment at 1 MiB and the image at 16 MiB: the library's bounds are the point,
not the harness's own allocations.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PAGE_SIZES = (4096, 16384, 65536, 4096)
VERSIONS = (None, "kho-v1", "kho-v2", "kho-v3", "kho-v4", None, None, None)
MAX_SEGMENT = 1 << 20
MAX_IMAGE = 16 << 20


@dataclass
class Handover:
    version: str | None = None
    page_size: int = 4096
    byteorder: str = "little"
    v1_bitmap: str | None = None
    received: bool = False
    root_fdt_phys: int | None = None
    root: bytes = b""
    scratch: list[tuple[int, int]] = field(default_factory=list)
    segments: list[tuple[int, bytes]] = field(default_factory=list)

    def dumps(self) -> bytes:
        flags = VERSIONS.index(self.version) | (PAGE_SIZES.index(self.page_size) << 3)
        flags |= (self.byteorder == "big") << 5 | (self.v1_bitmap == "512") << 6 | self.received << 7
        out = bytearray(struct.pack("<BQH", flags, self.root_fdt_phys or 0, len(self.root)))
        out += self.root
        out += struct.pack("<B", len(self.scratch))
        for s, n in self.scratch:
            out += struct.pack("<QQ", s, n)
        for phys, data in self.segments:
            stored = data.rstrip(b"\0")
            out += struct.pack("<QII", phys, len(data), len(stored)) + stored
        return bytes(out)

    @classmethod
    def loads(cls, data: bytes) -> Handover:
        h = cls()
        if len(data) < 11:
            return h
        flags, rp, n = struct.unpack_from("<BQH", data, 0)
        h.version = VERSIONS[flags & 7]
        h.page_size = PAGE_SIZES[(flags >> 3) & 3]
        h.byteorder = "big" if flags & 0x20 else "little"
        h.v1_bitmap = "512" if flags & 0x40 else ("page" if h.version == "kho-v1" else None)
        h.received = bool(flags & 0x80)
        h.root_fdt_phys = rp or None
        off = 11
        h.root = data[off : off + n]
        off += n
        if off < len(data):
            k = data[off]
            off += 1
            for _ in range(k):
                if off + 16 > len(data):
                    break
                h.scratch.append(struct.unpack_from("<QQ", data, off))
                off += 16
        total = 0
        while off + 16 <= len(data):
            phys, ln, stored = struct.unpack_from("<QII", data, off)
            off += 16
            ln = min(ln, MAX_SEGMENT)
            body = data[off : off + min(stored, ln)]
            off += min(stored, ln)
            if total + ln > MAX_IMAGE:
                break
            total += ln
            h.segments.append((phys, body.ljust(ln, b"\0")))
        return h


def from_fixture(handover_obj: object, *, page_split: bool = True) -> Handover:
    """A container of an open :class:`kho_formats.api.Handover` (fixture or capture), page by page."""
    cap = handover_obj.capture  # type: ignore[attr-defined]
    st = handover_obj.state  # type: ignore[attr-defined]
    ps = st.page_size
    segs: list[tuple[int, bytes]] = []
    for seg in cap.image:
        data = bytes(seg.data)
        step = ps if page_split else len(data)
        for off in range(0, len(data), step):
            segs.append((seg.phys + off, data[off : off + step]))
    bm = st.map_params.get("v1_bitmap_bytes")
    return Handover(
        version=st.version,
        page_size=ps,
        byteorder=st.byteorder,
        v1_bitmap=("512" if bm == 512 else "page") if st.version == "kho-v1" else None,
        received=bool(cap.received),
        root_fdt_phys=cap.root_fdt_phys,
        root=bytes(cap.root_fdt),
        scratch=[(int(a), int(b)) for a, b in st.scratch],
        segments=segs,
    )


__all__ = ["Handover", "from_fixture"]
