"""QEMU ``virt`` (arm64): its memory map, the kernel Image header, the
command line, and running it with the serial log captured."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from .. import progress
from ..errors import AllocationError, BootError, SpecError
from ..memory.alloc import PageAllocator
from ..model.spec import parse_int
from .judge import END_OF_BOOT
from .load import BootFixture, PathLike

__all__ = [
    "QEMU_RAM_BASE",
    "QEMU_RAM_SIZE",
    "QEMU_DTB_ADDR",
    "QEMU_INITRD_ADDR",
    "dtb_addr",
    "KHO_BOOT_SCRATCH_ARRAY",
    "BASE_CMDLINE",
    "default_kernel",
    "QEMU_BINARIES",
    "build_script",
    "qemu_opt",
    "join_cmdline",
    "ram_bytes",
    "kernel_span",
    "need",
    "loader_args",
    "check_layout",
    "place_scratch_array",
    "place_pages",
    "check_fits",
    "dump_virt_dtb",
    "run_qemu",
]

QEMU_RAM_BASE = 0x4000_0000
QEMU_RAM_SIZE = 1 << 30
#: where QEMU puts the -dtb blob with no initrd: RAM + min(RAM / 2, 128 MiB)
QEMU_DTB_ADDR = QEMU_RAM_BASE + 0x0800_0000
#: where QEMU puts an -initrd (hw/arm/boot.c: the same RAM + min(RAM / 2, 128 MiB));
#: the DTB then follows it, aligned up to 2 MiB for an AArch64 kernel
QEMU_INITRD_ADDR = QEMU_DTB_ADDR
_DTB_ALIGN_AFTER_INITRD = 2 << 20
#: QEMU's boot stub at the start of RAM
QEMU_STUB_SIZE = 0x1000
#: where a missing scratch array is placed (first free page at or above)
KHO_BOOT_SCRATCH_ARRAY = 0x7FF0_0000
#: ``printk.time=1``: every record timestamped, also on a kernel without ``CONFIG_PRINTK_TIME`` (vmtest.sh's
#: config): the judge knows kernel records by it (:func:`.judge.has_kernel_output`, :func:`.judge.console_lines`)
BASE_CMDLINE = "console=ttyAMA0 earlycon=pl011,0x9000000 kho=on loglevel=7 panic=-1 printk.time=1"
#: the page granule the boot harness places things at (one place: x86.py and kexec.py use it too)
PAGE = 4096


#: the QEMU system emulator per fixture arch
QEMU_BINARIES = {"arm64": "qemu-system-aarch64", "x86_64": "qemu-system-x86_64"}
_QEMU_PACKAGES = {"qemu-system-aarch64": "qemu-system-arm", "qemu-system-x86_64": "qemu-system-x86"}


def build_script(arch: str = "arm64") -> str:
    """The repo script that builds ``arch``'s default kernel."""
    return "scripts/live/build-kernel.sh" if arch == "x86_64" else "scripts/build-kernel.sh"


def default_kernel(luo: bool = False, page_size: int = 4096, arch: str = "arm64") -> Path:
    """The kernel ``kho boot`` uses when none is given.

    arm64: the Image ``scripts/build-kernel.sh`` builds for ``page_size``
    (``KHO_KERNEL_PAGE_SIZE``; 4 KiB: ``linux-7.3-arm64/``, else
    ``linux-7.3-arm64-16k/`` ...), and with ``luo`` the LUO build
    (``KHO_KERNEL_LUO=1``, ``...-4k-luo/``).  x86_64: the bzImage
    ``scripts/live/build-kernel.sh`` builds (``linux-7.3-x86_64-live/``; it has
    KHO, test_kho and LUO, so ``luo`` changes nothing)."""
    root = os.environ.get("KHO_KERNEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kho-formats")
    if arch == "x86_64":
        return Path(root) / "linux-7.3-x86_64-live" / "bzImage"
    suffix = f"-{page_size // 1024}k" if (luo or page_size != 4096) else ""
    return Path(root) / f"linux-7.3-arm64{suffix}{'-luo' if luo else ''}" / "Image"


#: arm64 Image header ``flags`` bits 1-2 (Documentation/arch/arm64/booting.rst): the kernel's page size
_IMAGE_PAGE_SIZES = {1: 4096, 2: 16384, 3: 65536}


def kernel_head(kpath: Path, n: int) -> tuple[bytes, int]:
    """The first ``n`` bytes of the kernel file at ``kpath`` (its header) and
    the file's size; a file that cannot be read is a :class:`BootError`."""
    try:
        with open(kpath, "rb") as f:
            return f.read(n), os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise BootError(f"cannot read kernel {kpath}: {exc.strerror or exc}") from None


def kernel_page_size(kpath: Path) -> int | None:
    """The page size an arm64 ``Image`` was built for, from its header's
    ``flags`` (None: no arm64 Image header, or the field says "unspecified")."""
    hdr, _ = kernel_head(kpath, 64)
    if len(hdr) < 64 or hdr[56:60] != b"ARM\x64":
        return None
    flags = int.from_bytes(hdr[24:32], "little")
    return _IMAGE_PAGE_SIZES.get((flags >> 1) & 3)


def check_kernel_page_size(kpath: Path, page_size: int) -> None:
    """Refuse a kernel built for another page size than the fixture's (the
    kernel would read every map and struct at the wrong sizes)."""
    ks = kernel_page_size(kpath)
    if ks is not None and ks != page_size:
        raise BootError(
            f"kernel {kpath} is built for {ks // 1024} KiB pages, the fixture has {page_size // 1024} KiB pages "
            f"(build one with KHO_KERNEL_PAGE_SIZE={page_size // 1024}K scripts/build-kernel.sh)"
        )


def dtb_addr(initrd_size: int = 0) -> int:
    """Where QEMU loads the -dtb: :data:`QEMU_DTB_ADDR`, or after an initrd of ``initrd_size`` bytes."""
    if not initrd_size:
        return QEMU_DTB_ADDR
    end = QEMU_INITRD_ADDR + initrd_size
    return end + (-end % _DTB_ALIGN_AFTER_INITRD)


def join_cmdline(base: str, *extra: str) -> str:
    """A kernel command line: ``base`` and every non-empty ``extra``, one space apart."""
    return " ".join(p.strip() for p in (base, *extra) if p and p.strip())


def qemu_opt(value: str) -> str:
    """``value`` escaped for a QEMU option list (``-device a=...,b=...``): a comma is doubled."""
    return value.replace(",", ",,")


def ram_bytes(memory: str) -> int:
    """QEMU ``-m``: ``1G``, ``1024M``, or a bare number of MiB."""
    s = str(memory).strip()
    try:
        return parse_int(s, "-m") << 20 if s.isdigit() else parse_int(s, "-m")
    except SpecError:
        raise BootError(f"memory size {memory!r}", expected="a QEMU -m size such as 1G or 1024M") from None


def kernel_span(kpath: Path) -> tuple[int, int]:
    """Where QEMU (hw/arm/boot.c) loads an arm64 Image: RAM + 2 MiB + text_offset, image_size bytes
    (a file without an arm64 Image header is loaded at the start of RAM, whole)."""
    hdr, fsize = kernel_head(kpath, 64)
    if len(hdr) < 64 or hdr[56:60] != b"ARM\x64":
        return QEMU_RAM_BASE, fsize
    text_offset = int.from_bytes(hdr[8:16], "little")
    image_size = int.from_bytes(hdr[16:24], "little")
    if image_size == 0:
        return QEMU_RAM_BASE, fsize
    load = QEMU_RAM_BASE + text_offset + (2 << 20 if text_offset < (2 << 20) else 0)
    return load, image_size


def need(tool: str) -> str:
    p = shutil.which(tool)
    if not p:
        pkg = _QEMU_PACKAGES.get(os.path.basename(tool))
        raise BootError(f"{tool} not found" + (f" (apt-get install {pkg})" if pkg else ""))
    return p


def loader_args(path: PathLike, phys: int) -> list[str]:
    """QEMU generic-loader arguments placing the raw bytes of ``path`` at ``phys``."""
    return ["-device", f"loader,file={qemu_opt(os.fspath(path))},addr={phys:#x},force-raw=on"]


def _busy(kspan: tuple[int, int], dtb_size: int, initrd_size: int = 0) -> list[tuple[str, int, int]]:
    dtb = dtb_addr(initrd_size)
    out = [
        ("the kernel Image", kspan[0], kspan[0] + kspan[1]),
        ("the boot DTB", dtb, dtb + dtb_size),
        ("QEMU's boot stub", QEMU_RAM_BASE, QEMU_RAM_BASE + QEMU_STUB_SIZE),
    ]
    if initrd_size:
        out.append(("the initramfs", QEMU_INITRD_ADDR, QEMU_INITRD_ADDR + initrd_size))
    return out


def check_layout(fx: BootFixture, kspan: tuple[int, int], dtb_size: int, ram_size: int, initrd_size: int = 0) -> None:
    """Refuse a fixture that does not fit QEMU virt RAM or whose segments
    cover QEMU's boot stub, the kernel, the initramfs or the boot DTB."""
    check_fits(fx, (QEMU_RAM_BASE, QEMU_RAM_BASE + ram_size), _busy(kspan, dtb_size, initrd_size), "QEMU virt")


def check_fits(fx: BootFixture, ram: tuple[int, int], busy: list[tuple[str, int, int]], machine: str) -> None:
    """Refuse a fixture whose segments, root FDT or scratch areas leave
    ``machine``'s RAM ``[start, end)``, or whose segments cover one of the
    ``busy`` ``(name, start, end)`` ranges (scratch areas may: the kernel
    itself runs from scratch)."""
    ranges = [(f"segment {s.file}", s.phys, s.phys + s.size) for s in fx.segments]
    ranges += [("root FDT", fx.fdt_phys, fx.fdt_phys + 1)]
    ranges += [(f"scratch area {a:#x}+{n:#x}", a, a + n) for a, n in fx.scratch if n]
    for what, a, b in ranges:
        if a < ram[0] or b > ram[1]:
            raise BootError(f"{what} [{a:#x}, {b:#x}) is outside {machine} RAM [{ram[0]:#x}, {ram[1]:#x})")
        if what.startswith("segment"):
            for name, x, y in busy:
                if a < y and b > x:
                    raise BootError(f"{what} [{a:#x}, {b:#x}) overlaps {name} [{x:#x}, {y:#x})")


#: room kept for the boot DTB when placing the scratch array (the compact virt DTB is ~10 KiB)
_DTB_ROOM = 1 << 20


def place_scratch_array(
    fx: BootFixture, size: int, kspan: tuple[int, int], ram_size: int = QEMU_RAM_SIZE, initrd_size: int = 0
) -> int:
    """The first free page at or above :data:`KHO_BOOT_SCRATCH_ARRAY` (then
    above the boot DTB) for ``size`` bytes of ``struct kho_scratch``: clear
    of every segment, scratch area, the kernel, the boot DTB and QEMU's stub."""
    end = QEMU_RAM_BASE + ram_size
    top = min(KHO_BOOT_SCRATCH_ARRAY, end)
    regions = [(top, end - top), (QEMU_DTB_ADDR, max(0, top - QEMU_DTB_ADDR))]
    busy = _busy(kspan, _DTB_ROOM, initrd_size)
    return place_pages(fx, size, regions, busy, [], "kho_scratch array", "QEMU virt")


def place_pages(
    fx: BootFixture,
    size: int,
    regions: list[tuple[int, int]],
    busy: list[tuple[str, int, int]],
    taken: list[tuple[int, int]],
    what: str,
    machine: str,
) -> int:
    """The first free pages in ``regions`` (``(start, size)``, in order of
    preference) for ``size`` bytes, clear of every segment, scratch area, the
    ``busy`` ranges and ``taken`` (``[start, end)``, to which the result is added)."""
    avoid = [(s.phys, s.phys + s.size) for s in fx.segments] + [(a, a + n) for a, n in fx.scratch if n]
    avoid += [(x, y) for _, x, y in busy] + list(taken)
    try:
        pa = PageAllocator([(a, n) for a, n in regions if n > 0], PAGE, avoid=avoid)
        phys = pa.alloc(-(-max(size, 1) // PAGE) * PAGE, what=what)
    except AllocationError:
        raise BootError(f"no free page for the {what} in {machine} RAM") from None
    taken.append((phys, phys + size))
    return phys


def dump_virt_dtb(qemu_bin: str, workdir: Path, *, cpu: str, memory: str) -> bytes:
    """The DTB QEMU builds for ``-M virt`` (``dumpdtb``: padded to 1 MiB)."""
    out = workdir / "virt.dtb"
    r = subprocess.run(
        [qemu_bin, "-M", f"virt,dumpdtb={qemu_opt(str(out))}", "-cpu", cpu, "-m", memory, "-nographic"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if not out.is_file():
        raise BootError(f"QEMU could not dump the virt DTB: {r.stderr.strip()}")
    return out.read_bytes()


def run_qemu(cmd: list[str], timeout: float, keep_going: bool) -> tuple[str, int | None, bool, float]:
    """Run QEMU, collecting its serial output; stop at the end of boot
    (unless ``keep_going``) or after ``timeout`` seconds.
    ``(log, returncode or None on timeout, timed_out, seconds)``."""
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise BootError(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None
    chunks: list[str] = []
    done = threading.Event()
    shown = progress.task(f"{Path(cmd[0]).name}: serial console", unit=" lines")  # left once QEMU is gone
    bar = shown.__enter__()

    def reader() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            chunks.append(line)
            bar.update(1)
            if not keep_going and END_OF_BOOT.search(line):
                done.set()
        done.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    finished = done.wait(timeout)
    if finished and proc.poll() is None:
        # let the panic message and any trace after it reach the log
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
    timed_out = not finished
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    th.join(timeout=5)
    shown.__exit__(None, None, None)
    return "".join(chunks), proc.returncode if not timed_out else None, timed_out, time.monotonic() - t0
