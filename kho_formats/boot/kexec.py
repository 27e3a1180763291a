"""``kho boot --via kexec`` (x86_64): the fixture reaches the kernel through a
real ``kexec_load(2)`` from a first-stage kernel, as on a machine doing a KHO
kexec.

QEMU pc boots the kernel once with no handover; its initramfs ``/init`` is
``kexec_loader.c`` (next to this module, compiled static for x86_64), which
loads these segments with ``kexec_load(2)`` and reboots into them with
``LINUX_REBOOT_CMD_KEXEC``:

* the bzImage's protected-mode kernel at its ``pref_address`` (16 MiB), with
  room for its ``init_size``;
* a zero page (``struct boot_params``): the bzImage's setup header, the
  command line pointer, ``type_of_loader`` 0xff, ``setup_data`` naming the
  ``SETUP_KEXEC_KHO`` entry, and the e820 table the first kernel was given
  (copied in by the loader from ``/sys/kernel/boot_params/data``);
* the command line, the setup_data entry (the same bytes ``kho boot`` loads
  on the direct path, :func:`.x86.setup_data_entry`) and the fixture's
  segments (and its scratch array when they lack it);
* for a LUO fixture with sessions, the ``luo_check`` initramfs, named by the
  zero page's ramdisk fields (``ramdisk_image``/``ramdisk_size`` and their
  ``ext_`` high halves);
* a 22-byte purgatory: ``mov $boot_params, %rsi; mov $entry, %rax; jmp
  *%rax``.  The kernel's relocate_kernel() enters it in 64-bit mode with
  identity paging and every register zero; the 64-bit boot protocol wants
  ``%rsi`` = the zero page and starts at the protected-mode kernel + 0x200.

The verdict judges what the second kernel printed (after ``kexec_core:
Starting new kernel``) with the same rules as the direct path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..abi.x86_boot import (
    BOOT_PARAMS_EXT_CMD_LINE_PTR,
    BOOT_PARAMS_EXT_RAMDISK_IMAGE,
    BOOT_PARAMS_EXT_RAMDISK_SIZE,
    BOOT_PARAMS_HDR,
    BOOT_PARAMS_SIZE,
    LOADED_HIGH,
    boot_params_offset,
)
from ..errors import BootError
from .initramfs import initramfs, static_program
from .load import BootFixture
from .qemu import PAGE, ram_bytes
from .x86 import SETUP_DATA_FIELD, BzImage, place_handover, place_x86_page

__all__ = [
    "KEXEC_LOADER_SOURCE",
    "KexecPlan",
    "plan_kexec",
    "zero_page",
    "purgatory",
    "qemu_command",
    "STARTING",
    "FIRST_CMDLINE",
]

KEXEC_LOADER_SOURCE = Path(__file__).with_name("kexec_loader.c")
#: what the first kernel prints as it jumps to the second (kernel/kexec_core.c)
STARTING = "kexec_core: Starting new kernel"
#: the first kernel: no KHO of its own, the loader as /init
FIRST_CMDLINE = "console=ttyS0 loglevel=7 panic=-1 printk.time=1 rdinit=/init"
#: 64-bit boot protocol: the entry is this far into the protected-mode kernel
STARTUP_64 = 0x200
#: struct boot_params / setup_header offsets (Documentation/arch/x86/zero-page.rst, boot.rst)
_HDR_START = BOOT_PARAMS_HDR
_JUMP = boot_params_offset("jump")
_TYPE_OF_LOADER = boot_params_offset("type_of_loader")
_LOADFLAGS = boot_params_offset("loadflags")
_LOADED_HIGH = LOADED_HIGH
_CODE32_START = boot_params_offset("code32_start")
_RAMDISK_IMAGE = boot_params_offset("ramdisk_image")
_RAMDISK_SIZE = boot_params_offset("ramdisk_size")
_CMD_LINE_PTR = boot_params_offset("cmd_line_ptr")
_EXT_RAMDISK_IMAGE = BOOT_PARAMS_EXT_RAMDISK_IMAGE
_EXT_RAMDISK_SIZE = BOOT_PARAMS_EXT_RAMDISK_SIZE
_EXT_CMD_LINE_PTR = BOOT_PARAMS_EXT_CMD_LINE_PTR


def _page_up(n: int) -> int:
    return -(-n // PAGE) * PAGE


def zero_page(
    kernel_bytes: bytes, cmdline_phys: int, setup_data_phys: int, load: int, initrd: tuple[int, int] = (0, 0)
) -> bytes:
    """The second kernel's ``struct boot_params`` without its e820 table (the
    loader copies the first kernel's in): the bzImage's setup header, then
    the fields a 64-bit boot loader sets."""
    bp = bytearray(BOOT_PARAMS_SIZE)
    end = _JUMP + 2 + kernel_bytes[_JUMP + 1]  # the header runs to the end of the 2-byte jump's target
    bp[_HDR_START:end] = kernel_bytes[_HDR_START:end]
    bp[_TYPE_OF_LOADER] = 0xFF
    bp[_LOADFLAGS] |= _LOADED_HIGH
    bp[_CODE32_START : _CODE32_START + 4] = load.to_bytes(4, "little")
    bp[_RAMDISK_IMAGE : _RAMDISK_IMAGE + 4] = (initrd[0] & 0xFFFF_FFFF).to_bytes(4, "little")
    bp[_RAMDISK_SIZE : _RAMDISK_SIZE + 4] = (initrd[1] & 0xFFFF_FFFF).to_bytes(4, "little")
    bp[_EXT_RAMDISK_IMAGE : _EXT_RAMDISK_IMAGE + 4] = (initrd[0] >> 32).to_bytes(4, "little")
    bp[_EXT_RAMDISK_SIZE : _EXT_RAMDISK_SIZE + 4] = (initrd[1] >> 32).to_bytes(4, "little")
    bp[_CMD_LINE_PTR : _CMD_LINE_PTR + 4] = (cmdline_phys & 0xFFFF_FFFF).to_bytes(4, "little")
    bp[_EXT_CMD_LINE_PTR : _EXT_CMD_LINE_PTR + 4] = (cmdline_phys >> 32).to_bytes(4, "little")
    bp[SETUP_DATA_FIELD : SETUP_DATA_FIELD + 8] = setup_data_phys.to_bytes(8, "little")
    return bytes(bp)


def purgatory(boot_params_phys: int, entry: int) -> bytes:
    """``movabs $boot_params, %rsi; movabs $entry, %rax; jmp *%rax``."""
    return (
        b"\x48\xbe" + boot_params_phys.to_bytes(8, "little") + b"\x48\xb8" + entry.to_bytes(8, "little") + b"\xff\xe0"
    )


@dataclass
class KexecPlan:
    #: the initramfs of the first kernel (loader + plan + segment files)
    initrd: bytes
    #: the kexec segments: (phys, memsz, name)
    segments: list[tuple[int, int, str]]
    entry: int
    boot_params_phys: int
    setup_data_phys: int
    scratch_array_phys: int


def plan_kexec(
    fx: BootFixture,
    bz: BzImage,
    cmdline: str,
    memory: str = "1G",
    loader: Path | None = None,
    second_initrd: bytes = b"",
) -> KexecPlan:
    """Lay out the second kernel, its zero page and the fixture for
    ``kexec_load`` and write the first kernel's initramfs.  ``second_initrd``:
    an initramfs for the second kernel (a LUO fixture's ``luo_check``), one
    more segment named by the zero page's ramdisk fields."""
    ram_size = ram_bytes(memory)
    kbytes = bz.path.read_bytes()
    payload = kbytes[bz.setup_size :]
    load = bz.pref_address
    files: dict[str, bytes] = {}
    segs: list[tuple[int, int, str]] = []
    # an estimate of the first kernel's initramfs (QEMU puts it at the top of RAM)
    initrd_estimate = (
        _page_up(len(payload))
        + sum(_page_up(s.size) for s in fx.segments)
        + 2 * _page_up(len(second_initrd))
        + (1 << 20)
    )
    taken: list[tuple[int, int]] = []
    hp = place_handover(fx, bz, ram_size, initrd_estimate, taken)

    def place(data: bytes, what: str) -> int:
        return place_x86_page(fx, len(data), bz, ram_size, initrd_estimate, taken, what)

    def add(name: str, phys: int, data: bytes, memsz: int | None = None) -> None:
        if phys % PAGE:
            raise BootError(f"{name} at {phys:#x}: kexec_load needs page-aligned segments")
        files[f"kexec/{name}"] = data
        segs.append((phys, memsz or _page_up(len(data)), name))

    if hp.scratch_array is not None:
        add("scratch-array", hp.scratch_array_phys, hp.scratch_array)
    sd_phys = hp.setup_data_phys
    cmd = (cmdline + "\0").encode()
    cmd_phys = place(cmd, "command line")
    bp_phys = place(bytes(BOOT_PARAMS_SIZE), "boot_params")
    rd_phys = place(second_initrd, "second kernel's initramfs") if second_initrd else 0
    bp = zero_page(kbytes, cmd_phys, sd_phys, load, (rd_phys, len(second_initrd)))
    purg = purgatory(bp_phys, load + STARTUP_64)
    purg_phys = place(purg, "purgatory")
    add("kernel", load, payload, _page_up(max(len(payload), bz.init_size)))
    add("setup-data", sd_phys, hp.setup_data)
    add("cmdline", cmd_phys, cmd)
    add("purgatory", purg_phys, purg)
    if second_initrd:
        add("initrd", rd_phys, second_initrd)
    for k, seg in enumerate(fx.segments):
        add(f"fixture-{k}", seg.phys, fx.image.read(seg.phys, seg.size, f"segment {seg.file}"))
    if len(segs) + 1 > 16:
        raise BootError(f"{len(segs) + 1} kexec segments", expected="at most 16 (KEXEC_SEGMENT_MAX)")
    plan = [f"entry {purg_phys:x}"]
    plan += [f"seg {phys:x} {memsz:x} /kexec/{name}" for phys, memsz, name in segs]
    files["kexec/boot-params"] = bp
    plan.append(f"bootparams {bp_phys:x} /kexec/boot-params")
    files["kexec/plan"] = ("\n".join(plan) + "\n").encode()
    init = (loader or static_program(KEXEC_LOADER_SOURCE, "x86_64")).read_bytes()
    segs.append((bp_phys, BOOT_PARAMS_SIZE, "boot-params"))
    return KexecPlan(initramfs(init, files), segs, purg_phys, bp_phys, sd_phys, hp.scratch_array_phys)


def qemu_command(qemu_bin: str, kernel: Path, initrd: Path, memory: str, cpu: str) -> list[str]:
    """The first kernel's QEMU command (no loader devices: kexec_load places everything)."""
    return [
        qemu_bin,
        *("-M", "pc", "-cpu", cpu, "-m", memory),
        "-nographic",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        FIRST_CMDLINE,
    ]
