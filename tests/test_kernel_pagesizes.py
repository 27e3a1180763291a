"""Kernel in the loop at other arm64 page sizes (issue 13): real Linux 7.3.4
arm64 kernels built for 16 and 64 KiB pages (``KHO_KERNEL_PAGE_SIZE=16K|64K
scripts/build-kernel.sh``, ``.../linux-7.3-arm64-16k/Image``,
``...-64k/Image``), and the 4 KiB one.  Each test is skipped with the reason
when its Image or QEMU is missing, or with ``KHO_BOOT_TESTS=0``
(``tests/_kernel.py``).

- the shipped 16 and 64 KiB fixtures;
- the minimal spec (version, page_size, arch and a ``kho_test`` blob, every
  placement left to the defaults) built into ``tmp_path``, accepted at 4, 16
  and 64 KiB;
- negative controls on the minimal spec at each page size, rejected: a bit
  flipped in a ``kho_test`` folio (the csum is the intact data's), a
  ``kho_test`` folio left out of the memory map, ``compatible = "kho-v3"``
  on the kho-v4 bytes.

Every boot must take less than :data:`MAX_SECONDS` (TCG; the issue asks for
< 10 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _kernel import (
    boot_fixture,
    flip_folio_bit,
    folio_left_out,
    kernel_for,
    kernel_params,
    kho_test_of,
    kho_v3_compatible,
    minimal_spec,
    needs_kernel,
    show,
)

from kho_formats import boot
from kho_formats.errors import BootError
from kho_formats.model.spec import build_spec

FIX = Path(__file__).resolve().parent.parent / "fixtures"
K16 = kernel_for(16384)
K64 = kernel_for(65536)
TIMEOUT = 60
MAX_SECONDS = 10
OK = "test_kho: KHO restore succeeded"
FAILED = "test_kho: KHO restore failed"

pytestmark = pytest.mark.kernel
needs_16k = needs_kernel(16384)
needs_64k = needs_kernel(65536)


def run_dir(d: Path, kernel: Path) -> boot.BootResult:
    r = boot.run_boot(d, kernel, timeout=TIMEOUT)
    print(f"boot {d.name} ({kernel.parent.name}): {r.verdict} in {r.duration:.2f} s: {r.reason}")
    assert r.verdict != "error" and not r.timed_out, r.reason
    assert r.duration < MAX_SECONDS, f"boot took {r.duration:.1f} s"
    return r


def run(fx, tmp_path: Path, name: str) -> boot.BootResult:
    r = boot_fixture(fx, tmp_path, name, kernel_for(fx.state.page_size), timeout=TIMEOUT)
    assert r.duration < MAX_SECONDS, f"boot took {r.duration:.1f} s"
    return r


# -- the shipped fixtures ------------------------------------------------------------------------------------


@needs_16k
def test_the_kernel_says_16k_pages() -> None:
    assert boot.kernel_page_size(K16) == 16384


@needs_16k
def test_v4_16k_fixture_accepted() -> None:
    r = run_dir(FIX / "v4-16k", K16)
    assert r.verdict == "accepted", (r.reason, r.kho_lines)
    assert r.clients == {"kho_test": "ok", "memblock": "ok", "kexec-metadata": "ok"}
    assert boot.FOUND in r.kho_lines


@needs_16k
def test_v3_16k_fixture_rejected_by_its_version() -> None:
    r = run_dir(FIX / "v3-16k", K16)
    assert r.verdict == "rejected"
    assert "incompatible with 'kho-v4'" in r.reason


@needs_16k
def test_a_4k_fixture_is_not_booted_on_the_16k_kernel() -> None:
    with pytest.raises(BootError, match="built for 16 KiB pages, the fixture has 4 KiB pages"):
        boot.run_boot(FIX / "v4-4k", K16, timeout=TIMEOUT)


@needs_64k
def test_v4_64k_fixture_accepted() -> None:
    assert boot.kernel_page_size(K64) == 65536
    r = run_dir(FIX / "v4-64k", K64)
    assert r.verdict == "accepted", (r.reason, r.kho_lines)
    assert boot.FOUND in r.kho_lines and r.clients.get("kho_test") == "ok"


# -- the minimal spec: every placement left to the defaults ----------------------------------------------------


@pytest.mark.parametrize("ps", kernel_params())
def test_minimal_spec_accepted(tmp_path, ps):
    sp = minimal_spec(ps)
    assert sp.alloc is None and sp.scratch is None and sp.root_fdt_phys is None
    fx = build_spec(sp)
    assert fx.state.preserved.contains(fx.fdt_phys, 0)
    r = run(fx, tmp_path, f"minimal-{ps // 1024}k")
    assert r.verdict == "accepted", show(r)
    assert r.clients == {"kho_test": "ok"}
    assert boot.FOUND in r.kho_lines and OK in r.kho_lines
    assert not any("WARNING:" in l for l in r.kho_lines), show(r)


# -- negative controls -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ps", kernel_params())
def test_flipped_bit_in_a_folio_rejected(tmp_path, ps):
    fx, at = flip_folio_bit(build_spec(minimal_spec(ps)))
    r = run(fx, tmp_path, "flip")
    assert r.verdict == "rejected", show(r)
    assert r.clients == {"kho_test": "failed"} and FAILED in r.reason
    assert boot.FOUND in r.kho_lines
    assert not any("WARNING:" in l for l in r.kho_lines), show(r)  # every folio restored, only the sum differs


@pytest.mark.parametrize("ps", kernel_params())
def test_folio_left_out_of_the_map_rejected(tmp_path, monkeypatch, ps):
    fx, (phys, order) = folio_left_out(monkeypatch, minimal_spec(ps), order=1)
    assert (phys, order) in kho_test_of(fx).folios
    r = run(fx, tmp_path, "folio-left-out")
    assert r.verdict == "rejected", show(r)
    assert r.clients == {"kho_test": "failed"} and FAILED in r.reason
    # kho_restore_folio() finds no magic on the page: WARN_ON_ONCE in kho_restore_page
    assert any(l.startswith("WARNING:") and "kexec_handover.c" in l for l in r.kho_lines), show(r)


@pytest.mark.parametrize("ps", kernel_params())
def test_kho_v3_compatible_rejected(tmp_path, ps):
    r = run(kho_v3_compatible(build_spec(minimal_spec(ps))), tmp_path, "kho-v3")
    assert r.verdict == "rejected", show(r)
    assert "is incompatible with 'kho-v4'" in r.reason
    assert "KHO: disabling KHO revival" in r.kho_lines
    assert boot.FOUND not in r.log and OK not in r.log
