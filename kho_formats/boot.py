"""``kho boot``: hand a fixture to a real arm64 Linux kernel under QEMU and
report whether the kernel accepted it ("kernel in the loop").

Inputs: a *fixture directory* and an arm64 kernel ``Image`` (built by
``scripts/build-kernel.sh``; default location :func:`default_kernel`).

Fixture directory contract (what this module reads; everything else is ignored):

``root.dtb``
    The root KHO FDT. Only used to list the client sub-nodes and to find the
    ``memblock`` sub-blob (the bytes that boot are the ones in the segments).
``manifest.json``
    ``{"segments": [{"file": "seg-....bin", "phys": int, "size": int}, ...]}``
    (a bare list is accepted too): raw bytes loaded at physical addresses with
    QEMU's generic loader. They must include the root FDT page, the radix tree,
    every sub-blob and preserved page that a client reads, and the
    ``struct kho_scratch[]`` array.
``handover.json``
    ``fdt_phys`` and ``fdt_size`` (-> ``/chosen/linux,kho-fdt``), ``scratch``
    (``[[addr, size], ...]``) and ``scratch_array_phys`` (where the segments
    hold the ``struct kho_scratch`` array: ``/chosen/linux,kho-scratch`` is
    ``<scratch_array_phys, 16 * len(scratch)>``: the kernel reads the array
    from memory, it is not a list of ranges in the DT). When
    ``scratch_array_phys`` is missing, the array is written as an extra
    loader segment in the first free page at or after ``KHO_BOOT_SCRATCH_ARRAY``
    that no segment uses. Optional: ``byte_order`` (``"little"``, default),
    ``page_size`` (4096; the kernel is built for 4 KiB pages), ``cmdline``
    (a string appended to the kernel command line).

Everything is laid into QEMU ``virt`` with ``-m 1G`` (RAM ``0x40000000 ..
0x80000000``). Segments must stay inside RAM and clear of QEMU's boot stub
(``0x40000000``), the kernel (``0x40200000 + image_size``, ~``0x415c0000``
for the cached 7.3 build) and the boot DTB (``0x48000000``); scratch should
be >= 64 MiB (48 MiB panics allocating the memmap). See
``docs/kernel-notes.md``.

Verdicts: ``accepted`` (``KHO: found kexec handover data.``, no WARNING /
BUG / Oops / unexpected panic / KHO error line, and every known client in the
root FDT reported success: ``test_kho: KHO restore succeeded``,
``KHO: exec from:`` for ``kexec-metadata``, ``Revived memory reservation``
for each ``memblock`` region, which ``kho boot`` requests with
``reserve_mem=SIZE:4096:NAME``); ``rejected`` (anything else, timeout
included); ``error`` (the harness or QEMU could not run the kernel).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BootResult", "run_boot", "default_kernel", "judge_log", "BootError", "QEMU_RAM_BASE", "QEMU_RAM_SIZE"]

PathLike = str | os.PathLike

QEMU_RAM_BASE = 0x4000_0000
QEMU_RAM_SIZE = 1 << 30
#: where QEMU puts the -dtb blob with no initrd: RAM + min(RAM / 2, 128 MiB)
QEMU_DTB_ADDR = QEMU_RAM_BASE + 0x0800_0000
#: where a missing scratch array is placed (first free page at or above)
KHO_BOOT_SCRATCH_ARRAY = 0x7FF0_0000
BASE_CMDLINE = "console=ttyAMA0 earlycon=pl011,0x9000000 kho=on loglevel=7 panic=-1"

FOUND = "KHO: found kexec handover data."


class BootError(Exception):
    """The harness itself could not run (missing tool, bad fixture directory)."""


def default_kernel() -> Path:
    root = os.environ.get("KHO_KERNEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kho-formats")
    return Path(root) / "linux-7.3-arm64" / "Image"


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

    def to_json(self) -> dict:
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


# ---------------------------------------------------------------------------
# a minimal FDT reader (root-level sub-nodes and their properties only)

_FDT_MAGIC = 0xD00DFEED


def _fdt_nodes(blob: bytes) -> dict[str, dict[str, bytes]]:
    """``{path: {prop: value}}`` for every node of a flattened device tree."""
    if len(blob) < 40:
        raise ValueError("FDT too short")
    magic, total, off_struct, off_strings, _, version, _, _, size_strings, size_struct = struct.unpack_from(
        ">10I", blob, 0
    )
    if magic != _FDT_MAGIC:
        raise ValueError("bad FDT magic")
    if total > len(blob):
        raise ValueError("FDT truncated")
    strings = blob[off_strings : off_strings + size_strings]
    end = off_struct + size_struct if version >= 17 else total
    pos = off_struct
    stack: list[str] = []
    out: dict[str, dict[str, bytes]] = {}
    while pos + 4 <= end:
        (tok,) = struct.unpack_from(">I", blob, pos)
        pos += 4
        if tok == 1:  # BEGIN_NODE
            nul = blob.index(b"\0", pos)
            name = blob[pos:nul].decode("utf-8", "replace")
            pos = (nul + 4) & ~3
            stack.append(name)
            out["/" + "/".join(s for s in stack if s)] = {}
        elif tok == 3:  # PROP
            ln, nameoff = struct.unpack_from(">II", blob, pos)
            pos += 8
            val = blob[pos : pos + ln]
            pos = (pos + ln + 3) & ~3
            pname = strings[nameoff : strings.index(b"\0", nameoff)].decode("utf-8", "replace")
            out["/" + "/".join(s for s in stack if s)][pname] = val
        elif tok == 2:  # END_NODE
            if not stack:
                raise ValueError("unbalanced FDT")
            stack.pop()
        elif tok == 4:  # NOP
            continue
        elif tok == 9:  # END
            break
        else:
            raise ValueError(f"bad FDT token {tok:#x}")
    return out


# ---------------------------------------------------------------------------
# fixture loading


@dataclass
class _Fixture:
    root: Path
    segments: list[tuple[Path, int, int]]
    fdt_phys: int
    fdt_size: int
    scratch: list[tuple[int, int]]
    scratch_array_phys: int | None
    byte_order: str
    cmdline: str
    clients: list[str]
    root_nodes: dict[str, dict[str, bytes]]

    def read(self, phys: int, size: int) -> bytes | None:
        for path, base, ln in self.segments:
            if base <= phys and phys + size <= base + ln:
                with open(path, "rb") as f:
                    f.seek(phys - base)
                    return f.read(size)
        return None


def _load_fixture(fixture_dir: PathLike) -> _Fixture:
    d = Path(fixture_dir)
    try:
        manifest = json.loads((d / "manifest.json").read_text())
        handover = json.loads((d / "handover.json").read_text())
    except FileNotFoundError as exc:
        raise BootError(f"fixture directory {d}: missing {exc.filename}") from None
    except ValueError as exc:
        raise BootError(f"fixture directory {d}: bad JSON ({exc})") from None
    segs_raw = manifest["segments"] if isinstance(manifest, dict) else manifest
    segments = []
    for s in segs_raw:
        p = d / s["file"]
        if not p.is_file():
            raise BootError(f"segment file {p} missing")
        size = int(s.get("size", p.stat().st_size))
        if p.stat().st_size != size:
            raise BootError(f"segment {p}: size {p.stat().st_size} != manifest {size}")
        segments.append((p, int(s["phys"]), size))
    try:
        fdt_phys = int(handover["fdt_phys"])
        fdt_size = int(handover.get("fdt_size") or handover.get("page_size") or 4096)
        scratch = [(int(a), int(n)) for a, n in handover["scratch"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise BootError(f"handover.json: missing/bad field ({exc})") from None
    arch = str(handover.get("arch", "arm64"))
    if arch not in ("arm64", "aarch64"):
        raise BootError(f"fixture is for {arch}: kho boot boots an arm64 kernel (build the fixture with arch = arm64)")
    sap = handover.get("scratch_array_phys")
    byte_order = handover.get("byte_order", "little")
    page_size = int(handover.get("page_size", 4096))
    if page_size != 4096:
        raise BootError(f"fixture page_size {page_size}: the boot kernel is built for 4 KiB pages")
    cmdline = handover.get("cmdline") or ""
    if isinstance(cmdline, list):
        cmdline = " ".join(cmdline)
    root_nodes: dict[str, dict[str, bytes]] = {}
    clients: list[str] = []
    rd = d / "root.dtb"
    if rd.is_file():
        try:
            root_nodes = _fdt_nodes(rd.read_bytes())
            clients = [p[1:] for p in root_nodes if p.count("/") == 1 and p != "/"]
        except ValueError:
            root_nodes, clients = {}, []
    fx = _Fixture(
        d,
        segments,
        fdt_phys,
        fdt_size,
        scratch,
        None if sap is None else int(sap),
        byte_order,
        cmdline,
        clients,
        root_nodes,
    )
    if not root_nodes:
        # fall back to the bytes at fdt_phys
        blob = fx.read(fdt_phys, fdt_size)
        if blob:
            try:
                fx.root_nodes = _fdt_nodes(blob)
                fx.clients = [p[1:] for p in fx.root_nodes if p.count("/") == 1 and p != "/"]
            except ValueError:
                pass
    return fx


def _u64(val: bytes, order: str) -> int | None:
    return int.from_bytes(val, order) if len(val) == 8 else None


def _reserve_mem_args(fx: _Fixture) -> list[tuple[str, str]]:
    """``(name, "reserve_mem=SIZE:ALIGN:NAME")`` for each region in a ``memblock`` sub-blob."""
    node = fx.root_nodes.get("/memblock")
    if not node or "preserved-data" not in node:
        return []
    phys = _u64(node["preserved-data"], fx.byte_order)
    size = _u64(node.get("blob-size", b""), fx.byte_order) or 4096
    blob = fx.read(phys, size) if phys is not None else None
    if not blob:
        return []
    try:
        nodes = _fdt_nodes(blob)
    except ValueError:
        return []
    out = []
    for path, props in nodes.items():
        if path.count("/") != 1 or path == "/":
            continue
        name = path[1:]
        start = _u64(props.get("start", b""), fx.byte_order)
        rsize = _u64(props.get("size", b""), fx.byte_order)
        if start is None or not rsize or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            continue
        out.append((name, f"reserve_mem={rsize}:4096:{name}"))
    return out


# ---------------------------------------------------------------------------
# log judgement

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
_END = re.compile(r"Kernel panic - not syncing|VFS: Unable to mount root fs|reboot: |Rebooting")


_TS = re.compile(r"^\[\s*\d+\.\d+\]")


def _strip(line: str) -> str:
    return re.sub(r"^\[\s*\d+\.\d+\]\s*", "", line.rstrip("\r\n"))


def judge_log(
    log: str, clients: Sequence[str] = (), reserve_mem: Sequence[str] = (), timed_out: bool = False
) -> tuple[str, str, dict[str, str], list[str]]:
    """Verdict from a serial log: ``(verdict, reason, clients, kho_lines)``."""
    lines = [_strip(l) for l in log.splitlines()]
    kho_lines = [l for l in lines if _KHO_LINE.search(l)]
    status: dict[str, str] = {}
    problems: list[str] = []

    found = any(FOUND in l for l in lines)
    if not found:
        why = [l for l in lines if l.startswith("KHO: ") and ("setup:" in l or "failed" in l or "disabling" in l)]
        if not any(_TS.match(l) for l in log.splitlines()):
            return "error", "no kernel output (QEMU or kernel did not start)", status, kho_lines
        problems.append("kernel did not accept the handover" + (f": {why[0]}" if why else f" (no '{FOUND}')"))

    for rx, what in _BAD:
        hit = next((l for l in lines if rx.search(l)), None)
        if hit:
            problems.append(f"{what}: {hit}")
    for l in lines:
        if l.startswith("KHO: ") and any(
            w in l for w in ("failed", "broken", "invalid", "incompatible", "not supported", "too small", "Failed")
        ):
            problems.append(l)

    for c in clients:
        if c == "kho_test":
            if any("test_kho: KHO restore succeeded" in l for l in lines):
                status[c] = "ok"
            elif any(l.startswith("test_kho: ") for l in lines):
                status[c] = "failed"
                problems.append(next(l for l in lines if l.startswith("test_kho: ")))
            else:
                status[c] = "not-reported"
                problems.append("test_kho reported nothing")
        elif c == "kexec-metadata":
            if any(l.startswith("KHO: exec from: ") for l in lines):
                status[c] = "ok"
            elif any("kexec-metadata" in l for l in lines):
                status[c] = "failed"
            else:
                status[c] = "not-reported"
                if found:
                    problems.append("kexec-metadata was not read ('KHO: exec from:' missing)")
        elif c == "memblock":
            if not reserve_mem:
                status[c] = "not-exercised"
                continue
            revived = [n for n in reserve_mem if any(f"Revived memory reservation '{n}' from KHO" in l for l in lines)]
            if len(revived) == len(reserve_mem):
                status[c] = "ok"
            else:
                status[c] = "failed"
                bad = [
                    l
                    for l in lines
                    if ("reserve-mem" in l or "FDT 'memblock'" in l or "reserve_mem:" in l) and "command line" not in l
                ]
                problems.append(
                    "memblock: reserve_mem not revived"
                    + (f": {bad[0]}" if bad else f" ({sorted(set(reserve_mem) - set(revived))})")
                )
        else:
            status[c] = "not-exercised"

    if timed_out:
        problems.append("timeout before the kernel reached the end of boot")
    problems = list(dict.fromkeys(problems))
    if len(problems) > 1 and problems[0].startswith("kernel did not accept the handover: "):
        problems = [problems[0]] + [p for p in problems[1:] if p not in problems[0]]
    if problems:
        return "rejected", problems[0] if len(problems) == 1 else "; ".join(problems[:4]), status, kho_lines
    return "accepted", "handover found and every known client reported success", status, kho_lines


# ---------------------------------------------------------------------------
# QEMU


def _ram_bytes(memory: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGT]?)", memory.strip().upper())
    if not m:
        return QEMU_RAM_SIZE
    return int(m.group(1)) << {"": 20, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2)]


def _need(tool: str) -> str:
    p = shutil.which(tool)
    if not p:
        raise BootError(f"{tool} not found (apt-get install qemu-system-arm device-tree-compiler)")
    return p


def _cells(value: int, n: int) -> list[str]:
    return [str((value >> (32 * (n - 1 - i))) & 0xFFFFFFFF) for i in range(n)]


def _patch_dtb(base_dtb: Path, out: Path, fdt: tuple[int, int], scratch: tuple[int, int]) -> None:
    fdtget, fdtput = _need("fdtget"), _need("fdtput")
    ac = int(
        subprocess.run(
            [fdtget, str(base_dtb), "/", "#address-cells"], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    sc = int(
        subprocess.run(
            [fdtget, str(base_dtb), "/", "#size-cells"], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    shutil.copyfile(base_dtb, out)
    for prop, (a, s) in (("linux,kho-fdt", fdt), ("linux,kho-scratch", scratch)):
        subprocess.run([fdtput, "-c", str(out), "/chosen"], capture_output=True)
        subprocess.run(
            [fdtput, "-t", "u", str(out), "/chosen", prop, *_cells(a, ac), *_cells(s, sc)],
            check=True,
            capture_output=True,
        )


def _kernel_span(kpath: Path) -> tuple[int, int]:
    """Where QEMU (hw/arm/boot.c) loads an arm64 Image: RAM + 2 MiB + text_offset, image_size bytes."""
    with open(kpath, "rb") as f:
        hdr = f.read(64)
    text_offset, image_size = struct.unpack_from("<QQ", hdr, 8) if len(hdr) >= 64 else (0, 0)
    if hdr[56:60] != b"ARM\x64" or image_size == 0:
        return QEMU_RAM_BASE, kpath.stat().st_size
    load = QEMU_RAM_BASE + text_offset + (2 << 20 if text_offset < (2 << 20) else 0)
    return load, image_size


def _check_layout(fx: _Fixture, kspan: tuple[int, int], dtb_size: int, ram_size: int) -> None:
    ram = (QEMU_RAM_BASE, QEMU_RAM_BASE + ram_size)
    busy = [
        ("the kernel Image", kspan[0], kspan[0] + kspan[1]),
        ("the boot DTB", QEMU_DTB_ADDR, QEMU_DTB_ADDR + dtb_size),
        ("QEMU's boot stub", QEMU_RAM_BASE, QEMU_RAM_BASE + 0x1000),
    ]
    ranges = [(f"segment {p.name}", b, b + n) for p, b, n in fx.segments]
    ranges += [("root FDT", fx.fdt_phys, fx.fdt_phys + 1)]
    ranges += [(f"scratch area {a:#x}+{n:#x}", a, a + n) for a, n in fx.scratch if n]
    for what, a, b in ranges:
        if a < ram[0] or b > ram[1]:
            raise BootError(f"{what} [{a:#x}, {b:#x}) is outside QEMU virt RAM [{ram[0]:#x}, {ram[1]:#x})")
        if what.startswith("segment"):
            for name, x, y in busy:
                if a < y and b > x:
                    raise BootError(f"{what} [{a:#x}, {b:#x}) overlaps {name} [{x:#x}, {y:#x})")


def _free_page(fx: _Fixture, start: int, size: int) -> int:
    busy = [(b, b + n) for _, b, n in fx.segments] + [(a, a + n) for a, n in fx.scratch]
    addr = start & ~0xFFF
    while addr + size <= QEMU_RAM_BASE + QEMU_RAM_SIZE:
        if not any(addr < e and addr + size > b for b, e in busy):
            return addr
        addr += 0x1000
    addr = QEMU_RAM_BASE + 0x0800_0000
    while addr + size <= start:
        if not any(addr < e and addr + size > b for b, e in busy):
            return addr
        addr += 0x1000
    raise BootError("no free page for the kho_scratch array")


def run_boot(
    fixture_dir: PathLike | None,
    kernel: PathLike | None = None,
    timeout: float = 300.0,
    *,
    extra_cmdline: str = "",
    memory: str = "1G",
    cpu: str = "max,pauth-impdef=on",
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
    qemu_bin = _need(qemu)
    kpath = Path(kernel) if kernel else default_kernel()
    if not kpath.is_file():
        raise BootError(f"kernel Image {kpath} not found (run scripts/build-kernel.sh)")
    tmp_owner = None
    if workdir is None:
        tmp_owner = tempfile.TemporaryDirectory(prefix="kho-boot-")
        wd = Path(tmp_owner.name)
    else:
        wd = Path(workdir)
        wd.mkdir(parents=True, exist_ok=True)
    try:
        machine = ["-M", "virt", "-cpu", cpu, "-m", memory]
        base = wd / "virt.dtb"
        r = subprocess.run(
            [qemu_bin, "-M", f"virt,dumpdtb={base}", "-cpu", cpu, "-m", memory, "-nographic"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if not base.is_file():
            raise BootError(f"QEMU could not dump the virt DTB: {r.stderr.strip()}")
        # QEMU dumps its DTB padded to 1 MiB; handed back with -dtb as is, neither
        # 7.3 nor 6.1 kernels print anything (not even earlycon). Pack it.
        packed = wd / "virt-packed.dtb"
        r = subprocess.run(
            [_need("dtc"), "-q", "-I", "dtb", "-O", "dtb", "-o", str(packed), str(base)], capture_output=True, text=True
        )
        if r.returncode != 0 or not packed.is_file():
            raise BootError(f"dtc could not repack the virt DTB: {r.stderr.strip()}")
        base = packed
        loaders: list[str] = []
        cmdline = BASE_CMDLINE
        clients: list[str] = []
        reserve_names: list[str] = []
        dtb = base
        if fixture_dir is not None:
            fx = _load_fixture(fixture_dir)
            clients = fx.clients
            scratch_bytes = b"".join(
                struct.pack("<QQ" if fx.byte_order == "little" else ">QQ", a, n) for a, n in fx.scratch
            )
            sap = fx.scratch_array_phys
            if sap is None or fx.read(sap, len(scratch_bytes)) is None:
                sap = _free_page(fx, KHO_BOOT_SCRATCH_ARRAY, max(len(scratch_bytes), 1))
                sfile = wd / "scratch-array.bin"
                sfile.write_bytes(scratch_bytes)
                loaders += ["-device", f"loader,file={sfile},addr={sap:#x},force-raw=on"]
            for path, phys, _ in fx.segments:
                loaders += ["-device", f"loader,file={path.resolve()},addr={phys:#x},force-raw=on"]
            dtb = wd / "patched.dtb"
            _patch_dtb(base, dtb, (fx.fdt_phys, fx.fdt_size), (sap, len(scratch_bytes)))
            _check_layout(fx, _kernel_span(kpath), dtb.stat().st_size, _ram_bytes(memory))
            for name, arg in _reserve_mem_args(fx):
                reserve_names.append(name)
                cmdline += " " + arg
            if fx.cmdline:
                cmdline += " " + fx.cmdline
        if extra_cmdline:
            cmdline += " " + extra_cmdline
        cmd = [
            qemu_bin,
            *machine,
            "-nographic",
            "-no-reboot",
            "-kernel",
            str(kpath),
            "-dtb",
            str(dtb),
            "-append",
            cmdline,
            *loaders,
        ]
        log, rc, timed_out, dur = _run_qemu(cmd, timeout, keep_going)
        if rc not in (0, None) and not any(_TS.match(l) for l in log.splitlines()):
            return BootResult(
                "error", f"QEMU failed (exit {rc}): {log.strip()[-400:]}", [], log, {}, cmdline, cmd, dur, timed_out, rc
            )
        verdict, reason, status, kho_lines = judge_log(log, clients, reserve_names, timed_out)
        if fixture_dir is None and verdict == "rejected" and reason.startswith("kernel did not accept"):
            # a cold boot: no handover is the expected outcome
            rest = [p for p in reason.split("; ") if not p.startswith("kernel did not accept")]
            verdict, reason = ("rejected", "; ".join(rest)) if rest else ("accepted", "cold boot, no handover")
        return BootResult(verdict, reason, kho_lines, log, status, cmdline, cmd, dur, timed_out, rc)
    finally:
        if tmp_owner is not None:
            tmp_owner.cleanup()


def _run_qemu(cmd: list[str], timeout: float, keep_going: bool) -> tuple[str, int | None, bool, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    chunks: list[str] = []
    done = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for raw in iter(lambda: proc.stdout.readline(), b""):
            line = raw.decode("utf-8", "replace")
            chunks.append(line)
            if not keep_going and _END.search(line):
                done.set()
        done.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    finished = done.wait(timeout)
    if finished and proc.poll() is None:
        # let the panic message and any trace after it reach the log
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
    timed_out = not finished
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    th.join(timeout=5)
    return "".join(chunks), proc.returncode if not timed_out else None, timed_out, time.monotonic() - t0
