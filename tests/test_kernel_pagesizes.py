"""Kernel in the loop at other arm64 page sizes (issue 13, deliverable 1):
the shipped 16 KiB fixtures against a real Linux 7.3.4 arm64 kernel built
for 16 KiB pages (``KHO_KERNEL_PAGE_SIZE=16K scripts/build-kernel.sh``,
``.../linux-7.3-arm64-16k/Image``).  Skipped with the reason when that
Image or QEMU is missing, or with ``KHO_BOOT_TESTS=0``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kho_formats import boot
from kho_formats.errors import BootError

FIX = Path(__file__).resolve().parent.parent / "fixtures"
K16 = boot.default_kernel(page_size=16384)


def _missing() -> str | None:
    if os.environ.get("KHO_BOOT_TESTS", "").strip().lower() in ("0", "false", "no", "off"):
        return "kernel boot tests disabled by KHO_BOOT_TESTS=0"
    if not K16.is_file():
        return f"no 16 KiB kernel Image at {K16}: KHO_KERNEL_PAGE_SIZE=16K scripts/build-kernel.sh"
    if shutil.which("qemu-system-aarch64") is None:
        return "qemu-system-aarch64 not on PATH (apt-get install qemu-system-arm)"
    return None


pytestmark = [pytest.mark.kernel, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]


def test_the_kernel_says_16k_pages() -> None:
    assert boot.kernel_page_size(K16) == 16384


def test_v4_16k_fixture_accepted() -> None:
    r = boot.run_boot(FIX / "v4-16k", K16, timeout=120)
    assert r.verdict == "accepted", (r.reason, r.kho_lines)
    assert r.clients == {"kho_test": "ok", "memblock": "ok", "kexec-metadata": "ok"}
    assert boot.FOUND in r.kho_lines


def test_v3_16k_fixture_rejected_by_its_version() -> None:
    r = boot.run_boot(FIX / "v3-16k", K16, timeout=120)
    assert r.verdict == "rejected"
    assert "incompatible with 'kho-v4'" in r.reason


def test_a_4k_fixture_is_not_booted_on_the_16k_kernel() -> None:
    with pytest.raises(BootError, match="built for 16 KiB pages, the fixture has 4 KiB pages"):
        boot.run_boot(FIX / "v4-4k", K16, timeout=60)
