"""Live capture on a real kernel (issue 14, deliverable 5): boot the x86_64 Linux 7.3 kernel of
``scripts/live/build-kernel.sh`` (the LUO capture kernel plus /proc/kcore and a 9p root) in
QEMU with this machine's root file system shared read-only, run ``kho capture -o DIR`` inside,
stop the VM right after and dump its memory (``scripts/live/run.py``); the capture must parse
to the same handover as the dump with the debugfs copy taken in the guest: version, root FDT
address and bytes, preserved set, sub-blobs, decoded clients.

Skipped (with the reason) when the kernel or qemu-system-x86_64 is missing, or with
``KHO_BOOT_TESTS=0``. About 25 s here (QEMU TCG, 1 GiB guest).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _kernel import x86_kernel, x86_missing

from kho_formats.model.clients import decode_clients
from kho_formats.ops.capture import load_capture, parse_capture

ROOT = Path(__file__).resolve().parents[1]
KERNEL = x86_kernel()


pytestmark = [
    pytest.mark.kernel,
    pytest.mark.slow,
    pytest.mark.skipif(x86_missing() is not None, reason=x86_missing() or ""),
]


def _state(path: Path, mem: list[str] | None = None) -> dict:
    cap = load_capture(path, mem or [])
    st = parse_capture(cap)
    assert cap.image is not None
    reps = decode_clients(st, cap.image)
    return {
        "version": st.version,
        "root_fdt_phys": st.root_fdt_phys,
        "root_fdt": cap.root_fdt,
        "preserved": st.preserved,
        "subblobs": [(s.name, s.phys, s.size, bytes(s.data or b"")) for s in st.subblobs],
        "clients": {
            n: (r.error is None, r.client.to_json(r.decoded) if r.decoded is not None and r.client else None)
            for n, r in reps.items()
        },
    }


def test_live_capture_in_qemu_matches_a_dump_taken_at_the_same_moment(tmp_path: Path) -> None:
    out = tmp_path / "live"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "live" / "run.py"), "--kernel", str(KERNEL), "--out", str(out)],
        check=True,
        timeout=1800,
    )
    summary = json.loads((out / "capture.json").read_text())
    meta = json.loads((out / "capture" / "meta.json").read_text())
    assert meta["live"]["side"] == "out" and meta["arch"] == "x86_64"
    fdt = (out / "debugfs-kho" / "out" / "fdt").read_bytes()
    live = _state(out / "capture")
    dumped = _state(out / "debugfs-kho", [str(out / "vmcore.elf")])
    assert live == dumped, summary
    assert live["root_fdt"][: len(fdt)] == fdt
    assert live["subblobs"] and live["preserved"].num_pages > 0


def test_live_capture_on_the_receiving_side_of_a_fixture(tmp_path: Path) -> None:
    """Boot the kernel on the receiving side of fixtures/v4-4k-x86 (handed over as
    ``kho boot`` does: a SETUP_KEXEC_KHO setup_data entry) and run ``kho capture
    --side in`` in it.  What the kernel shows of the handover it received is the
    fixture's: the setup_data entry, the root FDT at its address, the sub-blobs.
    The memory map is not captured: that kernel released its pages after reading
    them (before this fix the capture failed parsing the reused pages)."""
    fixture = ROOT / "fixtures" / "v4-4k-x86"
    out = tmp_path / "in"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "live" / "run.py"), "--kernel", str(KERNEL), "--out", str(out)]
        + ["--handover", str(fixture), "--side", "in", "--params", ""],
        check=True,
        timeout=1800,
    )
    handover = json.loads((fixture / "handover.json").read_text())
    # the kernel saw our setup_data entry (sysfs shows type 10 and its kho_data payload)
    sd = out / "boot_params" / "setup_data"
    (entry,) = [e for e in sd.iterdir() if int((e / "type").read_text().strip(), 0) == 10]
    assert (entry / "data").read_bytes() == (out / "boot" / "setup_data.bin").read_bytes()[16:]
    meta = json.loads((out / "capture" / "meta.json").read_text())
    assert meta["live"]["side"] == "in" and meta["received"] is True
    assert "SETUP_KEXEC_KHO" in (meta["live"]["boot_info"] or ""), meta["live"]  # found through setup_data
    assert meta["root_fdt_phys"] == handover["fdt_phys"]
    assert (out / "capture" / "root.dtb").read_bytes() == (fixture / "root.dtb").read_bytes()
    cap = load_capture(out / "capture")
    st = parse_capture(cap)
    assert st.map_released and not st.map_read
    sent = parse_capture(load_capture(fixture))
    assert [(s.name, s.phys, s.size) for s in st.subblobs] == [(s.name, s.phys, s.size) for s in sent.subblobs]
    got = {s.name: bytes(s.data) for s in st.subblobs if s.data is not None}
    for name in ("memblock", "kexec-metadata"):  # still held by the kernel that restored them
        assert got[name] == bytes(next(s for s in sent.subblobs if s.name == name).data), name
