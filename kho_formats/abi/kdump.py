"""makedumpfile's ``diskdump_mod.h``: the compressed kdump format's ``struct disk_dump_header``, the
64-bit ``struct kdump_sub_header`` and ``struct page_desc`` (``page_desc_t``), in the dumped machine's
byte order.  Not a kernel header, but the layout ``crash`` and ``makedumpfile -R`` read, and that QEMU's
``dump-guest-memory -z/-l/-s`` writes; :mod:`kho_formats.memory.kdump` reads and writes it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import construct as cs

from .struct import declare

if TYPE_CHECKING:  # pragma: no cover
    from .layout import Layout

#: ``KDUMP_SIGNATURE``: ``disk_dump_header.signature``
KDUMP_SIGNATURE = b"KDUMP   "
#: ``sizeof(struct new_utsname)``: six fields of ``__NEW_UTS_LEN + 1`` (65) chars
NEW_UTSNAME_SIZE = 6 * 65


@declare("disk_dump_header")
def _disk_dump_header(lay: Layout) -> cs.Construct:
    """``struct disk_dump_header`` (block 0 of the file)."""
    return cs.Struct(
        "signature" / cs.Bytes(len(KDUMP_SIGNATURE)) * '"KDUMP   "',
        "header_version" / lay.s32,
        "utsname" / cs.Bytes(NEW_UTSNAME_SIZE) * "struct new_utsname: 6 x 65 chars",
        cs.Padding(6),
        "tv_sec" / lay.s64 * "struct timeval timestamp",
        "tv_usec" / lay.s64,
        "status" / lay.u32 * "DUMP_DH_* flags (compression, incomplete ...)",
        "block_size" / lay.s32 * "page size of the dumped machine",
        "sub_hdr_size" / lay.s32 * "blocks of kdump_sub_header",
        "bitmap_blocks" / lay.u32 * "blocks of both bitmaps",
        "max_mapnr" / lay.u32 * "32-bit max_mapnr (obsolete, see max_mapnr_64)",
        "total_ram_blocks" / lay.u32,
        "device_blocks" / lay.u32,
        "written_blocks" / lay.u32,
        "current_cpu" / lay.u32,
        "nr_cpus" / lay.s32,
    )


@declare("kdump_sub_header")
def _kdump_sub_header(lay: Layout) -> cs.Construct:
    """``struct kdump_sub_header`` of a 64-bit machine (block 1), up to ``max_mapnr_64`` (header_version 6)."""
    return cs.Struct(
        "phys_base" / lay.u64,
        "dump_level" / lay.s32,
        "split" / lay.s32,
        "start_pfn" / lay.u64,
        "end_pfn" / lay.u64,
        "offset_vmcoreinfo" / lay.s64,
        "size_vmcoreinfo" / lay.u64,
        "offset_note" / lay.s64,
        "size_note" / lay.u64,
        "offset_eraseinfo" / lay.s64,
        "size_eraseinfo" / lay.u64,
        "start_pfn_64" / lay.u64,
        "end_pfn_64" / lay.u64,
        "max_mapnr_64" / lay.u64,
    )


@declare("page_desc")
def _page_desc(lay: Layout) -> cs.Construct:
    """``struct page_desc``: one per dumped page, in pfn order, after the bitmaps."""
    return cs.Struct(
        "offset" / lay.s64 * "off_t: file offset of the page's (compressed) bytes",
        "size" / lay.u32 * "bytes there",
        "flags" / lay.u32 * "DUMP_DH_COMPRESSED_* of this page (0: raw)",
        "page_flags" / lay.u64 * "page flags (unused)",
    )
