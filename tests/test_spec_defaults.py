"""The spec's placement defaults (issue 13): a spec that leaves every
placement out (no alloc, no scratch, no root_fdt_phys) builds a fixture a
kernel boots as it is, at every page size.  No kernel needed: the layout is
checked against QEMU virt's memory map the way ``kho boot`` checks it, and the
root FDT page is looked up in the memory map read back from the bytes (at
64 KiB a root FDT page left out of the map fails silently in the kernel, so
this guards the default).  The boots are in tests/test_kernel_pagesizes.py."""

from __future__ import annotations

import pytest
from _kernel import PAGE_SIZES, minimal_spec, minimal_spec_text, write_boot_fixture

from kho_formats import boot
from kho_formats.boot.qemu import QEMU_RAM_BASE, QEMU_RAM_SIZE, check_layout
from kho_formats.errors import BootError, SpecError
from kho_formats.model.spec import DEFAULT_ALLOC, DEFAULT_SCRATCH, build_spec, loads_spec
from kho_formats.model.state import parse

#: the largest arm64 kernel span seen (the 64 KiB build ends at ~0x41850000), with room to grow
KSPAN = (0x4020_0000, 0x0200_0000)
#: the LUO initramfs (~1 MiB with luo_check) moves the DTB above 0x48000000
INITRD = 1 << 20


@pytest.mark.parametrize("ps", PAGE_SIZES, ids=lambda ps: f"{ps // 1024}k")
def test_minimal_spec_root_fdt_page_is_in_the_map(ps):
    sp = minimal_spec(ps)
    assert sp.alloc is None and sp.scratch is None and sp.root_fdt_phys is None
    fx = build_spec(sp)
    assert fx.fdt_phys == DEFAULT_ALLOC["arm64"][0][0]
    assert fx.state.scratch == list(DEFAULT_SCRATCH["arm64"])
    # read back from the bytes, not from the builder's own set
    st = parse(fx.root_fdt, fx.image, page_size=ps, root_fdt_phys=fx.fdt_phys)
    assert st.preserved.contains(fx.fdt_phys, 0), f"root FDT page {fx.fdt_phys:#x} missing from the map"
    assert st.subblob("kho_test") is not None
    for a, s in fx.state.scratch:
        assert not st.preserved.overlaps_range(a, a + s)


@pytest.mark.parametrize("ps", PAGE_SIZES, ids=lambda ps: f"{ps // 1024}k")
def test_minimal_spec_fits_qemu_virt(tmp_path, ps):
    fx = build_spec(minimal_spec(ps))
    bf = boot.load_fixture(write_boot_fixture(fx, tmp_path / "fx"))
    assert bf.scratch_array_phys is not None and bf.image.has(bf.scratch_array_phys, 16)
    for initrd in (0, INITRD):
        check_layout(bf, KSPAN, 1 << 20, QEMU_RAM_SIZE, initrd)  # raises BootError when it does not fit
    assert sum(s for _, s in bf.scratch) >= 64 << 20  # 48 MiB panics the kernel
    top = QEMU_RAM_BASE + QEMU_RAM_SIZE
    assert all(QEMU_RAM_BASE <= a and a + s <= top for a, s in bf.scratch)


def test_the_check_would_see_a_bad_default(tmp_path):
    """The layout check used above does refuse the old default (16 MiB at 16 MiB)."""
    sp = minimal_spec(4096)
    sp.alloc = [(16 << 20, 16 << 20)]
    bf = boot.load_fixture(write_boot_fixture(build_spec(sp), tmp_path / "fx"))
    with pytest.raises(BootError, match="outside QEMU virt RAM"):
        check_layout(bf, KSPAN, 1 << 20, QEMU_RAM_SIZE)


def test_x86_64_defaults_clear_of_the_kernel():
    fx = build_spec(minimal_spec(4096, "x86_64"))
    # what booted on a real x86_64 kernel (QEMU pc -m 1G): root FDT at 0x20000000,
    # data right after it, scratch 128 MiB at 0x28000000
    assert fx.fdt_phys == 0x2000_0000
    assert fx.state.scratch == [(0x2800_0000, 128 << 20)]
    kernel_end = (16 << 20) + (12 << 20)  # decompressed at 16 MiB, ~12 MiB init_size
    lo, hi = fx.image.covered()[0][0], fx.image.covered()[-1][1]
    assert kernel_end < lo and hi <= 0x2800_0000
    st = parse(fx.root_fdt, fx.image, page_size=4096, root_fdt_phys=fx.fdt_phys)
    assert st.preserved.contains(fx.fdt_phys, 0)


def test_defaults_apply_only_to_what_the_spec_leaves_out():
    sp = loads_spec("scratch = []\n" + minimal_spec_text(4096) + "[[alloc]]\nstart = '0x78000000'\nsize = '16M'\n")
    fx = build_spec(sp)
    assert fx.state.scratch == [] and fx.fdt_phys == 0x7800_0000
    sp = loads_spec(minimal_spec_text(4096) + '[[alloc]]\nstart = "0x60000000"\nsize = "16M"\n')
    assert build_spec(sp).state.scratch == list(DEFAULT_SCRATCH["arm64"])


def test_a_preserved_page_in_the_default_scratch_names_the_default():
    sp = loads_spec(minimal_spec_text(4096) + '[[preserve]]\nphys = "0x50001000"\n')
    with pytest.raises(SpecError, match=r"lies in scratch area 0x50000000\+0x10000000 \(the default scratch of arm64"):
        build_spec(sp)
