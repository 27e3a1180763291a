"""x86 boot protocol (``arch/x86/include/uapi/asm/bootparam.h``, ``setup_data.h``): ``struct setup_data``
and the ``SETUP_KEXEC_KHO`` payload ``struct kho_data`` (how a kexec'ing x86 kernel hands the KHO root
FDT and scratch array to the next one), and the offsets of ``struct boot_params`` / ``struct
setup_header`` fields this library reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import construct as cs

from .struct import Typed, declare

if TYPE_CHECKING:  # pragma: no cover
    from .layout import Layout


@dataclass(frozen=True)
class KhoData:
    """x86 ``setup_data`` type ``SETUP_KEXEC_KHO`` payload."""

    fdt_addr: int
    fdt_size: int
    scratch_addr: int
    scratch_size: int


@dataclass(frozen=True)
class SetupDataHdr:
    next: int
    type: int
    len: int


SETUP_KEXEC_KHO = 10


@declare("kho_data")
def _kho_data(lay: Layout) -> cs.Construct:
    return Typed(
        cs.Struct(
            "fdt_addr" / lay.u64 * "phys of the root KHO FDT",
            "fdt_size" / lay.u64 * "its size in bytes",
            "scratch_addr" / lay.u64 * "phys of the kho_scratch array",
            "scratch_size" / lay.u64 * "byte size of the kho_scratch array",
        ),
        KhoData,
    )


@declare("setup_data_hdr")
def _setup_data_hdr(lay: Layout) -> cs.Construct:
    """x86 ``struct setup_data`` header (``data[]`` follows)."""
    return Typed(
        cs.Struct(
            "next" / lay.u64 * "phys of the next setup_data, 0 = end",
            "type" / lay.u32 * "SETUP_KEXEC_KHO (10) for KHO",
            "len" / lay.u32 * "bytes of data[] that follow",
        ),
        SetupDataHdr,
    )
