"""``kho boot``: hand a fixture to a real Linux kernel under QEMU and report
whether the kernel accepted it ("kernel in the loop").  arm64 fixtures (4,
16 and 64 KiB pages) boot on QEMU ``virt`` with the handover in the boot
DTB's ``/chosen``; x86_64 fixtures boot on QEMU ``pc`` with the handover in a
``SETUP_KEXEC_KHO`` setup_data entry (:mod:`.x86`), named either by a patched
copy of the bzImage's setup header or, with ``via="kexec"``, by the zero page
a first-stage kernel hands to ``kexec_load(2)`` (:mod:`.kexec`).

Modules: :mod:`.load` reads a fixture directory (segments into a
:class:`~kho_formats.memory.image.PhysImage`, the root FDT with
:func:`~kho_formats.model.fdt.parse_fdt`); :mod:`.dtb` patches ``/chosen`` of
QEMU's virt DTB with the library's FDT reader and writer; :mod:`.qemu` knows
QEMU virt (memory map, kernel Image header, option escaping, running it);
:mod:`.x86` knows QEMU pc (bzImage setup header, the patched copy naming
the setup_data entry, its memory map); :mod:`.runner` plans and runs one
boot; :mod:`.judge` turns the serial log into a verdict, with each KHO
client's own ``boot_rule`` (``kho_formats.model.clients``); :mod:`.initramfs`
writes the initramfs (its own newc cpio writer) whose ``/init``,
``luo_check.c`` compiled for the fixture's arch, retrieves a LUO fixture's
sessions and memfds for the ``LUO`` client's rule to compare.

Inputs: a *fixture directory* and a kernel: an arm64 ``Image`` (built by
``scripts/build-kernel.sh``) or an x86 ``bzImage`` (built by
``scripts/live/build-kernel.sh``); default location :func:`default_kernel`.

Fixture directory contract (what this package reads; everything else is ignored):

``root.dtb``
    The root KHO FDT. Only used to list the client sub-nodes and to find the
    ``memblock`` sub-node (the bytes that boot are the ones in the segments).
    When present it must parse (a :class:`~kho_formats.errors.FdtError`
    otherwise); when absent, the FDT at ``fdt_phys`` in the segments is read
    instead, and if that does not parse no client is judged (the kernel
    judges those bytes).
``manifest.json``
    ``{"segments": [{"file": "seg-....bin", "phys": int, "size": int}, ...]}``
    (a bare list is accepted too): raw bytes loaded at physical addresses with
    QEMU's generic loader. They must include the root FDT page, the radix tree,
    every sub-blob and preserved page that a client reads, and the
    ``struct kho_scratch[]`` array. A segment file must be a regular file
    inside the fixture directory (a relative path without ``..``; symlinks
    only within the directory).
``handover.json``
    ``fdt_phys`` and ``fdt_size`` (-> ``/chosen/linux,kho-fdt``), ``scratch``
    (``[[addr, size], ...]``) and ``scratch_array_phys`` (where the segments
    hold the ``struct kho_scratch`` array: ``/chosen/linux,kho-scratch`` is
    ``<scratch_array_phys, 16 * len(scratch)>``: the kernel reads the array
    from memory, it is not a list of ranges in the DT). When
    ``scratch_array_phys`` is missing, the array is written as an extra
    loader segment in the first free page at or after ``KHO_BOOT_SCRATCH_ARRAY``
    that nothing else uses. Optional: ``byte_order`` (``"little"``, default),
    ``page_size`` (4096, 16384 or 65536: the kernel's, read from its Image
    header's flags and refused when it differs), ``arch``
    (``arm64``, default, or ``x86_64``: 4 KiB little-endian only),
    ``cmdline`` (a string, or a list of strings, appended to the kernel
    command line).

arm64: everything is laid into QEMU ``virt`` with ``-m 1G`` (RAM ``0x40000000 ..
0x80000000``). Segments must stay inside RAM and clear of QEMU's boot stub
(``0x40000000``), the kernel (``0x40200000 + image_size``, ~``0x415c0000``
for the cached 7.3 build) and the boot DTB (``0x48000000``); scratch should
be >= 64 MiB (48 MiB panics allocating the memmap). See
``docs/kernel-notes.md``.

x86_64: QEMU ``pc`` with ``-m 1G`` (RAM from 0). Segments and scratch areas
must stay clear of the first MiB, the compressed kernel at 0x100000, the
kernel's decompression buffer (``pref_address`` .. ``+ init_size`` of the
bzImage header: 16 MiB .. ~28 MiB for the 7.3 build) and the top 4 MiB of
RAM (plus the initramfs). The harness writes the setup_data entry (and the
scratch array when the segments lack it) into free pages from 768 MiB up,
and boots a copy of the bzImage whose header's ``setup_data`` names it.

Verdicts: ``accepted`` (``KHO: found kexec handover data.``, no WARNING /
BUG / Oops / unexpected panic / KHO error line, and every known client in the
root FDT reported success: ``test_kho: KHO restore succeeded``,
``KHO: exec from:`` for ``kexec-metadata``, ``Revived memory reservation``
for each ``memblock`` region, which ``kho boot`` requests with
``reserve_mem=SIZE:4096:NAME``); ``rejected`` (anything else, timeout
included); ``error`` (the harness or QEMU could not run the kernel).
A fixture the harness cannot boot at all raises :class:`BootError` (a
:class:`~kho_formats.errors.KhoFormatError`).
"""

from __future__ import annotations

from ..errors import BootError
from .dtb import patch_chosen
from .judge import FOUND, ClientLog, client_rule, judge_log
from .load import BootFixture, load_fixture
from .qemu import (
    KHO_BOOT_SCRATCH_ARRAY,
    QEMU_DTB_ADDR,
    QEMU_RAM_BASE,
    QEMU_RAM_SIZE,
    check_kernel_page_size,
    default_kernel,
    kernel_page_size,
)
from .runner import BootPlan, BootResult, plan_boot, run_boot
from .workload import Workload, workload_of

__all__ = [
    "check_kernel_page_size",
    "kernel_page_size",
    "BootResult",
    "BootPlan",
    "BootFixture",
    "BootError",
    "run_boot",
    "Workload",
    "workload_of",
    "plan_boot",
    "load_fixture",
    "patch_chosen",
    "default_kernel",
    "judge_log",
    "ClientLog",
    "client_rule",
    "FOUND",
    "QEMU_RAM_BASE",
    "QEMU_RAM_SIZE",
    "QEMU_DTB_ADDR",
    "KHO_BOOT_SCRATCH_ARRAY",
]
