#!/usr/bin/env python3
"""A fixture-driven KHO boot against Linux 7.3's own KHO selftest run, on the same kernel.

    python benchmarks/kho_selftest.py [--arch arm64|x86_64]... [--runs N] [--json out.json]

For each arch, interleaved, ``--runs`` times each (default 3):

* **vmtest.sh**: ``KHO_KERNEL_REBUILD=1 scripts/build-kho-selftest-kernel.sh ARCH``, i.e.
  ``tools/testing/selftests/kho/vmtest.sh`` itself on its already built tree: its
  ``olddefconfig`` + ``make`` with nothing to do + ``headers_install``, its initrd (init.c
  compiled, ``gen_init_cpio``), then QEMU booting the kernel, which kexecs itself through
  ``kexec_file_load`` and the second kernel greps ``KHO restore succeeded``.  Timed: the
  whole vmtest.sh run and its QEMU run alone (``vmtest.json``: the script's PATH wrapper
  around QEMU), both wall clock.
* **kho boot**: ``kho boot FIXTURE --kernel`` that same kernel (the shipped kho_test
  fixture of the arch: ``fixtures/v4-4k`` / ``fixtures/v4-4k-x86``) as a subprocess.  Timed:
  the whole command (Python start-up, planning, the boot DTB or patched bzImage, QEMU) and
  its QEMU run alone (``BootResult.duration`` from ``kho_formats.boot.run_boot`` in a second,
  in-process run right after).

Both QEMU runs are TCG (the script hides ``/dev/kvm`` from vmtest.sh; ``kho boot`` never asks
for KVM).  Printed: min / median / max of each, the load average around each run, and the
ratio of the medians (kho boot / vmtest.sh).  Waits while another vmtest.sh is running.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("KHO_KERNEL_CACHE") or Path.home() / ".cache" / "kho-formats")
IMAGE = {"arm64": "Image", "x86_64": "bzImage"}
FIXTURE = {"arm64": ROOT / "fixtures" / "v4-4k", "x86_64": ROOT / "fixtures" / "v4-4k-x86"}


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_other_vmtests() -> None:
    while subprocess.run(["pgrep", "-f", "vmtest.sh"], capture_output=True).returncode == 0:
        time.sleep(5)


def vmtest_run(arch: str) -> dict:
    wait_for_other_vmtests()
    env = dict(os.environ, KHO_KERNEL_REBUILD="1")
    t0, l0 = time.monotonic(), loadavg()
    p = subprocess.run(
        [str(ROOT / "scripts" / "build-kho-selftest-kernel.sh"), arch], env=env, capture_output=True, text=True
    )
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"vmtest.sh failed on {arch}: {p.stderr.strip()[-400:]}")
    doc = json.loads((CACHE / f"linux-7.3-{arch}-kho-vmtest" / "vmtest.json").read_text())
    return {"wall": doc["vmtest_seconds"], "qemu": doc["qemu_seconds"], "load": (l0, loadavg()), "outer": wall}


def kho_boot_run(arch: str) -> dict:
    kernel = CACHE / f"linux-7.3-{arch}-kho-vmtest" / IMAGE[arch]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0, l0 = time.monotonic(), loadavg()
    p = subprocess.run(
        [sys.executable, "-m", "kho_formats.cli", "boot", str(FIXTURE[arch]), "--kernel", str(kernel), "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - t0
    doc = json.loads(p.stdout)
    if doc.get("verdict") != "accepted":
        raise SystemExit(f"kho boot on {arch}: {doc.get('verdict')}: {doc.get('reason')}")
    sys.path.insert(0, str(ROOT))
    from kho_formats import boot

    r = boot.run_boot(FIXTURE[arch], kernel, timeout=300)
    if not r.accepted or "KHO restore succeeded" not in r.log:
        raise SystemExit(f"kho boot (in process) on {arch}: {r.verdict}: {r.reason}")
    return {"wall": wall, "qemu": r.duration, "load": (l0, loadavg())}


def stats(xs: list[float]) -> tuple[float, float, float]:
    return min(xs), statistics.median(xs), max(xs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", choices=sorted(IMAGE))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    out: dict = {}
    for arch in args.arch or sorted(IMAGE):
        if not (CACHE / f"linux-7.3-{arch}-kho-vmtest" / IMAGE[arch]).is_file():
            print(f"{arch}: no vmtest.sh kernel: scripts/build-kho-selftest-kernel.sh {arch}", file=sys.stderr)
            continue
        runs: dict[str, list[dict]] = {"vmtest.sh": [], "kho boot": []}
        for i in range(args.runs):
            runs["vmtest.sh"].append(vmtest_run(arch))
            runs["kho boot"].append(kho_boot_run(arch))
            print(f"{arch} run {i + 1}: vmtest.sh {runs['vmtest.sh'][-1]}, kho boot {runs['kho boot'][-1]}", flush=True)
        out[arch] = runs
        print(f"\n{arch} ({args.runs} runs each, interleaved)")
        print(f"{'':12} {'wall min/median/max (s)':>26} {'QEMU min/median/max (s)':>26}")
        med = {}
        for what, rs in runs.items():
            w, q = stats([r["wall"] for r in rs]), stats([r["qemu"] for r in rs])
            med[what] = (w[1], q[1])
            print(f"{what:12} {'/'.join(f'{x:.2f}' for x in w):>26} {'/'.join(f'{x:.2f}' for x in q):>26}")
        loads = [x for rs in runs.values() for r in rs for x in r["load"]]
        print(f"load average (1 min) around the runs: {min(loads):.2f}-{max(loads):.2f}")
        print(
            f"ratio of medians, kho boot / vmtest.sh: wall {med['kho boot'][0] / med['vmtest.sh'][0]:.2f}, "
            f"QEMU {med['kho boot'][1] / med['vmtest.sh'][1]:.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
