"""The flattened devicetree header, ``struct fdt_header`` (``scripts/dtc/libfdt/fdt.h``): always
big-endian, whatever the CPU.  The one place the header's layout, magic and version numbers live."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import construct as cs
import numpy as np

from .struct import Typed, struct_dtype


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

#: ``sizeof(struct fdt_header)``: 40
FDT_HEADER_SIZE: int = fdt_header.sizeof()
#: the format version written (``FDT_LAST_SUPPORTED_VERSION``) and the oldest one read (``FDT_FIRST_SUPPORTED_VERSION``)
FDT_LAST_SUPPORTED_VERSION = 17
FDT_FIRST_SUPPORTED_VERSION = 16
#: ``struct fdt_header`` as a numpy structured dtype, derived from the declaration
FDT_HEADER_DTYPE: np.dtype = struct_dtype(fdt_header)
_TOTALSIZE_END = FDT_HEADER_DTYPE.fields["totalsize"][1] + 4  # type: ignore[index]


def has_fdt_magic(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` starts with ``FDT_MAGIC`` (big-endian)."""
    return len(data) >= 4 and int.from_bytes(bytes(data[:4]), "big") == FDT_MAGIC


def header_totalsize(head: bytes | bytearray | memoryview) -> int | None:
    """``totalsize`` of an FDT header, None unless ``head`` starts with the FDT magic (8 bytes suffice)."""
    if len(head) < _TOTALSIZE_END or not has_fdt_magic(head):
        return None
    return int.from_bytes(bytes(head[4:_TOTALSIZE_END]), "big")


def plausible_fdt_header(head: bytes, max_size: int) -> bool:
    """Whether a 40-byte FDT header could belong to a blob :func:`~kho_formats.model.fdt.parse_fdt`
    accepts (version, and every block inside ``totalsize``): a page that merely
    starts with the magic is not read whole (a dump of such pages would copy a
    MiB per page)."""
    if len(head) < FDT_HEADER_SIZE:
        return False
    h = np.frombuffer(head, dtype=FDT_HEADER_DTYPE, count=1)[0]
    total, version = int(h["totalsize"]), int(h["version"])
    if int(h["magic"]) != FDT_MAGIC or not FDT_HEADER_SIZE <= total <= max_size:
        return False
    if version < FDT_FIRST_SUPPORTED_VERSION or int(h["last_comp_version"]) > min(FDT_LAST_SUPPORTED_VERSION, version):
        return False
    struct_end = int(h["off_dt_struct"]) + (int(h["size_dt_struct"]) if version >= FDT_LAST_SUPPORTED_VERSION else 0)
    strings_end = int(h["off_dt_strings"]) + int(h["size_dt_strings"])
    offsets = (int(h["off_dt_struct"]), int(h["off_dt_strings"]), int(h["off_mem_rsvmap"]))
    return all(FDT_HEADER_SIZE <= o <= total for o in offsets) and struct_end <= total and strings_end <= total
