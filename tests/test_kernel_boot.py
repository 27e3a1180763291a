"""Kernel in the loop: fixtures built here from specs are booted by the real
arm64 Linux 7.3 kernel (``scripts/build-kernel.sh``) under QEMU with
``kho_formats.boot.run_boot`` and must be accepted or rejected as expected.

Run with ``python -m pytest -m kernel``. The tests run whenever the kernel
Image (``$KHO_KERNEL`` or ``~/.cache/kho-formats/linux-7.3-arm64/Image``) and
``qemu-system-aarch64`` are there, and are skipped, naming what is missing,
otherwise (``KHO_BOOT_TESTS=0`` forces the skip): see ``tests/_kernel.py``.

Every fixture is kho-v4, arm64, 4 KiB pages, laid out for QEMU virt
``-m 1G`` with a 256 MiB scratch area at 0x50000000. Only the files
``kho boot`` reads are written (root.dtb, handover.json, manifest.json and
the segments), which keeps a build well under a second.

Accepted: kho_test folios of every order 0..10; memblock reserve_mem regions
+ kexec-metadata; a kho_test folios_info vmalloc area that spans two
``struct kho_vmalloc_chunk`` pages. Rejected (negative controls): a wrong
``csum``; one folio left out of the preserved memory map; one radix table
entry zeroed; ``compatible = "kho-v3"`` on otherwise kho-v4 bytes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from _kernel import (
    boot_fixture,
    folio_left_out,
    kernel_image,
    kho_test_of,
    kho_v3_compatible,
    requires_kernel,
    show,
    write_boot_fixture,  # noqa: F401  (tests/test_boot_luo.py imports it from here)
)

from kho_formats import boot
from kho_formats.model.clients import kho_test
from kho_formats.model.fixture import Fixture
from kho_formats.model.spec import build_spec, load_spec

pytestmark = [pytest.mark.kernel, requires_kernel]

SPECS = Path(__file__).resolve().parent.parent / "fixtures" / "specs" / "kernel"
TIMEOUT = 60
#: folios_info pages for the two-chunk case: a chunk holds 511 page addresses
PADDED_INFO_PAGES = 520

OK = "test_kho: KHO restore succeeded"
FAILED = "test_kho: KHO restore failed"


# -- building -------------------------------------------------------------------------


def build_orders() -> Fixture:
    """(a) kho_test with one folio of each order 0..10."""
    return build_spec(load_spec(SPECS / "orders-0-10.toml"))


def build_memblock() -> Fixture:
    """(b) memblock reserve_mem regions + kexec-metadata + a small kho_test."""
    return build_spec(load_spec(SPECS / "memblock.toml"))


def build_two_chunks(monkeypatch: pytest.MonkeyPatch) -> Fixture:
    """(c) 600 folios, and a folios_info area padded to 520 pages -> 2 chunks.

    A chunk lists the *pages* of the vmalloc area (511 per chunk with 4 KiB
    pages) and one folios_info page holds 512 folio entries, so 600 folios
    need only 2 pages / 1 chunk; 2 chunks by folio count alone would need
    >= 261,633 folios (> 1 GiB). test_kho reads only ``nr_folios`` entries
    but ``kho_restore_vmalloc`` restores every page of the area and every
    chunk, so the padding pages (zeros, preserved as order-0 pages like the
    others) exercise the kernel's multi-chunk walk.
    """
    real = kho_test.build_vmalloc

    def padded(groups, order, lay, alloc, **kw):
        extra = [alloc.alloc(what="padding folios_info page") for _ in range(PADDED_INFO_PAGES - len(groups))]
        desc, chunks, pres = real(list(groups) + extra, order, lay, alloc, **kw)
        return desc, list(chunks) + [(p, bytes(lay.page_size)) for p in extra], pres

    with monkeypatch.context() as m:
        m.setattr(kho_test, "build_vmalloc", padded)
        return build_spec(load_spec(SPECS / "many-folios.toml"))


def build_wrong_csum() -> Fixture:
    sp = load_spec(SPECS / "orders-0-10.toml")
    good = kho_test_of(build_spec(sp)).csum
    sp.blobs[0].params = dataclasses.replace(sp.blobs[0].params, csum=good ^ 1)
    return build_spec(sp)


def build_folio_left_out(monkeypatch: pytest.MonkeyPatch, order: int = 5) -> tuple[Fixture, tuple[int, int]]:
    """The orders fixture with the order-``order`` folio removed from the
    preserved set just before ``state.build`` writes the radix tree (the
    folio's bytes, the folios_info entry and the csum are unchanged)."""
    return folio_left_out(monkeypatch, load_spec(SPECS / "orders-0-10.toml"), order)


def radix_entry(fx: Fixture, phys: int, order: int) -> tuple[int, int]:
    """(address of the level-1 table entry pointing at the leaf that holds
    ``(phys, order)``, that leaf's address)."""
    st = fx.state
    geom = st.abi.radix(st.page_size)
    key = (phys >> (geom.page_shift + order)) | (1 << (geom.order_0_log2 - order))
    leaf = key >> geom.bitmap_size_log2
    node = (1, leaf >> geom.table_size_log2)
    slot = leaf & ((1 << geom.table_size_log2) - 1)
    placement = st.memmap.placement
    return placement[node] + 8 * slot, placement[(0, leaf)]


def build_radix_entry_cleared() -> tuple[Fixture, int]:
    """The orders fixture with the level-1 table entry of the leaf holding the
    folios_info vmalloc chunk (order 0; the same leaf holds the order-0 folio
    and the folios_info page) set to 0."""
    fx = build_orders()
    chunk = kho_test_of(fx).folios_info.first
    entry, leaf = radix_entry(fx, chunk, 0)
    bo = fx.state.byteorder
    assert int.from_bytes(fx.image.read(entry, 8), bo) == leaf
    image = fx.image.copy()
    image.write(entry, bytes(8))
    return dataclasses.replace(fx, image=image), entry


def build_kho_v3_compatible() -> Fixture:
    """The orders fixture (kho-v4 bytes) with the root compatible "kho-v3"."""
    return kho_v3_compatible(build_orders())


def run(fx: Fixture, tmp_path: Path, name: str) -> boot.BootResult:
    return boot_fixture(fx, tmp_path, name, kernel_image(), timeout=TIMEOUT)


# -- accepted -------------------------------------------------------------------------


def test_orders_0_to_10_accepted(tmp_path):
    fx = build_orders()
    kt = kho_test_of(fx)
    assert sorted(o for _, o in kt.folios) == list(range(11))
    for p, o in kt.folios:
        assert any(fx.image.read(p, 4096 << o)), f"folio {p:#x} is all zero"
        assert fx.state.preserved.contains(p, o)
    assert kt.csum_check["arm64"] == kt.csum
    r = run(fx, tmp_path, "orders")
    assert r.verdict == "accepted", show(r)
    assert r.clients == {"kho_test": "ok"}
    assert boot.FOUND in r.kho_lines and OK in r.kho_lines


def test_memblock_and_metadata_accepted(tmp_path):
    fx = build_memblock()
    r = run(fx, tmp_path, "memblock")
    assert r.verdict == "accepted", show(r)
    assert "reserve_mem=4194304:4096:trace_buf" in r.cmdline and "reserve_mem=1048576:4096:oops_buf" in r.cmdline
    assert r.clients == {"kho_test": "ok", "memblock": "ok", "kexec-metadata": "ok"}
    for line in (
        "Revived memory reservation 'trace_buf' from KHO",
        "Revived memory reservation 'oops_buf' from KHO",
        "KHO: exec from: 7.3.4-kho-formats (count 7)",
        OK,
    ):
        assert line in r.kho_lines, show(r)


def test_folios_info_two_vmalloc_chunks_accepted(tmp_path, monkeypatch):
    fx = build_two_chunks(monkeypatch)
    kt = kho_test_of(fx)
    assert kt.nr_folios == len(kt.folios) == 600
    assert kt.folios_info.total_pages == kt.area.nr_pages == PADDED_INFO_PAGES
    assert len(kt.area.chunks) == 2
    for p in list(kt.area.groups.tolist()) + kt.area.chunks:
        assert fx.state.preserved.contains(int(p), 0)
    r = run(fx, tmp_path, "two-chunks")
    assert r.verdict == "accepted", show(r)
    assert r.clients == {"kho_test": "ok"} and OK in r.kho_lines


# -- rejected (negative controls) ------------------------------------------------------


def test_wrong_csum_rejected(tmp_path):
    r = run(build_wrong_csum(), tmp_path, "csum")
    assert r.verdict == "rejected", show(r)
    assert r.clients == {"kho_test": "failed"}
    assert FAILED in r.reason and boot.FOUND in r.kho_lines
    assert not any("WARNING:" in l for l in r.kho_lines), show(r)  # every folio restored, only the sum differs


def test_folio_left_out_of_the_map_rejected(tmp_path, monkeypatch):
    fx, (phys, order) = build_folio_left_out(monkeypatch)
    assert not fx.state.preserved.contains(phys, order)
    assert (phys, order) in kho_test_of(fx).folios
    r = run(fx, tmp_path, "folio-left-out")
    assert r.verdict == "rejected", show(r)
    assert r.clients == {"kho_test": "failed"} and FAILED in r.reason
    # kho_restore_folio() finds no magic on the page: WARN_ON_ONCE in kho_restore_page
    assert any(l.startswith("WARNING:") and "kexec_handover.c" in l for l in r.kho_lines), show(r)


def test_radix_table_entry_cleared_rejected(tmp_path):
    fx, _ = build_radix_entry_cleared()
    r = run(fx, tmp_path, "radix-entry")
    assert r.verdict == "rejected", show(r)
    assert boot.FOUND in r.kho_lines  # the tree walk skips a zero entry silently
    assert r.clients == {"kho_test": "failed"} and FAILED in r.reason
    assert any(l.startswith("WARNING:") and "kexec_handover.c" in l for l in r.kho_lines), show(r)


def test_kho_v3_compatible_rejected(tmp_path):
    r = run(build_kho_v3_compatible(), tmp_path, "kho-v3")
    assert r.verdict == "rejected", show(r)
    assert "is incompatible with 'kho-v4'" in r.reason
    assert "KHO: disabling KHO revival" in r.kho_lines
    assert boot.FOUND not in r.log and OK not in r.log
