"""x86 boot protocol (``arch/x86/include/uapi/asm/bootparam.h``, ``setup_data.h``): ``struct setup_data``
and the ``SETUP_KEXEC_KHO`` payload ``struct kho_data`` (how a kexec'ing x86 kernel hands the KHO root
FDT and scratch array to the next one), and the offsets of ``struct boot_params`` / ``struct
setup_header`` fields this library reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import construct as cs

from .struct import Typed, declare, field_offsets

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


# -- struct boot_params and its struct setup_header (the bzImage's header, copied into boot_params) --

#: ``sizeof(struct boot_params)``: the "zero page"
BOOT_PARAMS_SIZE = 4096
#: ``offsetof(struct boot_params, hdr)``: where the setup header sits, in boot_params and in a bzImage
BOOT_PARAMS_HDR = 0x1F1
#: ``boot_params.ext_ramdisk_image``, ``ext_ramdisk_size``, ``ext_cmd_line_ptr``: the high halves (u32)
BOOT_PARAMS_EXT_RAMDISK_IMAGE = 0x0C0
BOOT_PARAMS_EXT_RAMDISK_SIZE = 0x0C4
BOOT_PARAMS_EXT_CMD_LINE_PTR = 0x0C8
#: ``setup_header.header``: the boot protocol magic
HDRS_MAGIC = b"HdrS"
#: ``setup_header.loadflags`` bit: the protected-mode kernel is loaded at 0x100000
LOADED_HIGH = 0x01

_u8, _u16, _u32, _u64 = cs.Int8ul, cs.Int16ul, cs.Int32ul, cs.Int64ul
#: ``struct setup_header`` (x86 is little-endian), through ``handover_offset``: what this library reads
setup_header = cs.Struct(
    "setup_sects" / _u8 * "size of the real-mode setup in 512-byte sectors (0 means 4)",
    "root_flags" / _u16,
    "syssize" / _u32,
    "ram_size" / _u16,
    "vid_mode" / _u16,
    "root_dev" / _u16,
    "boot_flag" / _u16 * "0xAA55",
    "jump" / _u16 * "a 2-byte jmp over the header: its second byte is the header's length past it",
    "header" / cs.Bytes(4) * 'the magic "HdrS"',
    "version" / _u16 * "boot protocol version (0x020a = 2.10)",
    "realmode_swtch" / _u32,
    "start_sys_seg" / _u16,
    "kernel_version" / _u16,
    "type_of_loader" / _u8,
    "loadflags" / _u8 * "LOADED_HIGH ...",
    "setup_move_size" / _u16,
    "code32_start" / _u32 * "where the protected-mode kernel is loaded",
    "ramdisk_image" / _u32,
    "ramdisk_size" / _u32,
    "bootsect_kludge" / _u32,
    "heap_end_ptr" / _u16,
    "ext_loader_ver" / _u8,
    "ext_loader_type" / _u8,
    "cmd_line_ptr" / _u32,
    "initrd_addr_max" / _u32,
    "kernel_alignment" / _u32,
    "relocatable_kernel" / _u8,
    "min_alignment" / _u8,
    "xloadflags" / _u16,
    "cmdline_size" / _u32,
    "hardware_subarch" / _u32,
    "hardware_subarch_data" / _u64,
    "payload_offset" / _u32,
    "payload_length" / _u32,
    "setup_data" / _u64 * "phys of the first struct setup_data, 0 = none (protocol 2.09)",
    "pref_address" / _u64 * "where the kernel prefers to decompress (2.10)",
    "init_size" / _u32 * "the memory it needs there (2.10)",
    "handover_offset" / _u32,
)
_SETUP_HEADER_OFFSETS = field_offsets(setup_header)


def boot_params_offset(field: str) -> int:
    """``offsetof(struct boot_params, hdr.<field>)`` (equally the field's offset in a bzImage)."""
    return BOOT_PARAMS_HDR + _SETUP_HEADER_OFFSETS[field]


#: the end of :data:`setup_header` in boot_params / a bzImage (0x268)
SETUP_HEADER_END: int = BOOT_PARAMS_HDR + setup_header.sizeof()
#: ``boot_params.hdr.setup_data`` (0x250)
BOOT_PARAMS_SETUP_DATA = boot_params_offset("setup_data")
