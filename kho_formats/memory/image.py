"""Physical memory images: sparse bytes at physical addresses.

Loaders: a raw dump plus its base address, an ELF core (``PT_LOAD`` segments
by ``p_paddr``, as QEMU ``dump-guest-memory`` and ``/proc/vmcore`` write
them) and a bundle directory (``manifest.json`` plus raw segment files).
Writers: the same ELF core and bundle.  Reads across the boundary of two
adjacent segments work; a read of memory the image lacks raises
:class:`ImageError` naming the address and what was being read.

Files are mapped, not read (:func:`~kho_formats.safeio.map_regular`): a
segment loaded from a file is a read-only view of a shared ``mmap``, so a
multi-GiB dump costs page cache, not resident memory, and only the pages a
parse touches are ever brought in.  :meth:`PhysImage.write` into such a
segment splits it and copies only the pages written (never the file).  A
segment may also be a :class:`LazyData` (a kdump file's pages, decompressed
on access).
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO, Any

import construct as cs
import numpy as np

from .. import progress
from ..abi.elf import (
    EI_NIDENT,
    ELF_ARCHS,
    ELF_MACHINES,
    ELFCLASS64,
    ELFDATA2LSB,
    ELFDATA2MSB,
    ELFMAG,
    ET_CORE,
    EV_CURRENT,
    PF_R,
    PF_W,
    PT_LOAD,
    elf64_byteorder,
)
from ..abi.layout import layout, parse_struct
from ..errors import ImageError, LimitExceeded, input_kind, input_value
from ..limits import Limits, check_limits
from ..safeio import SMALL_FILE_LIMIT, map_regular, read_regular, refuse_touching_inputs
from .distinct import first_of_each
from .intervals import intersect

BytesLike = bytes | bytearray | memoryview

#: a read-only segment larger than this is split by :meth:`PhysImage.write`, not copied whole
SPLIT_ON_WRITE = 1 << 20
#: the granule :meth:`PhysImage.write` copies out of a split segment
WRITE_GRANULE = 4096


@dataclass(frozen=True)
class ElfStructs:
    """``Elf64_Ehdr`` and ``Elf64_Phdr`` of one byte order, as :meth:`PhysImage.to_elf`,
    :meth:`PhysImage.from_elf` and :mod:`~kho_formats.memory.kcore` use them: a view of the
    :class:`~kho_formats.abi.layout.Layout` declarations (``elf64_hdr``, ``elf64_phdr`` in
    :mod:`kho_formats.abi.elf`), no declaration of its own; ``phdr_dtype`` is the program header as
    a numpy structured dtype, derived from the declaration."""

    ehdr: cs.Construct
    phdr: cs.Construct
    phdr_dtype: np.dtype

    @property
    def ehdr_size(self) -> int:
        return int(self.ehdr.sizeof())

    @property
    def phdr_size(self) -> int:
        return int(self.phdr.sizeof())


@cache
def elf_structs(byteorder: str) -> ElfStructs:
    """The ELF headers of ``byteorder`` from their declarations in :mod:`kho_formats.abi.elf`."""
    lay = layout(byteorder=byteorder)
    return ElfStructs(lay.elf64_hdr, lay.elf64_phdr, lay.dtype_of("elf64_phdr"))


#: ``e_phnum`` when the count does not fit (the ELF gABI): the real count is ``sh_info`` of section header 0
PN_XNUM = 0xFFFF
#: ``sizeof(Elf64_Shdr)``
SHDR_SIZE = 64
#: most program headers read (112 MiB of them; a hostile sh_info says up to 2**32 - 1)
MAX_PHNUM = 1 << 21


def elf_phnum(eh: Any, read: Callable[[int, int], bytes], name: str, *, byteorder: str) -> int:
    """The number of program headers: ``e_phnum``, or with ``e_phnum ==
    PN_XNUM`` the ``sh_info`` of section header 0 (read with ``read(offset,
    n)``: a file of more than 65534 segments, as Linux writes vmcores and
    cores on large machines)."""
    if int(eh.e_phnum) != PN_XNUM:
        return int(eh.e_phnum)
    if not eh.e_shoff:
        raise ImageError(
            f"{name}: e_phnum is PN_XNUM (0xffff) but there is no section header table (e_shoff 0)",
            expected="section header 0 whose sh_info holds the number of program headers",
        )
    if eh.e_shentsize != SHDR_SIZE:
        raise ImageError(f"{name}: e_shentsize {eh.e_shentsize} with e_phnum PN_XNUM", expected=f"{SHDR_SIZE}")
    sh0 = read(int(eh.e_shoff), SHDR_SIZE)
    if len(sh0) != SHDR_SIZE:
        raise ImageError(
            f"{name}: section header 0 at {int(eh.e_shoff):#x} is past the end of the file",
            expected="section header 0 whose sh_info holds the number of program headers (e_phnum is PN_XNUM)",
        )
    n = int.from_bytes(sh0[44:48], "little" if byteorder == "little" else "big")
    if n > MAX_PHNUM:
        raise ImageError(
            f"{name}: section header 0 says {n} program headers (e_phnum PN_XNUM)",
            expected=f"at most {MAX_PHNUM}",
        )
    return n


@dataclass(frozen=True)
class ImageFormat:
    """A file format :meth:`PhysImage.load` recognises by its first bytes (besides ELF and bundles)."""

    name: str
    #: the file's first 16 bytes -> whether it is this format
    sniff: Callable[[bytes], bool]
    #: (path, the file mapped read-only) -> the image
    load: Callable[[Path, mmap.mmap | bytes], PhysImage]


_FORMATS: list[ImageFormat] = []


def register_format(fmt: ImageFormat) -> ImageFormat:
    """Make :meth:`PhysImage.load` open ``fmt`` files (a format module calls it when imported;
    :mod:`kho_formats.memory` imports the built-in ones: ``kdump``)."""
    _FORMATS[:] = [f for f in _FORMATS if f.name != fmt.name] + [fmt]
    return fmt


def unregister_format(name: str) -> None:
    """Forget the format ``name`` (for tests that register their own)."""
    if name not in image_formats():
        raise ImageError(f"no image format {name!r} is registered", expected=", ".join(image_formats()))
    _FORMATS[:] = [f for f in _FORMATS if f.name != name]


def image_formats() -> list[str]:
    """The registered formats' names (ELF cores, raw dumps and bundles are built in)."""
    return [f.name for f in _FORMATS]


def image_format_of(head: bytes) -> str | None:
    """What a file whose first 16 bytes are ``head`` is: ``"elf"``, a registered format's name, or None.

    >>> image_format_of(b"\\x7fELF" + bytes(12)), image_format_of(b"KDUMP   " + bytes(8)), image_format_of(bytes(16))
    ('elf', 'kdump', None)
    """
    if head[: len(ELFMAG)] == ELFMAG:
        return "elf"
    for fmt in _FORMATS:
        if fmt.sniff(head):
            return fmt.name
    return None


class LazyData:
    """Segment bytes produced on demand (e.g. decompressed kdump pages).

    Subclasses give ``size`` and :meth:`fetch`; slicing returns a memoryview
    of the bytes fetched.  Immutable: :meth:`PhysImage.write` splits around it.
    """

    readonly = True
    # a kdump image has one per run of dumped pages (hundreds of thousands): no __dict__ here
    # (subclasses that declare no __slots__ of their own get one as usual)
    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def fetch(self, off: int, n: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        """All of it (``bytes(seg.data)`` works on any segment, lazy or not)."""
        return bytes(self.fetch(0, self.size))

    def __getitem__(self, item: slice) -> memoryview:
        start, stop, step = item.indices(self.size)
        if step != 1:
            raise ValueError("LazyData slices have step 1")
        return memoryview(self.fetch(start, max(0, stop - start)))

    def sub(self, off: int, n: int) -> LazyData:
        """The bytes ``[off, off + n)`` as another lazy object."""
        return _LazySlice(self, off, n)

    def page_heads(self, first: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, big-endian u32 at each offset) for ``first, first + step, ...``
        (page scans; subclasses may avoid producing whole pages)."""
        offs = np.arange(first, self.size - 3, step, dtype=np.int64)
        heads = np.array([int.from_bytes(self.fetch(int(o), 4), "big") for o in offs.tolist()], dtype=np.uint32)
        return offs, heads

    def scan_problems(self) -> tuple[int, str | None]:
        """Pages :meth:`page_heads` scans could not read and skipped (read as
        0) since :meth:`reset_scan_problems`: ``(count, the first one's
        error)``; ``(0, None)`` by default."""
        return 0, None

    def reset_scan_problems(self) -> None:
        """Forget what earlier scans skipped (a new scan starts)."""

    def scan_source(self) -> object:
        """What keeps the :meth:`scan_problems` counts (segments sharing one
        source, such as the runs of one kdump file, report them once)."""
        return self


class _LazySlice(LazyData):
    def __init__(self, base: LazyData, off: int, n: int) -> None:
        super().__init__(n)
        self.base, self.off = base, off

    def fetch(self, off: int, n: int) -> bytes:
        return self.base.fetch(self.off + off, n)

    def scan_problems(self) -> tuple[int, str | None]:
        return self.base.scan_problems()

    def reset_scan_problems(self) -> None:
        self.base.reset_scan_problems()

    def scan_source(self) -> object:
        return self.base.scan_source()

    def page_heads(self, first: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        offs, heads = self.base.page_heads(self.off + first, step)
        keep = offs < self.off + self.size - 3
        return offs[keep] - self.off, heads[keep]

    def sub(self, off: int, n: int) -> LazyData:
        return _LazySlice(self.base, self.off + off, n)


SegmentData = memoryview | LazyData


def _immutable(data: SegmentData) -> bool:
    """Bytes nobody can change through this image: an ``ACCESS_READ`` mapping,
    ``bytes`` or lazy data (shared between copies instead of duplicated)."""
    if isinstance(data, LazyData):
        return True
    return data.readonly and isinstance(data.obj, (bytes, mmap.mmap))


@dataclass(frozen=True, slots=True)
class Segment:
    phys: int
    data: SegmentData

    @property
    def end(self) -> int:
        return self.phys + len(self.data)


class SegmentTable:
    """Many lazy segments held as arrays: segment ``i`` is ``phys[i]``, ``size[i]`` bytes, its
    data ``make(i)`` (a :class:`LazyData` made when the segment is asked for, not kept).

    A kdump file's runs of dumped pages are hundreds of thousands of segments (520k at 16 GiB
    with every eighth page a zero page left out); a :class:`Segment` and its :class:`LazyData`
    held each took about 260 bytes, the table takes 16 per segment plus what ``make`` reads.
    :class:`PhysImage` reads through it as through its list of segments (:meth:`PhysImage.add_table`)
    and turns it into that list before its first change (:meth:`PhysImage.add`, :meth:`PhysImage.write`).
    ``source`` is what made it (a scan of many segments at once asks it: ``scan_table``)."""

    __slots__ = ("phys", "size", "make", "source")

    def __init__(self, phys: np.ndarray, size: np.ndarray, make: Callable[[int], LazyData], source: object) -> None:
        self.phys = np.ascontiguousarray(phys, dtype=np.uint64)
        self.size = np.ascontiguousarray(size, dtype=np.uint64)
        self.make, self.source = make, source

    def __len__(self) -> int:
        return int(self.phys.size)

    def __getitem__(self, i: int) -> Segment:
        n = self.phys.size
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("segment index out of range")
        return Segment(int(self.phys[i]), self.make(i))

    def __iter__(self) -> Iterator[Segment]:
        make = self.make
        for i, p in enumerate(self.phys.tolist()):
            yield Segment(p, make(i))

    def starts(self) -> _Starts:
        return _Starts(self.phys)

    def covered(self) -> list[tuple[int, int]]:
        """:meth:`PhysImage.covered` of the table's segments (sorted, not overlapping)."""
        if not self.phys.size:
            return []
        ends = self.phys + self.size
        new = np.ones(self.phys.size, dtype=bool)
        new[1:] = self.phys[1:] != ends[:-1]
        last = np.append(np.flatnonzero(new)[1:] - 1, self.phys.size - 1)
        return list(zip(self.phys[new].tolist(), ends[last].tolist()))


class _Starts:
    """The segment addresses of a :class:`SegmentTable` as the sorted sequence ``bisect`` searches."""

    __slots__ = ("phys",)

    def __init__(self, phys: np.ndarray) -> None:
        self.phys = phys

    def __len__(self) -> int:
        return int(self.phys.size)

    def __getitem__(self, i: int) -> int:
        return int(self.phys[i])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.phys if dtype is None else self.phys.astype(dtype)


class PhysImage:
    """Sparse physical memory: non-overlapping segments sorted by address."""

    def __init__(self, segments: Iterable[tuple[int, BytesLike | LazyData]] = ()) -> None:
        self._segs: list[Segment] | SegmentTable = []  # a table until the first change (_own)
        self._starts: list[int] | _Starts = []
        #: the arch of the ELF core it was loaded from (``e_machine``), if known
        self.arch: str | None = None
        #: the byte order of the dump it was loaded from (ELF ``EI_DATA``, a kdump header's), if known:
        #: the handover's own byte order when nothing else says it
        self.byteorder: str | None = None
        for phys, data in segments:
            self.add(phys, data)

    # -- building ---------------------------------------------------------
    def add_table(self, table: SegmentTable, *, what: str = "segments") -> None:
        """The segments of ``table`` (sorted, not overlapping, not empty), held as the table
        while the image is not changed.  An image with segments already gets them one by one."""
        n = len(table)
        if not n:
            return
        ends = table.phys + table.size
        if (
            int(table.size.min()) == 0
            or int(table.phys[-1]) + int(table.size[-1]) > 1 << 64
            or bool(np.any(table.phys[1:] < ends[:-1]))
            or bool(np.any(ends < table.phys))
        ):
            raise ImageError(f"{what}: the table's segments are empty, overlap or are not sorted")
        if self._segs:
            self.add_sorted(((s.phys, s.data) for s in table), what=what)  # type: ignore[misc]
            return
        self._segs, self._starts = table, table.starts()

    def _own(self) -> list[Segment]:
        """The segment list, made from the table first (before a change)."""
        if isinstance(self._segs, SegmentTable):
            segs = list(self._segs)
            self._segs, self._starts = segs, [seg.phys for seg in segs]
        return self._segs

    def add(self, phys: int, data: BytesLike | LazyData, *, what: str = "segment") -> None:
        if phys < 0 or phys + len(data) > 1 << 64:
            raise ImageError(f"{what} of {len(data)} bytes does not fit the 64-bit address space", phys=phys)
        if len(data) == 0:
            return
        mv: SegmentData
        if isinstance(data, LazyData):
            mv = data
        else:
            mv = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
        i = bisect.bisect_left(self._starts, phys)
        if i > 0 and self._segs[i - 1].end > phys:
            prev = self._segs[i - 1]
            raise ImageError(f"{what} overlaps segment {prev.phys:#x}-{prev.end:#x}", phys=phys)
        if i < len(self._segs) and phys + len(mv) > self._segs[i].phys:
            nxt = self._segs[i]
            raise ImageError(f"{what} overlaps segment {nxt.phys:#x}-{nxt.end:#x}", phys=phys)
        self._own().insert(i, Segment(phys, mv))
        self._starts.insert(i, phys)  # type: ignore[union-attr]

    def add_sorted(self, segments: Iterable[tuple[int, LazyData]], *, what: str = "segment") -> None:
        """:meth:`add` for many lazy segments in ascending, non-overlapping order
        (a kdump file's runs of pages: tens of thousands), each checked against
        the one before instead of searched for; those that do not follow the
        image's last segment go through :meth:`add`."""
        items = list(segments)
        if not items:
            return
        self._own()
        assert isinstance(self._segs, list) and isinstance(self._starts, list)
        starts = [p for p, _ in items]
        datas = [d for _, d in items]
        sizes = [len(d) for d in datas]
        ends = [p + n for p, n in zip(starts, sizes)]
        last = self._segs[-1].end if self._segs else 0
        if (
            starts[0] >= last
            and min(starts) >= 0
            and min(sizes) > 0
            and ends[-1] <= 1 << 64
            and all(a >= b for a, b in zip(starts[1:], ends))
        ):  # all in order after the last segment: appended at once
            self._segs.extend(map(Segment, starts, datas))
            self._starts.extend(starts)
            return
        for phys, data in items:
            n = len(data)
            if self._segs and phys >= self._segs[-1].end and 0 <= phys and phys + n <= 1 << 64 and n:
                self._segs.append(Segment(phys, data))
                self._starts.append(phys)
            else:
                self.add(phys, data, what=what)

    def write(self, phys: int, data: BytesLike, *, what: str = "data") -> None:
        """Add bytes, or overwrite bytes already covered by one segment.

        A read-only segment (a mapped file, lazy data) is never written
        through: a small one is copied, a large one split so that only the
        :data:`WRITE_GRANULE` pages written become private copies.
        """
        n = len(data)
        i = bisect.bisect_right(self._starts, phys) - 1
        if i >= 0 and self._segs[i].phys <= phys and phys + n <= self._segs[i].end:
            seg = self._segs[i]
            if n == 0:
                return
            sd = seg.data
            if isinstance(sd, LazyData) or sd.readonly:
                if len(sd) <= SPLIT_ON_WRITE:
                    buf = memoryview(bytearray(sd[0 : len(sd)]))
                    self._own()[i] = seg = Segment(seg.phys, buf)
                else:
                    seg = self._split_for_write(i, phys, n)
            target = seg.data
            assert isinstance(target, memoryview)
            target[phys - seg.phys : phys - seg.phys + n] = bytes(data)
            return
        self.add(phys, bytes(data), what=what)

    def _split_for_write(self, i: int, phys: int, n: int) -> Segment:
        """Replace read-only segment ``i`` by [before, private copy, after]
        around ``[phys, phys + n)`` (granule-aligned); the copy's Segment."""
        seg = self._segs[i]
        g = WRITE_GRANULE
        a = max(seg.phys, phys // g * g)
        b = min(seg.end, -(-(phys + n) // g) * g)
        parts: list[Segment] = []
        if a > seg.phys:
            parts.append(Segment(seg.phys, _slice(seg.data, 0, a - seg.phys)))
        mid = Segment(a, memoryview(bytearray(seg.data[a - seg.phys : b - seg.phys])))
        parts.append(mid)
        if b < seg.end:
            parts.append(Segment(b, _slice(seg.data, b - seg.phys, seg.end - b)))
        self._own()[i : i + 1] = parts
        self._starts[i : i + 1] = [p.phys for p in parts]  # type: ignore[index]
        return mid

    def merged(self, other: PhysImage) -> PhysImage:
        out = PhysImage()
        if isinstance(self._segs, SegmentTable):
            out.add_table(self._segs)
        else:
            out = PhysImage((s.phys, s.data) for s in self._segs)
        for s in other._segs:
            out.add(s.phys, s.data)
        out.arch = self.arch or other.arch
        out.byteorder = self.byteorder or other.byteorder
        return out

    def copy(self) -> PhysImage:
        """An independent copy; immutable bytes (mapped files, lazy data) are shared, not duplicated."""
        if isinstance(self._segs, SegmentTable):  # lazy segments only: the table is shared
            out = PhysImage()
            out.add_table(self._segs)
            out.arch = self.arch
            out.byteorder = self.byteorder
            return out
        out = PhysImage((s.phys, s.data if _immutable(s.data) else bytes(s.data[0 : len(s.data)])) for s in self._segs)
        out.arch = self.arch
        out.byteorder = self.byteorder
        return out

    # -- reading ------------------------------------------------------------
    @property
    def segments(self) -> list[Segment]:
        return list(self._segs)

    def __len__(self) -> int:
        return len(self._segs)

    @property
    def total_bytes(self) -> int:
        if isinstance(self._segs, SegmentTable):
            return int(self._segs.size.sum(dtype=np.uint64))
        return sum(len(s.data) for s in self._segs)

    def segment_blocks(self) -> Iterator[Segment | SegmentTable]:
        """The segments in address order, a :class:`SegmentTable` the image holds as one item
        (a scan of many lazy segments at once takes it whole)."""
        if isinstance(self._segs, SegmentTable):
            yield self._segs
        else:
            yield from self._segs

    def has(self, phys: int, size: int) -> bool:
        try:
            self._locate(phys, size, "probe")
            return True
        except ImageError:
            return False

    def _locate(self, phys: int, size: int, what: str) -> list[tuple[Segment, int, int]]:
        if phys < 0 or size < 0 or phys + size > 1 << 64:
            raise ImageError(f"{what}: address range out of the 64-bit space", phys=phys)
        i = bisect.bisect_right(self._starts, phys) - 1
        parts: list[tuple[Segment, int, int]] = []
        cur, left = phys, size
        while True:
            if i < 0 or i >= len(self._segs) or not (self._segs[i].phys <= cur < self._segs[i].end):
                raise ImageError(
                    f"image has no memory for {what} ({size} bytes at {phys:#x}; missing from {cur:#x})",
                    phys=cur,
                    expected="an image segment covering it",
                )
            seg = self._segs[i]
            take = min(left, seg.end - cur)
            parts.append((seg, cur - seg.phys, take))
            cur += take
            left -= take
            if left == 0:
                return parts
            i += 1

    def view(self, phys: int, size: int, what: str = "data") -> memoryview:
        """Zero-copy view when the range lies in one segment, else a joined copy."""
        if size == 0:
            return memoryview(b"")
        parts = self._locate(phys, size, what)
        if len(parts) == 1:
            seg, off, n = parts[0]
            return seg.data[off : off + n]
        return memoryview(b"".join(bytes(seg.data[off : off + n]) for seg, off, n in parts))

    def gather(self, addrs: np.ndarray, size: int, what: str = "data") -> np.ndarray:
        """``size`` bytes at each address, as an (n, size) uint8 array.

        Vectorized for the common case (each block inside one segment, at an
        offset that is a multiple of ``size``); anything else falls back to
        :meth:`read`.  Missing memory raises :class:`ImageError` naming the
        first address the image lacks.
        """
        addrs = np.asarray(addrs, dtype=np.uint64)
        out = np.empty((addrs.size, size), dtype=np.uint8)
        if addrs.size == 0:
            return out
        starts = np.array(self._starts, dtype=np.uint64)
        idx = np.searchsorted(starts, addrs, side="right").astype(np.int64) - 1
        done = np.zeros(addrs.size, dtype=bool)
        # addresses grouped by segment once (sorted), not one pass over them per segment
        by_seg = np.argsort(idx, kind="stable")
        in_order = idx[by_seg]
        first = first_of_each(in_order)
        segs = in_order[first]
        bounds = np.append(first, by_seg.size).tolist()
        for g, k in enumerate(segs.tolist()):
            if k < 0:
                continue
            seg = self._segs[k]
            lo, hi = bounds[g], bounds[g + 1]
            if hi - lo == 1:  # one block in this segment (e.g. a page per segment): no array arithmetic
                i = int(by_seg[lo])
                at = int(addrs[i]) - seg.phys
                if at + size <= len(seg.data) and not isinstance(seg.data, LazyData):
                    out[i] = np.frombuffer(seg.data, dtype=np.uint8, count=size, offset=at)
                    done[i] = True
                continue
            sel = by_seg[lo:hi]
            off = addrs[sel] - np.uint64(seg.phys)
            fits = (off % np.uint64(size) == 0) & (off + np.uint64(size) <= np.uint64(len(seg.data)))
            if not fits.any() or isinstance(seg.data, LazyData):
                continue
            rows = np.frombuffer(seg.data, dtype=np.uint8, count=len(seg.data) // size * size).reshape(-1, size)
            out[sel[fits]] = rows[(off[fits] // np.uint64(size)).astype(np.int64)]
            done[sel[fits]] = True
        for i in np.flatnonzero(~done).tolist():
            out[i] = np.frombuffer(self.read(int(addrs[i]), size, what), dtype=np.uint8)
        return out

    def rows(self, addrs: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Zero-copy :meth:`gather`: when every block ``[addr, addr + size)``
        lies in one in-memory segment at an offset that is a multiple of
        ``size`` from a common origin, ``(rows, index)`` with ``rows`` an
        (m, size) uint8 view of that segment and ``rows[index[i]]`` the bytes
        at ``addrs[i]``; else None (use :meth:`gather`, which also says what
        is missing).  Big maps are then read where they lie, not copied."""
        addrs = np.asarray(addrs, dtype=np.uint64)
        if addrs.size == 0 or size <= 0:
            return None
        lo, hi = int(addrs.min()), int(addrs.max())
        i = bisect.bisect_right(self._starts, lo) - 1
        if i < 0:
            return None
        seg = self._segs[i]
        if isinstance(seg.data, LazyData) or hi + size > seg.end:
            return None
        origin = seg.phys + (lo - seg.phys) % size  # every block must sit at origin + k * size
        rel = addrs - np.uint64(origin)
        if np.any(rel % np.uint64(size)):
            return None
        count = (seg.end - origin) // size
        rows = np.frombuffer(seg.data, dtype=np.uint8, count=count * size, offset=origin - seg.phys)
        rows.flags.writeable = False
        return rows.reshape(count, size), (rel // np.uint64(size)).astype(np.int64)

    def read(self, phys: int, size: int, what: str = "data") -> bytes:
        return bytes(self.view(phys, size, what))

    def covered(self) -> list[tuple[int, int]]:
        """Byte ranges present, adjacent segments joined."""
        if isinstance(self._segs, SegmentTable):
            return self._segs.covered()
        out: list[tuple[int, int]] = []
        for s in self._segs:
            if out and out[-1][1] == s.phys:
                out[-1] = (out[-1][0], s.end)
            else:
                out.append((s.phys, s.end))
        return out

    def covered_within(self, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """The parts of the sorted, disjoint byte ranges ``ranges`` that the image holds
        (:meth:`covered` intersected with them, adjacent segments joined), without listing
        every segment of a :class:`SegmentTable` (a kdump file's hundreds of thousands of runs)."""
        if not isinstance(self._segs, SegmentTable):
            cov = self.covered()
        else:
            t = self._segs
            ends = t.phys + t.size
            pieces: list[tuple[int, int]] = []
            upto = 0  # the segments before it are listed (one may meet several ranges)
            for a, b in ranges:
                i0 = max(upto, int(np.searchsorted(ends, np.uint64(a), "right")))
                i1 = int(np.searchsorted(t.phys, np.uint64(min(b, (1 << 64) - 1)), "left"))
                upto = max(upto, i1)
                for p, e in zip(t.phys[i0:i1].tolist(), ends[i0:i1].tolist()):
                    if pieces and pieces[-1][1] == p:
                        pieces[-1] = (pieces[-1][0], e)
                    else:
                        pieces.append((p, e))
            cov = pieces
        return intersect(ranges, cov)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PhysImage):
            return NotImplemented
        return self.covered() == other.covered() and all(
            self.read(a, b - a) == other.read(a, b - a) for a, b in self.covered()
        )

    # -- raw ---------------------------------------------------------------------
    @classmethod
    def from_raw(cls, data: BytesLike | mmap.mmap | str | os.PathLike[str], base: int) -> PhysImage:
        """One segment at ``base``; a path is mapped, not read."""
        if isinstance(data, (str, os.PathLike)):
            data = _map_file(data, "raw image")
        return cls([(base, memoryview(data))])

    # -- ELF core --------------------------------------------------------------
    @classmethod
    def from_elf(cls, data: BytesLike | mmap.mmap | str | os.PathLike[str], *, name: str = "ELF image") -> PhysImage:
        """PT_LOAD segments placed at ``p_paddr`` (``p_filesz`` bytes each);
        a path is mapped, and the segments are views of the mapping."""
        if isinstance(data, (str, os.PathLike)):
            name = str(data)
            data = _map_file(data, "ELF image")
        buf = memoryview(data)
        elf = elf_structs(elf64_byteorder(buf[:EI_NIDENT], name))
        if len(buf) < elf.ehdr_size:
            raise ImageError(f"{name}: not an ELF file", expected=f"an ELF header ({elf.ehdr_size} bytes)")
        eh = parse_struct(elf.ehdr, bytes(buf[: elf.ehdr_size]), what=f"{name}: ELF header", error=ImageError)
        phsize = elf.phdr_size
        phnum = elf_phnum(eh, lambda o, n: bytes(buf[o : o + n]), name, byteorder="little" if buf[5] == 1 else "big")
        if phnum and eh.e_phentsize != phsize:
            raise ImageError(f"{name}: e_phentsize {eh.e_phentsize}", expected=f"{phsize}")
        if eh.e_phoff + phnum * phsize > len(buf):
            raise ImageError(f"{name}: program headers past end of file ({eh.e_phoff:#x} + {phnum} x {phsize})")
        img = cls()
        img.arch = ELF_ARCHS.get(int(eh.e_machine))
        img.byteorder = "little" if buf[5] == 1 else "big"
        # all program headers at once (up to 65535 of them: one construct parse
        # each would take seconds on a hostile file), then PT_LOADs by address
        # so that adding them is O(n log n) and overlaps are caught pairwise
        ph_dt = elf.phdr_dtype
        phs = np.frombuffer(buf, dtype=ph_dt, count=phnum, offset=eh.e_phoff) if phnum else np.zeros(0, ph_dt)
        loads = np.flatnonzero((phs["p_type"] == PT_LOAD) & (phs["p_filesz"] != 0))
        loads = loads[np.argsort(phs["p_paddr"][loads], kind="stable")]
        for k in loads.tolist():
            off, size, paddr = int(phs["p_offset"][k]), int(phs["p_filesz"][k]), int(phs["p_paddr"][k])
            if off + size > len(buf):
                raise ImageError(
                    f"{name}: PT_LOAD #{k} data ({off:#x}+{size:#x}) past end of file ({len(buf):#x})",
                    phys=paddr,
                )
            img.add(paddr, buf[off : off + size], what=f"{name} PT_LOAD #{k}")
        return img

    def to_elf(self, *, byteorder: str = "little", machine: str = "x86_64", merge: bool = True) -> bytes:
        """An ELF64 core whose PT_LOAD segments carry physical addresses
        (``p_paddr`` = ``p_vaddr`` = phys), readable by pyelftools and QEMU's
        generic loader."""
        head, chunks = self._elf_head(byteorder=byteorder, machine=machine, merge=merge)
        return head + b"".join(self.read(a, b - a) for a, b in chunks)

    def write_elf(
        self, out: IO[bytes], *, byteorder: str = "little", machine: str = "x86_64", merge: bool = True
    ) -> int:
        """:meth:`to_elf` streamed into ``out`` in bounded chunks; bytes written."""
        head, chunks = self._elf_head(byteorder=byteorder, machine=machine, merge=merge)
        out.write(head)
        n = len(head)
        for a, b in chunks:
            n += self.stream(out, a, b - a)
        return n

    def stream(self, out: IO[bytes], phys: int, size: int, *, chunk: int = 1 << 22) -> int:
        """Copy ``size`` bytes at ``phys`` into ``out``, ``chunk`` bytes at a
        time, each reported to the running progress bar (``progress.current()``)."""
        done = 0
        bar = progress.current()
        while done < size:
            k = min(chunk, size - done)
            out.write(self.view(phys + done, k))
            done += k
            bar.update(k)
        return done

    def _elf_head(self, *, byteorder: str, machine: str, merge: bool) -> tuple[bytes, list[tuple[int, int]]]:
        little = byteorder == "little"
        elf = elf_structs("little" if little else "big")
        ehdr_s, phdr_s = elf.ehdr, elf.phdr
        if machine not in ELF_MACHINES:
            raise ImageError(f"unknown ELF machine {machine!r}", expected=", ".join(ELF_MACHINES))
        chunks = self.covered() if merge else [(s.phys, s.end) for s in self._segs]
        phoff = elf.ehdr_size
        # 65535 segments or more: e_phnum PN_XNUM, the count in sh_info of the one (SHT_NULL) section header
        xnum = len(chunks) >= PN_XNUM
        if len(chunks) > 0xFFFFFFFF:
            raise ImageError(f"{len(chunks)} segments do not fit sh_info", expected="<= 0xffffffff")
        shoff = phoff + elf.phdr_size * len(chunks)
        data_off = shoff + (SHDR_SIZE if xnum else 0)
        data_off = (data_off + 15) & ~15
        ident = ELFMAG + bytes([ELFCLASS64, ELFDATA2LSB if little else ELFDATA2MSB, EV_CURRENT, 0]) + bytes(8)
        out = [
            ehdr_s.build(
                dict(
                    e_ident=ident,
                    e_type=ET_CORE,
                    e_machine=ELF_MACHINES[machine],
                    e_version=EV_CURRENT,
                    e_entry=0,
                    e_phoff=phoff if chunks else 0,
                    e_shoff=shoff if xnum else 0,
                    e_flags=0,
                    e_ehsize=elf.ehdr_size,
                    e_phentsize=elf.phdr_size,
                    e_phnum=PN_XNUM if xnum else len(chunks),
                    e_shentsize=SHDR_SIZE,
                    e_shnum=1 if xnum else 0,
                    e_shstrndx=0,
                )
            )
        ]
        off = data_off
        for a, b in chunks:
            out.append(
                phdr_s.build(
                    dict(
                        p_type=PT_LOAD,
                        p_flags=PF_R | PF_W,
                        p_offset=off,
                        p_vaddr=a,
                        p_paddr=a,
                        p_filesz=b - a,
                        p_memsz=b - a,
                        p_align=0,
                    )
                )
            )
            off += b - a
        if xnum:  # Elf64_Shdr 0: SHT_NULL, sh_info = the number of program headers
            out.append(bytes(44) + len(chunks).to_bytes(4, "little" if little else "big") + bytes(16))
        head = b"".join(out)
        head += bytes(data_off - len(head))
        return head, chunks

    # -- bundle directory ----------------------------------------------------------
    MANIFEST = "manifest.json"
    #: largest manifest.json read (50,000 segments fit; a 40 MB nested document
    #: took 500 MiB and 10 s to parse before its error)
    MANIFEST_MAX_BYTES = 4 << 20

    def to_bundle(
        self, directory: str | os.PathLike[str], *, extra: dict[str, object] | None = None, merge: bool = True
    ) -> dict[str, object]:
        d = Path(directory)
        refuse_touching_inputs(d)  # every input opened (tracked by the CLI) stays out of the way
        d.mkdir(parents=True, exist_ok=True)
        segs = []
        chunks = self.covered() if merge else [(s.phys, s.end) for s in self._segs]
        for a, b in chunks:
            fname = f"seg-{a:016x}.bin"
            with open(d / fname, "wb") as fh:
                self.stream(fh, a, b - a)
            segs.append({"file": fname, "phys": a, "size": b - a})
        manifest = {"format": "kho-formats-image", "version": 1, "segments": segs}
        if extra:
            manifest.update(extra)
        (d / self.MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        return manifest

    @classmethod
    def from_bundle(cls, directory: str | os.PathLike[str], *, limits: Limits | None = None) -> PhysImage:
        """A bundle directory: ``manifest.json`` naming segment files and
        their physical addresses.  Each distinct file is resolved, checked
        and mapped once however often the manifest names it (the segments
        share its mapping); the bytes the segments add up to are charged to
        ``Limits.max_image_bytes``; segments are added in address order (a
        manifest listed backwards costs no quadratic insertion)."""
        lim = check_limits(limits, "from_bundle")
        d = Path(directory)
        mpath = d / cls.MANIFEST
        if not os.path.lexists(mpath):
            raise ImageError(f"{mpath}: no manifest")
        try:
            text = read_regular(mpath, "the manifest", inside=d, max_size=cls.MANIFEST_MAX_BYTES, error=ImageError)
            manifest = json.loads(text)
            del text
            segs = manifest["segments"]
            if not isinstance(segs, list):
                raise TypeError("segments is not a list")
        except FileNotFoundError:
            raise ImageError(f"{mpath}: no manifest") from None
        except OSError as exc:
            raise ImageError(f"{mpath}: cannot read the manifest ({exc.strerror or exc})") from None
        except (ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
            raise ImageError(f"{mpath}: bad manifest ({type(exc).__name__}: {str(exc)[:200]})") from None
        entries: list[tuple[int, int, str, int]] = []  # (phys, k, file, size)
        for k, seg in enumerate(segs):
            bad = None
            if not isinstance(seg, dict):
                bad = f"is {input_kind(seg)}"
            elif "file" not in seg or "phys" not in seg:
                bad = "has no " + " and no ".join(f'"{key}"' for key in ("file", "phys") if key not in seg)
            else:
                fname, phys, size = seg["file"], seg["phys"], seg.get("size", -1)
                if not isinstance(fname, str) or "\0" in fname or len(fname) > 4096:  # PATH_MAX
                    bad = f"file {input_value(fname)} is not a file name"
                else:
                    nonint = [f"{key} {input_value(seg[key])}" for key in ("phys", "size") if key in seg]
                    nonint = [t for t, v in zip(nonint, (phys, size)) if not isinstance(v, int) or isinstance(v, bool)]
                    if nonint:
                        bad = " and ".join(nonint) + (" is not an integer" if len(nonint) == 1 else " are not integers")
            if bad is not None:
                raise ImageError(
                    f"{mpath}: segment #{k} {bad}",
                    expected='{"file": NAME, "phys": ADDRESS, "size": BYTES} (size optional)',
                )
            entries.append((phys, k, fname, size))
        entries.sort()
        img = cls()
        try:
            top = d.resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise ImageError(f"{d}: the bundle directory cannot be resolved ({exc})") from None
        resolved: dict[str, Path] = {}
        mapped: dict[Path, memoryview] = {}
        total = 0
        for phys, k, fname, size in entries:
            fpath = resolved.get(fname)
            if fpath is None:
                try:
                    fpath = (d / fname).resolve()
                except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, bad names
                    raise ImageError(
                        f"{mpath}: segment #{k} file {input_value(fname)} cannot be resolved ({exc})"
                    ) from None
                if top not in fpath.parents:
                    raise ImageError(f"{mpath}: segment #{k} file {input_value(fname)} is outside the bundle")
                resolved[fname] = fpath
            data = mapped.get(fpath)
            if data is None:  # one mapping per file, however often the manifest names it
                data = mapped[fpath] = memoryview(_map_file(fpath, f"segment #{k}", inside=d))
            if size >= 0 and size != len(data):
                raise ImageError(f"{fpath}: {len(data)} bytes, manifest says {size}", phys=phys)
            total += len(data)
            if total > lim.max_image_bytes:
                raise LimitExceeded(
                    f"{mpath}: the segments add up to more than {lim.max_image_bytes} bytes "
                    f"(at segment #{k}, {input_value(fname)}; {len(entries)} segments name {len(mapped)} files)",
                    phys=phys,
                    expected="raise it with Limits(max_image_bytes=...)",
                )
            img.add(phys, data, what=f"segment #{k} ({fname})")
        return img

    @classmethod
    def load(cls, spec: str) -> PhysImage:
        """Load from a path: ``DIR`` (bundle), ``FILE.elf`` / any ELF, or ``FILE@BASE`` (raw)."""
        if "@" in spec and not os.path.exists(spec):
            path, base = spec.rsplit("@", 1)
            try:
                return cls.from_raw(path, int(base, 0))
            except ValueError:
                raise ImageError(f"{spec}: bad base address {base!r}", expected="FILE@0xADDR") from None
        p = Path(spec)
        if p.is_dir():
            return cls.from_bundle(p)
        data = _map_file(p, "image")
        kind = image_format_of(bytes(data[:16]))
        if kind == "elf":
            return cls.from_elf(data, name=str(p))
        for fmt in _FORMATS:
            if fmt.name == kind:
                return fmt.load(p, data)
        raise ImageError(
            f"{spec}: neither an ELF core, a kdump file nor a bundle directory; give a raw dump as FILE@BASE"
        )

    def __iter__(self) -> Iterator[Segment]:
        return iter(self._segs)

    def __repr__(self) -> str:
        return f"PhysImage({len(self._segs)} segments, {self.total_bytes} bytes)"


def _slice(data: SegmentData, off: int, n: int) -> SegmentData:
    return data.sub(off, n) if isinstance(data, LazyData) else data[off : off + n]


def _map_file(
    path: str | os.PathLike[str], what: str, *, inside: str | os.PathLike[str] | None = None
) -> mmap.mmap | bytes:
    """A regular file mapped read-only (see :mod:`kho_formats.safeio`)."""
    return map_regular(path, what, inside=inside, error=ImageError)


__all__ = [
    "PhysImage",
    "ImageFormat",
    "register_format",
    "image_formats",
    "image_format_of",
    "unregister_format",
    "Segment",
    "SegmentTable",
    "LazyData",
    "ElfStructs",
    "elf_structs",
    "ELF_MACHINES",
    "ELF_ARCHS",
    "SMALL_FILE_LIMIT",
]
