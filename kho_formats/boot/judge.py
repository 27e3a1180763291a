"""Kernel-log judgement: a verdict from the serial log of one boot.

The kernel-wide rules (the handover was found; no WARNING / BUG / Oops /
unexpected panic / KHO error line) live in :func:`judge_log`.  What each KHO
client must print, and what it adds to the kernel command line to be
exercised at all, is one :class:`ClientRule` per client in
:data:`CLIENT_RULES`: an entry can move into that client's own module
without touching the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import KhoFormatError
from ..fdt import FdtNode, get_u64, parse_fdt
from ..image import PhysImage

__all__ = [
    "FOUND",
    "ClientLog",
    "ClientRule",
    "CLIENT_RULES",
    "judge_log",
    "has_kernel_output",
    "strip_timestamp",
    "END_OF_BOOT",
]

FOUND = "KHO: found kexec handover data."

#: lines worth reporting (``BootResult.kho_lines``)
_KHO_LINE = re.compile(
    r"KHO|kho|test_kho|kexec-metadata|reserve[-_]mem|memory reservation|WARNING:|BUG:|Oops|"
    r"Unable to handle|Kernel panic|Call trace|Internal error|rom: requested regions overlap"
)
_BAD = [
    (re.compile(r"WARNING: "), "kernel WARNING"),
    (re.compile(r"BUG: "), "kernel BUG"),
    (re.compile(r"Unable to handle kernel"), "kernel fault"),
    (re.compile(r"Internal error: "), "kernel Oops"),
    (re.compile(r"Kernel panic - not syncing: (?!VFS: Unable to mount root fs)"), "kernel panic"),
]
_KHO_ERROR_WORDS = ("failed", "broken", "invalid", "incompatible", "not supported", "too small", "Failed")
#: the kernel is done: the expected no-root-fs panic, any other panic, a reboot
END_OF_BOOT = re.compile(r"Kernel panic - not syncing|VFS: Unable to mount root fs|reboot: |Rebooting")
_TS = re.compile(r"^\[\s*\d+\.\d+\]")
_TS_PREFIX = re.compile(r"^\[\s*\d+\.\d+\]\s*")


def strip_timestamp(line: str) -> str:
    return _TS_PREFIX.sub("", line.rstrip("\r\n"))


def has_kernel_output(log: str) -> bool:
    """Whether any line carries a printk timestamp (the kernel started)."""
    return any(_TS.match(l) for l in log.splitlines())


# -- per-client rules ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientLog:
    """What a client's judge sees."""

    #: serial log lines, printk timestamps stripped
    lines: Sequence[str]
    #: the kernel printed :data:`FOUND`
    found: bool
    #: what this client's command-line contribution asked the kernel for
    #: (e.g. memblock region names); empty when it contributed nothing
    expected: Sequence[str] = ()


#: ``(status, problem)``: status is ``ok``, ``failed``, ``not-reported`` or
#: ``not-exercised``; a problem (or None) makes the boot ``rejected``
ClientJudge = Callable[[ClientLog], tuple[str, str | None]]
#: ``(client sub-node of the root FDT, the fixture's memory, byte order)`` ->
#: ``[(expected name, kernel command-line argument), ...]``
ClientCmdline = Callable[[FdtNode, PhysImage, str], list[tuple[str, str]]]


@dataclass(frozen=True)
class ClientRule:
    """How ``kho boot`` exercises and judges one KHO client."""

    judge: ClientJudge
    #: kernel command-line arguments the client needs to be exercised
    cmdline: ClientCmdline | None = None


def _judge_kho_test(log: ClientLog) -> tuple[str, str | None]:
    if any("test_kho: KHO restore succeeded" in l for l in log.lines):
        return "ok", None
    said = next((l for l in log.lines if l.startswith("test_kho: ")), None)
    if said is not None:
        return "failed", said
    return "not-reported", "test_kho reported nothing"


def _judge_kexec_metadata(log: ClientLog) -> tuple[str, str | None]:
    if any(l.startswith("KHO: exec from: ") for l in log.lines):
        return "ok", None
    if any("kexec-metadata" in l for l in log.lines):
        return "failed", None
    return "not-reported", ("kexec-metadata was not read ('KHO: exec from:' missing)" if log.found else None)


def _judge_memblock(log: ClientLog) -> tuple[str, str | None]:
    if not log.expected:
        return "not-exercised", None
    revived = [n for n in log.expected if any(f"Revived memory reservation '{n}' from KHO" in l for l in log.lines)]
    if len(revived) == len(log.expected):
        return "ok", None
    bad = [
        l
        for l in log.lines
        if ("reserve-mem" in l or "FDT 'memblock'" in l or "reserve_mem:" in l) and "command line" not in l
    ]
    return "failed", "memblock: reserve_mem not revived" + (
        f": {bad[0]}" if bad else f" ({sorted(set(log.expected) - set(revived))})"
    )


_RESERVE_MEM_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def _memblock_cmdline(node: FdtNode, image: PhysImage, byteorder: str) -> list[tuple[str, str]]:
    """``(name, "reserve_mem=SIZE:4096:NAME")`` for each region of the memblock
    sub-FDT: the kernel revives a region only if the command line asks for it.

    The sub-FDT is read from the fixture's memory (what the kernel reads); a
    sub-FDT the library cannot read asks for nothing (the kernel judges it).
    """
    try:
        phys = get_u64(node, "preserved-data", byteorder, where="root FDT")
        size = get_u64(node, "blob-size", byteorder, where="root FDT", required=False) or 4096
        if phys is None or not image.has(phys, size):
            return []
        sub = parse_fdt(image.read(phys, size, "memblock sub-FDT"), where="memblock sub-FDT", phys=phys)
    except KhoFormatError:
        return []
    out = []
    for region in sub.root.children:
        try:
            get_u64(region, "start", byteorder, where="memblock sub-FDT")  # required, value unused
            rsize = get_u64(region, "size", byteorder, where="memblock sub-FDT")
        except KhoFormatError:
            continue
        if not rsize or not _RESERVE_MEM_NAME.fullmatch(region.name):
            continue
        out.append((region.name, f"reserve_mem={rsize}:4096:{region.name}"))
    return out


#: client (root FDT sub-node name) -> rule; clients not listed are "not-exercised"
CLIENT_RULES: dict[str, ClientRule] = {
    "kho_test": ClientRule(_judge_kho_test),
    "kexec-metadata": ClientRule(_judge_kexec_metadata),
    "memblock": ClientRule(_judge_memblock, _memblock_cmdline),
}


# -- the verdict -------------------------------------------------------------------------------------------------


def judge_log(
    log: str,
    clients: Sequence[str] = (),
    reserve_mem: Sequence[str] = (),
    timed_out: bool = False,
    *,
    expected: Mapping[str, Sequence[str]] | None = None,
) -> tuple[str, str, dict[str, str], list[str]]:
    """Verdict from a serial log: ``(verdict, reason, clients, kho_lines)``.

    ``expected`` maps a client to what its command-line contribution asked
    for (:attr:`ClientRule.cmdline`); ``reserve_mem`` is the memblock entry
    of it, kept as a parameter of its own.
    """
    lines = [strip_timestamp(l) for l in log.splitlines()]
    kho_lines = [l for l in lines if _KHO_LINE.search(l)]
    status: dict[str, str] = {}
    problems: list[str] = []
    asked = dict(expected or {})
    if reserve_mem:
        asked.setdefault("memblock", list(reserve_mem))

    found = any(FOUND in l for l in lines)
    if not found:
        why = [l for l in lines if l.startswith("KHO: ") and ("setup:" in l or "failed" in l or "disabling" in l)]
        if not has_kernel_output(log):
            return "error", "no kernel output (QEMU or kernel did not start)", status, kho_lines
        problems.append("kernel did not accept the handover" + (f": {why[0]}" if why else f" (no '{FOUND}')"))

    for rx, what in _BAD:
        hit = next((l for l in lines if rx.search(l)), None)
        if hit:
            problems.append(f"{what}: {hit}")
    for l in lines:
        if l.startswith("KHO: ") and any(w in l for w in _KHO_ERROR_WORDS):
            problems.append(l)

    for c in clients:
        rule = CLIENT_RULES.get(c)
        if rule is None:
            status[c] = "not-exercised"
            continue
        status[c], problem = rule.judge(ClientLog(lines, found, tuple(asked.get(c, ()))))
        if problem:
            problems.append(problem)

    if timed_out:
        problems.append("timeout before the kernel reached the end of boot")
    problems = list(dict.fromkeys(problems))
    if len(problems) > 1 and problems[0].startswith("kernel did not accept the handover: "):
        problems = [problems[0]] + [p for p in problems[1:] if p not in problems[0]]
    if problems:
        return "rejected", problems[0] if len(problems) == 1 else "; ".join(problems[:4]), status, kho_lines
    return "accepted", "handover found and every known client reported success", status, kho_lines
