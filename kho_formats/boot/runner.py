"""One boot: plan the QEMU command line for a fixture, run it, judge the log."""

from __future__ import annotations

import os
import tempfile
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BootError
from .dtb import patch_chosen, repack_dtb
from .judge import client_rule, has_kernel_output, judge_log
from .load import BootFixture, PathLike, load_fixture
from .qemu import (
    BASE_CMDLINE,
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
) -> BootPlan:
    """The QEMU command line booting ``kernel`` with the handover of ``fx``
    (``None``: a cold boot) on QEMU's ``virt_dtb``.  Writes the boot DTB (and
    the ``kho_scratch`` array when the fixture's segments lack it) into
    ``workdir``; runs nothing."""
    ram_size = ram_bytes(memory)
    loaders: list[str] = []
    cmdline = BASE_CMDLINE
    plan_clients: list[str] = []
    expected: dict[str, list[str]] = {}
    sap: int | None = None
    if fx is None:
        dtb = repack_dtb(virt_dtb)
        dtb_path = workdir / "virt-packed.dtb"
    else:
        plan_clients = list(fx.clients)
        kspan = kernel_span(kernel)
        arr = fx.scratch_array()
        sap = fx.scratch_array_phys
        if arr and (sap is None or not fx.image.has(sap, len(arr))):
            sap = place_scratch_array(fx, len(arr), kspan, ram_size)
            sfile = workdir / "scratch-array.bin"
            sfile.write_bytes(arr)
            loaders += loader_args(sfile, sap)
        for seg in fx.segments:
            loaders += loader_args(seg.path, seg.phys)
        dtb = patch_chosen(virt_dtb, (fx.fdt_phys, fx.fdt_size), (sap or 0, len(arr)))
        dtb_path = workdir / "patched.dtb"
        check_layout(fx, kspan, len(dtb), ram_size)
        decoded = fx.decoded_clients()
        for c in plan_clients:
            rule = client_rule(c)
            if rule is None or rule.cmdline is None or c not in decoded:
                continue
            asks = rule.cmdline(decoded[c])
            expected[c] = [name for name, _ in asks]
            for _, arg in asks:
                cmdline += " " + arg
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
        *loaders,
    ]
    return BootPlan(cmd, cmdline, dtb, dtb_path, plan_clients, expected, sap)


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
) -> BootResult:
    """Boot ``kernel`` with the handover in ``fixture_dir`` and judge the serial log.

    ``fixture_dir=None`` boots with no handover (a cold boot: the kernel should
    print no ``found kexec handover data`` and test_kho saves fresh data).
    QEMU is stopped as soon as the kernel reaches its end of boot (the
    expected ``VFS: Unable to mount root fs`` panic: no root fs is given), or
    any other panic, or after ``timeout`` seconds.
    """
    # the fixture first: a fixture kho boot refuses is refused with or without QEMU
    fx = load_fixture(fixture_dir) if fixture_dir is not None else None
    qemu_bin = need(qemu)
    kpath = Path(kernel) if kernel else default_kernel()
    if not kpath.is_file():
        raise BootError(f"kernel Image {kpath} not found (run scripts/build-kernel.sh)")
    scratch_dir: AbstractContextManager[str] = (
        tempfile.TemporaryDirectory(prefix="kho-boot-") if workdir is None else nullcontext(os.fspath(workdir))
    )
    with scratch_dir as tmp:
        wd = Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        virt = dump_virt_dtb(qemu_bin, wd, cpu=cpu, memory=memory)
        plan = plan_boot(fx, kpath, virt, wd, qemu_bin=qemu_bin, memory=memory, cpu=cpu, extra_cmdline=extra_cmdline)
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
    verdict, reason, status, kho_lines = judge_log(log, plan.clients, timed_out=timed_out, expected=plan.expected)
    if fx is None and verdict == "rejected" and reason.startswith("kernel did not accept"):
        # a cold boot: no handover is the expected outcome
        rest = [p for p in reason.split("; ") if not p.startswith("kernel did not accept")]
        verdict, reason = ("rejected", "; ".join(rest)) if rest else ("accepted", "cold boot, no handover")
    return BootResult(verdict, reason, kho_lines, log, status, plan.cmdline, plan.cmd, dur, timed_out, rc)
