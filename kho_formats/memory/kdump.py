"""makedumpfile's compressed kdump format (``KDUMP   ``) as a :class:`PhysImage` source.

What ``makedumpfile -c/-l/-p/-z`` and QEMU's ``dump-guest-memory -z/-l/-s``
write (makedumpfile's ``diskdump_mod.h``)::

    block 0                  struct disk_dump_header   ("KDUMP   ", block_size, bitmap_blocks, max_mapnr ...)
    block 1 .. sub_hdr_size  struct kdump_sub_header   (phys_base, max_mapnr_64 from header_version 6)
    bitmap_blocks blocks     two bitmaps of max_mapnr bits: 1st valid RAM, 2nd dumped pages
    page descriptors         struct page_desc { off_t offset; u32 size; u32 flags; u64 page_flags; }
                             one per dumped page (2nd bitmap bit set), in pfn order
    page data                zlib (flags 0x1), lzo (0x2), snappy (0x4), zstd (0x20) or raw (0)

The *flattened* variant (``makedumpfile -F``, for piping) is a 4096-byte
``makedumpfile`` header followed by ``{be64 offset, be64 size, data}``
records of the same file (``struct makedumpfile_data_header``, big-endian
on every host), ended by the record ``(-1, -1)`` (``END_FLAG_FLAT_HEADER`` in
both fields): ``makedumpfile -R`` stops at the first record whose offset is
negative or whose size is not positive and refuses the file unless that
record is the end marker, and so does this reader.  Records are indexed once
and read in place.

Pages are decompressed on access (:class:`KdumpPages`, a
:class:`~kho_formats.memory.image.LazyData` per run of dumped pages, made when
asked for: the image holds the runs as a
:class:`~kho_formats.memory.image.SegmentTable` of arrays) and kept in a
bounded cache; the file is mapped, not read.  zlib always works; snappy and
zstd need ``cramjam`` (or ``zstandard``), lzo needs ``python-lzo``: a page
compressed with a missing codec raises :class:`ImageError` naming what to
install.  :func:`write_kdump` writes the format (tests, and converting other
images into files ``crash`` reads).
"""

from __future__ import annotations

import bisect
import heapq
import io
import mmap
import os
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import IO, Any

import construct as cs
import numpy as np

from .. import progress
from ..abi.fdt_header import FDT_MAGIC
from ..abi.kdump import KDUMP_SIGNATURE
from ..abi.layout import layout, parse_struct
from ..errors import ImageError
from ..safeio import drop_mapped
from . import zhead
from .image import ImageFormat, LazyData, PhysImage, SegmentTable, register_format

FLAT_SIGNATURE = b"makedumpfile"
FLAT_HEADER_SIZE = 4096
#: makedumpfile_header.type and .version of the flattened format
FLAT_TYPE = 1
FLAT_VERSION = 1
#: both fields of the record that ends a flattened file (END_FLAG_FLAT_HEADER)
FLAT_END = -1
DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8
DUMP_DH_EXCLUDED_VMEMMAP = 0x10
DUMP_DH_COMPRESSED_ZSTD = 0x20
COMPRESSIONS = {"none": 0, "zlib": DUMP_DH_COMPRESSED_ZLIB, "snappy": DUMP_DH_COMPRESSED_SNAPPY, "zstd": 0x20}
_CODEC_FLAGS = DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_LZO | DUMP_DH_COMPRESSED_SNAPPY | DUMP_DH_COMPRESSED_ZSTD
#: decompressed pages kept per file
PAGE_CACHE = 1024
#: dumped pages whose heads a root-FDT scan computes together (4 bytes of result each)
SCAN_WINDOW = 1 << 15
BLOCK_SIZES = (4096, 8192, 16384, 65536)


@dataclass(frozen=True)
class KdumpStructs:
    """The kdump structs of one byte order as the reader and :func:`write_kdump` use them: a view of
    the :class:`~kho_formats.abi.layout.Layout` declarations in :mod:`kho_formats.abi.kdump`
    (``disk_dump_header``, ``kdump_sub_header``, ``page_desc`` as a numpy dtype), none of its own."""

    header: cs.Construct
    sub_header: cs.Construct
    page_desc: np.dtype


@cache
def kdump_structs(byteorder: str) -> KdumpStructs:
    """``struct disk_dump_header``, ``struct kdump_sub_header`` (64-bit) and
    ``page_desc_t`` for one byte order."""
    lay = layout(byteorder=byteorder)
    return KdumpStructs(lay.disk_dump_header, lay.kdump_sub_header, lay.dtype_of("page_desc"))


def is_kdump(head: bytes) -> bool:
    """A kdump-compressed (or flattened) file's first bytes."""
    return head.startswith(KDUMP_SIGNATURE) or head.startswith(FLAT_SIGNATURE)


# -- sources: the file's bytes, in place or through the flattened records ----------------


class _Mapped:
    def __init__(self, buf: mmap.mmap | bytes, name: str) -> None:
        self.buf = memoryview(buf)
        self.size = len(self.buf)
        self.name = name

    def pread(self, off: int, n: int, what: str) -> bytes:
        if off < 0 or n < 0 or off + n > self.size:
            raise ImageError(f"{self.name}: {what} ({n} bytes at file offset {off:#x}) past the end of the file")
        return bytes(self.buf[off : off + n])

    def array(self, dtype: np.dtype, count: int, off: int, what: str) -> np.ndarray:
        if off < 0 or off + count * dtype.itemsize > self.size:
            raise ImageError(f"{self.name}: {what} ({count} entries at file offset {off:#x}) past the end")
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=off)


class _Flattened(_Mapped):
    """``makedumpfile -F`` output: records ``{be64 offset, be64 size, data}``.

    The records are indexed once into disjoint pieces of the virtual file
    (where records overlap, the later one wins, as when the file is
    rebuilt record by record), so a read touches only the pieces it needs and
    nothing is allocated before the bytes are known to be there."""

    def __init__(self, buf: mmap.mmap | bytes, name: str) -> None:
        super().__init__(buf, name)
        recs: list[tuple[int, int, int]] = []  # (virtual offset, size, file offset), in file order
        pos, end = FLAT_HEADER_SIZE, len(self.buf)
        while True:
            if pos + 16 > end:
                raise ImageError(f"{name}: flattened kdump ends without its end marker (at file offset {pos:#x})")
            vo = int.from_bytes(self.buf[pos : pos + 8], "big", signed=True)
            size = int.from_bytes(self.buf[pos + 8 : pos + 16], "big", signed=True)
            if vo < 0 or size <= 0:  # where makedumpfile -R stops reading records
                if vo == size == FLAT_END:
                    break
                raise ImageError(
                    f"{name}: bad flattened record at file offset {pos:#x} (offset {vo:#x}, size {size})",
                    expected="offset >= 0 and size > 0, or the end marker (-1, -1) as makedumpfile -R requires",
                )
            if pos + 16 + size > end:
                raise ImageError(
                    f"{name}: bad flattened record at file offset {pos:#x} (offset {vo:#x}, size {size})",
                    expected=f"offset >= 0 and the size within the file ({end - pos - 16} bytes left)",
                )
            recs.append((vo, size, pos + 16))
            pos += 16 + size
        self.pieces = _paint(recs)  # (start, end, file offset of start)
        self.starts = [p[0] for p in self.pieces]
        self.covered = sum(b - a for a, b, _ in self.pieces)
        self.size = self.pieces[-1][1] if self.pieces else 0

    def pread(self, off: int, n: int, what: str) -> bytes:
        if off < 0 or n < 0 or off + n > self.size or n > self.covered:
            raise ImageError(
                f"{self.name}: {what} ({n} bytes at offset {off:#x}) past the end of the flattened records "
                f"({self.covered} bytes up to offset {self.size:#x})"
            )
        parts: list[memoryview] = []
        i = bisect.bisect_right(self.starts, off) - 1
        cur, end = off, off + n
        while cur < end:
            if i < 0 or i >= len(self.pieces) or not self.pieces[i][0] <= cur < self.pieces[i][1]:
                raise ImageError(
                    f"{self.name}: {what} ({n} bytes at offset {off:#x}) not in the flattened records "
                    f"(missing from offset {cur:#x})"
                )
            a, b, fpos = self.pieces[i]
            take = min(end, b) - cur
            parts.append(self.buf[fpos + cur - a : fpos + cur - a + take])
            cur += take
            i += 1
        return b"".join(parts)

    def array(self, dtype: np.dtype, count: int, off: int, what: str) -> np.ndarray:
        return np.frombuffer(self.pread(off, count * dtype.itemsize, what), dtype=dtype)


def _paint(recs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Disjoint ``(start, end, file offset)`` pieces of records ``(offset, size,
    file offset)`` laid down in order, later over earlier (O(n log n))."""
    if not recs:
        return []
    points = sorted({r[0] for r in recs} | {r[0] + r[1] for r in recs})
    order = sorted(range(len(recs)), key=lambda i: recs[i][0])
    heap: list[tuple[int, int]] = []  # (-sequence, end): the latest record covering a point on top
    pieces: list[tuple[int, int, int]] = []
    last = -1
    k = 0
    for j in range(len(points) - 1):
        p, q = points[j], points[j + 1]
        while k < len(order) and recs[order[k]][0] <= p:
            i = order[k]
            heapq.heappush(heap, (-i, recs[i][0] + recs[i][1]))
            k += 1
        while heap and heap[0][1] <= p:
            heapq.heappop(heap)
        if not heap:
            continue
        i = -heap[0][0]
        vo, _, fpos = recs[i]
        if pieces and last == i and pieces[-1][1] == p:
            pieces[-1] = (pieces[-1][0], q, pieces[-1][2])
        else:
            pieces.append((p, q, fpos + p - vo))
        last = i
    return pieces


# -- codecs --------------------------------------------------------------------------------


def _codec(flag: int) -> Callable[[bytes, int], bytes]:
    """The decompressor for one codec flag: ``(data, n) -> at most n + 1 bytes``
    (a page that would decompress to more is cut there, never inflated whole:
    an 8 KiB zlib or zstd stream can stand for hundreds of MiB)."""
    if flag == DUMP_DH_COMPRESSED_ZLIB:
        return lambda data, n: zlib.decompressobj().decompress(data, n + 1)
    if flag == DUMP_DH_COMPRESSED_SNAPPY:
        try:
            import cramjam
        except ImportError:
            raise ImageError("snappy-compressed kdump pages need cramjam (pip install cramjam)") from None

        def snappy(data: bytes, n: int) -> bytes:
            said = cramjam.snappy.decompress_raw_len(data)  # the stream's own length header, checked first
            if said != n:
                raise ImageError(f"the snappy stream says {said} bytes", expected=f"{n}")
            return bytes(cramjam.snappy.decompress_raw(data))

        return snappy
    if flag == DUMP_DH_COMPRESSED_ZSTD:
        try:
            import cramjam

            def zstd(data: bytes, n: int) -> bytes:
                out = bytearray(n + 1)
                return bytes(out[: cramjam.zstd.decompress_into(data, out)])  # raises when more than n + 1

            return zstd
        except ImportError:
            pass
        try:
            import zstandard
        except ImportError:
            raise ImageError("zstd-compressed kdump pages need cramjam or zstandard (pip install cramjam)") from None
        return lambda data, n: zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read(n + 1)
    if flag == DUMP_DH_COMPRESSED_LZO:
        try:
            import lzo
        except ImportError:
            raise ImageError("lzo-compressed kdump pages need python-lzo (pip install python-lzo)") from None
        return lambda data, n: bytes(lzo.decompress(data, False, n))
    raise ImageError(f"unknown kdump page compression flags {flag:#x}", expected="zlib, lzo, snappy or zstd")


def _bit_count(bitmap: np.ndarray, nbits: int, chunk: int = 1 << 20) -> int:
    """Set bits among the first ``nbits`` of an LSB-first ``bitmap`` (chunk by chunk)."""
    total = 0
    for lo in range(0, min(bitmap.size, -(-nbits // 8)), chunk):
        total += int(np.unpackbits(bitmap[lo : lo + chunk], bitorder="little")[: nbits - lo * 8].sum(dtype=np.int64))
    return total


def _bit_runs(bitmap: np.ndarray, nbits: int, chunk: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """(first bit, length) of each run of set bits among the first ``nbits`` of
    an LSB-first ``bitmap``, ``chunk`` bytes at a time (never 8 bytes per bit
    of the whole bitmap at once)."""
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    prev = np.int8(0)
    done = 0
    for lo in range(0, bitmap.size, chunk):
        base = lo * 8
        if base >= nbits:
            break
        bits = np.unpackbits(bitmap[lo : lo + chunk], bitorder="little")[: nbits - base].view(np.int8)
        d = np.diff(bits, prepend=prev)
        starts.append(np.flatnonzero(d == 1) + base)
        ends.append(np.flatnonzero(d == -1) + base)
        prev = bits[-1]
        done = base + bits.size
    if prev:
        ends.append(np.array([done], dtype=np.int64))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    s, e = np.concatenate(starts).astype(np.int64), np.concatenate(ends).astype(np.int64)
    return s, e - s


# -- the reader ------------------------------------------------------------------------------


class KdumpFile:
    """One kdump file: header, dumped-page runs and page access."""

    def __init__(self, buf: mmap.mmap | bytes, name: str = "kdump file") -> None:
        self.name = name
        head = bytes(memoryview(buf)[:16])
        self.src: _Mapped = _Flattened(buf, name) if head.startswith(FLAT_SIGNATURE) else _Mapped(buf, name)
        hb = self.src.pread(0, 464, "disk_dump_header")
        if not hb.startswith(KDUMP_SIGNATURE):
            raise ImageError(f"{name}: not a kdump file (signature {hb[:8]!r})", expected="'KDUMP   '")
        for bo in ("little", "big"):
            ks = kdump_structs(bo)
            h = parse_struct(ks.header, hb, what=f"{name}: disk_dump_header", error=ImageError)
            if h.block_size in BLOCK_SIZES:
                break
        else:
            raise ImageError(f"{name}: block_size is not a page size", expected=" or ".join(map(str, BLOCK_SIZES)))
        self.byteorder, self.structs, self.header = bo, ks, h
        bs = self.block_size = int(h.block_size)
        self.phys_base = 0
        max_mapnr = int(h.max_mapnr)
        if h.sub_hdr_size > 0:
            sh = parse_struct(
                ks.sub_header, self.src.pread(bs, 104, "kdump_sub_header"), what=f"{name}: sub header", error=ImageError
            )
            self.phys_base = int(sh.phys_base)
            if h.header_version >= 6 and sh.max_mapnr_64:
                max_mapnr = int(sh.max_mapnr_64)
        if h.sub_hdr_size < 0 or h.bitmap_blocks == 0:
            raise ImageError(
                f"{name}: sub_hdr_size {h.sub_hdr_size}, bitmap_blocks {h.bitmap_blocks}",
                expected="sub_hdr_size >= 0 and bitmap_blocks > 0",
            )
        half = int(h.bitmap_blocks) * bs // 2
        if max_mapnr > half * 8:
            raise ImageError(
                f"{name}: max_mapnr {max_mapnr} does not fit the {half}-byte bitmap (bitmap_blocks {h.bitmap_blocks})",
                expected=f"at most {half * 8} pages",
            )
        self.max_mapnr = max_mapnr
        bm_off = (1 + int(h.sub_hdr_size)) * bs
        bm2 = self.src.array(np.dtype(np.uint8), -(-max_mapnr // 8), bm_off + half, "dumped-page bitmap")
        # one page descriptor per dumped page: the file must hold them all before
        # the runs are built (a bitmap of ones is not a license to allocate)
        self.num_pages = _bit_count(bm2, max_mapnr)
        pd_off = (1 + int(h.sub_hdr_size) + int(h.bitmap_blocks)) * bs
        self._descs_off = pd_off
        self.descs = self.src.array(
            ks.page_desc,
            self.num_pages,
            pd_off,
            f"page descriptors (one per page the dumped-page bitmap sets: {self.num_pages})",
        )
        starts, counts = _bit_runs(bm2, max_mapnr)
        first = np.concatenate(([0], np.cumsum(counts)[:-1])) if counts.size else counts
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        #: pages a page-head scan could not read (a bad descriptor, data that does not
        #: decompress): skipped, so one damaged page does not hide the rest of the dump
        self.unreadable = 0
        self.first_unreadable: str | None = None
        self._run_pfn, self._run_count, self._run_first = starts, counts, first.astype(np.int64)
        #: (first run, end run, heads of their pages, problems per run) of the last window scanned
        self._window: tuple[int, int, np.ndarray, list[tuple[int, str | None]]] | None = None

    @property
    def runs(self) -> list[tuple[int, int, int]]:
        """``(first pfn, pages, first descriptor)`` of each run of dumped pages (made on
        each call: the file keeps them as arrays)."""
        return list(zip(self._run_pfn.tolist(), self._run_count.tolist(), self._run_first.tolist()))

    def note_problems(self, bad: int, first: str | None) -> None:
        """Count ``bad`` pages a scan skipped (``first``: the first one's error)."""
        self.unreadable += bad
        self.first_unreadable = self.first_unreadable or first

    def run_of(self, pfn: int, pages: int, first: int) -> int | None:
        """The number of the run of dumped pages that starts at ``pfn`` with descriptor ``first``."""
        r = int(np.searchsorted(self._run_first, first, "left"))
        if r < self._run_first.size and (int(self._run_pfn[r]), int(self._run_count[r])) == (pfn, pages):
            return r
        return None

    def run_heads(self, r: int) -> np.ndarray:
        """The page-start heads of run ``r`` (its pages the scan could not read counted now),
        computed with the runs after it up to :data:`SCAN_WINDOW` pages."""
        w = self._window
        if w is None or not w[0] <= r < w[1]:
            k0 = int(self._run_first[r])
            r1 = max(r + 1, int(np.searchsorted(self._run_first, k0 + SCAN_WINDOW, "left")))
            k1 = int(self._run_first[r1]) if r1 < self._run_first.size else self.num_pages
            group = np.repeat(np.arange(r1 - r, dtype=np.int64), self._run_count[r:r1])
            ks = np.arange(k0, k1, dtype=np.int64)
            pfns = self._run_pfn[r:r1][group] + (ks - self._run_first[r:r1][group])
            heads, problems = _descriptor_heads(self, ks, pfns, group, r1 - r)
            self._window = w = (r, r1, heads, problems)
        a = int(self._run_first[r] - self._run_first[w[0]])
        self.note_problems(*w[3][r - w[0]])
        return w[2][a : a + int(self._run_count[r])].copy()

    def _desc(self, k: int, pfn: int) -> tuple[int, int, int, str]:
        """Page descriptor ``k`` (of pfn ``pfn``): (data offset, size, codec flags, how to name it)."""
        d = self.descs[k]
        off, size, flags = int(d["offset"]), int(d["size"]), int(d["flags"])
        where = f"page descriptor #{k} (pfn {pfn:#x}; offset {off:#x}, size {size}, flags {flags:#x})"
        if not 0 < size <= self.block_size * 2:
            raise ImageError(
                f"{self.name}: {where}: bad size",
                phys=pfn * self.block_size,
                expected=f"1..{self.block_size * 2} bytes",
            )
        return off, size, flags & _CODEC_FLAGS, where

    def page(self, k: int, pfn: int) -> bytes:
        """The bytes of dumped page number ``k`` (pfn ``pfn``), decompressed."""
        hit = self._cache.get(k)
        if hit is not None:
            self._cache.move_to_end(k)
            return hit
        off, size, codec, where = self._desc(k, pfn)
        phys = pfn * self.block_size
        raw = self.src.pread(off, size, f"page data of {where}")
        if codec:
            decompress = _codec(codec)  # an unknown or missing codec: its own error, naming what to install
            try:
                data = decompress(raw, self.block_size)
            except Exception as exc:  # zlib.error, cramjam errors, lzo.error, a snappy length header
                raise ImageError(f"{self.name}: {where} does not decompress ({exc})", phys=phys) from None
        else:
            data = raw
        if len(data) != self.block_size:
            raise ImageError(
                f"{self.name}: {where} holds {'more than ' if len(data) > self.block_size else ''}"
                f"{min(len(data), self.block_size)} bytes",
                phys=phys,
                expected=f"one {self.block_size}-byte page",
            )
        self._cache[k] = data
        if len(self._cache) > PAGE_CACHE:
            self._cache.popitem(last=False)
        return data

    def head_of(self, k: int, pfn: int, inoff: int, n: int) -> bytes:
        """``n`` bytes at ``inoff`` of page ``k`` (pfn ``pfn``) without decompressing
        more than needed (zlib, raw)."""
        if k in self._cache:
            return self._cache[k][inoff : inoff + n]
        off, size, codec, where = self._desc(k, pfn)
        if codec == 0 and size == self.block_size:
            return self.src.pread(off + inoff, n, f"page data of {where}")
        if codec == DUMP_DH_COMPRESSED_ZLIB:
            try:
                return zlib.decompressobj().decompress(self.src.pread(off, size, f"page data of {where}"), inoff + n)[
                    inoff:
                ]
            except zlib.error as exc:
                raise ImageError(
                    f"{self.name}: {where} does not decompress ({exc})", phys=pfn * self.block_size
                ) from None
        return self.page(k, pfn)[inoff : inoff + n]

    def image(self) -> PhysImage:
        """The dumped pages as an image: one lazy segment per run of dumped pages, held as a
        :class:`~kho_formats.memory.image.SegmentTable` (the run arrays; a :class:`KdumpPages`
        is made when a segment is asked for)."""
        img = PhysImage()
        bs = self.block_size
        pfn, count, first = self._run_pfn, self._run_count, self._run_first

        def make(i: int) -> KdumpPages:
            return KdumpPages(self, int(pfn[i]), int(count[i]), int(first[i]))

        table = SegmentTable(pfn.astype(np.uint64) * np.uint64(bs), count.astype(np.uint64) * np.uint64(bs), make, self)
        img.add_table(table, what=self.name)
        return img

    def scan_table(self, table: SegmentTable, page_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]] | None:
        """:meth:`scan_page_heads` of all the runs of a table :meth:`image` made."""
        if page_size != self.block_size or type(self.src) is not _Mapped or table.source is not self:
            return None
        if table.phys.size != self._run_pfn.size:
            return None
        return self._scan_windows(self._run_first, self._run_pfn, self._run_count)

    def scan_page_heads(self, segs: list[Any], page_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]] | None:
        """The page-start heads of many whole runs of this file, for
        :func:`kho_formats.ops.locate` (``(addresses, heads)`` window by window of
        about :data:`SCAN_WINDOW` pages; None when ``segs`` are not whole runs of
        a file read in place, page by page)."""
        bs = self.block_size
        if page_size != bs or type(self.src) is not _Mapped or not segs:
            return None
        datas = [s.data for s in segs]
        if any(type(d) is not KdumpPages or d.f is not self for d in datas):
            return None
        firsts = np.array([s.data.first for s in segs], dtype=np.int64)
        pfns = np.array([s.data.pfn for s in segs], dtype=np.int64)
        counts = np.array([s.data.size // bs for s in segs], dtype=np.int64)
        r = np.searchsorted(self._run_first, firsts)
        if np.any(r >= self._run_first.size):
            return None
        if not (
            np.array_equal(self._run_first[r], firsts)
            and np.array_equal(self._run_pfn[r], pfns)
            and np.array_equal(self._run_count[r], counts)
            and np.array_equal(np.array([s.phys for s in segs], dtype=np.int64), pfns * bs)
        ):
            return None
        return self._scan_windows(firsts, pfns, counts)

    def _scan_windows(
        self, firsts: np.ndarray, pfns: np.ndarray, counts: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Windows of whole runs of about :data:`SCAN_WINDOW` pages; the file pages a
        window read are let go afterwards (:func:`~kho_formats.safeio.drop_mapped`), so
        the scan's resident set stays about one window whatever the file's size."""
        bs = self.block_size
        ends = np.cumsum(counts)
        mm = self.src.buf.obj if isinstance(self.src.buf.obj, mmap.mmap) else None
        dsize = self.structs.page_desc.itemsize
        a = 0
        while a < firsts.size:
            b = max(a + 1, int(np.searchsorted(ends, (ends[a - 1] if a else 0) + SCAN_WINDOW, "right")))
            group = np.repeat(np.arange(b - a, dtype=np.int64), counts[a:b])
            at = np.arange(group.size, dtype=np.int64) - np.repeat(np.cumsum(counts[a:b]) - counts[a:b], counts[a:b])
            ks = firsts[a:b][group] + at
            pf = pfns[a:b][group] + at
            # the descriptors of consecutive runs are consecutive: a view, not a copy
            k0 = int(ks[0]) if ks.size else 0
            d = self.descs[k0 : k0 + ks.size] if _consecutive(ks) else self.descs[ks]
            h, problems = _descriptor_heads(self, ks, pf, group, b - a, descs=d)
            for bad, msg in problems:
                if bad:
                    self.note_problems(bad, msg)
            if mm is not None and ks.size:
                data_off = d["offset"].astype(np.int64)
                hi = data_off + d["size"].astype(np.int64)
                drop_mapped(mm, int(data_off.min()), int(hi.max()))
                d0 = self._descs_off + int(ks[0]) * dsize
                drop_mapped(mm, d0, self._descs_off + (int(ks[-1]) + 1) * dsize)
            yield (pf * bs).astype(np.uint64), h
            a = b


def _zstd_head_reader() -> Callable[[memoryview], bytes] | None:
    """The first 4 bytes of a zstd frame from one reused ``zstandard`` context
    (a small read of a stream reader decodes only the first block's start); None
    without ``zstandard`` (cramjam decompresses whole pages, with a new context each)."""
    try:
        import zstandard
    except ImportError:
        return None
    dctx = zstandard.ZstdDecompressor()
    return lambda data: dctx.stream_reader(data).read(4)


def _consecutive(ks: np.ndarray) -> bool:
    """Whether ``ks`` is ``ks[0], ks[0] + 1, ...``."""
    return ks.size < 2 or (int(ks[-1]) - int(ks[0]) + 1 == ks.size and bool(np.all(np.diff(ks) == 1)))


def _descriptor_heads(
    f: KdumpFile,
    ks: np.ndarray,
    pfns: np.ndarray,
    group: np.ndarray,
    ngroups: int,
    *,
    descs: np.ndarray | None = None,
) -> tuple[np.ndarray, list[tuple[int, str | None]]]:
    """Page-start heads (big-endian u32) of dumped pages ``ks`` (pfns ``pfns``) of a
    file read in place, from the page descriptors (issue 22), and per ``group``
    (a run of pages) the pages that could not be read: ``(count, first error)``.

    Raw pages are read where they lie, all at once; pages that share their
    data (QEMU's and makedumpfile's one zero page) are read once per group; a
    snappy page whose stream opens with a literal of 4 or more bytes, a zstd
    page whose first block is raw or RLE and a zlib page whose first deflate
    block is stored give their first bytes without decompressing anything.
    With the C decoder (:mod:`.zhead`), most zlib pages' heads, and the first
    byte of most zstd pages (raw, RLE or compressed first block), come from
    there: a zstd page whose first byte is not the FDT magic's is rejected
    with that byte and zeros as its head (it cannot be a root FDT; a zstd
    page damaged past its first literal is then not counted as unreadable
    here, as it is without the decoder); the shortcuts above then read only
    the zstd pages it left.
    Only the rest are decompressed, and only as far as their first bytes:
    zlib with ``max_length``, zstd with a small read from one reused
    ``zstandard`` context (when installed); others (snappy, lzo, a descriptor
    out of bounds) page by page through :meth:`KdumpFile.head_of`.  As for
    the shortcuts, only the head is decoded: a page is read whole when its
    FDT is parsed.  ``descs``: ``f.descs[ks]`` when the caller has it."""
    bs = f.block_size
    n = ks.size
    heads = np.zeros(n, dtype=np.uint32)
    problems: list[tuple[int, str | None]] = [(0, None)] * ngroups
    bar = progress.current()
    if not n:
        return heads, problems
    d = f.descs[ks] if descs is None else descs
    off = d["offset"].astype(np.int64)
    size = d["size"].astype(np.int64)
    codec = d["flags"].astype(np.int64) & _CODEC_FLAGS
    buf = np.frombuffer(f.src.buf, dtype=np.uint8)
    fsize = buf.size
    ok = (size > 0) & (size <= 2 * bs) & (off >= 0) & (off <= fsize - size)
    done = np.zeros(n, dtype=bool)

    def take(mask: np.ndarray, at: np.ndarray) -> None:
        """Heads of the pages ``mask`` selects: the 4 bytes at file offsets ``at`` (in range)."""
        b = buf[at[:, None] + np.arange(4)].astype(np.uint32)
        heads[mask] = (b[:, 0] << 24) | (b[:, 1] << 16) | (b[:, 2] << 8) | b[:, 3]
        done[mask] = True

    def byte(at: np.ndarray) -> np.ndarray:
        return buf[np.minimum(at, fsize - 1)].astype(np.int64)

    raw = ok & (codec == 0) & (size == bs)
    take(raw, off[raw])
    # snappy: varint length (must be bs), then a literal tag (low bits 00)
    m = ok & (codec == DUMP_DH_COMPRESSED_SNAPPY) & (size >= 8)
    if m.any():
        o = off[m]
        length = np.zeros(o.size, np.int64)
        vlen = np.zeros(o.size, np.int64)
        more = np.ones(o.size, bool)
        for i in range(5):
            b = byte(o + i)
            length |= np.where(more, (b & 0x7F) << (7 * i), 0)
            vlen = np.where(more, i + 1, vlen)
            more &= b >= 0x80
        tag = byte(o + vlen)
        lit = tag >> 2
        ext = np.clip(lit - 59, 0, 4)  # 60..63: the length - 1 in 1..4 more bytes
        extra = np.zeros(o.size, np.int64)
        for i in range(4):
            extra |= np.where(i < ext, byte(o + vlen + 1 + i) << (8 * i), 0)
        litlen = np.where(lit < 60, lit, extra) + 1
        start = o + vlen + 1 + ext
        good = ~more & (length == bs) & (tag & 3 == 0) & (litlen >= 4) & (start + 4 <= o + size[m])
        sel = np.flatnonzero(m)[good]
        mm = np.zeros(n, bool)
        mm[sel] = True
        take(mm, start[good])
    # zstd: the C decoder (zhead) when it is there: the first byte of every frame it decides; a
    # page whose first byte is not the FDT magic's is rejected (its head: that byte, then zeros),
    # the rest below
    m = ok & (codec == DUMP_DH_COMPRESSED_ZSTD)
    if m.any() and zhead.available():
        idx = np.flatnonzero(m)
        got = zhead.zstd_first_bytes(buf, off[idx], size[idx])
        if got is not None:
            fb, st = got
            st &= fb != FDT_MAGIC >> 24
            heads[idx[st]] = fb[st].astype(np.uint32) << 24
            done[idx[st]] = True
    # zstd (the rest): frame header, then the first block's header: raw (bytes follow) or RLE
    # (one byte repeated)
    m = ok & ~done & (codec == DUMP_DH_COMPRESSED_ZSTD) & (size >= 12)
    if m.any():
        o = off[m]
        magic = byte(o) | byte(o + 1) << 8 | byte(o + 2) << 16 | byte(o + 3) << 24
        fhd = byte(o + 4)
        single = (fhd >> 5) & 1
        did = np.array([0, 1, 2, 4])[fhd & 3]
        fcs = np.array([0, 2, 4, 8])[fhd >> 6]
        fcs = np.where((fhd >> 6 == 0) & (single == 1), 1, fcs)
        bh = o + 5 + (1 - single) + did + fcs
        h3 = byte(bh) | byte(bh + 1) << 8 | byte(bh + 2) << 16
        btype, bsize = (h3 >> 1) & 3, h3 >> 3
        base = (magic == 0xFD2FB528) & ((fhd >> 3) & 1 == 0) & (bh + 3 < o + size[m])
        rawb = base & (btype == 0) & (bsize >= 4) & (bh + 7 <= o + size[m])
        idx = np.flatnonzero(m)
        mm = np.zeros(n, bool)
        mm[idx[rawb]] = True
        take(mm, (bh + 3)[rawb])
        rle = base & (btype == 1) & (bsize >= 4)
        heads[idx[rle]] = (byte(bh + 3)[rle] * 0x01010101).astype(np.uint32)
        done[idx[rle]] = True
    # zlib: the C decoder (zhead) when it is there: the heads of the common streams, the rest below
    m = ok & (codec == DUMP_DH_COMPRESSED_ZLIB)
    native = zhead.available() and bool(m.any())
    if native:
        idx = np.flatnonzero(m)
        got = zhead.heads(buf, off[idx], size[idx])
        if got is not None:
            h, st = got
            heads[idx[st]] = h[st]
            done[idx[st]] = True
    # zlib: CMF/FLG without a preset dictionary, then a stored first block of 4 or more bytes
    m = ok & ~done & (codec == DUMP_DH_COMPRESSED_ZLIB) & (size >= 11)
    if m.any():
        o = off[m]
        cmf, flg, b0 = byte(o), byte(o + 1), byte(o + 2)
        ln = byte(o + 3) | byte(o + 4) << 8
        nln = byte(o + 5) | byte(o + 6) << 8
        good = (cmf & 0x0F == 8) & ((cmf << 8 | flg) % 31 == 0) & (flg & 0x20 == 0) & ((b0 >> 1) & 3 == 0)
        good &= (ln ^ nln == 0xFFFF) & (ln >= 4)
        mm = np.zeros(n, bool)
        mm[np.flatnonzero(m)[good]] = True
        take(mm, (o + 7)[good])
    reported = int(done.sum())
    bar.update(reported * bs)
    # the rest one by one (in the order of their data in the file); pages with the
    # same descriptor data in one group are one page
    rest = np.flatnonzero(~done)
    if rest.size:
        g, o, z, c = group[rest], off[rest], size[rest], codec[rest]
        order = np.lexsort((c, z, o, g))
        new = np.ones(order.size, dtype=bool)
        sg, so, sz, sc = g[order], o[order], z[order], c[order]
        new[1:] = (sg[1:] != sg[:-1]) | (so[1:] != so[:-1]) | (sz[1:] != sz[:-1]) | (sc[1:] != sc[:-1])
        uid = np.cumsum(new) - 1
        inverse = np.empty(order.size, dtype=np.int64)
        inverse[order] = uid
        firsts = rest[order[new]]  # the first page of each distinct (group, data)
        vals = np.zeros(firsts.size, dtype=np.uint32)
        errors: dict[int, str] = {}
        mv = f.src.buf

        def slow(j: int) -> None:
            i = int(firsts[j])
            try:
                vals[j] = int.from_bytes(f.head_of(int(ks[i]), int(pfns[i]), 0, 4), "big")
            except ImageError as exc:
                errors[j] = str(exc)

        fok, fc = ok[firsts], codec[firsts]
        js_zlib = np.flatnonzero(fok & (fc == DUMP_DH_COMPRESSED_ZLIB))
        zstd_head = _zstd_head_reader() if np.any(fok & (fc == DUMP_DH_COMPRESSED_ZSTD)) else None
        js_zstd = np.flatnonzero(fok & (fc == DUMP_DH_COMPRESSED_ZSTD)) if zstd_head else np.zeros(0, np.int64)
        fast = np.zeros(firsts.size, dtype=bool)
        fast[js_zlib] = fast[js_zstd] = True
        count = 0
        for js, head in ((js_zlib, None), (js_zstd, zstd_head)):
            inflate = zlib.decompressobj
            for j, a, m in zip(js.tolist(), off[firsts[js]].tolist(), size[firsts[js]].tolist()):
                count += 1
                if count & 4095 == 0:
                    bar.update(4096 * bs)
                try:
                    first4: bytes = head(mv[a : a + m]) if head else inflate().decompress(mv[a : a + m], 4)
                except Exception:  # zlib.error, zstandard.ZstdError: the page's own error, as head_of says it
                    slow(j)
                    continue
                vals[j] = int.from_bytes(first4, "big")
        for j in np.flatnonzero(~fast).tolist():
            count += 1
            if count & 4095 == 0:
                bar.update(4096 * bs)
            slow(j)
        heads[rest] = vals[inverse]
        reported += count // 4096 * 4096
        if errors:
            per: dict[int, list[int]] = {}
            ug = g[order[new]]  # the group of each distinct page
            for j in sorted(errors):
                per.setdefault(int(ug[j]), []).append(j)
            for gi, where in per.items():
                problems[gi] = (len(where), errors[where[0]])
    bar.update((n - reported) * bs)
    return heads, problems


class KdumpPages(LazyData):
    """One run of consecutive dumped pages, decompressed on access."""

    __slots__ = ("f", "pfn", "first")

    def __init__(self, f: KdumpFile, pfn: int, pages: int, first: int) -> None:
        self.size = pages * f.block_size  # LazyData's one attribute, set here: tens of thousands are made
        self.f, self.pfn, self.first = f, pfn, first

    def fetch(self, off: int, n: int) -> bytes:
        bs = self.f.block_size
        out = bytearray()
        while n > 0:
            k, inoff = divmod(off, bs)
            take = min(n, bs - inoff)
            out += self.f.page(self.first + k, self.pfn + k)[inoff : inoff + take]
            off += take
            n -= take
        return bytes(out)

    def page_heads(self, first: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        bs = self.f.block_size
        if step == bs and first % bs == 0 and type(self.f.src) is _Mapped:
            return self._aligned_heads(first)
        return self._heads_one_by_one(first, step)

    def _aligned_heads(self, first: int) -> tuple[np.ndarray, np.ndarray]:
        """Page-start heads of a file read in place, from the page descriptors
        (:func:`_descriptor_heads`).  A scan of the whole run (``first`` 0) is
        served from a window of runs computed together (:meth:`KdumpFile.run_heads`):
        a dump with its zero pages left out is tens of thousands of runs of a
        few pages, and numpy's cost per call would dominate."""
        f = self.f
        bs = f.block_size
        offs = np.arange(first, self.size - 3, bs, dtype=np.int64)
        if not offs.size:
            return offs, np.zeros(0, dtype=np.uint32)
        r = f.run_of(self.pfn, self.size // bs, self.first) if first == 0 else None
        if r is not None:
            return offs, f.run_heads(r)
        ks = self.first + offs // bs
        heads, problems = _descriptor_heads(f, ks, self.pfn + offs // bs, np.zeros(ks.size, np.int64), 1)
        f.note_problems(*problems[0])
        return offs, heads

    def _heads_one_by_one(self, first: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        bs = self.f.block_size
        offs = np.arange(first, self.size - 3, step, dtype=np.int64)
        heads = np.zeros(offs.size, dtype=np.uint32)
        seen: dict[tuple[int, int], int] = {}
        bar = progress.current()
        for i, o in enumerate(offs.tolist()):
            if i & 4095 == 4095:
                bar.update(4096 * step)
            k, inoff = divmod(o, bs)
            if inoff + 4 > bs:  # straddles two pages (a scan step that is not the block size)
                heads[i] = self._scan_head(self.fetch, o, 4)
                continue
            key = (int(self.f.descs[self.first + k]["offset"]), inoff)  # zero pages share one descriptor target
            v = seen.get(key)
            if v is None:
                v = seen[key] = self._scan_head(self.f.head_of, self.first + k, self.pfn + k, inoff, 4)
            heads[i] = v
        bar.update((offs.size & 4095) * step)
        return offs, heads

    def _scan_head(self, read: Callable[..., bytes], *args: int) -> int:
        """The big-endian u32 ``read(*args)`` gives; a damaged page is skipped (read as 0) and counted."""
        try:
            return int.from_bytes(read(*args), "big")
        except ImageError as exc:
            self.f.unreadable += 1
            self.f.first_unreadable = self.f.first_unreadable or str(exc)
            return 0

    def scan_problems(self) -> tuple[int, str | None]:
        return self.f.unreadable, self.f.first_unreadable

    def reset_scan_problems(self) -> None:
        self.f.unreadable, self.f.first_unreadable = 0, None

    def scan_source(self) -> object:
        return self.f


def load_kdump(path: str | os.PathLike[str], data: mmap.mmap | bytes | None = None) -> PhysImage:
    """A kdump file as a :class:`PhysImage` (pages decompressed on access)."""
    if data is None:
        from ..safeio import map_regular

        data = map_regular(path, "kdump file", error=ImageError)
    f = KdumpFile(data, name=os.fspath(path))
    img = f.image()
    img.arch = None
    img.byteorder = f.byteorder
    return img


# -- the writer --------------------------------------------------------------------------------


def _compress(data: bytes, compression: str) -> bytes:
    if compression == "zlib":
        return zlib.compress(data)
    import cramjam

    if compression == "snappy":
        return bytes(cramjam.snappy.compress_raw(data))
    return bytes(cramjam.zstd.compress(data))


def flatten(plain: bytes, chunk: int = 65536, header_last: bool = True) -> bytes:
    """``plain`` (a kdump-compressed file) in makedumpfile's flattened format,
    as ``makedumpfile -F`` writes it: the 4096-byte header (signature,
    ``type`` and ``version`` 1, big-endian), records of ``chunk`` bytes
    (``header_last``: the first record last, as makedumpfile rewrites the
    header at the end), then the end marker ``(-1, -1)``."""
    out = io.BytesIO()
    out.write(FLAT_SIGNATURE.ljust(16, b"\0") + FLAT_TYPE.to_bytes(8, "big") + FLAT_VERSION.to_bytes(8, "big"))
    out.write(bytes(FLAT_HEADER_SIZE - 32))
    chunks = [(o, plain[o : o + chunk]) for o in range(0, len(plain), chunk)]
    if header_last and chunks:
        chunks.append(chunks.pop(0))
    for o, c in chunks:
        out.write(o.to_bytes(8, "big", signed=True) + len(c).to_bytes(8, "big") + c)
    out.write(FLAT_END.to_bytes(8, "big", signed=True) * 2)
    return out.getvalue()


def kdump_headers(
    ks: KdumpStructs, *, status: int, block_size: int, half_blocks: int, max_mapnr: int, dump_level: int = 0
) -> tuple[bytes, bytes]:
    """The disk_dump_header and kdump_sub_header of a single-CPU, unsplit
    kdump file of ``max_mapnr`` pages whose two bitmaps take ``half_blocks``
    blocks each, as kho's writers (and the benchmark's streaming one) write it."""
    header = ks.header.build(
        dict(
            signature=KDUMP_SIGNATURE,
            header_version=6,
            utsname=b"Linux".ljust(390, b"\0"),
            tv_sec=0,
            tv_usec=0,
            status=status,
            block_size=block_size,
            sub_hdr_size=1,
            bitmap_blocks=2 * half_blocks,
            max_mapnr=min(max_mapnr, 0xFFFFFFFF),
            total_ram_blocks=0,
            device_blocks=0,
            written_blocks=0,
            current_cpu=0,
            nr_cpus=1,
        )
    )
    sub = ks.sub_header.build(
        dict(
            phys_base=0,
            dump_level=dump_level,
            split=0,
            start_pfn=0,
            end_pfn=0,
            offset_vmcoreinfo=0,
            size_vmcoreinfo=0,
            offset_note=0,
            size_note=0,
            offset_eraseinfo=0,
            size_eraseinfo=0,
            start_pfn_64=0,
            end_pfn_64=max_mapnr,
            max_mapnr_64=max_mapnr,
        )
    )
    return header, sub


def write_kdump(
    image: PhysImage,
    out: IO[bytes],
    *,
    compression: str = "zlib",
    block_size: int = 4096,
    byteorder: str = "little",
    flattened: bool = False,
) -> None:
    """Write ``image`` as a kdump-compressed file (whole pages; partial pages
    are padded with zeros; all-zero pages share one page of data, as QEMU does)."""
    if compression not in COMPRESSIONS:
        raise ImageError(f"unknown compression {compression!r}", expected=", ".join(COMPRESSIONS))
    if flattened:
        buf = io.BytesIO()
        write_kdump(image, buf, compression=compression, block_size=block_size, byteorder=byteorder)
        raw = buf.getvalue()
        out.write(flatten(raw))
        return
    bs = block_size
    pfns: list[int] = sorted({p for a, b in image.covered() for p in range(a // bs, -(-b // bs))})
    max_mapnr = (pfns[-1] + 1) if pfns else 1
    half_blocks = -(-max_mapnr // (bs * 8))
    bitmap = np.zeros(half_blocks * bs, dtype=np.uint8)
    if pfns:
        bits = np.zeros(half_blocks * bs * 8, dtype=np.uint8)
        bits[np.array(pfns)] = 1
        bitmap = np.packbits(bits, bitorder="little")
    ks = kdump_structs(byteorder)
    header, sub = kdump_headers(
        ks, status=COMPRESSIONS[compression], block_size=bs, half_blocks=half_blocks, max_mapnr=max_mapnr
    )
    pd_off = (2 + 2 * half_blocks) * bs
    data_off = pd_off + len(pfns) * ks.page_desc.itemsize
    descs = np.zeros(len(pfns), dtype=ks.page_desc)
    out.write(header.ljust(bs, b"\0") + sub.ljust(bs, b"\0") + bitmap.tobytes() + bitmap.tobytes())
    out.write(bytes(len(pfns) * ks.page_desc.itemsize))
    pos = data_off
    zero_at: int | None = None
    flag = COMPRESSIONS[compression]
    for i, pfn in enumerate(pfns):
        page = bytearray(bs)
        a = pfn * bs
        for s, t in image.covered():
            lo, hi = max(s, a), min(t, a + bs)
            if lo < hi:
                page[lo - a : hi - a] = image.read(lo, hi - lo)
        if not any(page):
            if zero_at is None:
                zero_at = pos
                out.write(bytes(bs))
                pos += bs
            descs[i] = (zero_at, bs, 0, 0)
            continue
        blob, fl = bytes(page), 0
        if flag:
            c = _compress(blob, compression)
            if len(c) < bs:
                blob, fl = c, flag
        out.write(blob)
        descs[i] = (pos, len(blob), fl, 0)
        pos += len(blob)
    if hasattr(out, "seek"):
        out.seek(pd_off)
        out.write(descs.tobytes())
        out.seek(0, io.SEEK_END)


register_format(ImageFormat("kdump", is_kdump, load_kdump))


__all__ = [
    "KDUMP_SIGNATURE",
    "FLAT_SIGNATURE",
    "KdumpFile",
    "KdumpPages",
    "kdump_structs",
    "is_kdump",
    "load_kdump",
    "write_kdump",
    "flatten",
]
