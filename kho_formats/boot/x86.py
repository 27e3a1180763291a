"""QEMU ``pc`` (x86_64): handing a fixture to an x86_64 kernel.

An x86 kernel finds KHO through a ``struct setup_data`` of type
``SETUP_KEXEC_KHO`` (10) on the chain that ``boot_params.hdr.setup_data``
starts (Documentation/arch/x86/boot.rst, boot protocol 2.09 and later).  A
kexec'ing kernel puts it there; here the bzImage's own setup header carries
it instead: QEMU's Linux loader (``-kernel``) copies the header of the file
into the real-mode ``boot_params`` and adds no setup_data of its own on the
``pc`` machine, so a *copy* of the bzImage whose ``setup_data`` field (header
offset 0x250) points at a physical address where a ``-device loader`` puts
the fixture's setup_data entry is a boot whose kernel sees exactly what a
kexec'ing kernel would have handed it.  The input bzImage is never written.

Memory on ``pc`` with ``-m 1G``: RAM from 0 to 1 GiB.  QEMU and the kernel
use the first MiB (BIOS, the real-mode setup code at 0x10000, the command
line at 0x20000), the compressed kernel (at 0x100000), the kernel's
decompression buffer (``pref_address`` .. ``+ init_size``: 16 MiB .. about
28 MiB for the 7.3 build with KASLR off), and the top of RAM (SeaBIOS's
tables, the initramfs below them).  Segments, the setup_data entry and the
scratch array must stay clear of those.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..abi.layout import KhoData, layout
from ..abi.x86_boot import BOOT_PARAMS_HDR, BOOT_PARAMS_SETUP_DATA, HDRS_MAGIC, SETUP_HEADER_END, setup_header
from ..errors import BootError
from .load import BootFixture
from .qemu import check_fits, kernel_head, place_pages

__all__ = [
    "BzImage",
    "bzimage",
    "patched_bzimage",
    "setup_data_entry",
    "X86_BASE_CMDLINE",
    "X86_LOW_RESERVED",
    "X86_TOP_RESERVED",
    "SETUP_DATA_FIELD",
    "X86_DEFAULT_CPU",
    "x86_busy",
    "check_x86_layout",
    "place_x86_page",
    "HandoverPages",
    "place_handover",
]

#: offset of ``hdr.setup_data`` (u64) in the bzImage / ``boot_params``
SETUP_DATA_FIELD = BOOT_PARAMS_SETUP_DATA
#: setup_data exists from boot protocol 2.09, pref_address and init_size (where the
#: kernel goes, which the layout checks and --via kexec need) from 2.10
_MIN_PROTOCOL = 0x20A
#: the first MiB: BIOS data, QEMU's real-mode setup and command line, option ROMs
X86_LOW_RESERVED = 1 << 20
#: the top of RAM kept clear (SeaBIOS tables, e820 reserved): 4 MiB, plus the initramfs below it
X86_TOP_RESERVED = 4 << 20
X86_BASE_CMDLINE = "console=ttyS0 kho=on loglevel=7 panic=-1 printk.time=1"
X86_DEFAULT_CPU = "max"
#: where the harness prefers to put what the fixture lacks (setup_data entry, scratch array)
X86_PREFERRED = 0x3000_0000
#: QEMU loads the protected-mode kernel here (boot protocol "high" kernels)
_PROT_ADDR = 0x10_0000


@dataclass(frozen=True)
class BzImage:
    """What the boot needs from a bzImage's setup header."""

    path: Path
    protocol: int
    #: bytes of real-mode setup code (``(setup_sects or 4) + 1`` sectors)
    setup_size: int
    #: where the kernel decompresses itself (``pref_address``) and how much it needs there (``init_size``)
    pref_address: int
    init_size: int
    #: the protected-mode part's size (QEMU loads it at 0x100000)
    payload_size: int

    @property
    def kernel_span(self) -> tuple[int, int]:
        """``(start, size)`` of the decompressed kernel's buffer."""
        return self.pref_address, self.init_size


def bzimage(path: Path) -> BzImage | None:
    """The setup header of the x86 bzImage at ``path``; None when the file is
    not one (no ``HdrS`` magic).  A bzImage too old for setup_data is refused."""
    head, fsize = kernel_head(path, SETUP_HEADER_END)
    if len(head) < SETUP_HEADER_END:
        return None
    hdr = setup_header.parse(head[BOOT_PARAMS_HDR:SETUP_HEADER_END])
    if hdr.header != HDRS_MAGIC:
        return None
    protocol = hdr.version
    if protocol < _MIN_PROTOCOL:
        raise BootError(
            f"kernel {path} speaks x86 boot protocol {protocol >> 8}.{protocol & 0xFF:02d}",
            expected="2.10 or later (setup_data, pref_address, init_size)",
        )
    sects = hdr.setup_sects or 4
    setup_size = (sects + 1) * 512
    return BzImage(
        path=Path(path),
        protocol=protocol,
        setup_size=setup_size,
        pref_address=hdr.pref_address,
        init_size=hdr.init_size,
        payload_size=max(0, fsize - setup_size),
    )


def patched_bzimage(kernel: BzImage, setup_data_phys: int, out: Path) -> Path:
    """Write a copy of ``kernel`` to ``out`` whose setup header names the
    setup_data chain at ``setup_data_phys``; the input is only read.  A
    bzImage whose header already names a chain is refused (it would be lost)."""
    data = bytearray(kernel.path.read_bytes())
    old = int.from_bytes(data[SETUP_DATA_FIELD : SETUP_DATA_FIELD + 8], "little")
    if old:
        raise BootError(f"kernel {kernel.path}: its setup header already points at setup_data {old:#x}")
    data[SETUP_DATA_FIELD : SETUP_DATA_FIELD + 8] = setup_data_phys.to_bytes(8, "little")
    out.write_bytes(bytes(data))
    return out


def setup_data_entry(fdt_phys: int, fdt_size: int, scratch_array_phys: int, scratch_array_size: int) -> bytes:
    """The ``SETUP_KEXEC_KHO`` setup_data entry naming the root FDT and the scratch array."""
    return layout(4096, "little").setup_data_kho(KhoData(fdt_phys, fdt_size, scratch_array_phys, scratch_array_size))


def x86_busy(kernel: BzImage, ram_size: int, initrd_size: int = 0) -> list[tuple[str, int, int]]:
    """What QEMU pc and the booting kernel use: ``(name, start, end)``."""
    top = ram_size - X86_TOP_RESERVED - initrd_size
    out = [
        ("the first MiB (BIOS, QEMU's real-mode setup and command line)", 0, X86_LOW_RESERVED),
        ("the compressed kernel QEMU loads", _PROT_ADDR, _PROT_ADDR + kernel.payload_size),
        (
            "the kernel's decompression buffer (pref_address + init_size)",
            kernel.pref_address,
            kernel.pref_address + kernel.init_size,
        ),
        ("the top of RAM (firmware tables" + (", the initramfs)" if initrd_size else ")"), max(0, top), ram_size),
    ]
    return out


def check_x86_layout(fx: BootFixture, kernel: BzImage, ram_size: int, initrd_size: int = 0) -> None:
    """Refuse a fixture whose segments, root FDT or scratch areas leave QEMU
    pc RAM, or whose segments cover what QEMU and the booting kernel use.
    Scratch areas may cover them: the kernel itself runs from scratch on a
    real KHO kexec, and e820 setup marks the first MiB as scratch."""
    check_fits(fx, (0, ram_size), x86_busy(kernel, ram_size, initrd_size), "QEMU pc")


@dataclass(frozen=True)
class HandoverPages:
    """Where the harness puts what hands a fixture to an x86 kernel."""

    #: the SETUP_KEXEC_KHO entry and its address
    setup_data: bytes
    setup_data_phys: int
    #: the kho_scratch array's address, and its bytes when the fixture's segments lack it (else None)
    scratch_array_phys: int
    scratch_array: bytes | None


def place_handover(
    fx: BootFixture, kernel: BzImage, ram_size: int, initrd_size: int, taken: list[tuple[int, int]]
) -> HandoverPages:
    """Check the layout, then place the scratch array (when the segments lack
    it) and the setup_data entry naming the root FDT and that array."""
    check_x86_layout(fx, kernel, ram_size, initrd_size)
    arr = fx.scratch_array()
    sap = fx.scratch_array_phys
    extra = None
    if arr and (sap is None or not fx.image.has(sap, len(arr))):
        sap = place_x86_page(fx, len(arr), kernel, ram_size, initrd_size, taken, "kho_scratch array")
        extra = arr
    entry = setup_data_entry(fx.fdt_phys, fx.fdt_size, sap or 0, len(arr))
    sd_phys = place_x86_page(fx, len(entry), kernel, ram_size, initrd_size, taken, "setup_data entry")
    return HandoverPages(entry, sd_phys, sap or 0, extra)


def place_x86_page(
    fx: BootFixture,
    size: int,
    kernel: BzImage,
    ram_size: int,
    initrd_size: int,
    taken: list[tuple[int, int]],
    what: str,
) -> int:
    """The first free pages at or above :data:`X86_PREFERRED` (then above the
    first MiB) for ``size`` bytes, clear of every segment, scratch area,
    what :func:`x86_busy` names and ``taken`` (to which the result is added)."""
    top = max(0, ram_size - X86_TOP_RESERVED - initrd_size)
    pref = min(X86_PREFERRED, top)
    regions = [(pref, top - pref), (X86_LOW_RESERVED, max(0, pref - X86_LOW_RESERVED))]
    return place_pages(fx, size, regions, x86_busy(kernel, ram_size, initrd_size), taken, what, "QEMU pc")
