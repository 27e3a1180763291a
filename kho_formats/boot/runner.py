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
from .judge import client_rule, console_lines, has_kernel_output, judge_log
from .load import BootFixture, PathLike, load_fixture
from .qemu import (
    BASE_CMDLINE,
    QEMU_BINARIES,
    build_script,
    check_kernel_page_size,
    check_layout,
    default_kernel,
    dump_virt_dtb,
    join_cmdline,
    kernel_page_size,
    kernel_span,
    loader_args,
    need,
    place_scratch_array,
    ram_bytes,
    run_qemu,
)
from .workload import Workload, judge_workload, workload_lines
from .x86 import (
    X86_BASE_CMDLINE,
    X86_DEFAULT_CPU,
    BzImage,
    bzimage,
    patched_bzimage,
    place_handover,
)

__all__ = ["BootResult", "BootPlan", "plan_boot", "run_boot", "X86Handover", "x86_handover", "client_cmdline"]

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
    #: the kernel given (or the default one picked for the fixture)
    kernel: str = ""

    @property
    def accepted(self) -> bool:
        return self.verdict == "accepted"

    @property
    def console(self) -> list[str]:
        """The serial log as lines (:func:`.judge.console_lines`): kernel records that landed
        inside a line of the workload's output moved out of it, timestamps stripped."""
        return console_lines(self.log)

    def printed(self, text: str) -> bool:
        """Whether a console line (kernel record or the workload's own, rejoined) holds ``text``."""
        return any(text in line for line in self.console)

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
            "kernel": self.kernel,
        }


@dataclass
class BootPlan:
    """Everything about one boot except running it."""

    #: the QEMU argv
    cmd: list[str]
    #: the kernel command line (``-append``)
    cmdline: str
    #: arm64: the boot DTB written to ``dtb_path``; x86_64: None (no DTB)
    dtb: bytes | None
    dtb_path: Path | None
    #: KHO clients named by the root FDT (judged after the boot)
    clients: list[str] = field(default_factory=list)
    #: client -> what its command-line contribution asked the kernel for
    expected: dict[str, list[str]] = field(default_factory=dict)
    #: where /chosen/linux,kho-scratch (arm64) or the setup_data's scratch_addr (x86_64) points (None: cold boot)
    scratch_array_phys: int | None = None
    #: the initramfs (``-initrd``) when a client is checked from userspace (LUO), else None
    initrd: Path | None = None
    #: client -> what the booted kernel must give back (:attr:`kho_formats.model.clients.BootRule.truth`)
    truths: dict[str, Any] = field(default_factory=dict)
    #: "arm64" (QEMU virt) or "x86_64" (QEMU pc)
    arch: str = "arm64"
    #: the kernel file QEMU boots (x86_64 with a handover: the patched copy in the work directory)
    kernel: Path | None = None
    #: x86_64: where the SETUP_KEXEC_KHO setup_data entry is loaded (None otherwise)
    setup_data_phys: int | None = None


@dataclass
class _Clients:
    """What the fixture's clients ask of one boot (see :class:`kho_formats.model.clients.BootRule`)."""

    names: list[str] = field(default_factory=list)
    cmdline: str = ""
    expected: dict[str, list[str]] = field(default_factory=dict)
    truths: dict[str, Any] = field(default_factory=dict)
    initrd_files: dict[str, bytes] = field(default_factory=dict)


def _client_asks(fx: BootFixture, workload: Workload | None = None) -> _Clients:
    out = _Clients(names=list(fx.clients))
    decoded = fx.decoded_clients()
    for c in out.names:
        rule = client_rule(c)
        if rule is None or c not in decoded:
            continue
        if rule.cmdline is not None:
            asks = rule.cmdline(decoded[c])
            out.expected[c] = [name for name, _ in asks]
            for _, arg in asks:
                out.cmdline += " " + arg
        files = rule.initrd(decoded[c]) if rule.initrd is not None else None
        if files and workload is not None:
            continue  # the workload replaces the client's userspace check: no truth to compare with
        if files:
            out.initrd_files.update(files)
        if rule.truth is not None:
            out.truths[c] = rule.truth(decoded[c], fx.image, fx.page_size)
    return out


def _write_initrd(
    asks: _Clients, workdir: Path, init_binary: Path | None, arch: str, workload: Workload | None = None
) -> Path | None:
    if workload is not None:  # the program is the workload (and the judge of what it gets back)
        path = workdir / "initrd.cpio"
        path.write_bytes(workload.initramfs(arch))
        return path
    if not asks.initrd_files:
        return None
    init = (init_binary or luo_check_binary(arch=arch)).read_bytes()
    path = workdir / "initrd.cpio"
    path.write_bytes(initramfs(init, asks.initrd_files))
    return path


def plan_boot(
    fx: BootFixture | None,
    kernel: Path,
    virt_dtb: bytes | None,
    workdir: Path,
    *,
    qemu_bin: str | None = None,
    memory: str = "1G",
    cpu: str | None = None,
    extra_cmdline: str = "",
    init_binary: Path | None = None,
    workload: Workload | None = None,
) -> BootPlan:
    """The QEMU command line booting ``kernel`` with the handover of ``fx``
    (``None``: a cold boot); runs nothing.

    arm64 (QEMU virt, ``virt_dtb`` its DTB): writes the boot DTB with
    ``/chosen`` patched (and the ``kho_scratch`` array when the fixture's
    segments lack it) into ``workdir``.  x86_64 (QEMU pc, ``virt_dtb``
    unused): writes the ``SETUP_KEXEC_KHO`` setup_data entry and a copy of
    the bzImage whose setup header points at it (:mod:`.x86`).

    A client checked from userspace (its rule's ``initrd`` gives files: LUO
    state with sessions) adds an initramfs, ``workdir/initrd.cpio``, whose
    ``/init`` is ``init_binary`` (default: ``luo_check`` compiled for the
    fixture's architecture, built on first use).  ``workload``: the
    initramfs runs that program instead (:mod:`.workload`), and the clients'
    own userspace checks are not made."""
    arch = fx.arch if fx is not None else ("x86_64" if bzimage(kernel) is not None else "arm64")
    if arch == "x86_64":
        return _plan_x86(fx, kernel, workdir, qemu_bin, memory, cpu, extra_cmdline, init_binary, workload)
    if bzimage(kernel) is not None:
        raise BootError(f"kernel {kernel} is an x86 bzImage; the fixture is for arm64")
    if virt_dtb is None:
        raise BootError("an arm64 boot needs QEMU virt's DTB")
    ram_size = ram_bytes(memory)
    loaders: list[str] = []
    cmdline = BASE_CMDLINE
    asks = _Clients()
    sap: int | None = None
    initrd_path: Path | None = None
    if fx is None:
        dtb = repack_dtb(virt_dtb)
        dtb_path = workdir / "virt-packed.dtb"
    else:
        check_kernel_page_size(kernel, fx.page_size)
        kspan = kernel_span(kernel)
        asks = _client_asks(fx, workload)
        initrd_path = _write_initrd(asks, workdir, init_binary, "arm64", workload)
        initrd_size = initrd_path.stat().st_size if initrd_path is not None else 0
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
        cmdline = join_cmdline(cmdline, asks.cmdline, fx.cmdline)
    cmdline = join_cmdline(cmdline, extra_cmdline)
    dtb_path.write_bytes(dtb)
    cmd = [
        qemu_bin or "qemu-system-aarch64",
        *("-M", "virt", "-cpu", cpu or DEFAULT_CPU, "-m", memory),
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
    return BootPlan(
        cmd, cmdline, dtb, dtb_path, asks.names, asks.expected, sap, initrd_path, asks.truths, "arm64", kernel
    )


@dataclass
class X86Handover:
    """What hands a fixture to an x86_64 kernel under QEMU pc (:func:`x86_handover`)."""

    #: the patched copy of the bzImage (its setup header names ``setup_data_phys``)
    kernel: Path
    #: ``-device loader`` arguments: the fixture's segments, the setup_data entry, the scratch array if placed
    loaders: list[str]
    setup_data_phys: int
    scratch_array_phys: int


def x86_bzimage(kernel: Path) -> BzImage:
    """``kernel``'s setup header, or a :class:`BootError` saying what it is instead."""
    bz = bzimage(kernel)
    if bz is None:
        what = "an arm64 Image" if kernel_page_size(kernel) is not None else "not an x86 bzImage (no 'HdrS' header)"
        raise BootError(f"kernel {kernel} is {what}; the fixture is for x86_64")
    return bz


def x86_handover(fx: BootFixture, kernel: Path, workdir: Path, memory: str = "1G", initrd_size: int = 0) -> X86Handover:
    """Lay ``fx`` into QEMU pc RAM of ``memory`` for ``kernel`` (a bzImage):
    check the layout, place the setup_data entry (and the scratch array when
    the segments lack it) in free pages, write them and the patched bzImage
    into ``workdir``.  Also used by ``scripts/live/run.py`` (a live capture on
    the receiving side of a fixture)."""
    bz = x86_bzimage(kernel)
    hp = place_handover(fx, bz, ram_bytes(memory), initrd_size, [])
    loaders: list[str] = []
    if hp.scratch_array is not None:
        sfile = workdir / "scratch-array.bin"
        sfile.write_bytes(hp.scratch_array)
        loaders += loader_args(sfile, hp.scratch_array_phys)
    sd_file = workdir / "setup_data.bin"
    sd_file.write_bytes(hp.setup_data)
    loaders += loader_args(sd_file, hp.setup_data_phys)
    for seg in fx.segments:
        loaders += loader_args(seg.path, seg.phys)
    kernel_copy = patched_bzimage(bz, hp.setup_data_phys, workdir / "bzImage")
    return X86Handover(kernel_copy, loaders, hp.setup_data_phys, hp.scratch_array_phys)


def _plan_x86(
    fx: BootFixture | None,
    kernel: Path,
    workdir: Path,
    qemu_bin: str | None,
    memory: str,
    cpu: str | None,
    extra_cmdline: str,
    init_binary: Path | None,
    workload: Workload | None = None,
) -> BootPlan:
    x86_bzimage(kernel)
    cmdline = X86_BASE_CMDLINE
    loaders: list[str] = []
    asks = _Clients()
    sap: int | None = None
    sd_phys: int | None = None
    initrd_path: Path | None = None
    boot_kernel = kernel
    if fx is not None:
        asks = _client_asks(fx, workload)
        initrd_path = _write_initrd(asks, workdir, init_binary, "x86_64", workload)
        ho = x86_handover(fx, kernel, workdir, memory, initrd_path.stat().st_size if initrd_path is not None else 0)
        boot_kernel, loaders, sap, sd_phys = ho.kernel, ho.loaders, ho.scratch_array_phys, ho.setup_data_phys
        cmdline = join_cmdline(cmdline, asks.cmdline, fx.cmdline)
    cmdline = join_cmdline(cmdline, extra_cmdline)
    cmd = [
        qemu_bin or "qemu-system-x86_64",
        *("-M", "pc", "-cpu", cpu or X86_DEFAULT_CPU, "-m", memory),
        "-nographic",
        "-no-reboot",
        "-kernel",
        str(boot_kernel),
        "-append",
        cmdline,
        *(("-initrd", str(initrd_path)) if initrd_path is not None else ()),
        *loaders,
    ]
    return BootPlan(
        cmd,
        cmdline,
        None,
        None,
        asks.names,
        asks.expected,
        sap,
        initrd_path,
        asks.truths,
        "x86_64",
        boot_kernel,
        sd_phys,
    )


def client_cmdline(fx: BootFixture) -> str:
    """What the fixture's clients add to the kernel command line (``reserve_mem=...``), and its own ``cmdline``."""
    return join_cmdline("", _client_asks(fx).cmdline, fx.cmdline)


def run_boot(
    fixture_dir: PathLike | None,
    kernel: PathLike | None = None,
    timeout: float = 300.0,
    *,
    extra_cmdline: str = "",
    memory: str = "1G",
    cpu: str | None = None,
    qemu: str | None = None,
    workdir: PathLike | None = None,
    keep_going: bool = False,
    init_binary: PathLike | None = None,
    truths: Mapping[str, Any] | None = None,
    via: str = "loader",
    workload: Workload | None = None,
) -> BootResult:
    """Boot ``kernel`` with the handover in ``fixture_dir`` and judge the serial log.

    ``via``: ``"loader"`` (QEMU puts the handover in place: the boot DTB on
    arm64, the patched setup header on x86_64) or ``"kexec"`` (x86_64: a
    first-stage kernel calls ``kexec_load`` with the fixture,
    :mod:`.kexec`).

    The fixture's ``arch`` picks the machine: arm64 boots on QEMU virt
    (``qemu-system-aarch64``, the handover in the boot DTB's ``/chosen``),
    x86_64 on QEMU pc (``qemu-system-x86_64``, the handover in a
    ``SETUP_KEXEC_KHO`` setup_data entry, :mod:`.x86`).

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

    ``workload``: the initramfs runs that program (``kho boot --init``,
    :mod:`.workload`) and its exit status and KTAP lines are part of the
    verdict; a fixture without LUO state gets the initramfs too.
    """
    # the fixture first: a fixture kho boot refuses is refused with or without QEMU
    fx = load_fixture(fixture_dir) if fixture_dir is not None else None
    arch = fx.arch if fx is not None else None
    kpath = (
        Path(kernel)
        if kernel
        else default_kernel(
            luo=fx is not None and "LUO" in fx.clients,
            page_size=fx.page_size if fx else 4096,
            arch=arch or "arm64",
        )
    )
    if not kpath.is_file():
        raise BootError(f"kernel {kpath} not found (run {build_script(arch or 'arm64')})")
    if arch is None:
        arch = "x86_64" if bzimage(kpath) is not None else "arm64"
    if via not in ("loader", "kexec"):
        raise BootError(f"via {via!r}", expected="'loader' or 'kexec'")
    if workload is not None and fx is None:
        raise BootError("--init runs a program on a fixture's second kernel: give a fixture")
    if via == "kexec" and (fx is None or arch != "x86_64"):
        raise BootError("--via kexec hands an x86_64 fixture over from a first-stage x86_64 kernel")
    qemu_bin = need(qemu or QEMU_BINARIES[arch])
    if via == "kexec":
        assert fx is not None
        _check_kexec_load(kpath)
        res = _run_kexec(
            fx, kpath, qemu_bin, timeout, memory, cpu, extra_cmdline, workdir, keep_going, truths, init_binary, workload
        )
        if workload is not None and res.verdict != "error":
            from .kexec import STARTING

            second = console_lines(res.log.partition(STARTING)[2])
            res.verdict, res.reason = judge_workload(res.verdict, res.reason, second)
            res.kho_lines += workload_lines(second)
        return res
    scratch_dir: AbstractContextManager[str] = (
        tempfile.TemporaryDirectory(prefix="kho-boot-") if workdir is None else nullcontext(os.fspath(workdir))
    )
    with scratch_dir as tmp:
        wd = Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        virt = dump_virt_dtb(qemu_bin, wd, cpu=cpu or DEFAULT_CPU, memory=memory) if arch == "arm64" else None
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
            workload=workload,
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
            str(kpath),
        )
    verdict, reason, status, kho_lines = judge_log(
        log, plan.clients, timed_out=timed_out, expected=plan.expected, truths={**plan.truths, **(truths or {})}
    )
    if fx is None and verdict == "rejected" and reason.startswith("kernel did not accept"):
        # a cold boot: no handover is the expected outcome
        rest = [p for p in reason.split("; ") if not p.startswith("kernel did not accept")]
        verdict, reason = ("rejected", "; ".join(rest)) if rest else ("accepted", "cold boot, no handover")
    if workload is not None:
        lines = console_lines(log)
        verdict, reason = judge_workload(verdict, reason, lines)
        kho_lines += workload_lines(lines)
    return BootResult(verdict, reason, kho_lines, log, status, plan.cmdline, plan.cmd, dur, timed_out, rc, str(kpath))


def _check_kexec_load(kernel: Path) -> None:
    """``--via kexec``: refuse a kernel whose ``.config`` (``config`` or ``.config`` beside it, as the
    build scripts keep it) says it has no ``kexec_load(2)`` (``CONFIG_KEXEC``): vmtest.sh's kernel has
    only ``CONFIG_KEXEC_FILE``.  No config there: nothing is known, the boot is tried."""
    for cfg in (kernel.parent / "config", kernel.parent / ".config"):
        try:
            if not cfg.is_file() or cfg.stat().st_size > 4 << 20:
                continue
            lines = cfg.read_text(errors="replace").splitlines()
        except OSError:
            continue
        if not any(l.startswith("CONFIG_") for l in lines):
            continue
        if "CONFIG_KEXEC=y" not in (l.strip() for l in lines):
            raise BootError(
                f"kernel {kernel} has no CONFIG_KEXEC (its {cfg}): the first stage of --via kexec calls "
                "kexec_load(2), which that kernel lacks"
                + (" (it has only kexec_file_load, CONFIG_KEXEC_FILE)" if "CONFIG_KEXEC_FILE=y" in lines else ""),
                expected="a kernel built with CONFIG_KEXEC=y, or the direct path (--via loader)",
            )
        return


def _run_kexec(
    fx: BootFixture,
    kpath: Path,
    qemu_bin: str,
    timeout: float,
    memory: str,
    cpu: str | None,
    extra_cmdline: str,
    workdir: PathLike | None,
    keep_going: bool,
    truths: Mapping[str, Any] | None,
    init_binary: PathLike | None,
    workload: Workload | None = None,
) -> BootResult:
    from .kexec import plan_kexec, qemu_command

    bz = x86_bzimage(kpath)
    asks = _client_asks(fx, workload)
    second = b""
    if workload is not None:
        second = workload.initramfs("x86_64")
    elif asks.initrd_files:  # LUO sessions: the second kernel gets the luo_check initramfs
        init = Path(init_binary) if init_binary is not None else luo_check_binary(arch="x86_64")
        second = initramfs(init.read_bytes(), asks.initrd_files)
    cmdline = join_cmdline(X86_BASE_CMDLINE, asks.cmdline, fx.cmdline, extra_cmdline)
    kp = plan_kexec(fx, bz, cmdline, memory, second_initrd=second)
    scratch_dir: AbstractContextManager[str] = (
        tempfile.TemporaryDirectory(prefix="kho-kexec-") if workdir is None else nullcontext(os.fspath(workdir))
    )
    with scratch_dir as tmp:
        wd = Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        initrd = wd / "first-stage.cpio"
        initrd.write_bytes(kp.initrd)
        cmd = qemu_command(qemu_bin, kpath, initrd, memory, cpu or X86_DEFAULT_CPU)
        log, rc, timed_out, dur = run_qemu(cmd, timeout, keep_going)
    return judge_kexec_log(log, asks, truths, cmdline, cmd, dur, timed_out, rc, str(kpath))


def judge_kexec_log(
    log: str,
    asks: _Clients,
    truths: Mapping[str, Any] | None,
    cmdline: str = "",
    cmd: list[str] | None = None,
    dur: float = 0.0,
    timed_out: bool = False,
    rc: int | None = None,
    kernel: str = "",
) -> BootResult:
    """The verdict of a ``--via kexec`` boot: the second kernel's log (after
    ``kexec_core: Starting new kernel``) judged as any boot; a first stage that
    never got there is an ``error`` (the fixture never reached a kernel)."""
    from .kexec import STARTING

    cmd = cmd or []
    first, sep, second = log.partition(STARTING)
    if not sep:
        why = next((l.strip() for l in first.splitlines() if "KEXECLOAD error" in l), None)
        reason = why or "the first-stage kernel did not kexec (no 'kexec_core: Starting new kernel')"
        if timed_out and not why:
            reason += " before the timeout"
        return BootResult("error", reason, [], log, {}, cmdline, cmd, dur, timed_out, rc, kernel)
    verdict, reason, status, kho_lines = judge_log(
        second, asks.names, timed_out=timed_out, expected=asks.expected, truths={**asks.truths, **(truths or {})}
    )
    return BootResult(verdict, reason, kho_lines, log, status, cmdline, cmd, dur, timed_out, rc, kernel)
