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

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ... import filecopy
from ...abi.layout import (
    KHO_VMALLOC_ALLOC,
    KhoVmalloc,
    Layout,
    LuoFileSer,
    MemfdLuoSer,
    memfd_folio_fields,
    memfd_folio_word,
)
from ...abi.memfd import (
    MEMFD_FOLIO_FLAGS_BITS,
    MEMFD_FOLIO_PFN_BITS,
    MEMFD_LUO_ALL_SEALS,
    MEMFD_LUO_FH_COMPATIBLE,
    MEMFD_LUO_FOLIO_DIRTY,
    MEMFD_LUO_FOLIO_UPTODATE,
)
from ...errors import ClientError, KhoFormatError, SpecError
from ...findings import ERROR, WARNING, Finding
from ...memory.distinct import first_of_each
from ...memory.image import LazyData, PhysImage
from ...memory.pageset import PageSet
from ...records import records
from ...safeio import note_input
from ...text import human_size
from ..specfields import INT, STR, ListOf, SpecField, Table, spec_file_path
from .base import CheckContext, DecodeContext, Segment, gen_bytes
from .luo.handlers import FileBuildContext, FileBuilt, FileHandler
from .luo.model import MAX_DETAILED, LuoProblem
from .vmalloc import VmallocArea, build_vmalloc, encode_vmalloc_chunks, read_vmalloc

COMPATIBLE = MEMFD_LUO_FH_COMPATIBLE
SEAL_NAMES = ("seal", "shrink", "grow", "write", "future_write", "exec")
FOLIO_DIRTY, FOLIO_UPTODATE = MEMFD_LUO_FOLIO_DIRTY, MEMFD_LUO_FOLIO_UPTODATE
#: ``MAX_LFS_FILESIZE`` on 64-bit kernels
MAX_LFS_FILESIZE = (1 << 63) - 1
UINT_MAX = (1 << 32) - 1
#: the largest piece :meth:`MemfdHandler.contents` yields
CHUNK = 4 << 20
#: lone folios smaller than this (not adjacent in memory to the next) are copied together, CHUNK bytes at a time
GATHER_BELOW = 1 << 20
#: folio addresses looked up in the memory map at a time (:func:`preserved_orders`)
ORDER_CHUNK = 1 << 13

U64 = np.uint64


def restored_once(m: MemfdFile) -> np.ndarray:
    """Record numbers, in index order, of the folios the kernel would put in
    the file: pfn != 0, each folio at its first record only."""
    if m.phys.size == 0:
        return np.zeros(0, np.int64)
    if _distinct_pages(m.phys, m.page_size):  # the usual case, found without sorting the addresses
        keep = np.flatnonzero(m.phys != 0)
        srt = keep[np.argsort(m.index[keep], kind="stable")]  # fast: records are mostly in index order
        idx = m.index[srt]
        if idx.size < 2 or bool(np.all(idx[1:] > idx[:-1])):  # no two at one index: no tie to break
            return srt
    first = _first_records(m.phys)
    keep = first[m.phys[first] != 0]
    return keep[np.argsort(m.index[keep], kind="stable")]


def _distinct_pages(phys: np.ndarray, page_size: int) -> bool:
    """Whether the page-aligned addresses are all different, by marking them
    in a byte map of the range they span (when it is at most 4 bytes a
    folio); False when unsure."""
    n = phys.size
    if n < 2:
        return True
    if bool(np.all(phys[1:] > phys[:-1])):
        return True
    lo = int(phys.min())
    span = (int(phys.max()) - lo) // page_size + 1
    if span > 4 * n or np.any(phys % U64(page_size)):
        return False
    mark = np.zeros(span, dtype=np.uint8)
    mark[(phys - U64(lo)) // U64(page_size)] = 1
    return int(np.count_nonzero(mark)) == n


def _first_records(phys: np.ndarray) -> np.ndarray:
    """:func:`~kho_formats.memory.distinct.first_of_each` of folio
    addresses, by an unstable sort (numpy's stable sort of 2 M shuffled u64
    takes 0.6-0.9 s here, its quicksort 0.2 s): the first record of each
    address is the least record number among its equals."""
    if phys.size < 2 or bool(np.all(phys[1:] > phys[:-1])):
        return first_of_each(phys)  # in order already: every record its own folio
    order = np.argsort(phys)
    s = phys[order]
    new = np.empty(s.size, dtype=bool)
    new[0] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    del s
    if new.all():
        return order.astype(np.int64, copy=False)
    return np.minimum.reduceat(order, np.flatnonzero(new)).astype(np.int64, copy=False)


@dataclass(frozen=True)
class FolioRuns:
    """The folios :meth:`MemfdHandler.contents` gives, in its order, and the
    runs they make: position ``j`` is record ``record[j]``, file bytes
    ``[off[j], off[j] + length[j])`` at ``phys[j]`` (clipped at the file's
    size); run ``r`` is positions ``starts[r] .. stops[r] - 1``, each folio
    starting in the file and in physical memory where the one before ends."""

    record: np.ndarray
    off: np.ndarray
    phys: np.ndarray
    length: np.ndarray
    starts: np.ndarray
    stops: np.ndarray


def _file_extents(m: MemfdFile, page_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The folios that count (restored once, starting before the file's end), in record
    order: ``(keep, off, length)``: their record numbers, and the file bytes each covers,
    uint64, cut at the file's size.  A few 8-byte arrays per folio, built in place."""
    size = m.size
    shift = page_size.bit_length() - 1
    keep = restored_once(m) if size > 0 else np.zeros(0, np.int64)
    off = m.index[keep].astype(U64, copy=False)  # a new array (fancy indexing): shifted in place below
    inside = off <= U64(max(size - 1, 0) >> shift)  # starts before the end of the file
    if not inside.all():
        keep, off = keep[inside], off[inside]
    del inside
    off <<= U64(shift)  # at most size - 1: no overflow
    order = m.order[keep]
    length = np.left_shift(U64(page_size), np.clip(order, 0, 63 - shift).astype(U64))
    length[order > 63 - shift] = U64((1 << 64) - 1)  # reaches past any file: cut at size below
    del order
    np.minimum(length, U64(size) - off, out=length)
    return keep, off, length


def folio_runs(m: MemfdFile, page_size: int) -> FolioRuns:
    """:class:`FolioRuns` of a decoded memfd, vectorized (no Python loop per folio)."""
    keep, off, length = _file_extents(m, page_size)
    phys = m.phys[keep].astype(U64)
    end = phys + length  # wraps past 2**64 for a hostile pfn: never joined to what follows
    joins = (off[1:] == off[:-1] + length[:-1]) & (phys[1:] == end[:-1]) & (end[:-1] > phys[:-1])
    starts = np.concatenate((np.zeros(min(keep.size, 1), np.int64), np.flatnonzero(~joins) + 1))
    stops = np.concatenate((starts[1:], np.full(min(keep.size, 1), keep.size, np.int64)))
    return FolioRuns(keep, off, phys, length, starts, stops)


def _folio_pieces(
    image: PhysImage, record: int, index: int, off: int, phys: int, n: int
) -> Iterator[tuple[int, memoryview]]:
    """One folio's bytes, :data:`CHUNK` at a time."""
    for a in range(0, n, CHUNK):
        b = min(n, a + CHUNK)
        yield off + a, image.view(phys + a, b - a, f"memfd folio {record} at index {index}")


def memfd_max_size(page_size: int) -> int:
    """The largest memfd a 7.3 kernel preserves: ``memfd_luo_preserve``
    refuses (``-EFBIG``) more than ``UINT_MAX`` pages."""
    return min(UINT_MAX * page_size, MAX_LFS_FILESIZE)


def preserved_orders(preserved: PageSet, phys: np.ndarray) -> np.ndarray:
    """For each address, the order of the preserved page that starts there
    (-1: no preserved page of any order starts there).  Vectorized: one
    binary search per order."""
    out = np.full(phys.size, -1, dtype=np.int8)  # an order is below 64
    if phys.size == 0:
        return out
    runs = [(o, preserved.runs(o), U64(preserved.page_size << o)) for o in preserved.orders]
    for c in range(0, phys.size, ORDER_CHUNK):  # the temporaries below sized by the chunk, not the folio count
        p = phys[c : c + ORDER_CHUNK].astype(np.uint64, copy=False)
        got = out[c : c + ORDER_CHUNK]
        for o, r, unit in runs:
            i = np.searchsorted(r.starts, p, side="right").astype(np.int64) - 1
            ok = i >= 0
            j = np.where(ok, i, 0)
            s = r.starts[j]
            inside = ok & (p >= s) & ((p - s) // unit < r.counts[j]) & ((p - s) % unit == 0)
            got[inside & (got < 0)] = o
    return out


def folio_ranges(phys: np.ndarray, order: np.ndarray, page_size: int) -> list[tuple[int, int]]:
    """The byte ranges the folios cover (order unknown, -1: the first page), coalesced in
    numpy: a few tuples for a 256 GiB memfd of contiguous folios, not one per folio."""
    if phys.size == 0:
        return []
    start = phys.astype(np.uint64)
    size = U64(page_size) << np.maximum(order, 0).astype(np.uint64)
    end = start + size
    wrap = end < start  # past 2**64 (hostile): kept as exact Python ints
    out = [(int(a), int(a) + int(n)) for a, n in zip(start[wrap].tolist(), size[wrap].tolist())]
    start, end = start[~wrap], end[~wrap]
    if start.size:
        srt = np.argsort(start, kind="stable")
        s, e = start[srt], end[srt]
        reach = np.maximum.accumulate(e)
        first = np.ones(s.size, dtype=bool)
        first[1:] = s[1:] > reach[:-1]
        at = np.flatnonzero(first)
        out += list(zip(s[at].tolist(), np.maximum.reduceat(e, at).tolist()))
    return out


@dataclass
class MemfdFile:
    """A decoded ``memfd-v2`` file: the struct, its folio array and the folios."""

    ser_phys: int
    ser: MemfdLuoSer
    page_size: int
    area: VmallocArea | None = None
    #: per folio record, in array order (19 bytes a folio: ``flags`` holds the 12 flag bits, ``order`` is int8)
    phys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    flags: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint16))
    #: from the memory map; -1 where no preserved page starts at the folio (or no map was read)
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    #: whether ``order`` came from a memory map
    orders_known: bool = True
    problems: list[LuoProblem] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.ser.size

    def to_json(self) -> dict[str, Any]:
        s = self.ser
        order = np.where(self.order < 0, -1, self.order)
        folios = records({"phys": self.phys, "order": order, "index": self.index, "flags": self.flags}, {"order": -1})
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


#: ``fill``: what the contents are after ``hex`` / ``file``; ``absent``: the folios are
#: allocated, recorded and preserved but their contents are not in the image (a
#: metadata-only handover: building 1 TiB of guest memory costs what its metadata costs)
FILLS = ("seed", "zero", "absent")
#: generated contents come in pieces of this size (a piece depends only on seed, label and offset)
CONTENT_PIECE = 64 << 10

MEMFD_FOLIO_FIELDS = (
    SpecField("index", INT, doc="first page of the file the folio holds", required=True),
    SpecField("order", INT, 0, doc="folio order"),
    SpecField("flags", INT, FOLIO_DIRTY | FOLIO_UPTODATE, doc="record flags"),
)


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
        elif ser.size > memfd_max_size(ps):
            m.problems.append(
                LuoProblem(
                    ERROR,
                    "memfd-size",
                    f"size {ser.size:#x} is more than UINT_MAX pages of {ps} bytes (memfd_luo_preserve refuses "
                    "such a file with -EFBIG: no kernel wrote this)",
                    pa,
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
        # records only from the groups the kernel restores: an array that
        # lists one group again and again is read once (vmalloc-group-aliased)
        have = area.restored_nr_pages * ps // rec
        n = min(ser.nr_folios, have)
        if ser.nr_folios > have:
            held = (
                f"the folio array holds only {have} records"
                if area.restorable == area.groups.size
                else f"the folio array's groups before the first repeated one hold only {have} records"
            )
            m.problems.append(LuoProblem(ERROR, "memfd-nr-folios", f"nr_folios {ser.nr_folios} but {held}", pa))
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
        # the records' bytes once, then each field as its own array (no more copies than that held at a time)
        arr = np.frombuffer(_read_prefix(area, image, ps, n * rec), dtype=lay.dtype_of("memfd_luo_folio_ser"), count=n)
        m.index = arr["index"].astype(np.uint64)
        word = arr["pfn_flags"].astype(np.uint64)
        del arr
        pfn, flags = memfd_folio_fields(word, lay.byteorder)
        del word
        m.flags = flags.astype(np.uint16)  # MEMFD_FOLIO_FLAGS_BITS (12) of them
        del flags
        pfn <<= U64(lay.page_shift)
        m.phys = pfn
        st = ctx.state
        if st is not None and st.map_read:
            m.order = preserved_orders(st.preserved, m.phys)
        else:
            m.order = np.full(n, -1, dtype=np.int8)
            m.orders_known = False
        return m

    def to_json(self, result: MemfdFile) -> dict[str, Any]:
        return result.to_json()

    def referenced(self, result: MemfdFile, page_size: int) -> list[tuple[int, int]]:
        out = [(result.ser_phys, result.ser_phys + page_size)]
        for area in self.areas(result):
            out += [(int(c), int(c) + page_size) for c in area.chunks]
            out += area.group_ranges(page_size)
        return out + folio_ranges(result.phys, result.order, page_size)

    def areas(self, result: MemfdFile) -> list[VmallocArea]:
        return [result.area] if result.area is not None else []

    def summary(self, file_json: dict[str, Any]) -> tuple[str, str, str]:

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
            lambda k: (
                f"folio {k} (index {int(m.index[k])}) overlaps the index range of another folio: the next kernel's "
                "shmem_add_to_page_cache refuses the later one with -EEXIST, memfd_luo_retrieve fails and the "
                "file is not restored"
            ),
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
        first = first_of_each(m.phys)
        dup = np.ones(m.phys.size, dtype=bool)
        dup[first] = False
        each(
            "memfd-folio-duplicate",
            dup,
            lambda k: (
                f"folio {k} (index {int(m.index[k])}): the folio at {int(m.phys[k]):#x} is listed again: the next "
                "kernel's kho_restore_folio refuses a second restore ('Unable to restore folio'), "
                "memfd_luo_retrieve_folios fails with -EIO and the file is not restored"
            ),
        )
        return out

    def folio_view(self, result: MemfdFile) -> dict[str, Any]:
        """What ``kho diff`` compares of the folio list: how many records and
        a SHA-256 of the sorted ``(index, order)`` pairs (order -1: unknown),
        computed in numpy whatever the count."""
        import hashlib

        m = result
        pairs = np.empty(m.index.size, dtype=[("index", "<u8"), ("order", "<i8")])
        pairs["index"], pairs["order"] = m.index, m.order
        pairs.sort(order=["index", "order"])
        return {"records": int(m.index.size), "sha256": hashlib.sha256(pairs.tobytes()).hexdigest()}

    def index_json(self, result: MemfdFile) -> dict[str, Any]:
        s = result.ser
        return {"size": s.size, "pos": s.pos, "seals": s.seals, "flags": s.flags, "nr_folios": s.nr_folios}

    def content_size(self, result: MemfdFile) -> int:
        return result.size

    def contents(self, result: MemfdFile, image: PhysImage, page_size: int) -> Iterator[tuple[int, memoryview]]:
        """Folio by folio, in index order (a folio of unknown order counts as
        one page), clipped at ``size``; at most :data:`CHUNK` bytes a piece.
        Only what the kernel would restore: records with pfn 0 are skipped
        (``memfd_luo_retrieve_folios`` does), and a folio listed again counts
        once, at its first record (``kho_restore_folio`` refuses a second
        restore of the same folio), so the work is bounded by the distinct
        folios, whatever the records repeat.  Folios that follow each other
        both in the file and in physical memory come as one run
        (:func:`folio_runs`) cut at :data:`CHUNK`, and small folios that follow
        each other in the file but lie apart in memory (an order-0 page cache)
        are gathered into one piece of up to :data:`CHUNK` bytes: the same
        bytes at the same offsets, in a few large pieces instead of one small
        piece per folio."""
        m = result
        runs = folio_runs(m, page_size)
        st, sp = runs.starts, runs.stops
        r_off, r_phys = runs.off[st], runs.phys[st]
        r_len = runs.off[sp - 1] + runs.length[sp - 1] - r_off
        # stretches of small lone folios (order-0 page cache scattered over memory), each
        # right after the one before in the file and of the same size: gathered CHUNK at a time
        lone = (sp - st == 1) & (r_len < GATHER_BELOW) & (r_len <= CHUNK)
        same = lone[1:] & lone[:-1] & (r_len[1:] == r_len[:-1]) & (r_off[1:] == r_off[:-1] + r_len[:-1])
        g_start = np.concatenate((np.zeros(min(st.size, 1), np.int64), np.flatnonzero(~same) + 1))
        g_stop = np.concatenate((g_start[1:], np.full(min(st.size, 1), st.size, np.int64)))

        def run(r: int) -> Iterator[tuple[int, memoryview]]:
            a, b = int(st[r]), int(sp[r])
            off, phys, n = int(r_off[r]), int(r_phys[r]), int(r_len[r])
            if b - a > 1 and not image.has(phys, n):
                for j in range(a, b):  # memory missing in the run: folio by folio, so the error names the folio
                    k = int(runs.record[j])
                    yield from _folio_pieces(
                        image, k, int(m.index[k]), int(runs.off[j]), int(runs.phys[j]), int(runs.length[j])
                    )
                return
            k = int(runs.record[a])
            yield from _folio_pieces(image, k, int(m.index[k]), off, phys, n)

        with filecopy.RowReader() as reader:  # gathered folios read from the image file, not through its mapping
            for ga, gb in zip(g_start.tolist(), g_stop.tolist()):
                if gb - ga == 1:
                    yield from run(ga)
                    continue
                n = int(r_len[ga])
                per = max(1, CHUNK // n)
                for c in range(ga, gb, per):
                    d = min(gb, c + per)
                    got = image.rows(r_phys[c:d], n)
                    if got is None:  # not all in one segment (or not in memory): run by run
                        for r in range(c, d):
                            yield from run(r)
                        continue
                    rows, at = got
                    yield int(r_off[c]), memoryview(reader.take(rows, at))

    def content_runs(self, result: MemfdFile, page_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What :meth:`contents` gives, as arrays instead of bytes: ``(off,
        phys, length)`` uint64 of each run of folios (adjacent in the file and
        in memory, as :func:`folio_runs` joins them), in file order, each byte
        once (a run reaching into what the runs before it cover is cut, one
        inside it dropped, as :func:`~kho_formats.model.clients.digest.pieces`
        does), inside ``size``.  Computed with a few 8-byte arrays per folio
        alive at a time (the three returned among them)."""
        m = result
        keep, off, length = _file_extents(m, page_size)
        phys = m.phys[keep]
        del keep
        if off.size > 1:
            # a folio starting in the file and in memory where the one before ends joins its run
            pend = phys + length  # wraps past 2**64 for a hostile pfn: never joined to what follows
            joins = (off[1:] == off[:-1] + length[:-1]) & (phys[1:] == pend[:-1]) & (pend[:-1] > phys[:-1])
            del pend
            if joins.any():
                first = np.concatenate(([True], ~joins))
                last = np.concatenate((~joins, [True]))
                end = (off + length)[last]
                off, phys = off[first], phys[first]
                length = end - off
                del first, last, end
            del joins
            end = off + length
            reach = np.maximum.accumulate(end)  # what the runs up to each one cover
            if np.any(off[1:] < reach[:-1]):  # overlapping folios (hostile): cut or drop, first come first kept
                at = np.concatenate((np.zeros(1, U64), reach[:-1]))
                cut = np.maximum(off, at)
                kept = end > cut
                phys = phys + (cut - off)  # wraps only where the address did (such a run is not in the image)
                off = cut
                off, phys, end = off[kept], phys[kept], end[kept]
                length = end - off
            del end, reach
        return off, phys, length

    # -- building (the LUO spec's memfd files) -------------------------------------------------

    spec_fields = (
        SpecField("size", INT, doc="file size in bytes", default_doc="the length of `hex` / `file`, else 0"),
        SpecField("pos", INT, 0, doc="file position"),
        SpecField("seals", INT, 0, doc="F_SEAL_* bits (seal 1, shrink 2, grow 4, write 8, future_write 16, exec 32)"),
        SpecField("folio_order", INT, 0, doc="order of the folios that cover the file"),
        SpecField(
            "folios",
            ListOf(Table(MEMFD_FOLIO_FIELDS), "a list of {index, order, flags} tables"),
            doc="explicit folios in array order (pages without one read as zeros)",
            default_doc="`size` covered by `folio_order` folios",
        ),
        SpecField("folio_flags", INT, FOLIO_DIRTY | FOLIO_UPTODATE, doc="folio record flags (dirty 1, uptodate 2)"),
        SpecField("seed", INT, doc="seed of generated contents", default_doc="the blob's seed"),
        SpecField(
            "fill",
            STR,
            doc="contents after `hex`/`file`: `seed` or `zero`; `absent`: the folios' contents are not in the image",
            choices=FILLS,
        ),
        SpecField("hex", STR, doc="the first bytes of the contents"),
        SpecField("file", STR, doc="a file with the first bytes of the contents, relative to the spec"),
    )

    def spec_params(self, values: dict[str, Any], where: str, base_dir: Path | None) -> MemfdParams:
        return memfd_params(values, where, base_dir)

    def folio_orders(self, params: MemfdParams, page_size: int, where: str) -> list[int]:
        return [f.order for f in check_folios(params, page_size, where)]

    def folio_demand(self, params: MemfdParams, page_size: int) -> tuple[int, int]:
        return folio_demand(params, page_size)

    def build_file(self, params: MemfdParams, ctx: FileBuildContext, folio_phys: Sequence[int]) -> FileBuilt:
        return build_memfd(params, ctx, folio_phys)

    def reencode(self, result: MemfdFile, lay: Layout) -> list[tuple[int, bytes]]:
        return reencode_memfd(result, lay)


def _read_prefix(area: VmallocArea, image: PhysImage, page_size: int, nbytes: int) -> np.ndarray:
    """The first ``nbytes`` of a vmalloc area (only the groups needed), as
    one uint8 array filled group by group (the bytes held once, and not
    left mapped: a 2 M-folio array is 32 MiB of the image)."""
    grp = page_size << area.desc.order
    groups = area.restored_groups()[: -(-nbytes // grp)].tolist()
    if len(groups) * grp < nbytes:  # pragma: no cover - the caller asks for at most the restored groups' bytes
        raise KhoFormatError("memfd folio array is short", phys=area.desc.first)
    out = np.empty(nbytes, dtype=np.uint8)
    dest = out.data
    with filecopy.RowReader() as files:  # a mapped image file is read with pread: its pages stay unmapped
        for k, g in enumerate(groups):
            a = k * grp
            b = min(nbytes, a + grp)
            view = image.view(int(g), b - a, "memfd folio array")
            where = filecopy.file_range(view)
            fd = files.source(where[0]) if where is not None else None
            try:
                if fd is not None and where is not None and os.preadv(fd, [dest[a:b]], where[1]) == b - a:
                    continue
            except OSError:
                pass
            out[a:b] = np.frombuffer(view, dtype=np.uint8)  # not a file, or it shrank: through the mapping
    return out


# -- building -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemfdFolioSpec:
    index: int
    order: int
    flags: int = FOLIO_DIRTY | FOLIO_UPTODATE


@dataclass(frozen=True)
class MemfdParams:
    """A memfd file of a LUO spec."""

    size: int = 0
    pos: int = 0
    seals: int = 0
    folio_order: int = 0
    #: explicit folios (array order); None: ``size`` covered by ``folio_order`` folios from index 0
    folios: tuple[MemfdFolioSpec, ...] | None = None
    folio_flags: int = FOLIO_DIRTY | FOLIO_UPTODATE
    seed: int | None = None
    fill: str = "seed"
    #: the first bytes of the contents (``hex``), or a file holding them (``file``)
    head: bytes = b""
    head_file: str | None = None
    head_size: int = 0

    def folio_layout(self, page_size: int) -> list[MemfdFolioSpec]:
        if self.folios is not None:
            return list(self.folios)
        pages = -(-self.size // page_size)
        return [MemfdFolioSpec(i, self.folio_order, self.folio_flags) for i in range(0, pages, 1 << self.folio_order)]


def pmd_order(page_size: int) -> int:
    """The largest shmem folio: ``PMD_ORDER`` (a page of 8-byte PTEs maps 2**order pages)."""
    return (page_size // 8).bit_length() - 1


def memfd_params(values: dict[str, Any], where: str, base_dir: Path | None) -> MemfdParams:
    """Validated memfd keys of a LUO spec file (page-size rules come at build time)."""
    v = values
    if v["hex"] is not None and v["file"] is not None:
        raise SpecError(f"{where}: give hex or file, not both")
    head, head_file, head_size = b"", None, 0
    if v["hex"] is not None:
        try:
            head = bytes.fromhex(re.sub(r"\s+", "", v["hex"]))
        except ValueError:
            raise SpecError(f"{where}.hex: not hex digits") from None
        head_size = len(head)
    elif v["file"] is not None:
        fp = spec_file_path(v["file"], f"{where}.file", base_dir)
        try:
            head_size = fp.stat().st_size
        except OSError as exc:
            raise SpecError(f"{where}.file: cannot read {fp}: {exc.strerror}") from None
        if not fp.is_file():
            raise SpecError(f"{where}.file: {fp} is not a regular file")
        head_file = str(fp)
    size = v["size"] if v["size"] is not None else head_size
    if not 0 <= size <= MAX_LFS_FILESIZE:
        raise SpecError(f"{where}.size: {size}", expected=f"0 .. MAX_LFS_FILESIZE {MAX_LFS_FILESIZE:#x}")
    if size < head_size:
        raise SpecError(f"{where}.size: {size} is smaller than the {head_size} bytes of hex/file")
    if not 0 <= v["pos"] <= MAX_LFS_FILESIZE:
        raise SpecError(f"{where}.pos: {v['pos']}", expected=f"0 .. MAX_LFS_FILESIZE {MAX_LFS_FILESIZE:#x}")
    if v["seals"] & ~MEMFD_LUO_ALL_SEALS or v["seals"] < 0:
        raise SpecError(
            f"{where}.seals: {v['seals']:#x}", expected=f"bits of MEMFD_LUO_ALL_SEALS {MEMFD_LUO_ALL_SEALS:#x}"
        )
    if not 0 <= v["folio_order"] <= 63:
        raise SpecError(f"{where}.folio_order: {v['folio_order']}", expected="0 .. 63 (at most PMD order)")
    for key in ("folio_flags",):
        if not 0 <= v[key] < 1 << 12:
            raise SpecError(f"{where}.{key}: {v[key]:#x} does not fit the record's 12 flag bits")
    folios = None
    if v["folios"] is not None:
        if "folio_order" in v and v["folio_order"]:
            raise SpecError(f"{where}: give folio_order or folios, not both")
        folios = []
        for k, f in enumerate(v["folios"]):
            fw = f"{where}.folios[{k}]"
            if f["index"] < 0 or f["order"] < 0:
                raise SpecError(f"{fw}: index {f['index']} and order {f['order']} must not be negative")
            if f["index"] % (1 << f["order"]):
                raise SpecError(f"{fw}: index {f['index']} is not aligned to order {f['order']}")
            if not 0 <= f["flags"] < 1 << 12:
                raise SpecError(f"{fw}.flags: {f['flags']:#x} does not fit the record's 12 flag bits")
            folios.append(MemfdFolioSpec(f["index"], f["order"], f["flags"]))
        spans = sorted((f.index, f.index + (1 << f.order), k) for k, f in enumerate(folios))
        for (a0, a1, i), (b0, _b1, j) in zip(spans, spans[1:]):
            if b0 < a1:
                raise SpecError(f"{where}.folios[{j}]: index {b0} overlaps folios[{i}] (pages {a0}..{a1 - 1})")
    fill = v["fill"] if v["fill"] is not None else ("zero" if head_size else "seed")
    if fill == "absent" and head_size:
        raise SpecError(f"{where}.fill: absent contents cannot start with hex/file bytes", expected="no hex, no file")
    return MemfdParams(
        size=size,
        pos=v["pos"],
        seals=v["seals"],
        folio_order=v["folio_order"],
        folios=None if folios is None else tuple(folios),
        folio_flags=v["folio_flags"],
        seed=v["seed"],
        fill=fill,
        head=head,
        head_file=head_file,
        head_size=head_size,
    )


#: most folios one spec memfd lists (each is an object while building, ~150 bytes: a
#: 1 TiB file of default order-0 folios would be 268 M of them); 2 M: 8 GiB of order-0
#: folios at 4 KiB pages, the size ``benchmarks/extract.py`` extracts
MAX_SPEC_FOLIOS = 1 << 21


def folio_demand(p: MemfdParams, page_size: int) -> tuple[int, int]:
    """``(folios, bytes)`` the file's folios take, in closed form (nothing is listed)."""
    if p.folios is not None:
        return len(p.folios), sum(page_size << f.order for f in p.folios)
    pages = -(-p.size // page_size)
    n = -(-pages // (1 << p.folio_order)) if p.folio_order < 64 else min(pages, 1)
    return n, n * (page_size << p.folio_order)


def check_folios(p: MemfdParams, page_size: int, where: str) -> list[MemfdFolioSpec]:
    """The file's folios, refusing what a kernel of this page size cannot hold
    (sizes and counts in closed form before any folio is listed)."""
    top = pmd_order(page_size)
    pages = -(-p.size // page_size)
    if p.folios is None and p.folio_order > top:
        raise SpecError(
            f"{where}: folio_order {p.folio_order} is above PMD order {top}, the largest shmem folio "
            f"at {page_size}-byte pages"
        )
    if pages > UINT_MAX:
        raise SpecError(
            f"{where}: size {p.size} is {pages} pages",
            expected=f"at most UINT_MAX pages ({memfd_max_size(page_size)} bytes): memfd_luo_preserve refuses more",
        )
    n, nbytes = folio_demand(p, page_size)
    if n > MAX_SPEC_FOLIOS:
        raise SpecError(
            f"{where}: size {p.size} at folio_order {p.folio_order} is {n} folios ({nbytes} bytes of folios)",
            expected=f"at most {MAX_SPEC_FOLIOS} folios per file (a larger folio_order, or explicit `folios`)",
        )
    out = p.folio_layout(page_size)
    for k, f in enumerate(out):
        if f.order > top:
            raise SpecError(
                f"{where}: folio {k} order {f.order} is above PMD order {top}, the largest shmem folio "
                f"at {page_size}-byte pages"
            )
        if f.index >= pages:
            raise SpecError(
                f"{where}: folio {k} starts at page {f.index}, past the file's size {p.size} ({pages} pages)"
            )
    return out


class MemfdContents:
    """The contents a spec gives a memfd, read piece by piece (never the whole file at once)."""

    def __init__(self, p: MemfdParams, seed: int, label: str) -> None:
        self.p = p
        self.seed = p.seed if p.seed is not None else seed
        self.label = label
        self._piece: tuple[int, bytes] | None = None
        self._fh: Any = None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> MemfdContents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _head(self, off: int, n: int) -> bytes:
        if self.p.head_file is None:
            return self.p.head[off : off + n]
        if self._fh is None:
            self._fh = open(self.p.head_file, "rb")
            note_input(self.p.head_file, os.fstat(self._fh.fileno()))
        self._fh.seek(off)
        got = self._fh.read(n)
        if len(got) != n:
            raise SpecError(f"{self.p.head_file}: file changed while building (short read at {off})")
        return bytes(got)

    def _seeded(self, k: int) -> bytes:
        if self._piece is None or self._piece[0] != k:
            self._piece = (k, gen_bytes(self.seed, f"{self.label}@{k}", CONTENT_PIECE))
        return self._piece[1]

    def read(self, off: int, n: int) -> bytearray:
        """``n`` bytes from file offset ``off`` (zeros past ``size``)."""
        out = bytearray(n)
        end = min(off + n, self.p.size)
        pos = off
        hs = min(end, self.p.head_size)
        if pos < hs:
            out[: hs - pos] = self._head(pos, hs - pos)
            pos = hs
        if self.p.fill == "seed":
            while pos < end:
                k = pos // CONTENT_PIECE
                base = k * CONTENT_PIECE
                stop = min(base + CONTENT_PIECE, end)
                out[pos - off : stop - off] = self._seeded(k)[pos - base : stop - base]
                pos = stop
        return out

    def chunks(self, page_size: int, chunk: int = CHUNK) -> Iterator[bytes]:
        """The whole file as ``kho luo extract`` writes it (pages without a folio are zeros)."""
        covered = np.zeros(-(-self.p.size // page_size), dtype=bool)
        for f in self.p.folio_layout(page_size):
            covered[f.index : f.index + (1 << f.order)] = True
        for off in range(0, self.p.size, chunk):
            n = min(chunk, self.p.size - off)
            data = self.read(off, n)
            for pg in np.flatnonzero(~covered[off // page_size : -(-(off + n) // page_size)]).tolist():
                a = pg * page_size
                data[a : a + page_size] = bytes(len(data[a : a + page_size]))
            yield bytes(data)


class FolioContents(LazyData):
    """The bytes of a run of folios that follow each other in the file and in
    memory, made when read (:meth:`MemfdContents.read` of the file range):
    a built image holds the folios' addresses and sizes, not their bytes."""

    def __init__(self, contents: MemfdContents, file_off: int, size: int) -> None:
        super().__init__(size)
        self.contents, self.file_off = contents, file_off

    def fetch(self, off: int, n: int) -> bytes:
        n = max(0, min(n, self.size - off))
        return bytes(self.contents.read(self.file_off + off, n))


def _folio_records(phys: np.ndarray, flags: np.ndarray, index: np.ndarray, lay: Layout) -> bytes:
    """The ``memfd_luo_folio_ser`` array, vectorized (checked against the
    struct's own build on the first record)."""
    pfn = phys >> U64(lay.page_shift)
    if lay.byteorder == "little":
        word = (pfn & U64((1 << MEMFD_FOLIO_PFN_BITS) - 1)) | (flags << U64(MEMFD_FOLIO_PFN_BITS))
    else:
        word = (pfn << U64(MEMFD_FOLIO_FLAGS_BITS)) | (flags & U64((1 << MEMFD_FOLIO_FLAGS_BITS) - 1))
    recs = np.empty((phys.size, 2), dtype=np.dtype(np.uint64).newbyteorder("<" if lay.byteorder == "little" else ">"))
    recs[:, 0], recs[:, 1] = word, index
    out = recs.tobytes()
    if phys.size:
        w0 = memfd_folio_word(int(phys[0]) >> lay.page_shift, int(flags[0]), lay.byteorder)
        one = lay.build("memfd_luo_folio_ser", dict(pfn_flags=w0, index=int(index[0])), error=SpecError)
        if out[: len(one)] != one or len(one) != 16:  # pragma: no cover - the struct is two u64
            raise SpecError(f"memfd_luo_folio_ser is {len(one)} bytes here, not two u64")
    return out


def build_memfd(p: MemfdParams, ctx: FileBuildContext, folio_phys: Sequence[int]) -> FileBuilt:
    """One memfd as ``memfd_luo_preserve()`` leaves it: the ``memfd_luo_ser``
    page, then the folio record array (vmalloc, order-0 pages) and its chunk;
    the folios (at ``folio_phys``, allocated by the caller) hold the contents.

    The folios' bytes are not made here: each run of folios adjacent in the
    file and in memory is one :class:`FolioContents` segment, generated when
    the image is read or written (a few MiB at a time), so building a memfd
    of any size holds its folio list, not its contents."""
    lay, ps = ctx.layout, ctx.page_size
    folios = check_folios(p, ps, ctx.where)
    if len(folio_phys) != len(folios):  # pragma: no cover - the caller allocates folio_orders()
        raise SpecError(f"{ctx.where}: {len(folio_phys)} folio addresses for {len(folios)} folios")
    ser_phys = ctx.alloc.alloc(what="memfd_luo_ser page")
    segments: list[Segment] = []
    preserve = PageSet(ps)
    preserve.add(ser_phys, 0)
    n = len(folios)
    phys = np.array(folio_phys, dtype=np.uint64).reshape(-1)
    order = np.fromiter((f.order for f in folios), dtype=np.int64, count=n)
    index = np.fromiter((f.index for f in folios), dtype=np.uint64, count=n)
    fflags = np.fromiter((f.flags for f in folios), dtype=np.uint64, count=n)
    size = np.uint64(ps) << order.astype(np.uint64)
    bad = np.flatnonzero(phys % size) if n else np.zeros(0, np.int64)
    if bad.size:  # pragma: no cover - allocated aligned
        k = int(bad[0])
        raise SpecError(f"{ctx.where}: folio {k} at {int(phys[k]):#x} is not aligned to order {int(order[k])}")
    preserve.update(PageSet.from_arrays(ps, {int(o): phys[order == o] for o in np.unique(order).tolist()}))
    if p.fill != "absent" and n:  # the contents, in the image: one lazy segment per run of folios
        contents = MemfdContents(p, ctx.seed, ctx.label)
        by_index = np.argsort(index, kind="stable")
        ip, ii, isz = phys[by_index], index[by_index] * U64(ps), size[by_index]
        joins = (ip[1:] == ip[:-1] + isz[:-1]) & (ii[1:] == ii[:-1] + isz[:-1])
        starts = np.concatenate(([0], np.flatnonzero(~joins) + 1))
        stops = np.concatenate((starts[1:], [n]))
        ends = np.cumsum(isz, dtype=np.uint64)
        for a, b in zip(starts.tolist(), stops.tolist()):
            nbytes = int(ends[b - 1]) - (int(ends[a - 1]) if a else 0)
            k = int(by_index[a])
            what = f"memfd folio {ctx.label}/{folios[k].index}" + (f" (+{b - a - 1} folios)" if b - a > 1 else "")
            segments.append((int(ip[a]), FolioContents(contents, int(ii[a]), nbytes), what))
    recs = _folio_records(phys, fflags, index, lay)
    if folios:
        npages = -(-len(recs) // ps)
        recs = recs.ljust(npages * ps, b"\0")
        groups = [ctx.alloc.alloc(what="memfd folio array page") for _ in range(npages)]
        for i, g in enumerate(groups):
            segments.append((g, recs[i * ps : (i + 1) * ps], "memfd folio array page"))
        desc, chunks, vpres = build_vmalloc(groups, 0, lay, ctx.alloc, flags=KHO_VMALLOC_ALLOC)
        segments += [(c, data, "memfd folio array chunk") for c, data in chunks]
        preserve.update(vpres)
    else:
        desc = KhoVmalloc(first=0, total_pages=0, flags=0, order=0)
    ser = lay.build(
        "memfd_luo_ser",
        dict(pos=p.pos, size=p.size, seals=p.seals, flags=0, nr_folios=len(folios), folios=desc),
        phys=ser_phys,
        error=SpecError,
    )
    segments.append((ser_phys, ser.ljust(ps, b"\0"), "memfd_luo_ser page"))
    return FileBuilt(ser_phys, segments, preserve)


def reencode_memfd(m: MemfdFile, lay: Layout) -> list[tuple[int, bytes]]:
    """The pages of a decoded memfd file at its own addresses: the
    ``memfd_luo_ser`` page, the folio record array and its chunks (not the folios)."""
    ps = lay.page_size
    s = m.ser
    ser = lay.build(
        "memfd_luo_ser",
        dict(pos=s.pos, size=s.size, seals=s.seals, flags=s.flags, nr_folios=s.nr_folios, folios=s.folios),
        phys=m.ser_phys,
    )
    base = m.ser_phys - m.ser_phys % ps
    out = [(base, bytes(m.ser_phys - base) + ser.ljust(ps - (m.ser_phys - base), b"\0"))]
    if m.area is None:
        return out
    recs = bytearray()
    for phys, flags, index in zip(m.phys.tolist(), m.flags.tolist(), m.index.tolist()):
        word = memfd_folio_word(phys >> lay.page_shift, flags, lay.byteorder)
        recs += lay.build("memfd_luo_folio_ser", dict(pfn_flags=word, index=index))
    pages = m.area.page_addresses(ps, restored=True).tolist()  # a repeated group's pages once
    recs = recs.ljust(len(pages) * ps, b"\0")
    out += [(p, bytes(recs[i * ps : (i + 1) * ps])) for i, p in enumerate(pages)]
    out += encode_vmalloc_chunks(m.area.groups.tolist(), m.area.chunks, lay)
    return out


HANDLER = MemfdHandler()
