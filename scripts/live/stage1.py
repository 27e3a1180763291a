#!/usr/bin/env python3
"""A Linux 7.3 liveupdate selftest run as its authors run it (two kernels), with the
handover captured at the kexec: the other way round from ``kho boot --init``.

    scripts/live/stage1.py luo_kexec_simple --out DIR            # capture + stage 2
    scripts/live/stage1.py luo_kexec_simple --out DIR --no-capture   # just time the two-kernel run

QEMU pc boots the x86_64 kernel of scripts/live/build-kernel.sh with an initramfs
laid out as tools/testing/selftests/liveupdate/vmtest.sh lays it out, from the
programs scripts/build-selftests.sh built: ``/init`` is the selftests' own init
(``liveupdate-init``), ``/test_binary`` the test, ``/kernel`` the bzImage and
``/initrd.img`` the same archive without the kernel.  Stage 1: the init
``kexec_file_load()``s the kernel with ``luo_stage=2`` and runs ``test -s 1``,
then ``reboot(RB_KEXEC)``; LUO serializes its sessions and the kernel reaches
``machine_kexec()``.  There a breakpoint (QEMU's gdbstub, the address from the
build's System.map; the live kernel has no KASLR) stops the VM and QMP
``dump-guest-memory`` writes the memory exactly as handed over; then the VM
runs on into stage 2 (``test -s 2``) in the second kernel.

DIR gets: console.log, vmcore.elf (1 GiB; deleted unless --keep-dump),
capture/ (``kho capture --from-dump vmcore.elf --referenced-only``: root.dtb,
image.elf, meta.json), result.json (timings, markers seen, and the capture
compared with what the test created: ``scripts/live/stage1_compare.py``).

``--append 'test_kho.max_mem=16384'`` adds to the kernel command line (here:
test_kho, built into the live kernel, preserves 16 KiB instead of 8 MiB, for a
capture small enough to keep in fixtures/captures/).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1]
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(HERE))

from run import Qmp  # noqa: E402  (scripts/live/run.py: the one QMP client)

from kho_formats.boot.initramfs import CpioEntry, newc_archive  # noqa: E402

CACHE = Path(os.environ.get("KHO_KERNEL_CACHE") or Path.home() / ".cache" / "kho-formats")
KERNEL_DIR = CACHE / "linux-7.3-x86_64-live"
PASSED = "TEST PASSED"
STAGE2_DONE = "INIT: Stage 2 completed successfully."


class Gdb:
    """The few GDB remote-protocol packets needed (QEMU's gdbstub on a UNIX socket)."""

    def __init__(self, path: Path, timeout: float = 30) -> None:
        self.s = socket.socket(socket.AF_UNIX)
        end = time.monotonic() + timeout
        while True:
            try:
                self.s.connect(str(path))
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
        self.buf = b""

    def _byte(self, timeout: float) -> bytes:
        self.s.settimeout(timeout)
        while not self.buf:
            got = self.s.recv(4096)
            if not got:
                raise EOFError("gdbstub closed the connection")
            self.buf += got
        c, self.buf = self.buf[:1], self.buf[1:]
        return c

    def send(self, data: bytes) -> None:
        self.s.sendall(b"$" + data + b"#%02x" % (sum(data) & 0xFF))
        while (c := self._byte(30)) not in (b"+", b"-"):
            pass
        if c == b"-":
            raise RuntimeError(f"gdbstub refused {data!r}")

    def recv(self, timeout: float = 30) -> bytes:
        while self._byte(timeout) != b"$":
            pass
        data = b""
        while (c := self._byte(timeout)) != b"#":
            data += c
        self._byte(timeout), self._byte(timeout)
        self.s.sendall(b"+")
        return data

    def cmd(self, data: bytes, timeout: float = 30) -> bytes:
        self.send(data)
        return self.recv(timeout)


def initramfs(init: bytes, test: bytes, kernel: bytes | None) -> bytes:
    """The archive of vmtest.sh's mkinitrd (the outer one when ``kernel`` is given)."""
    entries = [
        CpioEntry("dev", stat.S_IFDIR | 0o755),
        CpioEntry("proc", stat.S_IFDIR | 0o755),
        CpioEntry("debugfs", stat.S_IFDIR | 0o755),
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        CpioEntry("init", stat.S_IFREG | 0o755, init),
        CpioEntry("test_binary", stat.S_IFREG | 0o755, test),
    ]
    if kernel is not None:
        entries += [
            CpioEntry("kernel", stat.S_IFREG | 0o644, kernel),
            CpioEntry("initrd.img", stat.S_IFREG | 0o644, initramfs(init, test, None)),
        ]
    return newc_archive(entries)


def wait_for(log: Path, markers: tuple[str, ...], timeout: float, proc: subprocess.Popen[bytes]) -> str | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = log.read_text(errors="replace") if log.exists() else ""
        for m in markers:
            if m in text:
                return m
        if proc.poll() is not None:
            return None
        time.sleep(0.2)
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("test", help="luo_kexec_simple, luo_multi_session, luo_stress_files or luo_stress_sessions")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--kernel", type=Path, default=KERNEL_DIR / "bzImage")
    ap.add_argument("--system-map", type=Path, help="default: System.map next to the kernel, else its build dir")
    ap.add_argument("--programs", type=Path, default=CACHE / "selftests-7.3-x86_64")
    ap.add_argument("--no-capture", action="store_true", help="no breakpoint, no dump: time the two-kernel run")
    ap.add_argument("--keep-dump", action="store_true")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument(
        "--append", default="", help="more kernel command line (both kernels: init passes /proc/cmdline on)"
    )
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    init = (args.programs / "liveupdate-init").read_bytes()
    test = (args.programs / args.test).read_bytes()
    work = Path(tempfile.mkdtemp(prefix="kho-stage1-"))
    (work / "initrd.cpio").write_bytes(initramfs(init, test, args.kernel.read_bytes()))
    log = out / "console.log"
    log.unlink(missing_ok=True)
    qemu = [
        "qemu-system-x86_64",
        *("-M", "pc", "-cpu", "max", "-m", "1G", "-smp", "2", "-accel", "tcg"),
        *("-no-reboot", "-display", "none", "-nodefaults", "-serial", f"file:{log}"),
        *("-qmp", f"unix:{work}/qmp.sock,server=on,wait=off"),
        *("-kernel", str(args.kernel), "-initrd", str(work / "initrd.cpio")),
        *("-append", " ".join(filter(None, ("console=ttyS0 liveupdate=on kho=on panic=-1 loglevel=7", args.append)))),
    ]
    bp = None
    if not args.no_capture:
        smap = args.system_map or next(
            (
                p
                for p in (args.kernel.with_name("System.map"), CACHE / "work/build-x86_64-live/System.map")
                if p.is_file()
            ),
            None,
        )
        if smap is None:
            raise SystemExit("stage1: no System.map for the machine_kexec breakpoint (--system-map)")
        bp = next(
            int(a, 16) for a, _, n in (l.split()[:3] for l in smap.read_text().splitlines()) if n == "machine_kexec"
        )
        qemu += ["-S", "-chardev", f"socket,id=gdb0,path={work}/gdb.sock,server=on,wait=off", "-gdb", "chardev:gdb0"]
    result: dict[str, object] = {"test": args.test, "kernel": str(args.kernel), "capture": not args.no_capture}
    t0 = time.monotonic()
    proc = subprocess.Popen(qemu, stdout=subprocess.DEVNULL, stderr=open(work / "qemu.err", "wb"))
    try:
        qmp = Qmp(work / "qmp.sock")
        if bp is not None:
            gdb = Gdb(work / "gdb.sock")
            gdb.cmd(b"?")
            if gdb.cmd(b"Z0,%x,1" % bp) != b"OK":
                raise SystemExit("stage1: gdbstub refused the breakpoint")
            gdb.send(b"c")
            stop = gdb.recv(timeout=args.timeout)
            result["stopped_at_kexec"] = round(time.monotonic() - t0, 2)
            result["stop"] = stop.decode(errors="replace")[:40]
            dump = out / "vmcore.elf"
            qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{dump}")
            result["dumped"] = round(time.monotonic() - t0, 2)
            gdb.cmd(b"z0,%x,1" % bp)
            gdb.send(b"D")
            t_resume = time.monotonic()
        else:
            t_resume = t0
        seen = wait_for(log, (STAGE2_DONE, "Bail out!", "INIT: Test binary returned failure"), args.timeout, proc)
        result["stage2_marker"] = seen
        result["total"] = round(time.monotonic() - t0, 2)
        result["after_resume"] = round(time.monotonic() - t_resume, 2)
        try:
            qmp.execute("quit")
        except (RuntimeError, OSError):
            pass
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    text = log.read_text(errors="replace")
    result["passed"] = PASSED in text and STAGE2_DONE in text
    if not args.no_capture:
        cap = out / "capture"
        shutil.rmtree(cap, ignore_errors=True)
        r = subprocess.run(
            [sys.executable, "-m", "kho_formats.cli", "capture", "--from-dump", str(out / "vmcore.elf"), "-o", str(cap)]
            + ["--referenced-only"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(SRC)},
        )
        result["kho_capture"] = {"rc": r.returncode, "stdout": r.stdout[-2000:], "stderr": r.stderr[-2000:]}
        if r.returncode == 0:
            from stage1_compare import compare

            diffs, stats = compare(cap, args.test)
            result["compared"] = {**stats, "differences": diffs}
            result["passed"] = bool(result["passed"]) and not diffs
        if not args.keep_dump:
            (out / "vmcore.elf").unlink(missing_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
