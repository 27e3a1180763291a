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

Other page sizes (``needs_kernel(16384)``, ``needs_luo_kernel(65536)`` ...)
use ``default_kernel(luo, page_size)``: ``linux-7.3-arm64-16k/``,
``...-64k-luo/`` (``KHO_KERNEL_PAGE_SIZE=16K [KHO_KERNEL_LUO=1]
scripts/build-kernel.sh``).

The fixture helpers shared by the boot tests are here too: the minimal spec
(every placement left to the defaults), writing only the files ``kho boot``
reads, and the negative controls (a bit flipped in a ``kho_test`` folio, a
folio left out of the memory map, ``compatible = "kho-v3"`` on kho-v4 bytes)
at any page size.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import kho_formats.model.spec.build as spec_mod  # the spec builder module (it calls state.build)
from kho_formats import boot
from kho_formats.memory.pageset import PageSet
from kho_formats.model.clients import kho_test
from kho_formats.model.fixture import Fixture
from kho_formats.model.spec import Spec, build_spec, loads_spec

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


# -- other page sizes -----------------------------------------------------------------------------------------

PAGE_SIZES = (4096, 16384, 65536)


def _disabled() -> bool:
    return os.environ.get("KHO_BOOT_TESTS", "").strip().lower() in ("0", "false", "no", "off")


def kernel_for(page_size: int = 4096, luo: bool = False) -> Path:
    """The Image for ``page_size`` (4 KiB: :func:`kernel_image` /
    :func:`luo_kernel_image`, which honour ``$KHO_KERNEL`` / ``$KHO_LUO_KERNEL``)."""
    if page_size == 4096:
        return luo_kernel_image() if luo else kernel_image()
    return boot.default_kernel(luo=luo, page_size=page_size)


def missing_for(page_size: int, luo: bool = False) -> str | None:
    """Why a boot at ``page_size`` (with the LUO build: ``luo``) cannot run here, or None."""
    if page_size == 4096:
        return luo_missing() if luo else missing()
    if _disabled():
        return "kernel boot tests disabled by KHO_BOOT_TESTS=0"
    img = kernel_for(page_size, luo)
    if not img.is_file():
        how = f"KHO_KERNEL_PAGE_SIZE={page_size // 1024}K" + (" KHO_KERNEL_LUO=1" if luo else "")
        return f"no kernel Image at {img}: build it with {how} scripts/build-kernel.sh"
    tools = [t for t in TOOLS if shutil.which(t) is None]
    if tools:
        return f"{', '.join(tools)} not on PATH (apt-get install qemu-system-arm)"
    if luo:
        from kho_formats.boot.initramfs import CROSS_CC, cross_compiler

        if cross_compiler() is None:
            return f"{CROSS_CC} not on PATH (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"
    return None


def x86_kernel() -> Path:
    """The x86_64 bzImage (``$KHO_X86_KERNEL`` or ``$KHO_LIVE_KERNEL``, else the
    build of ``scripts/live/build-kernel.sh``: ``boot.default_kernel(arch="x86_64")``)."""
    env = os.environ.get("KHO_X86_KERNEL") or os.environ.get("KHO_LIVE_KERNEL")
    return Path(env).expanduser() if env else boot.default_kernel(arch="x86_64")


def x86_missing(*, compiler: bool = False) -> str | None:
    """Why the x86_64 kernel tests cannot run here, or None; ``compiler``: they
    also build a static x86_64 program (the initramfs's luo_check / kexec loader)."""
    if _disabled():
        return "kernel boot tests disabled by KHO_BOOT_TESTS=0"
    if not x86_kernel().is_file():
        return f"no x86_64 kernel at {x86_kernel()}: build it with scripts/live/build-kernel.sh or set KHO_X86_KERNEL"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 not on PATH (apt-get install qemu-system-x86)"
    if compiler:
        from kho_formats.boot.initramfs import cross_compiler

        if cross_compiler("x86_64") is None:
            return "x86_64-linux-gnu-gcc not on PATH (apt-get install gcc libc6-dev)"
    return None


def needs_kernel(page_size: int, luo: bool = False) -> pytest.MarkDecorator:
    """mark + skip for a test that boots the ``page_size`` kernel (the LUO build with ``luo``)."""
    why = missing_for(page_size, luo)
    return pytest.mark.skipif(why is not None, reason=why or "")


def kernel_params(luo: bool = False, sizes: tuple[int, ...] = PAGE_SIZES) -> list:
    """``pytest.param(page_size, id="4k", marks=needs_kernel(...))`` for each page size."""
    return [pytest.param(ps, id=f"{ps // 1024}k", marks=needs_kernel(ps, luo)) for ps in sizes]


# -- fixtures ------------------------------------------------------------------------------------------------


def minimal_spec_text(page_size: int, arch: str = "arm64") -> str:
    """A spec with every placement left to the defaults: no alloc, no scratch,
    no root_fdt_phys; a kho_test blob with its default folios."""
    return f'version = "kho-v4"\npage_size = {page_size}\narch = "{arch}"\n\n[[blob]]\nname = "kho_test"\n'


def minimal_spec(page_size: int, arch: str = "arm64") -> Spec:
    return loads_spec(minimal_spec_text(page_size, arch), name=f"minimal-{page_size // 1024}k")


def write_boot_fixture(fx: Fixture, outdir: Path) -> Path:
    """The files ``kho boot`` reads (the full ``write_fixture`` also writes a
    C header of every byte, which takes seconds for 8 MiB of folios)."""
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "root.dtb").write_bytes(fx.root_fdt)
    fx.image.to_bundle(outdir)
    (outdir / "handover.json").write_text(json.dumps(fx.handover(), indent=1, sort_keys=True) + "\n")
    return outdir


def kho_test_of(fx: Fixture) -> kho_test.KhoTest:
    st = fx.state
    return kho_test.decode(st.subblob("kho_test").data, st.layout, fx.image)


def boot_fixture(fx: Fixture, tmp_path: Path, name: str, kernel: Path, timeout: float = 60, **kw) -> boot.BootResult:
    """Write ``fx`` into ``tmp_path/name`` and boot it; the harness must have
    run the kernel to its end of boot (no error verdict, no timeout)."""
    d = write_boot_fixture(fx, tmp_path / name)
    r = boot.run_boot(d, kernel, timeout=timeout, **kw)
    print(f"boot {name} ({kernel.parent.name}): {r.verdict} in {r.duration:.2f} s: {r.reason}")
    assert r.verdict != "error", r.reason
    assert not r.timed_out, r.reason
    return r


def show(r: boot.BootResult, tail: int = 60) -> str:
    return f"{r.verdict}: {r.reason}\n" + "\n".join(r.kho_lines[-tail:])


# -- negative controls ----------------------------------------------------------------------------------------


def flip_folio_bit(fx: Fixture, index: int = -1, offset: int = 0x123, bit: int = 0x10) -> tuple[Fixture, int]:
    """``fx`` with one bit flipped in kho_test folio ``index`` (its
    ``offset``-th byte); the csum stays the intact data's.  ``(fixture, phys)``."""
    phys, order = kho_test_of(fx).folios[index]
    assert offset < fx.state.page_size << order
    at = phys + offset
    image = fx.image.copy()
    image.write(at, bytes([fx.image.read(at, 1)[0] ^ bit]))
    return dataclasses.replace(fx, image=image), at


def without_pages(
    monkeypatch: pytest.MonkeyPatch, build: Callable[[], Fixture], pick: Callable[..., tuple[int, int]]
) -> tuple[Fixture, tuple[int, int]]:
    """``build()`` with the page ``pick(state, image)`` returns (phys, order)
    removed from the preserved set just before ``state.build`` writes the
    memory map (its bytes and every reference to it unchanged)."""
    real = spec_mod.build
    dropped: list[tuple[int, int]] = []

    def build_without(state, **kw):
        victim = pick(state, kw["image"])
        state.preserved = state.preserved.difference(PageSet.from_pages(state.page_size, [victim]))[0]
        dropped.append(victim)
        return real(state, **kw)

    with monkeypatch.context() as m:
        m.setattr(spec_mod, "build", build_without)
        fx = build()
    assert not fx.state.preserved.contains(*dropped[0])
    return fx, dropped[0]


def folio_left_out(monkeypatch: pytest.MonkeyPatch, sp: Spec, order: int) -> tuple[Fixture, tuple[int, int]]:
    """The fixture of ``sp`` with its (first) order-``order`` kho_test folio
    left out of the preserved memory map (data, folios_info entry and csum unchanged)."""

    def pick(state, image):
        kt = kho_test.decode(state.subblob("kho_test").data, state.layout, image)
        return next(f for f in kt.folios if f[1] == order)

    return without_pages(monkeypatch, lambda: build_spec(sp), pick)


def kho_v3_compatible(fx: Fixture) -> Fixture:
    """``fx`` (kho-v4 bytes) with the root compatible "kho-v3"."""
    assert fx.root_fdt.count(b"kho-v4\0") == 1
    fdt = fx.root_fdt.replace(b"kho-v4\0", b"kho-v3\0")
    image = fx.image.copy()
    image.write(fx.fdt_phys, fdt)
    return dataclasses.replace(fx, root_fdt=fdt, image=image)
