"""``/proc/kcore`` as a :class:`~kho_formats.memory.image.PhysImage`: physical memory of the running system.

``/proc/kcore`` is an ELF core of the kernel's virtual address space
(``fs/proc/kcore.c``, Linux 7.3): a ``PT_NOTE`` (``CORE`` notes and the
``VMCOREINFO`` note, which gives ``PAGESIZE``), then one ``PT_LOAD`` per
``kcore_list`` entry, in list order, with ``p_vaddr`` the kernel virtual
address, ``p_offset`` = ``kc_vaddr_to_offset(p_vaddr)`` + the page-aligned
header size (x86_64 masks the address to ``__VIRTUAL_MASK``, so offsets reach
~128 TiB: the file is enormous and sparse), ``p_filesz`` = ``p_memsz`` and
``p_paddr`` set by entry type:

* ``KCORE_RAM`` (the direct map of every System RAM range): ``__pa(vaddr)``,
  the physical address. These are the segments of the image.
* ``KCORE_TEXT`` (the kernel image ``_text.._end``, x86_64 and arm64):
  ``__pa_symbol(vaddr)``, a physical address too, but of memory a RAM segment
  already covers. It is told apart by its ``p_vaddr - p_paddr``, which differs
  from the direct map's (the offset shared by the RAM segments, i.e. the
  group covering the most bytes), and left out.
* ``KCORE_VMALLOC`` (vmalloc and module areas), ``KCORE_VMEMMAP`` and others:
  ``p_paddr`` = ``(elf_addr_t)-1``: no physical address, left out.

Kernels before 4.19 set every ``p_paddr`` to 0: such a kcore is refused
(:class:`~kho_formats.errors.ImageError`).

kcore cannot be mapped and reading it is a trip through the kernel per page,
so nothing is read up front: each RAM segment is a :class:`KcoreData`
(:class:`~kho_formats.memory.image.LazyData`) that ``os.pread``-s the bytes asked
for. Small reads go through a page cache of at most ``cache_pages`` pages
(the parse reads the same metadata pages repeatedly); large reads (streaming
preserved contents into a capture) bypass it. Page scans (finding the root
FDT) read four bytes per page. :attr:`KcoreFile.bytes_read` counts what was
read from the file.

Any ELF file laid out like this works (tests use sparse files); a file that
is not (bad header, a RAM segment past the end of the file, overlapping RAM)
raises :class:`~kho_formats.errors.ImageError`.
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..abi.elf import ELF_ARCHS, ET_CORE, PT_LOAD, PT_NOTE, elf64_byteorder
from ..abi.layout import parse_struct
from ..errors import ImageError, KhoFormatError
from ..safeio import note_input
from .image import LazyData, PhysImage, elf_phnum, elf_structs

KCORE_PATH = "/proc/kcore"
#: ``p_paddr`` of a segment with no physical address (``(elf_addr_t)-1``)
NO_PADDR = (1 << 64) - 1
#: default number of cached pages per kcore file
CACHE_PAGES = 1024
#: reads at least this large bypass the page cache
BYPASS = 64 << 10
#: the largest PT_NOTE segment read
MAX_NOTES = 1 << 20
#: the cache granule (independent of the kernel's page size)
BLOCK = 4096


@dataclass(frozen=True)
class KcoreSegment:
    """One ``PT_LOAD`` of a kcore file."""

    index: int
    vaddr: int
    paddr: int
    offset: int
    size: int
    #: "ram" (in the image), "no-paddr" (vmalloc, modules, vmemmap), "other-mapping" (kernel text)
    kind: str


class KcoreFile:
    """An open ``/proc/kcore`` (or a file laid out like it); see the module doc.

    Use as a context manager, or :meth:`close` it; :meth:`image` gives the
    physical memory.
    """

    def __init__(self, path: str | os.PathLike[str] = KCORE_PATH, *, cache_pages: int = CACHE_PAGES) -> None:
        self.name = os.fspath(path)
        self.cache_pages = max(0, cache_pages)
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        #: bytes and read calls made on the file (header included)
        self.bytes_read = 0
        self.reads = 0
        self.fd = self._open()
        try:
            st = os.fstat(self.fd)
            note_input(self.name, st)
            self.file_size = st.st_size
            self._parse_headers()
        except BaseException:
            self.close()
            raise

    # -- opening and headers ----------------------------------------------------------
    def _open(self) -> int:
        try:
            fd = os.open(self.name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise ImageError(
                f"{self.name}: no such file", expected="/proc/kcore (a kernel built with CONFIG_PROC_KCORE)"
            ) from None
        except PermissionError as exc:
            raise ImageError(
                f"cannot open {self.name}: {exc.strerror} (reading kcore needs root: CAP_SYS_RAWIO)"
            ) from None
        except OSError as exc:
            raise ImageError(f"cannot open {self.name}: {exc.strerror or exc}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ImageError(f"{self.name}: not a regular file", expected="/proc/kcore or an ELF core file")
        os.set_blocking(fd, True)
        return fd

    def _parse_headers(self) -> None:
        head = self.pread(0, 64, "ELF header")
        self.byteorder: Literal["little", "big"] = elf64_byteorder(head, self.name)
        elf = elf_structs(self.byteorder)
        eh = parse_struct(elf.ehdr, head[: elf.ehdr_size], what=f"{self.name}: ELF header", error=ImageError)
        if eh.e_type != ET_CORE:
            raise ImageError(f"{self.name}: e_type {eh.e_type}", expected=f"ET_CORE ({ET_CORE})")
        self.arch = ELF_ARCHS.get(int(eh.e_machine))
        phnum = elf_phnum(eh, lambda o, n: self.pread(o, n, "section header 0"), self.name, byteorder=self.byteorder)
        if phnum == 0:
            raise ImageError(f"{self.name}: no program headers", expected="PT_NOTE and PT_LOAD segments")
        if eh.e_phentsize != elf.phdr_size:
            raise ImageError(f"{self.name}: e_phentsize {eh.e_phentsize}", expected=f"{elf.phdr_size}")
        raw = self.pread(int(eh.e_phoff), phnum * elf.phdr_size, "program headers")
        phs = np.frombuffer(raw, dtype=elf.phdr_dtype)
        self.segments: list[KcoreSegment] = []
        self.vmcoreinfo: dict[str, str] = {}
        loads: list[tuple[int, int, int, int, int]] = []
        for k in range(phs.size):
            ptype = int(phs["p_type"][k])
            off, size = int(phs["p_offset"][k]), int(phs["p_filesz"][k])
            if ptype == PT_NOTE and size and not self.vmcoreinfo:
                self.vmcoreinfo = self._vmcoreinfo(off, size)
            elif ptype == PT_LOAD and size:
                loads.append((k, int(phs["p_vaddr"][k]), int(phs["p_paddr"][k]), off, size))
        valid = [ld for ld in loads if ld[2] != NO_PADDR]
        if loads and all(ld[2] == 0 for ld in loads):
            raise ImageError(
                f"{self.name}: no PT_LOAD carries a physical address (every p_paddr is 0: a kernel before 4.19)",
                expected="p_paddr = __pa(vaddr) for RAM segments",
            )
        by_delta: dict[int, int] = {}
        for _, va, pa, _, size in valid:
            d = (va - pa) % (1 << 64)
            by_delta[d] = by_delta.get(d, 0) + size
        # the direct map: the vaddr-paddr offset covering the most bytes (ties: the lowest offset)
        self.direct_map = min(by_delta, key=lambda d: (-by_delta[d], d)) if by_delta else None
        for k, va, pa, off, size in loads:
            if pa == NO_PADDR:
                kind = "no-paddr"
            elif (va - pa) % (1 << 64) == self.direct_map:
                kind = "ram"
            else:
                kind = "other-mapping"
            if kind == "ram":
                if off + size > 1 << 64 or (self.file_size and off + size > self.file_size):
                    raise ImageError(
                        f"{self.name}: PT_LOAD #{k} data ({off:#x}+{size:#x}) past the end of the file "
                        f"({self.file_size:#x})",
                        phys=pa,
                    )
            self.segments.append(KcoreSegment(k, va, pa, off, size, kind))
        if not any(s.kind == "ram" for s in self.segments):
            raise ImageError(
                f"{self.name}: no PT_LOAD maps RAM", expected="PT_LOAD segments with a physical address (p_paddr)"
            )

    def _vmcoreinfo(self, off: int, size: int) -> dict[str, str]:
        """``KEY=VALUE`` lines of the ``VMCOREINFO`` note ({} when absent or malformed)."""
        if size > MAX_NOTES:
            return {}
        try:
            data = self.pread(off, size, "notes")
        except ImageError:
            return {}
        pos = 0
        while pos + 12 <= len(data):
            namesz, descsz, _ = (int.from_bytes(data[pos + 4 * i : pos + 4 * i + 4], self.byteorder) for i in range(3))
            name_end = pos + 12 + namesz
            desc = pos + 12 + (-(-namesz // 4) * 4)
            if desc + descsz > len(data):
                return {}
            if data[pos + 12 : name_end].rstrip(b"\0") == b"VMCOREINFO":
                out = {}
                for line in data[desc : desc + descsz].decode("ascii", "replace").splitlines():
                    key, sep, value = line.partition("=")
                    if sep:
                        out[key] = value
                return out
            pos = desc + (-(-descsz // 4) * 4)
        return {}

    @property
    def page_size(self) -> int | None:
        """``PAGESIZE`` from the VMCOREINFO note, if given and sane."""
        try:
            ps = int(self.vmcoreinfo.get("PAGESIZE", ""))
        except ValueError:
            return None
        return ps if ps in (4096, 16384, 65536) else None

    # -- reading ----------------------------------------------------------------------
    def pread(self, off: int, n: int, what: str = "data") -> bytes:
        """``n`` bytes at file offset ``off``, uncached; a short file raises :class:`ImageError`."""
        if off < 0 or n < 0 or off + n > 1 << 64:
            raise ImageError(f"{self.name}: {what}: file offset {off:#x}+{n:#x} out of range")
        if off + n > (1 << 63) - 1:
            raise ImageError(f"{self.name}: {what}: file offset {off:#x}+{n:#x} beyond what the OS can read")
        parts: list[bytes] = []
        done = 0
        while done < n:
            try:
                chunk = os.pread(self.fd, min(n - done, 1 << 24), off + done)
            except OSError as exc:
                raise ImageError(
                    f"{self.name}: cannot read {what} at file offset {off + done:#x}: {exc.strerror or exc}"
                ) from None
            self.reads += 1
            if not chunk:
                raise ImageError(f"{self.name}: {what} ({n} bytes at file offset {off:#x}) past the end of the file")
            parts.append(chunk)
            done += len(chunk)
        self.bytes_read += done
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read(self, off: int, n: int, what: str = "data") -> bytes:
        """``n`` bytes at file offset ``off``; small reads go through the page cache."""
        if n >= BYPASS or self.cache_pages == 0:
            return self.pread(off, n, what)
        first, last = off // BLOCK, (off + n - 1) // BLOCK if n else off // BLOCK - 1
        out = bytearray()
        for b in range(first, last + 1):
            page = self._cache.get(b)
            if page is None:
                page = self.pread(b * BLOCK, BLOCK, what)
                self._cache[b] = page
                if len(self._cache) > self.cache_pages:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(b)
            out += page
        skip = off - first * BLOCK
        return bytes(out[skip : skip + n])

    def image(self) -> PhysImage:
        """The RAM segments as a :class:`PhysImage` (read on demand)."""
        img = PhysImage()
        img.arch = self.arch
        for s in sorted((s for s in self.segments if s.kind == "ram"), key=lambda s: s.paddr):
            img.add(s.paddr, KcoreData(self, s.offset, s.size), what=f"{self.name} PT_LOAD #{s.index}")
        return img

    def close(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1
        self._cache.clear()

    def __enter__(self) -> KcoreFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> list[dict[str, object]]:
        """The PT_LOADs and how each is used (for reports)."""
        return [
            {"index": s.index, "vaddr": s.vaddr, "paddr": s.paddr, "size": s.size, "kind": s.kind}
            for s in self.segments
        ]


class KcoreData(LazyData):
    """One RAM segment of a kcore file, read on demand."""

    def __init__(self, f: KcoreFile, offset: int, size: int) -> None:
        super().__init__(size)
        self.f, self.offset = f, offset

    def fetch(self, off: int, n: int) -> bytes:
        if off < 0 or n < 0 or off + n > self.size:
            raise ImageError(f"{self.f.name}: read of {n} bytes at {off:#x} outside a {self.size}-byte segment")
        if self.f.fd < 0:
            raise KhoFormatError(f"{self.f.name}: read after close")
        return self.f.read(self.offset + off, n)

    def page_heads(self, first: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        offs = np.arange(first, self.size - 3, step, dtype=np.int64)
        heads = np.empty(offs.size, dtype=np.uint32)
        base = self.offset
        for i, o in enumerate(offs.tolist()):
            heads[i] = int.from_bytes(self.f.pread(base + o, 4, "page head"), "big")
        return offs, heads


def load_kcore(path: str | os.PathLike[str] = KCORE_PATH, *, cache_pages: int = CACHE_PAGES) -> PhysImage:
    """The physical memory of a kcore file (:meth:`KcoreFile.image`); the file stays open
    as long as the image is used."""
    return KcoreFile(path, cache_pages=cache_pages).image()


__all__ = ["KCORE_PATH", "KcoreFile", "KcoreData", "KcoreSegment", "load_kcore", "NO_PADDR"]
