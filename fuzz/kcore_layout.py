"""The pieces of a ``/proc/kcore``-like ELF core (Linux 7.3 ``fs/proc/kcore.c``,
x86_64 4-level paging) shared by the synthetic kcores of the tests
(``tests/_kcore.py``, written to a sparse file) and of the kcore fuzz target
(``fuzz/dumps.py``, built in memory): the virtual bases of the kcore list
entries, the ELF64 ``ET_CORE`` header and the note format."""

from __future__ import annotations

from kho_formats.memory.image import elf_structs

PAGE_OFFSET = 0xFFFF888000000000
TEXT_VADDR = 0xFFFFFFFF81000000
VMALLOC_START = 0xFFFFC90000000000
MODULES_VADDR = 0xFFFFFFFFA0000000
VMEMMAP_START = 0xFFFFEA0000000000
#: ``p_paddr`` of a segment with no physical address (vmalloc, modules, vmemmap)
NO_PADDR = (1 << 64) - 1
VIRTUAL_MASK = (1 << 47) - 1


def core_ehdr(phnum: int, *, machine: int = 62, **fields: int) -> bytes:
    """A little-endian ELF64 ``ET_CORE`` header (x86_64 by default) with
    ``phnum`` program headers right after it; ``fields`` override any field."""
    h = dict(
        e_ident=b"\x7fELF\x02\x01\x01" + bytes(9),
        e_type=4,
        e_machine=machine,
        e_version=1,
        e_entry=0,
        e_phoff=64,
        e_shoff=0,
        e_flags=0,
        e_ehsize=64,
        e_phentsize=56,
        e_phnum=phnum,
        e_shentsize=0,
        e_shnum=0,
        e_shstrndx=0,
    )
    h.update(fields)
    return elf_structs("little").ehdr.build(h)


def elf_note(name: bytes, ntype: int, desc: bytes) -> bytes:
    """One ELF note (little-endian): namesz, descsz, type, then name and desc padded to 4 bytes."""
    n = name + b"\0"

    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % 4)

    return (
        len(n).to_bytes(4, "little")
        + len(desc).to_bytes(4, "little")
        + ntype.to_bytes(4, "little")
        + pad(n)
        + pad(desc)
    )


__all__ = [
    "PAGE_OFFSET",
    "TEXT_VADDR",
    "VMALLOC_START",
    "MODULES_VADDR",
    "VMEMMAP_START",
    "NO_PADDR",
    "VIRTUAL_MASK",
    "core_ehdr",
    "elf_note",
]
