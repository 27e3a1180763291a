"""One boot: plan the QEMU command line for a fixture, run it, judge the log."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BootError
from .dtb import patch_chosen, repack_dtb
from .initramfs import initramfs, luo_check_binary
from .judge import client_rule, has_kernel_output, judge_log
from .load import BootFixture, PathLike, load_fixture
from .qemu import (
    BASE_CMDLINE,
    check_kernel_page_size,
    check_layout,
    default_kernel,
    dump_virt_dtb,
    kernel_span,
    loader_args,
    need,
    place_scratch_array,
    ram_bytes,
    run_qemu,
)

__all__ = ["BootResult", "BootPlan", "plan_boot", "run_boot"]

DEFAULT_CPU = "max,pauth-impdef=on"


@dataclass
class BootResult:
    verdict: str  # "accepted" | "rejected" | "error"
    reason: str
    kho_lines: list[str] = field(default_factory=list)
    log: str = ""
    #: client name -> "ok" | "failed" | "not-reported" | "not-exercised"
    clients: dict[str, str] = field(default_factory=dict)
    cmdline: str = ""
    qemu_cmd: list[str] = field(default_factory=list)
    duration: float = 0.0
    timed_out: bool = False
    returncode: int | None = None

    @property
    def accepted(self) -> bool:
        return self.verdict == "accepted"

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "clients": self.clients,
            "kho_lines": self.kho_lines,
            "cmdline": self.cmdline,
            "qemu_cmd": self.qemu_cmd,
            "duration": round(self.duration, 2),
            "timed_out": self.timed_out,
            "returncode": self.returncode,
        }


@dataclass
class BootPlan:
    """Everything about one boot except running it."""

    #: the QEMU argv
    cmd: list[str]
    #: the kernel command line (``-append``)
    cmdline: str
    #: the boot DTB written to ``dtb_path``
    dtb: bytes
    dtb_path: Path
    #: KHO clients named by the root FDT (judged after the boot)
    clients: list[str] = field(default_factory=list)
    #: client -> what its command-line contribution asked the kernel for
    expected: dict[str, list[str]] = field(default_factory=dict)
    #: where /chosen/linux,kho-scratch points (None for a cold boot)
    scratch_array_phys: int | None = None
    #: the initramfs (``-initrd``) when a client is checked from userspace (LUO), else None
    initrd: Path | None = None
    #: client -> what the booted kernel must give back (:attr:`kho_formats.clients.BootRule.truth`)
    truths: dict[str, Any] = field(default_factory=dict)


def plan_boot(
    fx: BootFixture | None,
    kernel: Path,
    virt_dtb: bytes,
    workdir: Path,
    *,
    qemu_bin: str = "qemu-system-aarch64",
    memory: str = "1G",
    cpu: str = DEFAULT_CPU,
    extra_cmdline: str = "",
    init_binary: Path | None = None,
) -> BootPlan:
    """The QEMU command line booting ``kernel`` with the handover of ``fx``
    (``None``: a cold boot) on QEMU's ``virt_dtb``.  Writes the boot DTB (and
    the ``kho_scratch`` array when the fixture's segments lack it) into
    ``workdir``; runs nothing.

    A client checked from userspace (its rule's ``initrd`` gives files: LUO
    state with sessions) adds an initramfs, ``workdir/initrd.cpio``, whose
    ``/init`` is ``init_binary`` (default: the cross-compiled
    ``luo_check``, built on first use)."""
    ram_size = ram_bytes(memory)
    loaders: list[str] = []
    cmdline = BASE_CMDLINE
    plan_clients: list[str] = []
    expected: dict[str, list[str]] = {}
    truths: dict[str, Any] = {}
    sap: int | None = None
    initrd_path: Path | None = None
    if fx is None:
        dtb = repack_dtb(virt_dtb)
        dtb_path = workdir / "virt-packed.dtb"
    else:
        plan_clients = list(fx.clients)
        check_kernel_page_size(kernel, fx.page_size)
        kspan = kernel_span(kernel)
        decoded = fx.decoded_clients()
        initrd_files: dict[str, bytes] = {}
        for c in plan_clients:
            rule = client_rule(c)
            if rule is None or c not in decoded:
                continue
            if rule.cmdline is not None:
                asks = rule.cmdline(decoded[c])
                expected[c] = [name for name, _ in asks]
                for _, arg in asks:
                    cmdline += " " + arg
            files = rule.initrd(decoded[c]) if rule.initrd is not None else None
            if files:
                initrd_files.update(files)
            if rule.truth is not None:
                truths[c] = rule.truth(decoded[c], fx.image, fx.page_size)
        initrd_size = 0
        if initrd_files:
            init = (init_binary or luo_check_binary()).read_bytes()
            initrd_path = workdir / "initrd.cpio"
            initrd_path.write_bytes(initramfs(init, initrd_files))
            initrd_size = initrd_path.stat().st_size
        arr = fx.scratch_array()
        sap = fx.scratch_array_phys
        if arr and (sap is None or not fx.image.has(sap, len(arr))):
            sap = place_scratch_array(fx, len(arr), kspan, ram_size, initrd_size)
            sfile = workdir / "scratch-array.bin"
            sfile.write_bytes(arr)
            loaders += loader_args(sfile, sap)
        for seg in fx.segments:
            loaders += loader_args(seg.path, seg.phys)
        dtb = patch_chosen(virt_dtb, (fx.fdt_phys, fx.fdt_size), (sap or 0, len(arr)))
        dtb_path = workdir / "patched.dtb"
        check_layout(fx, kspan, len(dtb), ram_size, initrd_size)
        if fx.cmdline:
            cmdline += " " + fx.cmdline
    if extra_cmdline:
        cmdline += " " + extra_cmdline
    dtb_path.write_bytes(dtb)
    cmd = [
        qemu_bin,
        *("-M", "virt", "-cpu", cpu, "-m", memory),
        "-nographic",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-dtb",
        str(dtb_path),
        "-append",
        cmdline,
        *(("-initrd", str(initrd_path)) if initrd_path is not None else ()),
        *loaders,
    ]
    return BootPlan(cmd, cmdline, dtb, dtb_path, plan_clients, expected, sap, initrd_path, truths)


def run_boot(
    fixture_dir: PathLike | None,
    kernel: PathLike | None = None,
    timeout: float = 300.0,
    *,
    extra_cmdline: str = "",
    memory: str = "1G",
    cpu: str = DEFAULT_CPU,
    qemu: str = "qemu-system-aarch64",
    workdir: PathLike | None = None,
    keep_going: bool = False,
    init_binary: PathLike | None = None,
    truths: Mapping[str, Any] | None = None,
) -> BootResult:
    """Boot ``kernel`` with the handover in ``fixture_dir`` and judge the serial log.

    ``fixture_dir=None`` boots with no handover (a cold boot: the kernel should
    print no ``found kexec handover data`` and test_kho saves fresh data).
    QEMU is stopped as soon as the kernel reaches its end of boot (the
    expected ``VFS: Unable to mount root fs`` panic: no root fs is given), or
    any other panic, or after ``timeout`` seconds.  A fixture with LUO
    sessions boots with an initramfs instead (:mod:`.initramfs`): its
    ``/init`` retrieves every session and file, prints what it got and
    powers off; the default kernel is then the LUO build
    (``default_kernel(luo=True)``).

    ``truths`` replaces what a client's rule computed from the fixture as
    what the kernel must give back (client -> truth): a negative control
    boots corrupted bytes and judges them against the intact fixture's truth.
    """
    # the fixture first: a fixture kho boot refuses is refused with or without QEMU
    fx = load_fixture(fixture_dir) if fixture_dir is not None else None
    qemu_bin = need(qemu)
    kpath = (
        Path(kernel)
        if kernel
        else default_kernel(luo=fx is not None and "LUO" in fx.clients, page_size=fx.page_size if fx else 4096)
    )
    if not kpath.is_file():
        raise BootError(f"kernel Image {kpath} not found (run scripts/build-kernel.sh)")
    scratch_dir: AbstractContextManager[str] = (
        tempfile.TemporaryDirectory(prefix="kho-boot-") if workdir is None else nullcontext(os.fspath(workdir))
    )
    with scratch_dir as tmp:
        wd = Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        virt = dump_virt_dtb(qemu_bin, wd, cpu=cpu, memory=memory)
        plan = plan_boot(
            fx,
            kpath,
            virt,
            wd,
            qemu_bin=qemu_bin,
            memory=memory,
            cpu=cpu,
            extra_cmdline=extra_cmdline,
            init_binary=Path(init_binary) if init_binary is not None else None,
        )
        log, rc, timed_out, dur = run_qemu(plan.cmd, timeout, keep_going)
    if rc not in (0, None) and not has_kernel_output(log):
        return BootResult(
            "error",
            f"QEMU failed (exit {rc}): {log.strip()[-400:]}",
            [],
            log,
            {},
            plan.cmdline,
            plan.cmd,
            dur,
            timed_out,
            rc,
        )
    verdict, reason, status, kho_lines = judge_log(
        log, plan.clients, timed_out=timed_out, expected=plan.expected, truths={**plan.truths, **(truths or {})}
    )
    if fx is None and verdict == "rejected" and reason.startswith("kernel did not accept"):
        # a cold boot: no handover is the expected outcome
        rest = [p for p in reason.split("; ") if not p.startswith("kernel did not accept")]
        verdict, reason = ("rejected", "; ".join(rest)) if rest else ("accepted", "cold boot, no handover")
    return BootResult(verdict, reason, kho_lines, log, status, plan.cmdline, plan.cmd, dur, timed_out, rc)
