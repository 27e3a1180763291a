"""The flattened devicetree header, ``struct fdt_header`` (``scripts/dtc/libfdt/fdt.h``): always
big-endian, whatever the CPU.  The one place the header's layout, magic and version numbers live."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import construct as cs

from .struct import Typed


@dataclass(frozen=True)
class FdtHeader:
    magic: int
    totalsize: int
    off_dt_struct: int
    off_dt_strings: int
    off_mem_rsvmap: int
    version: int
    last_comp_version: int
    boot_cpuid_phys: int
    size_dt_strings: int
    size_dt_struct: int


#: ``FDT_MAGIC``
FDT_MAGIC = 0xD00DFEED


_FDT_HEADER_DOCS = {
    "magic": "FDT_MAGIC 0xd00dfeed",
    "totalsize": "size of the whole blob",
    "off_dt_struct": "offset of the structure block",
    "off_dt_strings": "offset of the strings block",
    "off_mem_rsvmap": "offset of the memory reserve map",
    "version": "format version (17)",
    "last_comp_version": "oldest compatible version (16)",
    "boot_cpuid_phys": "physical id of the boot CPU",
    "size_dt_strings": "size of the strings block",
    "size_dt_struct": "size of the structure block",
}

#: ``struct fdt_header``: always big-endian
fdt_header: Typed[FdtHeader] = Typed(
    cs.Struct(*[n / cs.Int32ub * _FDT_HEADER_DOCS[n] for n in (f.name for f in dataclasses.fields(FdtHeader))]),
    FdtHeader,
)
