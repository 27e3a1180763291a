"""``memfd-v2``: the LUO file handler of memfds (``mm/memfd_luo.c``, Linux 7.3).

A memfd file's ``data`` handle is the physical address of a page-aligned
``struct memfd_luo_ser`` (pos, size, seals, flags, nr_folios and a
``struct kho_vmalloc`` describing the folio array).  The array holds
``nr_folios`` 16-byte ``struct memfd_luo_folio_ser`` records
(``pfn:52 | flags:12``, ``index``); a record carries no order: the order is
the one the folio is preserved at in the KHO memory map (a folio is one
preserved page of its order, starting at ``pfn``).  An empty memfd still
has its ``memfd_luo_ser``, with ``nr_folios`` 0 and an empty descriptor.

The contents: folio ``k`` holds file bytes ``[index << PAGE_SHIFT, +
(PAGE_SIZE << order))``; pages without a folio read as zeros, and the file
ends at ``size``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ClientError, KhoFormatError
from ..findings import ERROR, WARNING, Finding
from ..image import PhysImage
from ..layout import LuoFileSer, MemfdLuoSer, memfd_folio_fields
from ..pageset import PageSet
from .base import CheckContext, DecodeContext
from .luo import MAX_DETAILED, FileHandler, LuoProblem
from .vmalloc import VmallocArea, read_vmalloc

COMPATIBLE = "memfd-v2"
#: ``MEMFD_LUO_ALL_SEALS``: F_SEAL_SEAL, _SHRINK, _GROW, _WRITE, _FUTURE_WRITE, _EXEC
MEMFD_LUO_ALL_SEALS = 0x3F
SEAL_NAMES = ("seal", "shrink", "grow", "write", "future_write", "exec")
#: ``MEMFD_LUO_FOLIO_DIRTY``, ``MEMFD_LUO_FOLIO_UPTODATE``
FOLIO_DIRTY, FOLIO_UPTODATE = 0x1, 0x2
#: ``MAX_LFS_FILESIZE`` on 64-bit kernels
MAX_LFS_FILESIZE = (1 << 63) - 1
#: the largest piece :meth:`MemfdHandler.contents` yields
CHUNK = 4 << 20

U64 = np.uint64


def preserved_orders(preserved: PageSet, phys: np.ndarray) -> np.ndarray:
    """For each address, the order of the preserved page that starts there
    (-1: no preserved page of any order starts there).  Vectorized: one
    binary search per order."""
    out = np.full(phys.size, -1, dtype=np.int64)
    if phys.size == 0:
        return out
    p = phys.astype(np.uint64)
    for o in preserved.orders:
        r = preserved.runs(o)
        unit = U64(preserved.page_size << o)
        i = np.searchsorted(r.starts, p, side="right").astype(np.int64) - 1
        ok = i >= 0
        j = np.where(ok, i, 0)
        s = r.starts[j]
        inside = ok & (p >= s) & ((p - s) // unit < r.counts[j]) & ((p - s) % unit == 0)
        out[inside & (out < 0)] = o
    return out


@dataclass
class MemfdFile:
    """A decoded ``memfd-v2`` file: the struct, its folio array and the folios."""

    ser_phys: int
    ser: MemfdLuoSer
    page_size: int
    area: VmallocArea | None = None
    #: per folio record, in array order
    phys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    flags: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    #: from the memory map; -1 where no preserved page starts at the folio (or no map was read)
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: whether ``order`` came from a memory map
    orders_known: bool = True
    problems: list[LuoProblem] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.ser.size

    def to_json(self) -> dict[str, Any]:
        s = self.ser
        orders = self.order.tolist()
        folios = [
            {"phys": p, "order": (o if o >= 0 else None), "index": i, "flags": f}
            for p, o, i, f in zip(self.phys.tolist(), orders, self.index.tolist(), self.flags.tolist())
        ]
        v = s.folios
        return {
            "size": s.size,
            "pos": s.pos,
            "seals": s.seals,
            "flags": s.flags,
            "nr_folios": s.nr_folios,
            "folios": folios,
            "ser_phys": self.ser_phys,
            "folios_vmalloc": {"first": v.first, "total_pages": v.total_pages, "flags": v.flags, "order": v.order},
            "problems": [p.to_json() for p in self.problems],
        }


def seal_names(seals: int) -> str:
    names = [n for b, n in enumerate(SEAL_NAMES) if seals >> b & 1]
    if seals & ~MEMFD_LUO_ALL_SEALS:
        names.append(f"{seals & ~MEMFD_LUO_ALL_SEALS:#x}?")
    return "|".join(names)


class MemfdHandler(FileHandler):
    compatible = COMPATIBLE
    json_key = "memfd"

    def decode(self, file: LuoFileSer, ctx: DecodeContext) -> MemfdFile:
        lay, image, where = ctx.layout, ctx.image, ctx.where
        if image is None:
            raise ClientError(f"{where}: no memory image", path=where)
        pa, ps = file.data, lay.page_size
        if pa == 0:
            raise ClientError(f"{where}: memfd file without memfd_luo_ser (data = 0)", path=where)
        size = lay.sizeof("memfd_luo_ser")
        raw = image.read(pa, size, "memfd_luo_ser")
        ser: MemfdLuoSer = lay.parse("memfd_luo_ser", raw, phys=pa, error=ClientError)
        m = MemfdFile(pa, ser, ps)
        if pa % ps:
            m.problems.append(LuoProblem(WARNING, "memfd-ser-align", "memfd_luo_ser is not page aligned", pa))
        if ser.seals & ~MEMFD_LUO_ALL_SEALS:
            m.problems.append(
                LuoProblem(
                    ERROR,
                    "memfd-seals",
                    f"seals {ser.seals:#x} outside MEMFD_LUO_ALL_SEALS {MEMFD_LUO_ALL_SEALS:#x}",
                    pa,
                )
            )
        if ser.size > MAX_LFS_FILESIZE:
            m.problems.append(
                LuoProblem(
                    ERROR, "memfd-size", f"size {ser.size:#x} is above MAX_LFS_FILESIZE {MAX_LFS_FILESIZE:#x}", pa
                )
            )
        if ser.flags:
            m.problems.append(LuoProblem(WARNING, "memfd-flags", f"flags {ser.flags:#x}: unused bits must be 0", pa))
        rec = lay.sizeof("memfd_luo_folio_ser")
        if ser.nr_folios == 0:
            if ser.folios.first or ser.folios.total_pages:
                m.problems.append(
                    LuoProblem(WARNING, "memfd-nr-folios", "nr_folios is 0 but the folio array is not empty", pa)
                )
            return m
        m.area = area = read_vmalloc(image, ser.folios, lay, budget=ctx.budget, where=f"{where}: memfd folio array")
        have = area.nr_pages * ps // rec
        n = min(ser.nr_folios, have)
        if ser.nr_folios > have:
            m.problems.append(
                LuoProblem(
                    ERROR,
                    "memfd-nr-folios",
                    f"nr_folios {ser.nr_folios} but the folio array holds only {have} records",
                    pa,
                )
            )
        elif (have - ser.nr_folios) * rec >= ps:
            m.problems.append(
                LuoProblem(
                    WARNING,
                    "memfd-nr-folios",
                    f"the folio array has {area.nr_pages} pages, {ser.nr_folios} records need fewer",
                    pa,
                )
            )
        if ctx.budget is not None:
            ctx.budget.entries_add(n, f"{where}: memfd folios", pa)
        data = _read_prefix(area, image, ps, n * rec)
        arr = np.frombuffer(data, dtype=lay.dtype_of("memfd_luo_folio_ser"), count=n)
        pfn, flags = memfd_folio_fields(arr["pfn_flags"], lay.byteorder)
        m.phys = (pfn << U64(lay.page_shift)).astype(np.uint64)
        m.flags = flags.astype(np.uint64)
        m.index = arr["index"].astype(np.uint64)
        st = ctx.state
        if st is not None and st.map_read:
            m.order = preserved_orders(st.preserved, m.phys)
        else:
            m.order = np.full(n, -1, dtype=np.int64)
            m.orders_known = False
        return m

    def to_json(self, result: MemfdFile) -> dict[str, Any]:
        return result.to_json()

    def referenced(self, result: MemfdFile, page_size: int) -> list[tuple[int, int]]:
        out = [(result.ser_phys, result.ser_phys + page_size)]
        for area in self.areas(result):
            out += [(int(c), int(c) + page_size) for c in area.chunks]
            out += [(int(a), int(a) + page_size) for a in area.page_addresses(page_size).tolist()]
        for p, o in zip(result.phys.tolist(), result.order.tolist()):
            out.append((p, p + (page_size << max(o, 0))))  # order unknown (no map): the first page
        return out

    def areas(self, result: MemfdFile) -> list[VmallocArea]:
        return [result.area] if result.area is not None else []

    def summary(self, file_json: dict[str, Any]) -> tuple[str, str, str]:
        from ..report import human_size

        m = file_json.get("memfd")
        if not m:
            return ("", "", "")
        orders = sorted({f["order"] for f in m["folios"] if f["order"] is not None})
        fol = str(m["nr_folios"]) + (f" (order {', '.join(map(str, orders))})" if orders else "")
        return (human_size(m["size"]), fol, f"{m['seals']:#x}" + (f" {seal_names(m['seals'])}" if m["seals"] else ""))

    def findings(self, result: MemfdFile, ctx: CheckContext, path: str) -> list[Finding]:
        m = result
        out = [Finding(p.severity, p.code, p.message, phys=p.phys, path=path) for p in m.problems]
        ps = ctx.page_size
        if not ctx.preserved_as(m.ser_phys - m.ser_phys % ps, 0):
            out.append(
                Finding(
                    ERROR,
                    "luo-page-not-preserved",
                    "memfd_luo_ser page is not preserved as an order-0 page",
                    m.ser_phys,
                    path,
                )
            )
        if m.phys.size == 0:
            return out
        shift = ps.bit_length() - 1

        def each(code: str, mask: np.ndarray, text: Any) -> None:
            hits = np.flatnonzero(mask)
            for k in hits[:MAX_DETAILED].tolist():
                out.append(Finding(ERROR, code, text(k), int(m.phys[k]), path))
            if hits.size > MAX_DETAILED:
                out.append(
                    Finding(
                        ERROR,
                        code,
                        f"... and {hits.size - MAX_DETAILED} more folios",
                        int(m.phys[hits[MAX_DETAILED]]),
                        path,
                    )
                )

        order = m.order
        if m.orders_known:
            each(
                "memfd-folio-not-preserved",
                order < 0,
                lambda k: f"folio {k} (index {int(m.index[k])}) is not a preserved page of any order",
            )
        o = np.maximum(order, 0).astype(np.uint64)
        each(
            "memfd-folio-order",
            (order >= 0) & (m.index % (U64(1) << o) != 0),
            lambda k: (
                f"folio {k}: order {int(order[k])} does not cover an aligned index range at index {int(m.index[k])}"
            ),
        )
        # the file's pages each folio covers: [index, index + 2**order)
        start = m.index
        end = start + (U64(1) << o)
        srt = np.argsort(start, kind="stable")
        s_sorted, e_sorted = start[srt], end[srt]
        reach = np.maximum.accumulate(e_sorted)
        over = np.zeros(start.size, dtype=bool)
        over[srt[1:]] = s_sorted[1:] < reach[:-1]
        each(
            "memfd-folio-overlap",
            over,
            lambda k: f"folio {k} (index {int(m.index[k])}) overlaps the index range of another folio",
        )
        limit = -(-m.size // ps)
        past = start >= U64(min(limit, (1 << 64) - 1))
        each(
            "memfd-folio-past-size",
            past,
            lambda k: (
                f"folio {k} starts at index {int(m.index[k])}, past the file's size {m.size} "
                f"({limit} pages of {1 << shift})"
            ),
        )
        _, first = np.unique(m.phys, return_index=True)
        dup = np.ones(m.phys.size, dtype=bool)
        dup[first] = False
        each("memfd-folio-duplicate", dup, lambda k: f"folio {k}: the same folio is listed twice")
        return out

    def index_json(self, result: MemfdFile) -> dict[str, Any]:
        s = result.ser
        return {"size": s.size, "pos": s.pos, "seals": s.seals, "flags": s.flags, "nr_folios": s.nr_folios}

    def content_size(self, result: MemfdFile) -> int:
        return result.size

    def contents(self, result: MemfdFile, image: PhysImage, page_size: int) -> Iterator[tuple[int, memoryview]]:
        """Folio by folio, in index order (a folio of unknown order counts as
        one page), clipped at ``size``; at most :data:`CHUNK` bytes a piece."""
        m = result
        for k in np.argsort(m.index, kind="stable").tolist():
            off = int(m.index[k]) * page_size
            if off >= m.size:
                continue
            n = min(page_size << max(int(m.order[k]), 0), m.size - off)
            phys = int(m.phys[k])
            for a in range(0, n, CHUNK):
                b = min(n, a + CHUNK)
                yield off + a, image.view(phys + a, b - a, f"memfd folio {k} at index {int(m.index[k])}")


def _read_prefix(area: VmallocArea, image: PhysImage, page_size: int, nbytes: int) -> bytes:
    """The first ``nbytes`` of a vmalloc area (only the groups needed)."""
    grp = page_size << area.desc.order
    need = -(-nbytes // grp)
    parts = [image.read(int(g), grp, "memfd folio array") for g in area.groups[:need].tolist()]
    data = b"".join(parts)
    if len(data) < nbytes:  # pragma: no cover - read_vmalloc guarantees the groups
        raise KhoFormatError("memfd folio array is short", phys=area.desc.first)
    return data[:nbytes]


HANDLER = MemfdHandler()
