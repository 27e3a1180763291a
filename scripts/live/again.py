#!/usr/bin/env python3
"""Two live updates in a row on a real kernel: kernel 1 (a cold boot) kexecs with KHO
into kernel 2, which is itself booted through KHO and kexecs into kernel 3.

    scripts/live/again.py --out DIR                       # run the chain, dump kernel 2's handover
    scripts/live/again.py --out DIR --fixture FIXDIR      # ... and write the small capture of it

QEMU pc (TCG, 1 GiB) boots the x86_64 kernel of scripts/live/build-kernel.sh with this
machine's root file system shared read-only over 9p (like scripts/live/run.py);
scripts/live/guest-again.sh is every kernel's /init: it copies debugfs ``kho/`` to
``DIR/gen<N>/debugfs-kho`` and kexecs (``kexec -s``, the host's kexec-tools) the same
kernel.  QEMU's gdbstub stops the VM on entry to ``machine_kexec()`` (the address from
the build's System.map; the live kernel has no KASLR): the first stop (kernel 1 to 2)
continues, the second (kernel 2 to 3) dumps the guest's memory with QMP
``dump-guest-memory`` as kernel 2 hands it over, then the run goes on into kernel 3.

Linux 7.3 creates ``kho/out/fdt`` only in a kernel that was not booted through KHO
(``kho_init()``), so ``DIR/gen2/debugfs-kho`` has ``in/`` (kernel 1's handover) and an
``out/`` without ``fdt``; kernel 2's own root FDT is in the dump, next to kernel 1's,
and ``DIR/gen3/debugfs-kho/in/fdt`` is what kernel 3 received: the answer.

DIR gets console.log, gen1/ gen2/ gen3/ (debugfs-kho, cmdline), vmcore-gen2.elf (1 GiB)
and result.json.  ``--fixture`` writes the capture kept in fixtures/captures/:
``debugfs/kho/{in,out}`` of kernel 2, ``image.elf`` (the pages kernel 2's handover
references and the preserved pages, as ``kho capture`` keeps them, plus the page of kernel
1's stale root FDT, still in kernel 2's memory), ``next-kernel-in-fdt`` (kernel 3's
``kho/in/fdt``), ``console.log`` and ``run.json`` (result.json of the run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(SRC))

from run import Qmp, accel  # noqa: E402
from stage1 import Gdb, wait_for  # noqa: E402

CACHE = Path(os.environ.get("KHO_KERNEL_CACHE") or Path.home() / ".cache" / "kho-formats")
KERNEL = CACHE / "linux-7.3-x86_64-live" / "bzImage"
DONE = "KHO-AGAIN-DONE"
FAILED = "KHO-AGAIN-FAILED"


def machine_kexec(kernel: Path, system_map: Path | None) -> int:
    for p in (system_map, kernel.with_name("System.map"), CACHE / "work/build-x86_64-live/System.map"):
        if p is not None and p.is_file():
            for line in p.read_text().splitlines():
                f = line.split()
                if len(f) >= 3 and f[2] == "machine_kexec":
                    return int(f[0], 16)
    raise SystemExit("again: no System.map naming machine_kexec (--system-map)")


def run(kernel: Path, out: Path, *, system_map: Path | None = None, timeout: float = 1200, mem: str = "1G") -> dict:
    """Run the chain into ``out``; returns result.json's contents."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("gen1", "gen2", "gen3", "vmcore-gen2.elf", "console.log", "result.json"):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    bp = machine_kexec(kernel, system_map)
    log = out / "console.log"
    work = out / ".sockets"
    work.mkdir(exist_ok=True)
    cmdline = (
        "console=ttyS0 loglevel=7 kho=on liveupdate=on panic=-1 root=hostroot rootfstype=9p "
        "rootflags=trans=virtio,version=9p2000.L,msize=262144 ro "
        f"init={HERE / 'guest-again.sh'} KHO_GEN=1 KHO_LAST=3 KHO_KERNEL={kernel.resolve()}"
    )
    qemu = [
        "qemu-system-x86_64", "-M", "pc", *accel(), "-m", mem, "-smp", "2",
        "-nographic", "-nodefaults", "-no-reboot",
        "-chardev", f"file,id=con,path={log}", "-serial", "chardev:con",
        "-qmp", f"unix:{work}/qmp.sock,server=on,wait=off",
        "-chardev", f"socket,id=gdb0,path={work}/gdb.sock,server=on,wait=off", "-gdb", "chardev:gdb0", "-S",
        "-fsdev", "local,id=root,path=/,security_model=none,readonly=on",
        "-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot",
        "-fsdev", f"local,id=out,path={out},security_model=none",
        "-device", "virtio-9p-pci,fsdev=out,mount_tag=out",
        "-kernel", str(kernel), "-append", cmdline,
    ]  # fmt: skip
    result: dict[str, object] = {"kernel": str(kernel), "machine_kexec": f"{bp:#x}"}
    t0 = time.monotonic()
    proc = subprocess.Popen(qemu, stdout=subprocess.DEVNULL, stderr=open(out / "qemu.err", "wb"))
    try:
        qmp = Qmp(work / "qmp.sock")
        gdb = Gdb(work / "gdb.sock")
        gdb.cmd(b"?")
        if gdb.cmd(b"Z0,%x,1" % bp) != b"OK":
            raise SystemExit("again: gdbstub refused the breakpoint")
        for gen in (1, 2):
            if gen > 1:  # step off the breakpoint (the stub would stop on it again at once), then set it again
                gdb.cmd(b"z0,%x,1" % bp)
                gdb.cmd(b"s")
                gdb.cmd(b"Z0,%x,1" % bp)
            gdb.send(b"c")
            stop = gdb.recv(timeout=timeout)
            seen = log.read_text(errors="replace") if log.exists() else ""
            result[f"kexec_{gen}_to_{gen + 1}"] = {"at": round(time.monotonic() - t0, 1), "stop": stop.decode()[:40]}
            if f"KHO-AGAIN-KEXEC gen={gen}" not in seen or f"KHO-AGAIN-BOOTED gen={gen + 1}" in seen:
                raise SystemExit(f"again: stopped at machine_kexec, but not in kernel {gen}'s kexec; console:\n{seen}")
            if gen == 2:
                qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{out / 'vmcore-gen2.elf'}")
                result["dumped"] = round(time.monotonic() - t0, 1)
        gdb.cmd(b"z0,%x,1" % bp)
        gdb.send(b"D")
        result["end"] = wait_for(log, (DONE, FAILED), timeout, proc)
        result["total"] = round(time.monotonic() - t0, 1)
        try:
            qmp.execute("quit")
        except (RuntimeError, OSError):
            pass
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    text = log.read_text(errors="replace")
    result["booted"] = [g for g in (1, 2, 3) if f"KHO-AGAIN-BOOTED gen={g}" in text]
    result["passed"] = result["end"] == DONE and result["booted"] == [1, 2, 3]
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def write_fixture(run_dir: Path, fixture: Path) -> list[str]:
    """The small capture of kernel 2's outgoing handover (see the module doc)."""
    import kho_formats
    from kho_formats.memory.image import PhysImage
    from kho_formats.ops import locate

    dbg = run_dir / "gen2" / "debugfs-kho"
    answer = (run_dir / "gen3" / "debugfs-kho" / "in" / "fdt").read_bytes()
    dump = PhysImage.from_elf(run_dir / "vmcore-gen2.elf")
    h = kho_formats.open(dbg, mem=[str(run_dir / "vmcore-gen2.elf")])
    if h.root_fdt[: len(answer)] != answer:
        raise SystemExit("again: the root FDT chosen is not the one kernel 3 received")
    keep = h.handover_image()
    # kernel 1's root FDT, still in kernel 2's memory: the candidate the reader must pass over
    stale_fdt = (dbg / "in" / "fdt").read_bytes()
    stale = [c.phys for c in locate.scan_root_fdts(dump) if dump.read(c.phys, len(stale_fdt)) == stale_fdt]
    page = 4096
    extra = PhysImage()
    for phys in stale:
        size = len(locate.read_fdt_at(dump, phys))
        start, end = phys // page * page, -(-(phys + size) // page) * page
        extra.add(start, dump.read(start, end - start))
    img = keep.merged(extra) if len(extra.covered()) else keep
    if fixture.exists():
        shutil.rmtree(fixture)
    (fixture / "debugfs").mkdir(parents=True)
    shutil.copytree(dbg, fixture / "debugfs" / "kho")
    for p in (fixture / "debugfs").rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)  # debugfs files are 0400
    (fixture / "image.elf").write_bytes(img.to_elf(machine="x86_64"))
    (fixture / "next-kernel-in-fdt").write_bytes(answer)
    shutil.copy(run_dir / "console.log", fixture / "console.log")
    shutil.copy(run_dir / "result.json", fixture / "run.json")
    return sorted(str(p.relative_to(fixture)) for p in fixture.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", type=Path, default=KERNEL)
    ap.add_argument("--system-map", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--fixture", type=Path, help="write the small capture of kernel 2's handover here")
    ap.add_argument("--no-run", action="store_true", help="only --fixture, from an earlier run in --out")
    args = ap.parse_args(argv)
    if not args.no_run:
        result = run(args.kernel, args.out, system_map=args.system_map, timeout=args.timeout)
        print(json.dumps(result, indent=1))
        if not result["passed"]:
            return 1
    if args.fixture:
        for f in write_fixture(args.out, args.fixture):
            print(f"wrote {args.fixture / f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
