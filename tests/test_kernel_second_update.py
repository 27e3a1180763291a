"""The second live update in a row, taken again on a real kernel: scripts/live/again.py boots
the x86_64 Linux 7.3 kernel of ``scripts/live/build-kernel.sh`` in QEMU (TCG, 1 GiB, this
machine's root over 9p), kexecs kernel 1 -> 2 -> 3 with KHO (the host's kexec-tools, run in
the guest) and dumps kernel 2's memory at ``machine_kexec()`` through QEMU's gdbstub.  Kernel 2
has debugfs ``kho/in`` and a ``kho/out`` without ``fdt``: reading that directory with the dump
must give the root FDT kernel 3 received (its ``kho/in/fdt``), and the small capture written
from it must hold what the shipped fixtures/captures/linux-7.3-x86_64-second-update holds.

Skipped (with the reason) when the kernel, qemu-system-x86_64, kexec or the build's
System.map is missing, or with ``KHO_BOOT_TESTS=0``.  About 15 s here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _kernel import x86_kernel, x86_missing

import kho_formats

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "fixtures" / "captures" / "linux-7.3-x86_64-second-update"


def _missing() -> str | None:
    why = x86_missing()
    if why is not None:
        return why
    if shutil.which("kexec") is None:
        return "kexec (kexec-tools) not on PATH: the guest runs the host's (apt-get install kexec-tools)"
    sys.path.insert(0, str(ROOT / "scripts" / "live"))
    try:
        from again import machine_kexec

        machine_kexec(x86_kernel(), None)
    except SystemExit as exc:
        return str(exc)
    finally:
        sys.path.pop(0)
    return None


pytestmark = [
    pytest.mark.kernel,
    pytest.mark.slow,
    pytest.mark.skipif(_missing() is not None, reason=_missing() or ""),
]


def test_two_updates_in_a_row_on_a_real_kernel(tmp_path: Path) -> None:
    run, fx = tmp_path / "run", tmp_path / "capture"
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "live" / "again.py"), "--kernel", str(x86_kernel())]
        + ["--out", str(run), "--fixture", str(fx)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["passed"] and result["booted"] == [1, 2, 3]
    dbg = run / "gen2" / "debugfs-kho"
    assert not (dbg / "out" / "fdt").exists() and (dbg / "in" / "fdt").is_file()  # what 7.3 gives kernel 2
    assert (run / "gen1" / "debugfs-kho" / "out" / "fdt").is_file()  # and kernel 1, cold-booted

    answer = (run / "gen3" / "debugfs-kho" / "in" / "fdt").read_bytes()
    h = kho_formats.open(dbg, mem=[str(run / "vmcore-gen2.elf")])
    assert h.root_fdt == answer
    choice = h.sources["root_fdt_choice"]
    assert choice["phys"] == h.root_fdt_phys
    assert [c["incoming"] for c in choice["candidates"]].count(True) == 1
    meta = h.clients["kexec-metadata"].decoded
    assert meta.kexec_count == 2

    small = kho_formats.open(fx)
    shipped = kho_formats.open(SHIPPED)
    assert small.root_fdt == answer and small.check().ok
    assert sorted(str(p.relative_to(fx)) for p in fx.rglob("*") if p.is_file()) == sorted(
        str(p.relative_to(SHIPPED)) for p in SHIPPED.rglob("*") if p.is_file()
    )
    assert [s.name for s in small.state.subblobs] == [s.name for s in shipped.state.subblobs]
    assert small.version == shipped.version and len(small.sources["root_fdt_candidates"]) == 2
    (run / "vmcore-gen2.elf").unlink()
