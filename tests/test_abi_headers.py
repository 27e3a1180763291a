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
