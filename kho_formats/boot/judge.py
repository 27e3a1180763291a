"""Kernel-log judgement: a verdict from the serial log of one boot.

The kernel-wide rules (the handover was found; no WARNING / BUG / Oops /
unexpected panic / KHO error line) live in :func:`judge_log`.  What each KHO
client must print, and what it adds to the kernel command line to be
exercised at all, is that client's own :class:`~kho_formats.model.clients.BootRule`
(``Client.boot_rule`` in its module of ``kho_formats/model/clients/``), found
through the client registry by :func:`client_rule`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..model.clients import BootLog, BootRule, registry

__all__ = [
    "FOUND",
    "ClientLog",
    "client_rule",
    "judge_log",
    "has_kernel_output",
    "strip_timestamp",
    "console_lines",
    "END_OF_BOOT",
]

FOUND = "KHO: found kexec handover data."

#: lines worth reporting (``BootResult.kho_lines``)
_KHO_LINE = re.compile(
    r"KHO|kho|test_kho|kexec-metadata|reserve[-_]mem|memory reservation|WARNING:|BUG:|Oops|"
    r"Unable to handle|Kernel panic|Call trace|Internal error|rom: requested regions overlap|"
    r"luo[_:]|LUOCHECK|liveupdate|memfd_luo"
)
_BAD = [
    (re.compile(r"WARNING: "), "kernel WARNING"),
    (re.compile(r"BUG: "), "kernel BUG"),
    (re.compile(r"Unable to handle kernel"), "kernel fault"),
    (re.compile(r"Internal error: "), "kernel Oops"),
    (re.compile(r"Kernel panic - not syncing: (?!VFS: Unable to mount root fs)"), "kernel panic"),
]
_KHO_ERROR_WORDS = ("failed", "broken", "invalid", "incompatible", "not supported", "too small", "Failed")
#: the kernel is done: the expected no-root-fs panic, any other panic, a reboot or power-off,
#: the last line of the initramfs's check program
END_OF_BOOT = re.compile(r"Kernel panic - not syncing|VFS: Unable to mount root fs|reboot: |Rebooting|LUOCHECK end ")
_TS = re.compile(r"^\[\s*\d+\.\d+\]")
_TS_PREFIX = re.compile(r"^\[\s*\d+\.\d+\]\s*")
#: terminal escape sequences (CSI ``ESC [ ... final``, and two-byte ones such as
#: SeaBIOS's ``ESC c`` screen reset before the kernel's first line on QEMU pc)
_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[ -/]*[0-~])")


def strip_timestamp(line: str) -> str:
    """A log line without terminal escape sequences and its printk timestamp."""
    return _TS_PREFIX.sub("", _ESCAPE.sub("", line.rstrip("\r\n")))


#: a printk record's timestamp anywhere in a line (``[%5lu.%06lu] ``, kernel/printk/printk.c)
_TS_ANYWHERE = re.compile(r"\[\s*\d+\.\d{6}\] ")


def console_lines(log: str) -> list[str]:
    """The serial log as lines, with kernel records that landed inside a line
    of userspace output moved out of it (escape sequences and timestamps stripped).

    The kernel and the initramfs program share one console: the program's
    bytes drain from the tty's buffer while ``printk`` writes each record
    whole, straight to the UART, so a record can land in the middle of one of
    the program's lines::

        --- MANY-FILES KEXEC TEST PASSED ([    0.609708] liveupdate test: ...: finish was triggered
        [    0.609736] liveupdate test: liveupdate-test-flb-v1: finish was triggered
        500 files) ---

    A timestamped record found after the start of a line ends the program's
    text there; the text is held until the next line without a leading
    timestamp, which continues it (records in between are emitted as lines of
    their own, in order).  The result here: the three kernel records, then
    ``--- MANY-FILES KEXEC TEST PASSED (500 files) ---``.  A record is never
    split (the UART console writes it with the port held), so only userspace
    lines are rejoined; a log without printk timestamps is only split into lines.
    """
    out: list[str] = []
    held = ""
    started = False  # no record yet: text before the kernel's first line (firmware) is not held
    for raw in log.splitlines():
        line = _ESCAPE.sub("", raw.rstrip("\r\n"))
        m = _TS_ANYWHERE.search(line)
        if m is not None and m.start() > 0:
            before, line = line[: m.start()], line[m.start() :]
            if not started:
                out.append(before)
            elif before.strip() or held:
                held += before
        if _TS.match(line):  # a record: emitted now, held program text waits for its continuation
            started = True
            out.append(_TS_PREFIX.sub("", line))
            continue
        out.append(held + line)
        held = ""
    if held:
        out.append(held)
    return out


def has_kernel_output(log: str) -> bool:
    """Whether any line carries a printk timestamp (the kernel started)."""
    return any(_TS.match(_ESCAPE.sub("", l)) for l in log.splitlines())


# -- per-client rules ------------------------------------------------------------------------------------------

#: what a client's judge sees (:class:`kho_formats.model.clients.BootLog`)
ClientLog = BootLog


def client_rule(name: str) -> BootRule | None:
    """The boot rule of the client registered for sub-node ``name`` (None: not exercised)."""
    client = registry.get(name)
    return client.boot_rule if client is not None else None


# -- the verdict -------------------------------------------------------------------------------------------------


def judge_log(
    log: str,
    clients: Sequence[str] = (),
    reserve_mem: Sequence[str] = (),
    timed_out: bool = False,
    *,
    expected: Mapping[str, Sequence[str]] | None = None,
    truths: Mapping[str, Any] | None = None,
) -> tuple[str, str, dict[str, str], list[str]]:
    """Verdict from a serial log: ``(verdict, reason, clients, kho_lines)``.

    ``expected`` maps a client to what its command-line contribution asked
    for (:attr:`kho_formats.model.clients.BootRule.cmdline`); ``reserve_mem`` is the memblock entry
    of it, kept as a parameter of its own; ``truths`` maps a client to what
    its :attr:`~kho_formats.model.clients.BootRule.truth` computed from the fixture.
    """
    lines = console_lines(log)
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
        rule = client_rule(c)
        if rule is None:
            status[c] = "not-exercised"
            continue
        truth = (truths or {}).get(c)
        status[c], problem = rule.judge(ClientLog(lines, found, tuple(asked.get(c, ())), truth))
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
