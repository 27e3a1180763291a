"""Finding the root KHO FDT in a memory image.

On a real system the debugfs ``kho/out/fdt`` file is only a prefix of the
root FDT (Linux 7.3 sizes the file at ``kho_init()``, before the sub-trees
are added), and a full dump does not say where the FDT is.  This module:

* :func:`read_fdt_at` reads a whole FDT (its header's ``totalsize``) at a
  physical address of an image;
* :func:`find_prefix` finds the page-aligned addresses whose bytes start
  with a given prefix (the debugfs ``fdt`` file);
* :func:`scan_root_fdts` finds every page-aligned FDT whose root
  ``compatible`` names a known KHO version and that carries
  ``preserved-memory-map``;
* :func:`from_boot_info` reads the address the previous kernel handed over:
  an arm64 boot DTB (``/chosen/linux,kho-fdt``), an x86 ``setup_data`` of type
  ``SETUP_KEXEC_KHO`` (with or without its header) or an x86 ``boot_params``
  copy (its ``setup_data`` chain followed through the image).

Page scans read four bytes per page (numpy strided views of mapped segments:
no copy, one page fault per page).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .. import abi, progress
from ..abi.fdt_header import FDT_HEADER_SIZE, FDT_MAGIC, header_totalsize
from ..abi.fdt_header import plausible_fdt_header as _plausible
from ..abi.layout import SETUP_KEXEC_KHO, layout
from ..abi.x86_boot import BOOT_PARAMS_SETUP_DATA, BOOT_PARAMS_SIZE
from ..errors import FdtError, ImageError, KhoFormatError
from ..memory.image import LazyData, PhysImage, Segment, SegmentTable
from ..model.fdt import get_strings, parse_fdt
from ..safeio import drop_mapped

#: the largest root FDT read (from a file or an image; the kernel creates it in one page)
MAX_ROOT_FDT = 1 << 20
#: the largest debugfs ``sub_fdts/<name>`` file read
MAX_SUB_BLOB = 64 << 20


@dataclass(frozen=True)
class RootCandidate:
    """A root KHO FDT found in an image."""

    phys: int
    size: int
    version: str
    #: how it was found: "scan", "prefix", "root-phys", "setup_data", "chosen"
    how: str

    def describe(self) -> str:
        return f"{self.phys:#x} ({self.size} bytes, {self.version}, {self.how})"


def read_fdt_at(image: PhysImage, phys: int, *, what: str = "root FDT", max_size: int = MAX_ROOT_FDT) -> bytes:
    """The whole FDT at ``phys`` (header ``totalsize`` bytes)."""
    head = image.read(phys, 8, what=f"{what} header")
    total = header_totalsize(head)
    if total is None:
        raise FdtError(
            f"no FDT at {phys:#x} (bad magic {head[:4].hex()})", phys=phys, expected=f"magic {FDT_MAGIC:#010x}"
        )
    if not FDT_HEADER_SIZE <= total <= max_size:
        raise FdtError(
            f"{what} totalsize {total} is implausible", phys=phys, expected=f"{FDT_HEADER_SIZE}..{max_size} bytes"
        )
    return image.read(phys, total, what=what)


def _page_heads(image: PhysImage, page_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(addresses, big-endian u32 at each page start) for every page-aligned
    4 bytes the image holds (all of them at once: 12 bytes per page; the scans
    below keep only the pages that start with the FDT magic)."""
    parts = list(_iter_page_heads(image, page_size))
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint32)
    return np.concatenate([a for a, _ in parts]), np.concatenate([h for _, h in parts])


def _iter_page_heads(image: PhysImage, page_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """:func:`_page_heads` in pieces of a bounded size (a mapped segment's
    :data:`SCAN_CHUNK`, a kdump file's scan window), in address order of the
    image's segments."""
    blocks = list(image.segment_blocks())
    # what keeps each segment's scan problems (a kdump file for all its runs: hundreds of thousands)
    srcs = [_scan_source(b) for b in blocks]
    reset: set[int] = set()
    for b, src in zip(blocks, srcs):  # a new scan: what earlier scans skipped is not this one's
        if src is not None and id(src) not in reset:
            reset.add(id(src))
            (b[0] if isinstance(b, SegmentTable) else b).data.reset_scan_problems()  # type: ignore[union-attr]
    total = sum(int(b.size.sum()) if isinstance(b, SegmentTable) else len(b.data) for b in blocks)
    with progress.task("scanning for the root FDT", total=total) as bar:
        i = 0
        while i < len(blocks):
            block, src = blocks[i], srcs[i]
            if isinstance(block, SegmentTable):
                # a table of lazy segments (a kdump file's runs of dumped pages), scanned whole by
                # what made it, else segment by segment
                whole = getattr(src, "scan_table", None)
                got = whole(block, page_size) if whole is not None else None
                i += 1
                if got is not None:
                    yield from got
                else:
                    for seg in block:
                        yield from _segment_heads(seg, page_size, bar)
                continue
            # consecutive lazy segments of one source that scans many at once (a kdump file's runs
            # of dumped pages: tens of thousands of a few pages each) are given to it together
            many = getattr(src, "scan_page_heads", None) if src is not None else None
            if many is not None:
                j = i + 1
                while j < len(blocks) and srcs[j] is src and not isinstance(blocks[j], SegmentTable):
                    j += 1
                got = many(blocks[i:j], page_size)  # reports its pages to progress.current()
                if got is not None:
                    yield from got
                    i = j
                    continue
            i += 1
            yield from _segment_heads(block, page_size, bar)


def _scan_source(block: Segment | SegmentTable) -> object:
    """What keeps the scan problems of a segment (None: not lazy) or of a table's segments."""
    data = block[0].data if isinstance(block, SegmentTable) else block.data
    return data.scan_source() if isinstance(data, LazyData) else None


def _segment_heads(seg: Segment, page_size: int, bar: progress.Bar) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The page-start heads of one segment."""
    first = -seg.phys % page_size
    n = (len(seg.data) - first - 4) // page_size + 1 if len(seg.data) >= first + 4 else 0
    if n <= 0:
        bar.update(len(seg.data))
        return
    if isinstance(seg.data, LazyData):
        offs, h = seg.data.page_heads(first, page_size)  # reports its pages to progress.current()
        yield offs.astype(np.uint64) + np.uint64(seg.phys), np.asarray(h, dtype=np.uint32)
    else:
        for k, h in _mapped_heads(seg.data, first, n, page_size, bar):
            offs = first + (k + np.arange(h.size, dtype=np.int64)) * page_size
            yield offs.astype(np.uint64) + np.uint64(seg.phys), h
    bar.update(len(seg.data) - n * page_size)  # what the page steps did not count


#: bytes of a mapped file scanned before its pages are dropped from this process
SCAN_CHUNK = 64 << 20


def _mapped_heads(
    data: memoryview, first: int, n: int, page_size: int, bar: progress.Bar | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """The big-endian u32 at ``first + k * page_size`` of ``data`` for k < n, as
    ``(k of the first, heads)`` pieces of :data:`SCAN_CHUNK` bytes.

    For a view of an ``mmap`` each piece's pages are dropped afterwards
    (``MADV_DONTNEED``: they stay in the page cache), so a scan of a multi-GiB
    dump does not leave it resident here."""
    mm = data.obj if isinstance(data.obj, mmap.mmap) else None
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data if mm is not None else 0
    step = max(1, SCAN_CHUNK // page_size)
    for k in range(0, n, step):
        m = min(step, n - k)
        off = first + k * page_size
        out = np.ndarray((m,), dtype=">u4", buffer=data, offset=off, strides=(page_size,)).astype(np.uint32)
        if bar is not None:
            bar.update(m * page_size)
        if mm is not None:
            start = np.frombuffer(data, dtype=np.uint8, count=1, offset=off).ctypes.data - base
            drop_mapped(mm, start, start + m * page_size)
        yield k, out


def _fdt_pages(image: PhysImage, page_size: int) -> list[int]:
    """Page-aligned addresses whose first four bytes are the FDT magic (piece by
    piece: only the matches are kept)."""
    out: list[int] = []
    for addrs, heads in _iter_page_heads(image, page_size):
        out += [int(a) for a in addrs[heads == FDT_MAGIC].tolist()]
    return out


def find_prefix(image: PhysImage, prefix: bytes, page_size: int = 4096) -> list[int]:
    """Page-aligned addresses whose bytes start with ``prefix`` (an FDT's first bytes)."""
    out = []
    for phys in _fdt_pages(image, page_size):
        if image.has(phys, len(prefix)) and image.read(phys, len(prefix)) == prefix:
            out.append(phys)
    return out


def kho_root_version(blob: bytes, *, phys: int | None = None) -> str | None:
    """The KHO version of a root FDT (known ``compatible`` + ``preserved-memory-map``), else None."""
    try:
        fdt = parse_fdt(blob, where="candidate root FDT", phys=phys)
        root = fdt.root
        if not root.has("compatible") or not root.has("preserved-memory-map"):
            return None
        ver, _ = abi.by_compatible(get_strings(root, "compatible"))
        return ver.name
    except KhoFormatError:
        return None


def plausible_fdt_header(head: bytes, max_size: int = MAX_ROOT_FDT) -> bool:
    """:func:`kho_formats.abi.fdt_header.plausible_fdt_header` with the root FDT's size limit."""
    return _plausible(head, max_size)


def scan_problems(image: PhysImage) -> tuple[int, str | None]:
    """Pages the last page scan of ``image`` skipped because they could not be
    read (a damaged kdump page): ``(count, the first error)``."""
    seen: set[int] = set()
    total, first = 0, None
    last: object = None
    for block in image.segment_blocks():
        seg = block[0] if isinstance(block, SegmentTable) else block  # a table: one source for all
        if isinstance(seg.data, LazyData):
            src = seg.data.scan_source()
            if src is last or id(src) in seen:
                continue
            last = src
            seen.add(id(src))
            n, msg = seg.data.scan_problems()
            total += n
            first = first or msg
    return total, first


def skipped_note(image: PhysImage, name: str) -> str:
    """What the last scan of ``image`` skipped, as a sentence ("" when nothing)."""
    bad, first = scan_problems(image)
    if not bad:
        return ""
    return f"the scan skipped {bad} page{'s' if bad != 1 else ''} of {name} that could not be read (first: {first})"


def scan_root_fdts(image: PhysImage, page_size: int = 4096, *, limit: int = 64) -> list[RootCandidate]:
    """Every page-aligned KHO root FDT in ``image`` (at most ``limit``)."""
    out: list[RootCandidate] = []
    for phys in _fdt_pages(image, page_size):
        try:
            if not plausible_fdt_header(image.read(phys, FDT_HEADER_SIZE, what="FDT header")):
                continue
            blob = read_fdt_at(image, phys)
        except KhoFormatError:
            continue
        ver = kho_root_version(blob, phys=phys)
        if ver is not None:
            out.append(RootCandidate(phys, len(blob), ver, "scan"))
            if len(out) >= limit:
                break
    return out


def from_boot_info(data: bytes, image: PhysImage | None = None, *, byteorder: str = "little") -> list[int]:
    """Root FDT addresses named by a boot DTB, a ``setup_data`` / ``kho_data``
    blob or a ``boot_params`` copy (see the module doc)."""
    lay = layout(byteorder=byteorder)
    if header_totalsize(data) is not None:  # arm64 boot DTB: /chosen linux,kho-fdt = <addr size> (2+2 cells)
        try:
            fdt = parse_fdt(data, where="boot DTB")
        except KhoFormatError as exc:
            raise KhoFormatError(f"boot DTB: {exc}") from None
        chosen = fdt.root.child("chosen")
        prop = chosen.get("linux,kho-fdt") if chosen is not None else None
        if prop is None:
            raise KhoFormatError("boot DTB has no /chosen/linux,kho-fdt", path="/chosen")
        cells = len(prop) // 2
        if cells not in (4, 8):
            raise KhoFormatError(
                f"/chosen/linux,kho-fdt is {len(prop)} bytes", path="/chosen", expected="<addr size> cells"
            )
        return [int.from_bytes(prop[:cells], "big")]
    hdr_size, kd_size = lay.sizeof("setup_data_hdr"), lay.sizeof("kho_data")
    if len(data) >= hdr_size + kd_size:
        hdr = lay.setup_data_hdr.parse(data[:hdr_size])
        if hdr.type == SETUP_KEXEC_KHO and hdr.len >= kd_size:  # setup_data with its header
            return [lay.kho_data.parse(data[hdr_size : hdr_size + kd_size]).fdt_addr]
    if len(data) == kd_size:  # /sys/kernel/boot_params/setup_data/N/data: the payload only
        return [lay.kho_data.parse(data).fdt_addr]
    if len(data) == BOOT_PARAMS_SIZE:  # boot_params: follow hdr.setup_data through the image
        if image is None:
            raise KhoFormatError("a boot_params copy needs the memory image that holds its setup_data chain")
        nxt = int.from_bytes(data[BOOT_PARAMS_SETUP_DATA : BOOT_PARAMS_SETUP_DATA + 8], "little")
        seen: set[int] = set()
        while nxt and nxt not in seen and len(seen) < 256:
            seen.add(nxt)
            hdr = lay.setup_data_hdr.parse(image.read(nxt, hdr_size, what="setup_data header"))
            if hdr.type == SETUP_KEXEC_KHO:
                return [lay.kho_data.parse(image.read(nxt + hdr_size, kd_size, what="kho_data")).fdt_addr]
            nxt = hdr.next
        raise KhoFormatError("boot_params: no SETUP_KEXEC_KHO (type 10) in the setup_data chain")
    raise KhoFormatError(
        f"boot info of {len(data)} bytes is neither a DTB, a setup_data / kho_data blob nor a boot_params copy"
    )


__all__ = [
    "MAX_ROOT_FDT",
    "MAX_SUB_BLOB",
    "RootCandidate",
    "header_totalsize",
    "read_fdt_at",
    "find_prefix",
    "scan_problems",
    "skipped_note",
    "kho_root_version",
    "scan_root_fdts",
    "from_boot_info",
    "ImageError",
]
