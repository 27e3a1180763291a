"""A file laid out like ``/proc/kcore`` (Linux 7.3 ``fs/proc/kcore.c``, x86_64 4-level paging)
holding a given physical image: for the live-capture tests without a real kernel.

Program headers as the kernel writes them: ``PT_NOTE`` first (``CORE`` notes and
``VMCOREINFO``), then one ``PT_LOAD`` per kcore list entry: the kernel text
(``KCORE_TEXT``: ``p_paddr = __pa_symbol``, a physical address overlapping RAM),
vmalloc and modules (``KCORE_VMALLOC``: ``p_paddr = -1``), the direct map of each
RAM range (``KCORE_RAM``: ``p_vaddr = PAGE_OFFSET + phys``, ``p_paddr = phys``) and
its vmemmap (``p_paddr = -1``).  ``p_offset`` is ``(p_vaddr & __VIRTUAL_MASK) +
data offset`` as on x86_64, except that ``compact=True`` packs the segments
(the real layout needs a ~128 TiB sparse file, more than ext4 allows).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fuzz.kcore_layout import (  # noqa: F401  (re-exported: the tests import them from here)
    MODULES_VADDR,
    NO_PADDR,
    PAGE_OFFSET,
    TEXT_VADDR,
    VIRTUAL_MASK,
    VMALLOC_START,
    VMEMMAP_START,
    core_ehdr,
    elf_note,
)
from kho_formats.memory.image import PhysImage, elf_structs


def write_kcore(
    path: Path,
    image: PhysImage,
    ram: Sequence[tuple[int, int]],
    *,
    text: tuple[int, int] = (0x1000000, 0x1000000),
    extra_loads: Sequence[tuple[int, int, int]] = (),
    decoy: bytes = b"",
    vmcoreinfo: str = "OSRELEASE=7.3.4-kho-live\nPAGESIZE=4096\n",
    machine: int = 62,
) -> Path:
    """Write the kcore-like file; ``ram`` = [(phys, size)], ``text`` = (phys, size) of
    the kernel image, ``extra_loads`` = more (vaddr, paddr, size) PT_LOADs,
    ``decoy`` = bytes placed at the start of the text and vmalloc segments (so a
    reader that used them would find them)."""
    elf = elf_structs("little")
    notes = (
        elf_note(b"CORE", 1, bytes(336))
        + elf_note(b"CORE", 3, bytes(136))
        + elf_note(b"VMCOREINFO", 0, vmcoreinfo.encode())
    )
    loads: list[tuple[int, int, int]] = [(TEXT_VADDR, text[0], text[1])]
    loads.append((VMALLOC_START, NO_PADDR, 1 << 30))
    loads.append((MODULES_VADDR, NO_PADDR, 1 << 26))
    for phys, size in ram:
        loads.append((PAGE_OFFSET + phys, phys, size))
        loads.append((VMEMMAP_START + (phys >> 12) * 64, NO_PADDR, max(4096, (size >> 12) * 64)))
    loads += list(extra_loads)
    nph = 1 + len(loads)
    data_off = -(-(64 + 56 * nph + len(notes)) // 4096) * 4096
    offsets, cur = [], data_off
    for _va, _pa, size in loads:
        offsets.append(cur)
        cur += -(-size // 4096) * 4096 + (1 << 20)
    end = cur
    with open(path, "wb") as fh:
        fh.write(core_ehdr(nph, machine=machine))
        note_off = 64 + 56 * nph
        phdrs = [(4, 0, note_off, 0, 0, len(notes))]
        phdrs += [(1, 7, off, va, pa, size) for (va, pa, size), off in zip(loads, offsets)]
        for pt, fl, off, va, pa, size in phdrs:
            fh.write(
                elf.phdr.build(
                    dict(
                        p_type=pt,
                        p_flags=fl,
                        p_offset=off,
                        p_vaddr=va,
                        p_paddr=pa,
                        p_filesz=size,
                        p_memsz=size,
                        p_align=4096,
                    )
                )
            )
        fh.write(notes)
        fh.truncate(end)
        placed = 0
        for seg in image:
            for (va, pa, size), off in zip(loads, offsets):
                if va - pa == PAGE_OFFSET and pa <= seg.phys and seg.end <= pa + size:
                    fh.seek(off + seg.phys - pa)
                    fh.write(bytes(seg.data[0 : len(seg.data)]))
                    placed += 1
                    break
            else:
                raise ValueError(f"segment {seg.phys:#x}-{seg.end:#x} outside the RAM ranges")
        if decoy:
            fh.seek(offsets[0])
            fh.write(decoy)
            fh.seek(offsets[1])
            fh.write(decoy)
    assert os.path.getsize(path) == end
    return path


def debugfs_copy(src: Path, dst: Path, *, prefix: int | None = None) -> Path:
    """A debugfs ``kho/out`` directory copied from ``src``; ``prefix`` cuts ``fdt`` to that many bytes."""
    dst.mkdir(parents=True)
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if p.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
        else:
            data = p.read_bytes()
            if rel == Path("fdt") and prefix is not None:
                data = data[:prefix]
            (dst / rel).write_bytes(data)
    return dst
