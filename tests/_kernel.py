"""When the kernel-in-the-loop tests run: a built arm64 kernel Image and QEMU.

The tests run automatically when both are present and are skipped otherwise
(CI has no kernel), with a reason that names what is missing:

- the Image: ``$KHO_KERNEL`` if set (``$KHO_BOOT_KERNEL`` is still read), else
  ``kho_formats.boot.default_kernel()``, i.e.
  ``${KHO_KERNEL_CACHE:-~/.cache/kho-formats}/linux-7.3-arm64/Image``, built by
  ``scripts/build-kernel.sh``;
- ``qemu-system-aarch64`` on ``PATH`` (``kho boot`` patches QEMU's DTB with
  the library's own FDT reader and writer: no ``dtc``/``fdtput`` needed).

``KHO_BOOT_TESTS=0`` (or ``false``/``no``/``off``) skips them even when
everything is there.

The LUO restore tests (``requires_luo_kernel``) also need the LUO build
(``$KHO_LUO_KERNEL``, else ``default_kernel(luo=True)``:
``.../linux-7.3-arm64-4k-luo/Image``, from ``KHO_KERNEL_LUO=1
scripts/build-kernel.sh``) and the arm64 cross compiler for the initramfs
program (``aarch64-linux-gnu-gcc`` + ``libc6-dev-arm64-cross``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kho_formats import boot

TOOLS = ("qemu-system-aarch64",)


def kernel_image() -> Path:
    env = os.environ.get("KHO_KERNEL") or os.environ.get("KHO_BOOT_KERNEL")
    return Path(env).expanduser() if env else boot.default_kernel()


def missing() -> str | None:
    """Why the kernel tests cannot run here, or None when they can."""
    if os.environ.get("KHO_BOOT_TESTS", "").strip().lower() in ("0", "false", "no", "off"):
        return "kernel boot tests disabled by KHO_BOOT_TESTS=0"
    img = kernel_image()
    if not img.is_file():
        src = (
            "$KHO_KERNEL"
            if (os.environ.get("KHO_KERNEL") or os.environ.get("KHO_BOOT_KERNEL"))
            else "the default cache path"
        )
        return f"no kernel Image at {img} ({src}): build it with scripts/build-kernel.sh or set KHO_KERNEL"
    tools = [t for t in TOOLS if shutil.which(t) is None]
    if tools:
        return f"{', '.join(tools)} not on PATH (apt-get install qemu-system-arm)"
    return None


#: mark + skip for a test that boots the kernel
requires_kernel = pytest.mark.skipif(missing() is not None, reason=missing() or "")


def luo_kernel_image() -> Path:
    env = os.environ.get("KHO_LUO_KERNEL")
    return Path(env).expanduser() if env else boot.default_kernel(luo=True)


def luo_missing() -> str | None:
    """Why the LUO restore tests cannot run here, or None when they can."""
    if os.environ.get("KHO_BOOT_TESTS", "").strip().lower() in ("0", "false", "no", "off"):
        return "kernel boot tests disabled by KHO_BOOT_TESTS=0"
    img = luo_kernel_image()
    if not img.is_file():
        return (
            f"no LUO kernel Image at {img}: build it with KHO_KERNEL_LUO=1 scripts/build-kernel.sh"
            " or set KHO_LUO_KERNEL"
        )
    tools = [t for t in TOOLS if shutil.which(t) is None]
    if tools:
        return f"{', '.join(tools)} not on PATH (apt-get install qemu-system-arm)"
    from kho_formats.boot.initramfs import CROSS_CC, cross_compiler

    if cross_compiler() is None:
        return f"{CROSS_CC} not on PATH (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"
    return None


#: mark + skip for a test that boots the LUO kernel with the luo_check initramfs
requires_luo_kernel = pytest.mark.skipif(luo_missing() is not None, reason=luo_missing() or "")
