"""``kho boot`` for LUO state: what the booted kernel must give back.

The ``LUO`` client's :class:`~.base.BootRule`:

* ``cmdline``: ``liveupdate=on`` (without it 7.3 registers no
  ``/dev/liveupdate``);
* ``initrd``: ``/luo-list`` for the initramfs's ``/init``
  (``kho_formats/boot/luo_check.c``): every session of the fixture
  (``S <name>``) followed by its files' tokens (``F <hex>``), names
  percent-escaped (:func:`esc_name`);
* ``truth``: per file the size, seals, position and FNV-1a 64 of the
  contents (gaps read as zeros) the fixture holds, computed from its bytes;
* ``judge``: parses the ``LUOCHECK`` lines the program printed
  (:func:`parse_check_output`) and compares (:func:`compare`); a LUO error
  line of the kernel (``luo: LUO state is incompatible with 'luo-v5'``,
  ``memfd_luo: Unable to restore folio ...``) is the reason when there is
  one.

State that was never serialized (``sessions_pa`` = 0: nothing to retrieve)
and state this library cannot read (an unknown ``luo_ser`` compatible) get
no userspace check: the kernel's log alone judges them (7.3 panics on an
unknown compatible, which the kernel-wide rules reject).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ....memory.image import PhysImage
from ..base import BootLog, BootRule
from ..digest import Fnv1a64
from .model import LuoState, content_digest

__all__ = [
    "LIST_PATH",
    "MARK",
    "Fnv1a64",
    "fnv1a64",
    "esc_name",
    "unesc_name",
    "ExpectedFile",
    "LuoTruth",
    "luo_list",
    "luo_truth",
    "CheckOutput",
    "parse_check_output",
    "compare",
    "judge",
    "BOOT_RULE",
]

#: the list /init reads (a path inside the initramfs)
LIST_PATH = "luo-list"
#: every line the program prints starts with it
MARK = "LUOCHECK "
#: kernel log lines of LUO trouble (7.3's pr_fmt is the module name)
_LUO_ERROR = re.compile(
    r"^(?P<line>(?:luo|luo_\w+|memfd_luo|liveupdate): .*"
    r"(?:incompatible|failed|Failed|Unable|too small|mismatch|No registered|Disabling).*)$"
)
_LUO_RETRIEVED = re.compile(r"luo(?:_core)?: Retrieved live update data, liveupdate number: (-?\d+)")

# (the objects of kernel/liveupdate/ link into luo.o: their pr_fmt prefix is "luo: ")

# -- FNV-1a 64 ------------------------------------------------------------------------------------------------

# Fnv1a64 lives in .digest (holes in closed form); re-exported here


def fnv1a64(chunks: Iterable[bytes | memoryview]) -> int:
    h = Fnv1a64()
    for c in chunks:
        h.update(c)
    return h.value


# -- names ------------------------------------------------------------------------------------------------------

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def esc_name(raw: bytes) -> str:
    """A session name as luo_check prints it: up to the first NUL, bytes
    outside ``[A-Za-z0-9._-]`` as ``%XX``."""
    raw = raw.partition(b"\0")[0]
    return "".join(chr(c) if c in _SAFE else f"%{c:02X}" for c in raw)


def unesc_name(text: str) -> bytes:
    out = bytearray()
    k = 0
    while k < len(text):
        if text[k] == "%" and re.fullmatch(r"[0-9A-Fa-f]{2}", text[k + 1 : k + 3]):
            out.append(int(text[k + 1 : k + 3], 16))
            k += 3
        else:
            out += text[k].encode()
            k += 1
    return bytes(out)


# -- the truth --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedFile:
    session: str  # escaped name
    token: int
    compatible: str
    #: None: the handler has no contents this library knows (not compared)
    size: int | None = None
    seals: int | None = None
    pos: int | None = None
    fnv1a64: int | None = None


@dataclass(frozen=True)
class LuoTruth:
    liveupdate_num: int
    sessions: tuple[str, ...]
    files: tuple[ExpectedFile, ...]


def _userspace_checked(st: LuoState) -> bool:
    return st.known and st.read and st.serialized and bool(st.sessions)


def luo_list(st: LuoState) -> bytes:
    """``/luo-list``: ``S <name>`` then ``F <token>`` per file, in the state's order."""
    lines: list[str] = []
    for s in st.sessions:
        lines.append(f"S {esc_name(s.ser.name)}")
        lines += [f"F {f.token:x}" for f in s.files]
    return ("\n".join(lines) + "\n").encode()


def initrd_files(st: LuoState) -> dict[str, bytes] | None:
    return {LIST_PATH: luo_list(st)} if _userspace_checked(st) else None


def luo_truth(st: LuoState, image: PhysImage, page_size: int) -> LuoTruth | None:
    """What the kernel must give back for ``st`` (None: no userspace check)."""
    if not _userspace_checked(st):
        return None
    files: list[ExpectedFile] = []
    for s in st.sessions:
        name = esc_name(s.ser.name)
        for f in s.files:
            d = f.decoded
            if d is None or f.handler.content_size(d) is None:
                files.append(ExpectedFile(name, f.token, f.compatible))
                continue
            ser = getattr(d, "ser", None)
            digest = content_digest(f, image, page_size, Fnv1a64())
            files.append(
                ExpectedFile(
                    name,
                    f.token,
                    f.compatible,
                    size=f.handler.content_size(d),
                    seals=getattr(ser, "seals", None),
                    pos=getattr(ser, "pos", None),
                    fnv1a64=int(digest, 16) if digest is not None else None,
                )
            )
    return LuoTruth(st.ser.liveupdate_num, tuple(esc_name(s.ser.name) for s in st.sessions), tuple(files))


# -- the program's output ---------------------------------------------------------------------------------------

_KV = re.compile(r"(\w+)=(\S*)")


@dataclass
class CheckOutput:
    """The ``LUOCHECK`` lines of one boot."""

    begun: bool = False
    #: escaped session name -> errno of RETRIEVE_SESSION (None: retrieved)
    sessions: dict[str, int | None] = field(default_factory=dict)
    #: (escaped session, token) -> the line's key=value pairs
    files: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict)
    #: the ``end`` line's key=value pairs (None: the program did not finish)
    end: dict[str, str] | None = None
    #: ``error`` lines (open_dev, open_list, ...) and lines that did not parse
    errors: list[str] = field(default_factory=list)


def parse_check_output(lines: Sequence[str]) -> CheckOutput:
    """The program's lines from a serial log (a marker anywhere in a line:
    a kernel message may share the console line)."""
    out = CheckOutput()
    for line in lines:
        at = line.find(MARK)
        if at < 0:
            continue
        body = line[at + len(MARK) :].strip()
        kind, _, rest = body.partition(" ")
        kv = dict(_KV.findall(rest))
        try:
            if kind == "begin":
                out.begun = True
            elif kind == "session":
                out.sessions[kv["name"]] = int(kv["err"]) if "err" in kv else None
            elif kind == "file":
                out.files[(kv["session"], int(kv["token"], 16))] = kv
            elif kind == "end":
                out.end = kv
            elif kind == "error":
                out.errors.append(body)
            elif kind != "warn":
                out.errors.append(f"unparsed: {body}")
        except (KeyError, ValueError):
            out.errors.append(f"unparsed: {body}")
    return out


def _errno(n: int) -> str:
    import errno
    import os

    name = errno.errorcode.get(n)
    return f"{name} ({os.strerror(n)})" if name else f"errno {n}"


def compare(truth: LuoTruth, got: CheckOutput) -> list[str]:
    """Every difference between what the fixture holds and what the kernel
    gave back (empty: every session and file restored, every byte equal)."""
    out: list[str] = []
    if not got.begun:
        return ["luo_check did not run (no 'LUOCHECK begin' line: is the initramfs /init running?)"]
    if got.end is None:
        out.append("luo_check did not finish (no 'LUOCHECK end' line)")
    for e in got.errors:
        if "op=open_dev" in e:
            n = int(dict(_KV.findall(e)).get("err", "0") or 0)
            out.append(f"luo_check could not open /dev/liveupdate: {_errno(n)} (a kernel without LIVEUPDATE?)")
        else:
            out.append(f"luo_check: {e}")
    for name in truth.sessions:
        err = got.sessions.get(name, -1)
        if err == -1:
            out.append(f"LUO session {name!r}: not reported")
        elif err is not None and err != -1:
            out.append(f"LUO session {name!r}: the kernel refused to retrieve it: {_errno(err)}")
    for ef in truth.files:
        what = f"LUO session {ef.session!r} file token {ef.token:#x}"
        kv = got.files.get((ef.session, ef.token))
        if kv is None:
            if got.sessions.get(ef.session, -1) is None:
                out.append(f"{what}: not reported")
            continue
        if "err" in kv:
            out.append(f"{what}: the kernel refused it ({kv.get('op')}): {_errno(int(kv['err']))}")
            continue
        for key, want in (("size", ef.size), ("seals", ef.seals), ("pos", ef.pos)):
            if want is not None and int(kv.get(key, "-1"), 0) != want:
                out.append(f"{what}: {key} {kv.get(key)} != fixture {want}")
        if ef.fnv1a64 is not None:
            h = int(kv.get("fnv1a64", "0"), 16)
            if h != ef.fnv1a64:
                out.append(
                    f"{what}: content mismatch (fnv1a64 {h:#018x} != fixture {ef.fnv1a64:#018x}, {ef.size} bytes)"
                )
    return out


def judge(log: BootLog) -> tuple[str, str | None]:
    kernel_errors = [m.group("line") for line in log.lines if (m := _LUO_ERROR.match(line))]
    truth: LuoTruth | None = log.truth
    if kernel_errors:
        return "failed", kernel_errors[0]
    retrieved = [int(m.group(1)) for line in log.lines if (m := _LUO_RETRIEVED.search(line))]
    if truth is None:
        # nothing to retrieve from userspace: the kernel's own word
        return ("ok", None) if retrieved else ("not-reported", "the kernel did not report retrieving LUO state")
    if not retrieved:
        why = "the kernel did not report retrieving LUO state (luo: Retrieved live update data)"
        said = compare(truth, parse_check_output(log.lines))
        return "not-reported", why + (f"; {said[0]}" if said else "")
    if retrieved[0] != truth.liveupdate_num:
        return "failed", f"LUO liveupdate number {retrieved[0]} != fixture {truth.liveupdate_num}"
    problems = compare(truth, parse_check_output(log.lines))
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        return "failed", "; ".join(problems[:3]) + more
    return "ok", None


def _cmdline(st: Any) -> list[tuple[str, str]]:
    return [("liveupdate", "liveupdate=on")]


BOOT_RULE = BootRule(judge=judge, cmdline=_cmdline, initrd=initrd_files, truth=luo_truth)
