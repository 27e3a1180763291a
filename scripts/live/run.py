#!/usr/bin/env python3
"""Live capture against a real kernel: boot the x86_64 kernel of scripts/live/build-kernel.sh
in QEMU with this machine's root file system shared read-only over 9p (so the guest has
this Python, numpy, construct and the kho-formats tree), run ``kho capture -o DIR`` inside
(scripts/live/guest-init.sh), then stop the VM and dump its memory with QMP
``dump-guest-memory`` at that moment.

    scripts/live/run.py --kernel ~/.cache/kho-formats/linux-7.3-x86_64-live/bzImage --out DIR
    scripts/live/run.py --out DIR --handover fixtures/v4-4k-x86 --side in   # the receiving side

DIR gets: capture/ (what ``kho capture`` wrote in the guest), capture.json, capture.err,
debugfs-kho/ (a copy of the guest's debugfs ``kho`` taken just before), vmcore.elf (the QEMU
dump), console.log. tests/test_live_kernel.py compares the capture with the dump.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1]


class Qmp:
    """The few QMP commands needed (JSON lines over a UNIX socket)."""

    def __init__(self, path: Path, timeout: float = 30) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        end = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)
        self.fh = self.sock.makefile("rwb")
        self.fh.readline()  # greeting
        self.execute("qmp_capabilities")

    def execute(self, name: str, **arguments: object) -> object:
        msg: dict[str, object] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.fh.write(json.dumps(msg).encode() + b"\n")
        self.fh.flush()
        while True:
            line = self.fh.readline()
            if not line:
                raise RuntimeError(f"QMP {name}: connection closed")
            reply = json.loads(line)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {name}: {reply['error']}")


def wait_for(path: Path, marker: str, timeout: float, proc: subprocess.Popen[bytes]) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = path.read_text(errors="replace") if path.exists() else ""
        if marker in text:
            return text
        if proc.poll() is not None:
            raise RuntimeError(f"QEMU exited ({proc.returncode}) before {marker!r}; console:\n{text[-3000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"no {marker!r} within {timeout:.0f}s; console:\n{text[-3000:]}")


def accel() -> list[str]:
    """TCG unless KHO_LIVE_KVM=1 (nested KVM on the build machine fails with 'KVM internal error')."""
    if os.environ.get("KHO_LIVE_KVM") == "1" and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg", "-cpu", "max"]  # numpy's wheels use SSE4/AVX: qemu64 would fault


#: kernel parameters of the default run: LUO on, every built-in KHO client adds its sub-tree
DEFAULT_PARAMS = "liveupdate=on"


def run(
    kernel: Path,
    out: Path,
    *,
    mem: str = "1G",
    timeout: float = 900,
    python: str = sys.executable,
    params: str = DEFAULT_PARAMS,
    handover: Path | None = None,
    side: str = "out",
) -> Path:
    """Boot, capture and dump into ``out``; ``params`` are kernel parameters
    added to the fixed ones (``kho=on``, the 9p root, the init script).

    ``handover``: a fixture directory (``kho build``, arch x86_64) handed to
    the kernel the way ``kho boot`` does (a ``SETUP_KEXEC_KHO`` setup_data
    entry named by a patched copy of the bzImage, kho_formats.boot.x86), so
    the guest runs on the receiving side of it; ``side`` is what ``kho capture
    --side`` captures in the guest ("out": the handover this kernel would
    pass on; "in": the one it received)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (
        "capture",
        "debugfs-kho",
        "boot_params",
        "vmcore.elf",
        "console.log",
        "capture.json",
        "capture.err",
        "boot",
    ):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    qmp_sock = out / "qmp.sock"
    console = out / "console.log"
    loaders: list[str] = []
    if handover is not None:
        sys.path.insert(0, str(SRC))
        from kho_formats.boot.load import load_fixture
        from kho_formats.boot.runner import client_cmdline, x86_handover

        fx = load_fixture(handover)
        (out / "boot").mkdir()
        ho = x86_handover(fx, kernel, out / "boot", mem)
        kernel, loaders = ho.kernel, ho.loaders
        params = f"{params} {client_cmdline(fx)}".strip()
    cmdline = (
        f"console=ttyS0 loglevel=4 kho=on {params} panic=-1 root=hostroot rootfstype=9p "
        "rootflags=trans=virtio,version=9p2000.L,msize=262144 ro "
        f"init={HERE / 'guest-init.sh'} KHO_PY={python} KHO_SRC={SRC} KHO_SIDE={side}"
    )
    qemu = [
        "qemu-system-x86_64",
        *accel(),
        "-m", mem,
        "-smp", "2",
        "-nographic",
        "-nodefaults",
        "-no-reboot",
        "-chardev", f"file,id=con,path={console}",
        "-serial", "chardev:con",
        "-qmp", f"unix:{qmp_sock},server=on,wait=off",
        "-fsdev", "local,id=root,path=/,security_model=none,readonly=on",
        "-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot",
        "-fsdev", f"local,id=out,path={out},security_model=none",
        "-device", "virtio-9p-pci,fsdev=out,mount_tag=out",
        "-kernel", str(kernel),
        "-append", cmdline,
        *loaders,
    ]  # fmt: skip
    proc = subprocess.Popen(qemu, stdout=subprocess.DEVNULL, stderr=open(out / "qemu.err", "wb"))
    try:
        qmp = Qmp(qmp_sock)
        text = wait_for(console, "KHO-LIVE-CAPTURED", timeout, proc)
        qmp.execute("stop")  # the moment of the capture: nothing in the guest runs from here
        qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{out / 'vmcore.elf'}")
        rc = text.split("KHO-LIVE-CAPTURED", 1)[1].split()[0]
        try:
            qmp.execute("quit")
        except (RuntimeError, OSError):
            pass
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if qmp_sock.exists():
            qmp_sock.unlink()
    if rc != "0":
        raise RuntimeError(f"kho capture failed in the guest (rc {rc}): {(out / 'capture.err').read_text()[-2000:]}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache = Path(os.environ.get("KHO_KERNEL_CACHE", Path.home() / ".cache" / "kho-formats"))
    ap.add_argument("--kernel", type=Path, default=cache / "linux-7.3-x86_64-live" / "bzImage")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--mem", default="1G")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument(
        "--params",
        default=DEFAULT_PARAMS,
        help=f"more kernel parameters (default {DEFAULT_PARAMS!r}; e.g. 'initcall_blacklist=kho_test_init' "
        "leaves kexec-metadata the only sub-tree)",
    )
    ap.add_argument(
        "--handover",
        type=Path,
        metavar="FIXTURE",
        help="boot on the receiving side of this x86_64 fixture (as kho boot hands it over)",
    )
    ap.add_argument(
        "--side", choices=("out", "in"), default="out", help="what kho capture --side captures in the guest"
    )
    args = ap.parse_args()
    run(
        args.kernel,
        args.out,
        mem=args.mem,
        timeout=args.timeout,
        params=args.params,
        handover=args.handover,
        side=args.side,
    )
    print(f"capture and dump in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
