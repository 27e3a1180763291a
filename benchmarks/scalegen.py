"""Workloads of ``benchmarks/scale.py`` (issue 22): handovers shaped like the
hosts LUO runs on, generated on the fly.

* :func:`vmm_spec`: a LUO handover as a VMM leaves it: one session per VM,
  each with its guest memory in one memfd of order-9 folios and a few small
  files; ``fill = "absent"`` keeps the guest memory out of the image, so
  four 256 GiB memfds (1 TiB) cost what their metadata costs.
* :func:`stress_spec`: ``files`` one-page memfds in sessions of five (the
  shape of the kernel's ``luo_stress_sessions`` and ``luo_stress_files``
  selftests, scaled up: 10,000 files are 2000 sessions).
* :func:`write_elf_dump` / :func:`write_kdump_dump`: a full dump of
  ``size`` bytes of physical memory from 0 whose pages are not holes: every
  page is one of :data:`POOL_PAGES` deterministic pages (random, text-like,
  half-zero, pointer-like and some all-zero ones), with a handover built at
  ``size / 2`` laid over it.  The ELF vmcore is written by kho's own writer
  (:meth:`PhysImage.write_elf` over a lazy segment); the kdump by
  :func:`write_kdump_dump`, which compresses each pool page once and writes
  the file at disk speed (the library's :func:`~kho_formats.memory.kdump.write_kdump`
  compresses page by page in Python: fine for tests, minutes per GiB).  Its
  all-zero pages are excluded from the dump (second bitmap bit clear), as
  ``makedumpfile -d 1`` leaves them.
* :func:`radix_pages`: preserved sets for the radix memory map at TiB scale.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kho_formats.abi.fdt_header import FDT_MAGIC
from kho_formats.memory.image import LazyData, PhysImage
from kho_formats.memory.kdump import COMPRESSIONS, kdump_headers, kdump_structs
from kho_formats.memory.pageset import PageSet

GiB = 1 << 30
TiB = 1 << 40
PAGE = 4096
#: distinct page contents of a generated dump
POOL_PAGES = 32
#: pool pages that are all zeros (excluded from a kdump)
ZERO_PAGES = 4
#: bytes generated and written at a time
CHUNK = 64 << 20

# -- LUO handovers ----------------------------------------------------------------------------

#: F_SEAL_SHRINK | F_SEAL_GROW: a VMM's guest memory keeps its size
VMM_SEALS = 0x2 | 0x4


def vmm_spec(vms: int, memfd_bytes: int, *, fill: str = "absent", folio_order: int = 9) -> dict[str, Any]:
    """``vms`` sessions ``vm-<i>``: guest memory (``memfd_bytes``, ``folio_order`` folios,
    contents ``fill``), a 64 KiB firmware-variables memfd and a one-page device-state memfd
    (seeded contents), as a VMM preserves them before kexec."""
    sessions = []
    for i in range(vms):
        sessions.append(
            {
                "name": f"vm-{i}",
                "files": [
                    {
                        "token": 0x1000,
                        "size": memfd_bytes,
                        "folio_order": folio_order,
                        "fill": fill,
                        "seals": VMM_SEALS,
                    },
                    {"token": 0x2000, "size": 64 << 10, "seals": 1},
                    {"token": 0x3000, "size": PAGE, "seals": 1},
                ],
            }
        )
    total = vms * memfd_bytes
    return {
        "name": "scale-vmm",
        "version": "kho-v4",
        "page_size": PAGE,
        "seed": 22,
        "alloc": [{"start": "4G", "size": total + vms * (memfd_bytes >> 9) + (256 << 20)}],
        "blob": [{"name": "LUO", "type": "LUO", "liveupdate_num": 1, "sessions": sessions}],
    }


def stress_spec(files: int, per_session: int = 5) -> dict[str, Any]:
    """``files`` one-page memfds, ``per_session`` to a session (``many-test-<i>``), each
    holding ``file-data-<n>`` then zeros, sealed as ``memfd_create(name, 0)`` leaves it."""
    sessions = []
    n = 0
    for s in range(-(-files // per_session)):
        fs = []
        for t in range(min(per_session, files - n)):
            fs.append({"token": t, "size": PAGE, "seals": 1, "hex": f"file-data-{n}".encode().hex(), "fill": "zero"})
            n += 1
        sessions.append({"name": f"many-test-{s}", "files": fs})
    return {
        "name": f"scale-stress-{files}",
        "version": "kho-v4",
        "page_size": PAGE,
        "seed": 22,
        "alloc": [{"start": "4G", "size": files * 5 * PAGE + (64 << 20)}],
        "blob": [
            {
                "name": "LUO",
                "type": "LUO",
                "liveupdate_num": 1,
                "flbs": [{"name": "liveupdate-test-flb-v0", "data": 0xFEEDF00DCAFEBEE0, "count": files}],
                "sessions": sessions,
            }
        ],
    }


def dump_handover_spec(size: int) -> dict[str, Any]:
    """The handover laid into a generated dump: a root FDT, a LUO state with two sessions
    (seeded memfd contents, order 0 and order 9) and kexec-metadata, allocated at ``size / 2``."""
    area = min(64 << 20, size // 4)
    return {
        "name": "scale-dump",
        "version": "kho-v4",
        "page_size": PAGE,
        "seed": 23,
        "arch": "x86_64",
        "alloc": [{"start": size // 2, "size": area}],
        "scratch": [{"start": size // 4, "size": min(64 << 20, size // 8)}],
        "blob": [
            {
                "name": "LUO",
                "type": "LUO",
                "sessions": [
                    {"name": "vm-a", "files": [{"token": 1, "size": 1 << 20, "seals": 1}]},
                    {"name": "vm-b", "files": [{"token": 2, "size": 4 << 20, "folio_order": 9, "seals": 7}]},
                ],
            },
            {"name": "kexec-metadata", "type": "kexec-metadata", "previous_release": "7.3.0", "kexec_count": 1},
        ],
    }


# -- full dumps --------------------------------------------------------------------------------


def pool(page_size: int = PAGE, seed: int = 22) -> np.ndarray:
    """:data:`POOL_PAGES` pages, ``(POOL_PAGES, page_size)`` uint8: random, text-like,
    half-zero and pointer-like pages, the last :data:`ZERO_PAGES` all zeros; none starts
    with the FDT magic."""
    rng = np.random.default_rng(seed)
    out = np.zeros((POOL_PAGES, page_size), dtype=np.uint8)
    words = [bytes(rng.integers(97, 123, size=int(rng.integers(2, 10)), dtype=np.uint8)) for _ in range(64)]
    live = POOL_PAGES - ZERO_PAGES
    for k in range(live):
        kind = k % 4
        if kind == 0:  # incompressible
            out[k] = rng.integers(0, 256, size=page_size, dtype=np.uint8)
        elif kind == 1:  # text
            text = b" ".join(words[int(i)] for i in rng.integers(0, len(words), size=page_size // 3))
            out[k] = np.frombuffer(text[:page_size].ljust(page_size, b"."), dtype=np.uint8)
        elif kind == 2:  # half random, half zeros
            out[k, : page_size // 2] = rng.integers(0, 256, size=page_size // 2, dtype=np.uint8)
        else:  # kernel pointers and small counters
            q = np.empty(page_size // 8, dtype="<u8")
            q[0::2] = np.uint64(0xFFFF888000000000) + rng.integers(0, 1 << 30, size=q[0::2].size, dtype=np.uint64) * 64
            q[1::2] = rng.integers(0, 256, size=q[1::2].size, dtype=np.uint64)
            out[k] = q.view(np.uint8)
        if int.from_bytes(out[k, :4].tobytes(), "big") == FDT_MAGIC:
            out[k, 0] ^= 0xFF
    return out


def pool_index(pfns: np.ndarray) -> np.ndarray:
    """Which pool page each pfn holds (a fixed hash of the pfn)."""
    h = (pfns.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(58)
    return (h % np.uint64(POOL_PAGES)).astype(np.intp)


def handover_pages(image: PhysImage, page_size: int = PAGE) -> dict[int, bytes]:
    """pfn -> the page of a (small) handover image that covers it (zeros around its bytes)."""
    pages: dict[int, bytearray] = {}
    for a, b in image.covered():
        for pfn in range(a // page_size, -(-b // page_size)):
            pages.setdefault(pfn, bytearray(page_size))
    for pfn, page in pages.items():
        lo = pfn * page_size
        for a, b in image.covered():
            s, t = max(a, lo), min(b, lo + page_size)
            if s < t:
                page[s - lo : t - lo] = image.read(s, t - s)
    return {k: bytes(v) for k, v in pages.items()}


class DumpMemory(LazyData):
    """``size`` bytes of generated physical memory from 0 with ``overlay`` pages laid over it."""

    def __init__(self, size: int, overlay: dict[int, bytes], page_size: int = PAGE) -> None:
        super().__init__(size)
        self.ps = page_size
        self.pool = pool(page_size)
        self.overlay = overlay
        self._keys = np.array(sorted(overlay), dtype=np.int64)

    def pages(self, first: int, n: int) -> np.ndarray:
        """Pages ``first .. first + n - 1`` as an ``(n, page_size)`` array."""
        pfns = np.arange(first, first + n, dtype=np.uint64)
        out = self.pool[pool_index(pfns)]
        lo, hi = np.searchsorted(self._keys, [first, first + n])
        for pfn in self._keys[lo:hi].tolist():
            out[pfn - first] = np.frombuffer(self.overlay[pfn], dtype=np.uint8)
        return out

    def fetch(self, off: int, n: int) -> bytes:
        first = off // self.ps
        last = -(-(off + n) // self.ps)
        data = self.pages(first, last - first).reshape(-1)
        a = off - first * self.ps
        return data[a : a + n].tobytes()


def write_elf_dump(path: Path, mem: DumpMemory) -> int:
    """The memory as an ELF vmcore (one PT_LOAD from physical 0), by kho's own ELF writer."""
    img = PhysImage([(0, mem)])
    with open(path, "wb") as fh:
        return img.write_elf(fh, machine="x86_64")


def _compressor(compression: str) -> Callable[[bytes], bytes]:
    if compression == "zlib":
        return zlib.compress
    import cramjam

    if compression == "snappy":
        return lambda b: bytes(cramjam.snappy.compress_raw(b))
    if compression == "zstd":
        return lambda b: bytes(cramjam.zstd.compress(b))
    raise ValueError(compression)


def write_kdump_dump(path: Path, mem: DumpMemory, compression: str) -> int:
    """The memory as a kdump-compressed file (header version 6, block size = page size):
    every page valid, the all-zero ones not dumped; bytes written."""
    ps = mem.ps
    npages = mem.size // ps
    comp = _compressor(compression)
    flag = COMPRESSIONS[compression]

    def packed(page: bytes) -> tuple[bytes, int]:
        c = comp(page)
        return (c, flag) if len(c) < ps else (page, 0)

    cpool = [packed(mem.pool[k].tobytes()) for k in range(POOL_PAGES)]
    over = {pfn: packed(page) for pfn, page in mem.overlay.items() if pfn < npages}
    zero_pool = np.zeros(POOL_PAGES, dtype=bool)
    zero_pool[POOL_PAGES - ZERO_PAGES :] = True
    idx = pool_index(np.arange(npages, dtype=np.uint64))
    dumped = ~zero_pool[idx]
    for pfn in over:
        dumped[pfn] = True
    half_blocks = -(-npages // (ps * 8))
    valid = np.zeros(half_blocks * ps * 8, dtype=bool)
    valid[:npages] = True
    second = np.zeros_like(valid)
    second[:npages] = dumped
    bm1 = np.packbits(valid, bitorder="little")
    bm2 = np.packbits(second, bitorder="little")
    pfns = np.flatnonzero(dumped)
    sizes = np.array([len(c) for c, _ in cpool], dtype=np.int64)[idx[pfns]]
    flags = np.array([f for _, f in cpool], dtype=np.uint32)[idx[pfns]]
    over_pfns = np.array(sorted(over), dtype=np.int64)
    for pfn, i in zip(over_pfns.tolist(), np.searchsorted(pfns, over_pfns).tolist()):
        sizes[i], flags[i] = len(over[pfn][0]), over[pfn][1]
    ks = kdump_structs("little")
    pd_off = (2 + 2 * half_blocks) * ps
    data_off = pd_off + pfns.size * ks.page_desc.itemsize
    descs = np.zeros(pfns.size, dtype=ks.page_desc)
    descs["offset"] = data_off + np.concatenate([[0], np.cumsum(sizes)[:-1]])
    descs["size"] = sizes
    descs["flags"] = flags
    header, sub = kdump_headers(ks, status=flag, block_size=ps, half_blocks=half_blocks, max_mapnr=npages, dump_level=1)
    blobs = [c for c, _ in cpool]
    step = CHUNK // ps
    with open(path, "wb") as fh:
        fh.write(header.ljust(ps, b"\0") + sub.ljust(ps, b"\0") + bm1.tobytes() + bm2.tobytes())
        fh.write(descs.tobytes())
        for k in range(0, pfns.size, step):
            part = pfns[k : k + step]
            got = [blobs[i] for i in idx[part].tolist()]
            lo, hi = np.searchsorted(over_pfns, [part[0], part[-1] + 1])
            for pfn in over_pfns[lo:hi].tolist():
                got[int(np.searchsorted(part, pfn))] = over[pfn][0]
            fh.write(b"".join(got))
        return fh.tell()


def build_dump_handover(size: int) -> tuple[Any, dict[int, bytes]]:
    """The handover of :func:`dump_handover_spec` and its pages by pfn."""
    import kho_formats

    h = kho_formats.build(dump_handover_spec(size))
    assert h.image is not None
    return h, handover_pages(h.image)


def dump_memory(size: int) -> tuple[Any, DumpMemory]:
    h, overlay = build_dump_handover(size)
    return h, DumpMemory(size, overlay)


# -- radix memory maps ---------------------------------------------------------------------------

BASE = 1 << 32


def radix_pages(shape: str, total: int, page_size: int = PAGE) -> PageSet:
    """``total`` bytes preserved from 4 GiB up: ``order9`` (all order-9 pages), ``order0``
    (all order-0 pages: the leaves are full bitmaps), ``mixed`` (1 GiB regions, each
    preserved whole in pages of one order 0..18 drawn at random)."""
    if shape == "order9":
        return PageSet.from_runs(page_size, {9: ([BASE], [total // (page_size << 9)])})
    if shape == "order0":
        return PageSet.from_runs(page_size, {0: ([BASE], [total // page_size])})
    if shape == "mixed":
        region = GiB
        n = total // region
        orders = np.random.default_rng(7).integers(0, 19, size=n)
        runs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for o in np.unique(orders).tolist():
            regs = np.flatnonzero(orders == o).astype(np.uint64)
            starts = np.uint64(BASE) + regs * np.uint64(region)
            runs[o] = (starts, np.full(regs.size, region // (page_size << o), dtype=np.uint64))
        return PageSet.from_runs(page_size, runs, sort=False)
    raise ValueError(shape)


def remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
