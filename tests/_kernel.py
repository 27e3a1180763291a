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
