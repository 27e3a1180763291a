"""The per-header ABI modules: offsets and sizes derived from the declarations match the kernel's."""

from kho_formats.abi import fdt_header, x86_boot


def test_boot_params_offsets_are_the_kernels() -> None:
    # arch/x86/include/uapi/asm/bootparam.h and Documentation/arch/x86/boot.rst
    assert x86_boot.BOOT_PARAMS_SETUP_DATA == 0x250
    assert x86_boot.SETUP_HEADER_END == 0x268
    expected = {
        "setup_sects": 0x1F1, "jump": 0x200, "header": 0x202, "version": 0x206, "type_of_loader": 0x210,
        "loadflags": 0x211, "code32_start": 0x214, "ramdisk_image": 0x218, "ramdisk_size": 0x21C,
        "cmd_line_ptr": 0x228, "pref_address": 0x258, "init_size": 0x260,
    }  # fmt: skip
    assert {k: x86_boot.boot_params_offset(k) for k in expected} == expected


def test_fdt_header_dtype_and_helpers_follow_the_declaration() -> None:
    assert fdt_header.FDT_HEADER_SIZE == 40 == fdt_header.FDT_HEADER_DTYPE.itemsize
    assert fdt_header.FDT_HEADER_DTYPE.names[:2] == ("magic", "totalsize")
    head = (0xD00DFEED).to_bytes(4, "big") + (1234).to_bytes(4, "big")
    assert fdt_header.has_fdt_magic(head) and fdt_header.header_totalsize(head) == 1234
    assert fdt_header.header_totalsize(b"\0" * 8) is None and fdt_header.header_totalsize(head[:7]) is None


def test_elf_headers_are_declared_once_and_have_the_elf64_sizes() -> None:
    import numpy as np
    import pytest

    from kho_formats.abi import elf
    from kho_formats.abi.layout import layout
    from kho_formats.errors import ImageError
    from kho_formats.memory.image import elf_structs

    for bo, e in (("little", "<"), ("big", ">")):
        lay = layout(byteorder=bo)
        # sizeof(Elf64_Ehdr) = 64, sizeof(Elf64_Phdr) = 56 (include/uapi/linux/elf.h)
        assert lay.sizeof("elf64_hdr") == 64 and lay.sizeof("elf64_phdr") == 56
        assert lay.offsetof("elf64_hdr", "e_phoff") == 32 and lay.offsetof("elf64_phdr", "p_paddr") == 24
        view = elf_structs(bo)
        assert view.ehdr is lay.elf64_hdr and view.phdr is lay.elf64_phdr  # a view, no declaration of its own
        assert view.phdr_dtype == lay.dtype_of("elf64_phdr") and view.phdr_dtype["p_type"] == np.dtype(e + "u4")
    ident = elf.ELFMAG + bytes([elf.ELFCLASS64, elf.ELFDATA2MSB, elf.EV_CURRENT]) + bytes(9)
    assert elf.elf64_byteorder(ident, "x") == "big"
    for bad, what in (
        (b"\x7fELG" + ident[4:], "not an ELF file"),
        (ident[:4] + b"\x01" + ident[5:], "not ELF64"),
        (ident[:5] + b"\x03" + ident[6:], "bad EI_DATA 3"),
        (ident[:8], "not an ELF file"),
    ):
        with pytest.raises(ImageError, match=what):
            elf.elf64_byteorder(bad, "core.elf")


def test_kdump_structs_are_declared_once_with_makedumpfiles_sizes() -> None:
    import numpy as np

    from kho_formats.abi.layout import layout
    from kho_formats.memory.kdump import kdump_structs

    for bo, e in (("little", "<"), ("big", ">")):
        lay = layout(byteorder=bo)
        # diskdump_mod.h: the header's block_size at 428 (after 390 bytes of utsname, 6 of padding and the 16-byte timestamp),
        # the 64-bit sub header ends with max_mapnr_64 at 96, a page_desc is 24 bytes
        assert lay.offsetof("disk_dump_header", "block_size") == 428 and lay.sizeof("disk_dump_header") == 464
        assert lay.offsetof("kdump_sub_header", "max_mapnr_64") == 96 and lay.sizeof("kdump_sub_header") == 104
        hand = np.dtype([("offset", e + "i8"), ("size", e + "u4"), ("flags", e + "u4"), ("page_flags", e + "u8")])
        ks = kdump_structs(bo)
        assert ks.page_desc == hand == lay.dtype_of("page_desc")
        assert ks.header is lay.disk_dump_header and ks.sub_header is lay.kdump_sub_header
