"""``include/uapi/linux/elf.h``: the ELF64 file header ``struct elf64_hdr`` (``Elf64_Ehdr``) and program
header ``struct elf64_phdr`` (``Elf64_Phdr``) of the cores this library reads and writes (QEMU
``dump-guest-memory``, ``/proc/vmcore``, ``/proc/kcore``, ``kho convert --image-format elf``), and the
constants of those headers it uses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import construct as cs

from ..errors import ImageError
from .struct import declare

if TYPE_CHECKING:  # pragma: no cover
    from .layout import Layout

#: ``ELFMAG``: the first ``SELFMAG`` bytes of ``e_ident``
ELFMAG = b"\x7fELF"
#: ``EI_NIDENT``: bytes of ``e_ident``
EI_NIDENT = 16
#: indexes into ``e_ident``
EI_CLASS = 4
EI_DATA = 5
EI_VERSION = 6
#: ``e_ident[EI_CLASS]`` of a 64-bit file
ELFCLASS64 = 2
#: ``e_ident[EI_DATA]``: little / big endian
ELFDATA2LSB = 1
ELFDATA2MSB = 2
#: ``e_version`` and ``e_ident[EI_VERSION]``
EV_CURRENT = 1
#: ``e_type`` of a core file
ET_CORE = 4
#: ``p_type``: a loadable segment (memory), a note segment
PT_LOAD = 1
PT_NOTE = 4
#: ``p_flags``
PF_X = 0x1
PF_W = 0x2
PF_R = 0x4
#: ``e_machine`` (``include/uapi/linux/elf-em.h``)
EM_X86_64 = 62
EM_AARCH64 = 183

#: machine name (as ``kho convert --machine`` and fixtures spell it) -> ``e_machine``
ELF_MACHINES = {"x86_64": EM_X86_64, "aarch64": EM_AARCH64, "arm64": EM_AARCH64}
#: ``e_machine`` -> the arch name fixtures record
ELF_ARCHS = {EM_X86_64: "x86_64", EM_AARCH64: "arm64"}


def elf64_byteorder(ident: bytes | bytearray | memoryview, name: str) -> Literal["little", "big"]:
    """The byte order of an ELF64 file from its ``e_ident``; :class:`~kho_formats.errors.ImageError`
    naming ``name`` when ``ident`` is not an ELF64 little- or big-endian identification."""
    if len(ident) < EI_NIDENT or bytes(ident[: len(ELFMAG)]) != ELFMAG:
        raise ImageError(f"{name}: not an ELF file", expected="\\x7fELF magic")
    if ident[EI_CLASS] != ELFCLASS64:
        raise ImageError(f"{name}: not ELF64 (EI_CLASS={ident[EI_CLASS]})", expected="ELFCLASS64")
    if ident[EI_DATA] == ELFDATA2LSB:
        return "little"
    if ident[EI_DATA] == ELFDATA2MSB:
        return "big"
    raise ImageError(f"{name}: bad EI_DATA {ident[EI_DATA]}", expected="1 (LSB) or 2 (MSB)")


@declare("elf64_hdr")
def _elf64_hdr(lay: Layout) -> cs.Construct:
    """``typedef struct elf64_hdr { ... } Elf64_Ehdr``."""
    return cs.Struct(
        "e_ident"
        / cs.Bytes(EI_NIDENT)
        * "ELFMAG, EI_CLASS (2 = ELFCLASS64), EI_DATA (1 = LSB, 2 = MSB), EI_VERSION ...",
        "e_type" / lay.u16 * "ET_CORE (4)",
        "e_machine" / lay.u16 * "EM_X86_64 (62) or EM_AARCH64 (183)",
        "e_version" / lay.u32 * "EV_CURRENT (1)",
        "e_entry" / lay.u64 * "entry point (0 in a core)",
        "e_phoff" / lay.u64 * "file offset of the program header table",
        "e_shoff" / lay.u64 * "file offset of the section header table (0: none)",
        "e_flags" / lay.u32 * "processor flags",
        "e_ehsize" / lay.u16 * "sizeof(Elf64_Ehdr)",
        "e_phentsize" / lay.u16 * "sizeof(Elf64_Phdr)",
        "e_phnum" / lay.u16 * "number of program headers",
        "e_shentsize" / lay.u16 * "sizeof(Elf64_Shdr)",
        "e_shnum" / lay.u16 * "number of section headers",
        "e_shstrndx" / lay.u16 * "section name string table index",
    )


@declare("elf64_phdr")
def _elf64_phdr(lay: Layout) -> cs.Construct:
    """``typedef struct elf64_phdr { ... } Elf64_Phdr``."""
    return cs.Struct(
        "p_type" / lay.u32 * "PT_LOAD (1) for memory",
        "p_flags" / lay.u32 * "PF_R | PF_W ...",
        "p_offset" / lay.u64 * "file offset of the segment's bytes",
        "p_vaddr" / lay.u64 * "virtual address (= phys in our cores)",
        "p_paddr" / lay.u64 * "physical address: where the bytes go",
        "p_filesz" / lay.u64 * "bytes in the file",
        "p_memsz" / lay.u64 * "bytes in memory",
        "p_align" / lay.u64 * "alignment",
    )
