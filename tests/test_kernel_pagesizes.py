"""Kernel in the loop at other arm64 page sizes (issue 13, deliverable 1):
the shipped 16 and 64 KiB fixtures against real Linux 7.3.4 arm64 kernels
built for those page sizes (``KHO_KERNEL_PAGE_SIZE=16K|64K
scripts/build-kernel.sh``, ``.../linux-7.3-arm64-16k/Image``,
``...-64k/Image``).  Each test is skipped with the reason when its Image or
QEMU is missing, or with ``KHO_BOOT_TESTS=0``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kho_formats import boot
from kho_formats.errors import BootError

FIX = Path(__file__).resolve().parent.parent / "fixtures"
K16 = boot.default_kernel(page_size=16384)
K64 = boot.default_kernel(page_size=65536)


def _missing(image: Path) -> str | None:
    if os.environ.get("KHO_BOOT_TESTS", "").strip().lower() in ("0", "false", "no", "off"):
        return "kernel boot tests disabled by KHO_BOOT_TESTS=0"
    if not image.is_file():
        k = image.parent.name.rsplit("-", 1)[1].upper()
        return f"no kernel Image at {image}: KHO_KERNEL_PAGE_SIZE={k} scripts/build-kernel.sh"
    if shutil.which("qemu-system-aarch64") is None:
        return "qemu-system-aarch64 not on PATH (apt-get install qemu-system-arm)"
    return None


pytestmark = pytest.mark.kernel
needs_16k = pytest.mark.skipif(_missing(K16) is not None, reason=_missing(K16) or "")
needs_64k = pytest.mark.skipif(_missing(K64) is not None, reason=_missing(K64) or "")


@needs_16k
def test_the_kernel_says_16k_pages() -> None:
    assert boot.kernel_page_size(K16) == 16384


@needs_16k
def test_v4_16k_fixture_accepted() -> None:
    r = boot.run_boot(FIX / "v4-16k", K16, timeout=120)
    assert r.verdict == "accepted", (r.reason, r.kho_lines)
    assert r.clients == {"kho_test": "ok", "memblock": "ok", "kexec-metadata": "ok"}
    assert boot.FOUND in r.kho_lines


@needs_16k
def test_v3_16k_fixture_rejected_by_its_version() -> None:
    r = boot.run_boot(FIX / "v3-16k", K16, timeout=120)
    assert r.verdict == "rejected"
    assert "incompatible with 'kho-v4'" in r.reason


@needs_16k
def test_a_4k_fixture_is_not_booted_on_the_16k_kernel() -> None:
    with pytest.raises(BootError, match="built for 16 KiB pages, the fixture has 4 KiB pages"):
        boot.run_boot(FIX / "v4-4k", K16, timeout=60)


@needs_64k
def test_v4_64k_fixture_accepted() -> None:
    assert boot.kernel_page_size(K64) == 65536
    r = boot.run_boot(FIX / "v4-64k", K64, timeout=120)
    assert r.verdict == "accepted", (r.reason, r.kho_lines)
    assert boot.FOUND in r.kho_lines and r.clients.get("kho_test") == "ok"
