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


def test_the_memblock_client_speaks_the_abi_modules_names() -> None:
    from kho_formats.abi import kexec_metadata, luo, memblock
    from kho_formats.model.clients import kexec_metadata as km_client
    from kho_formats.model.clients import memblock as mb_client
    from kho_formats.model.clients.luo import model as luo_model

    # include/linux/kho/abi/memblock.h, kexec_metadata.h, luo.h
    assert (
        (mb_client.NAME, mb_client.COMPATIBLE, mb_client.REGION_COMPATIBLE)
        == (
            memblock.MEMBLOCK_KHO_FDT,
            memblock.MEMBLOCK_KHO_NODE_COMPATIBLE,
            memblock.RESERVE_MEM_KHO_NODE_COMPATIBLE,
        )
        == ("memblock", "memblock-v1", "reserve-mem-v1")
    )
    assert km_client.NAME == kexec_metadata.KHO_METADATA_NODE_NAME == "kexec-metadata"
    assert luo_model.NAME == luo.LUO_KHO_ENTRY_NAME == "LUO"
    assert luo.liveupdate_test_flb_compatible(2) == "liveupdate-test-flb-v2"


#: literals of a kernel ABI surface and the one module allowed to spell each (issue 18's list of copies)
ABI_LITERALS = {
    0xD00DFEED: "abi/fdt_header.py",
    b"\xd0\x0d\xfe\xed": "abi/fdt_header.py",
    b"\x7fELF": "abi/elf.py",
    b"KDUMP   ": "abi/kdump.py",
    0x250: "abi/x86_boot.py",
    "memfd-v2": "abi/memfd.py",
    "luo-v5": "abi/luo.py",
    "memblock-v1": "abi/memblock.py",
    "reserve-mem-v1": "abi/memblock.py",
    "kexec-metadata": "abi/kexec_metadata.py",
}


def test_each_abi_literal_is_written_in_its_header_module_only() -> None:
    import ast
    from pathlib import Path

    import kho_formats

    root = Path(kho_formats.__file__).resolve().parent
    seen: dict[object, list[str]] = {}
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and not isinstance(node.value, bool):
                v = node.value
                if any(type(v) is type(k) and v == k for k in ABI_LITERALS):
                    seen.setdefault(v, []).append(f"{rel}:{node.lineno}")
    copies = {repr(v): [w for w in where if not w.startswith(ABI_LITERALS[v] + ":")] for v, where in seen.items()}
    assert {k: w for k, w in copies.items() if w} == {}
    # and the check sees what it looks for
    assert all(any(w.startswith(ABI_LITERALS[v]) for w in where) for v, where in seen.items())
    assert {0xD00DFEED, b"\x7fELF", "memfd-v2", "memblock-v1"} <= set(seen)
