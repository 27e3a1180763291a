"""``kho boot FIXTURE --init PROGRAM [-- ARGS]``: a program of your own as the
booted kernel's workload, judged by its exit status and KTAP lines.

The boot gets an initramfs whose ``/init`` is :file:`workload_init.c` (next to
this module, compiled static for the fixture's architecture like
``luo_check``): it mounts devtmpfs on ``/dev`` (``/dev/liveupdate``), proc,
sysfs and debugfs, runs ``/workload`` (PROGRAM, a static binary for the
fixture's architecture) with ARGS, prints ``KHOINIT end status=N`` and powers
off.  A client's own userspace check (``luo_check`` for LUO sessions) is not
run: the program is the judge of what it gets back, and the kernel-wide rules
(the handover found, no WARNING / BUG / Oops / panic, no KHO or LUO error
line) still apply.

The verdict (:func:`judge_workload`): ``accepted`` when the kernel accepted
the handover, the program exited 0 and printed no ``not ok`` and no ``Bail
out!``; otherwise ``rejected``, the reason naming the program's own failing
line (``Bail out! [run_stage_2:63] ...``) or its exit status; a program that
never started or ended is ``rejected`` with what the init printed.  Exit
status 4 is kselftest's skip (``KSFT_SKIP``): rejected, "skipped", with its
``# SKIP`` reason.

The liveupdate selftests (``scripts/build-selftests.sh``) run their stage 2
as ``kho boot FX --init selftests-7.3-<arch>/luo_kexec_simple -- -s 2``: the
test decides it is in stage 2 from the state session the fixture carries
(``lib/lu_utils.c``), and ``-s 2`` says that stage 2 is what it must find.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..abi.elf import EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_AARCH64, EM_X86_64
from ..errors import BootError
from .initramfs import CpioEntry, newc_archive, static_program

__all__ = [
    "WORKLOAD_INIT_SOURCE",
    "KSFT_SKIP",
    "Workload",
    "WorkloadOutcome",
    "parse_workload",
    "judge_workload",
    "elf_machine",
    "workload_of",
    "split_program_args",
]

WORKLOAD_INIT_SOURCE = Path(__file__).with_name("workload_init.c")
MARK = "KHOINIT "
#: kselftest's exit status of a skipped test (tools/testing/selftests/kselftest.h)
KSFT_SKIP = 4
#: ELF e_machine per fixture arch
_EM = {"arm64": EM_AARCH64, "x86_64": EM_X86_64}
_EM_NAMES = {EM_AARCH64: "arm64 (EM_AARCH64)", EM_X86_64: "x86_64 (EM_X86_64)", 40: "arm (EM_ARM)", 3: "i386 (EM_386)"}
_PT_INTERP = 3
_MAX_PROGRAM = 64 << 20


def elf_machine(data: bytes, what: str) -> tuple[int, bool]:
    """``(e_machine, static)`` of an ELF64 little-endian executable; a :class:`BootError` otherwise."""
    if data[: len(ELFMAG)] != ELFMAG:
        raise BootError(f"{what}: not an ELF program")
    if data[EI_CLASS] != ELFCLASS64 or data[EI_DATA] != ELFDATA2LSB:
        raise BootError(f"{what}: not a 64-bit little-endian ELF program", expected="ELFCLASS64, ELFDATA2LSB")
    e_type = int.from_bytes(data[16:18], "little")
    if e_type not in (2, 3):  # ET_EXEC, ET_DYN (static-pie)
        raise BootError(f"{what}: ELF type {e_type} is not an executable")
    machine = int.from_bytes(data[18:20], "little")
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    if phentsize < 56 or phoff + phnum * phentsize > len(data):
        raise BootError(f"{what}: ELF program headers outside the file")
    interp = any(
        int.from_bytes(data[phoff + k * phentsize : phoff + k * phentsize + 4], "little") == _PT_INTERP
        for k in range(phnum)
    )
    return machine, not interp


@dataclass(frozen=True)
class Workload:
    """PROGRAM and its ARGS, the booted kernel's workload."""

    program: Path
    args: tuple[str, ...] = ()

    def check(self, arch: str) -> bytes:
        """The program's bytes, once they are a static ELF program for ``arch``."""
        p = Path(self.program)
        if not p.is_file():
            raise BootError(f"--init program {p} not found (the liveupdate selftests: scripts/build-selftests.sh)")
        if p.stat().st_size > _MAX_PROGRAM:
            raise BootError(f"--init program {p}: {p.stat().st_size} bytes", expected=f"at most {_MAX_PROGRAM}")
        data = p.read_bytes()
        machine, static = elf_machine(data, f"--init program {p}")
        if machine != _EM[arch]:
            got = _EM_NAMES.get(machine, f"e_machine {machine}")
            raise BootError(f"--init program {p} is built for {got}; the fixture is for {arch}")
        if not static:
            raise BootError(f"--init program {p} is dynamically linked (PT_INTERP): the initramfs has no libc")
        for a in self.args:
            if "\n" in a or "\0" in a:
                raise BootError(f"--init argument {a!r}: a newline or NUL")
        return data

    def initramfs(self, arch: str, cache: Path | None = None) -> bytes:
        """The initramfs: ``/init`` (workload_init), ``/workload``, ``/workload-args`` and mount points."""
        program = self.check(arch)
        init = static_program(WORKLOAD_INIT_SOURCE, arch, cache).read_bytes()
        entries = [
            CpioEntry("dev", stat.S_IFDIR | 0o755),
            CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
            CpioEntry("proc", stat.S_IFDIR | 0o555),
            CpioEntry("sys", stat.S_IFDIR | 0o555),
            CpioEntry("debugfs", stat.S_IFDIR | 0o755),
            CpioEntry("init", stat.S_IFREG | 0o755, init),
            CpioEntry("workload", stat.S_IFREG | 0o755, program),
            CpioEntry("workload-args", stat.S_IFREG | 0o644, "".join(a + "\n" for a in self.args).encode()),
        ]
        return newc_archive(entries)


def split_program_args(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``kho boot ... -- ARGS``: ``(argv before '--', ARGS)``; ARGS is None
    unless the command is ``boot`` and ``--`` follows it."""
    if "--" not in argv:
        return argv, None
    cut = argv.index("--")
    if "boot" not in argv[:cut]:
        return argv, None
    return argv[:cut], argv[cut + 1 :]


def workload_of(program: str | None, args: Sequence[str] = ()) -> Workload:
    """``kho boot --init PROGRAM -- ARGS``."""
    if not program:
        raise BootError("arguments after '--' are PROGRAM's: give --init PROGRAM")
    return Workload(Path(program), tuple(args))


@dataclass
class WorkloadOutcome:
    """What the workload printed (from a serial log)."""

    begun: bool = False
    #: exit status (None: no ``end status=`` line)
    status: int | None = None
    signal: int | None = None
    #: KTAP result lines: ``ok N ...`` / ``not ok N ...``
    ok: list[str] = field(default_factory=list)
    not_ok: list[str] = field(default_factory=list)
    bail_out: list[str] = field(default_factory=list)
    #: ``# SKIP`` reasons (a plan ``1..0 # SKIP why`` or a result's directive)
    skips: list[str] = field(default_factory=list)
    #: the init's own errors (exec failed...)
    errors: list[str] = field(default_factory=list)
    #: every line between begin and end (the program's output and the kernel's)
    lines: list[str] = field(default_factory=list)


_RESULT = re.compile(r"^\s*(not ok|ok)\b\s*\d*")
_SKIP = re.compile(r"#\s*SKIP\b\s*(.*)$", re.IGNORECASE)


def parse_workload(lines: Sequence[str]) -> WorkloadOutcome:
    out = WorkloadOutcome()
    for line in lines:
        at = line.find(MARK)
        if at >= 0:
            body = line[at + len(MARK) :].strip()
            kind, _, rest = body.partition(" ")
            kv = dict(re.findall(r"(\w+)=(\S*)", rest))
            if kind == "begin":
                out.begun = True
            elif kind == "end":
                if "status" in kv:
                    out.status = int(kv["status"])
                if "signal" in kv:
                    out.signal = int(kv["signal"])
            elif kind == "error":
                out.errors.append(body)
            continue
        if not out.begun or out.status is not None or out.signal is not None:
            continue
        out.lines.append(line)
        if "Bail out!" in line:
            out.bail_out.append(line[line.find("Bail out!") :].strip())
            continue
        m = _RESULT.match(line)
        if m:
            (out.not_ok if m.group(1) == "not ok" else out.ok).append(line.strip())
        s = _SKIP.search(line)
        if s and (m or line.lstrip().startswith("1..")):
            out.skips.append(s.group(1).strip() or line.strip())
    return out


def workload_lines(lines: Sequence[str]) -> list[str]:
    """The lines worth showing: the init's and the program's KTAP lines (results, Bail out!, # comments)."""
    w = parse_workload(lines)
    shown = [l.strip() for l in w.lines if _RESULT.match(l) or "Bail out!" in l or l.lstrip().startswith(("#", "1.."))]
    return shown + [f"KHOINIT {e}" for e in w.errors]


def judge_workload(verdict: str, reason: str, lines: Sequence[str]) -> tuple[str, str]:
    """The boot's verdict once the workload has had its say: ``(verdict, reason)``.

    ``verdict``/``reason`` are the kernel-wide ones (:func:`.judge.judge_log`)."""
    w = parse_workload(lines)
    problems: list[str] = []
    if w.errors:
        problems.append(f"workload init: {w.errors[0]}")
    elif not w.begun:
        problems.append("the workload did not start (no 'KHOINIT begin': is the initramfs /init running?)")
    elif w.status is None and w.signal is None:
        last = w.bail_out[0] if w.bail_out else (w.lines[-1].strip() if w.lines else "")
        problems.append("the workload did not finish" + (f" (last line: {last})" if last else ""))
    if w.signal is not None:
        problems.append(f"the workload was killed by signal {w.signal}")
    if w.status == KSFT_SKIP:
        problems.append("the workload skipped (exit 4, KSFT_SKIP)" + (f": {w.skips[0]}" if w.skips else ""))
    elif w.bail_out:
        problems.append(f"the workload failed (exit {w.status}): {w.bail_out[0]}")
    elif w.not_ok:
        problems.append(f"the workload failed (exit {w.status}): {w.not_ok[0]}")
    elif w.status not in (0, None):
        problems.append(f"the workload failed: exit status {w.status}")
    if verdict == "error":
        return verdict, reason
    if verdict != "accepted":
        problems.append(reason)
    if problems:
        return "rejected", "; ".join(problems[:4])
    tail = f", {len(w.ok)} KTAP ok" if w.ok else ""
    return "accepted", f"handover found; the workload exited 0{tail}, no 'not ok', no 'Bail out!'"
