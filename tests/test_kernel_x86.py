"""Kernel in the loop on x86_64 (issue 13, deliverable 3): fixtures built here
are handed to the real x86_64 Linux 7.3 kernel of ``scripts/live/build-kernel.sh``
(KHO, test_kho, LUO and memfd built in) under QEMU pc, through a
``SETUP_KEXEC_KHO`` setup_data entry that a patched copy of the bzImage's setup
header names (``kho_formats/boot/x86.py``), and must be accepted or rejected
as expected.

Skipped, naming what is missing, without the bzImage
(``$KHO_X86_KERNEL`` or ``~/.cache/kho-formats/linux-7.3-x86_64-live/bzImage``)
or ``qemu-system-x86_64``; ``KHO_BOOT_TESTS=0`` forces the skip.

The arm64 kernel specs are reused: ``relocated`` moves a spec's free memory
and scratch area above the x86 kernel (decompressed at 16 MiB) into QEMU pc's
1 GiB of RAM; the x86 spec ``fixtures/specs/kernel/x86.toml`` has its own
memblock region.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from _kernel import (
    boot_fixture,
    flip_folio_bit,
    folio_left_out,
    kho_test_of,
    kho_v3_compatible,
    minimal_spec,
    write_boot_fixture,
    x86_kernel,
    x86_missing,
)
from test_kernel_boot import FAILED, OK

from kho_formats import boot
from kho_formats.model.clients import decode_clients, luo
from kho_formats.model.clients.luo import boot as luo_boot
from kho_formats.model.fixture import Fixture
from kho_formats.model.spec import Spec, build_spec, load_spec

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SPECS = FIXTURES / "specs" / "kernel"
TIMEOUT = 60
#: what fixtures/v4-4k-x86's clients report on this kernel (notes and area0 have no kernel client)
SHIPPED_CLIENTS = {
    "kho_test": "ok",
    "memblock": "ok",
    "kexec-metadata": "ok",
    "notes": "not-exercised",
    "area0": "not-exercised",
}


pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(x86_missing(compiler=True) is not None, reason=x86_missing(compiler=True) or ""),
]


def relocated(sp: Spec) -> Spec:
    """``sp`` as an x86_64 fixture whose placements sit in QEMU pc RAM, clear of the kernel."""
    return dataclasses.replace(
        sp, arch="x86_64", root_fdt_phys=None, alloc=[(0x2000_0000, 16 << 20)], scratch=[(0x2800_0000, 128 << 20)]
    )


def run(fx: Fixture, tmp_path: Path, name: str, **kw) -> boot.BootResult:
    return boot_fixture(fx, tmp_path, name, x86_kernel(), timeout=TIMEOUT, **kw)


def show(r: boot.BootResult) -> str:
    return f"{r.verdict}: {r.reason} ({r.duration:.1f} s)\n" + "\n".join(r.kho_lines[-60:])


def build_x86() -> Fixture:
    return build_spec(load_spec(SPECS / "x86.toml"))


def build_luo() -> Fixture:
    """The arm64 LUO spec on x86_64.  This kernel also has CONFIG_LIVEUPDATE_TEST,
    which attaches three test FLBs (``liveupdate-test-flb-v0..2``, data
    ``0xfeedf00dcafebee0 + i``) to every file handler: each preserved file
    holds one reference on each, so the incoming ``count`` must be the number
    of files (a count of 3 with 68 memfds underflows the refcount: a WARNING
    in ``liveupdate_flb_put_incoming`` as the files finish)."""
    sp = relocated(load_spec(SPECS / "luo.toml"))
    blob = next(b for b in sp.blobs if b.type == "LUO")
    params: luo.LuoParams = blob.params
    nfiles = sum(len(s.files) for s in params.sessions)
    flbs = tuple(luo.LuoFlbSpec(f"liveupdate-test-flb-v{i}", 0xFEEDF00DCAFEBEE0 + i, nfiles) for i in range(3))
    blob.params = dataclasses.replace(params, flbs=flbs)
    return build_spec(sp)


# -- accepted -------------------------------------------------------------------------


def test_x86_fixture_accepted_through_setup_data(tmp_path):
    fx = build_x86()
    kernel = x86_kernel()
    before = kernel.read_bytes()
    r = run(fx, tmp_path, "x86")
    assert r.accepted, show(r)
    assert r.clients == {"kho_test": "ok", "memblock": "ok", "kexec-metadata": "ok"}, show(r)
    assert boot.FOUND in r.kho_lines and OK in r.kho_lines
    assert "Revived memory reservation 'trace_buf' from KHO" in r.kho_lines
    assert "KHO: exec from: 7.3.4-kho-formats (count 7)" in r.kho_lines
    # QEMU booted the patched copy, and the kernel it was given is unchanged
    assert kernel.read_bytes() == before and str(kernel) not in r.qemu_cmd
    assert r.duration < 10, show(r)


def test_shipped_x86_fixture_accepted():
    r = boot.run_boot(FIXTURES / "v4-4k-x86", x86_kernel(), timeout=TIMEOUT)
    assert r.accepted, show(r)
    assert r.clients == SHIPPED_CLIENTS


def test_orders_0_to_10_accepted_on_x86(tmp_path):
    fx = build_spec(relocated(load_spec(SPECS / "orders-0-10.toml")))
    assert sorted(o for _, o in kho_test_of(fx).folios) == list(range(11))
    r = run(fx, tmp_path, "orders")
    assert r.accepted, show(r)
    assert r.clients == {"kho_test": "ok"}


def test_cold_boot_finds_no_handover(tmp_path):
    r = boot.run_boot(None, x86_kernel(), timeout=TIMEOUT)
    assert r.accepted, show(r)
    assert boot.FOUND not in r.log


def test_luo_restored_on_x86_every_byte_equal(tmp_path):
    fx = build_luo()
    r = run(fx, tmp_path, "luo")
    assert r.accepted, show(r)
    assert r.clients["LUO"] == "ok"
    out = luo_boot.parse_check_output(r.log.splitlines())
    assert len(out.files) == 68 and not any("err" in kv for kv in out.files.values())
    for i in range(3):
        assert f"liveupdate test: liveupdate-test-flb-v{i}: found flb data from the previous boot" in r.kho_lines
    assert r.duration < 10, show(r)


def test_minimal_spec_with_default_placement_accepted(tmp_path):
    """Every placement left to the spec's x86_64 defaults (alloc at 512 MiB, scratch at 640 MiB)."""
    sp = minimal_spec(4096, arch="x86_64")
    assert sp.alloc is None and sp.scratch is None and sp.root_fdt_phys is None
    fx = build_spec(sp)
    r = run(fx, tmp_path, "minimal")
    assert r.accepted, show(r)
    assert r.clients == {"kho_test": "ok"}


# -- rejected -------------------------------------------------------------------------


def test_flipped_bit_in_a_kho_test_folio_rejected(tmp_path):
    fx, _ = flip_folio_bit(build_x86())
    r = run(fx, tmp_path, "flip")
    assert r.verdict == "rejected", show(r)
    assert r.clients["kho_test"] == "failed" and FAILED in r.reason


def test_folio_left_out_of_the_map_rejected(tmp_path, monkeypatch):
    fx, _ = folio_left_out(monkeypatch, load_spec(SPECS / "x86.toml"), order=3)
    r = run(fx, tmp_path, "left-out")
    assert r.verdict == "rejected", show(r)
    assert r.clients["kho_test"] == "failed" and FAILED in r.reason
    assert any(l.startswith("WARNING:") and "kexec_handover.c" in l for l in r.kho_lines), show(r)


def test_kho_v3_compatible_rejected(tmp_path):
    r = run(kho_v3_compatible(build_x86()), tmp_path, "v3")
    assert r.verdict == "rejected", show(r)
    assert "is incompatible with 'kho-v4'" in r.reason
    assert boot.FOUND not in r.log and OK not in r.log


def test_flipped_bit_in_a_memfd_folio_is_a_content_mismatch_on_x86(tmp_path):
    fx = build_luo()
    st = decode_clients(fx.state, fx.image)["LUO"].decoded
    assert isinstance(st, luo.LuoState)
    intact = luo_boot.luo_truth(st, fx.image, 4096)
    big = next(f for _, f in st.files() if f.token == 0xFFFFFFFFFFFFFFFF).decoded
    victim = int(big.phys[1]) + 0x12345
    image = fx.image.copy()
    image.write(victim, bytes([fx.image.read(victim, 1)[0] ^ 0x10]))
    r = run(dataclasses.replace(fx, image=image), tmp_path, "luo-flip", truths={"LUO": intact})
    assert r.verdict == "rejected", show(r)
    assert "LUO session 'vm-a' file token 0xffffffffffffffff: content mismatch" in r.reason, show(r)


# -- through kexec_load(2) from a first-stage kernel ------------------------------------------------


def _no_kexec_load() -> str | None:
    config = x86_kernel().parent / "config"
    if config.is_file() and "CONFIG_KEXEC=y" not in config.read_text().splitlines():
        return f"{x86_kernel()} has no CONFIG_KEXEC (kexec_load): rebuild it with scripts/live/build-kernel.sh"
    return None


requires_kexec_load = pytest.mark.skipif(_no_kexec_load() is not None, reason=_no_kexec_load() or "")


def _kexec(fx_dir: Path, **kw) -> boot.BootResult:
    r = boot.run_boot(fx_dir, x86_kernel(), timeout=TIMEOUT, via="kexec", **kw)
    print(f"kexec boot {fx_dir.name}: {r.verdict} in {r.duration:.2f} s: {r.reason}")
    assert r.verdict != "error", r.reason
    assert not r.timed_out, r.reason
    return r


@requires_kexec_load
def test_shipped_x86_fixture_accepted_through_kexec_load():
    r = _kexec(FIXTURES / "v4-4k-x86")
    assert r.accepted, show(r)
    assert r.clients == SHIPPED_CLIENTS
    # the first kernel loaded the segments and jumped; the verdict is the second kernel's
    first, _, second = r.log.partition("kexec_core: Starting new kernel")
    assert "KEXECLOAD loaded" in first and boot.FOUND not in first
    assert boot.FOUND in second and "test_kho: KHO restore succeeded" in second
    assert re.search(r"KEXECLOAD e820 entries=[1-9]", first)  # the zero page carries the first kernel's e820
    assert r.duration < 10, show(r)


@requires_kexec_load
def test_kho_v3_compatible_rejected_through_kexec_load(tmp_path):
    d = write_boot_fixture(kho_v3_compatible(build_x86()), tmp_path / "v3")
    r = _kexec(d)
    assert r.verdict == "rejected", show(r)
    assert "is incompatible with 'kho-v4'" in r.reason


@requires_kexec_load
def test_flipped_folio_bit_rejected_through_kexec_load(tmp_path):
    fx, _ = flip_folio_bit(build_x86())
    r = _kexec(write_boot_fixture(fx, tmp_path / "flip"))
    assert r.verdict == "rejected", show(r)
    assert r.clients["kho_test"] == "failed" and FAILED in r.reason


@requires_kexec_load
def test_luo_restored_through_kexec_load_every_byte_equal(tmp_path):
    """The live-update flow itself: the first kernel kexec_load()s the second with
    the LUO handover and the luo_check initramfs (ramdisk fields of the zero page)."""
    r = _kexec(write_boot_fixture(build_luo(), tmp_path / "luo"))
    assert r.accepted, show(r)
    assert r.clients["LUO"] == "ok"
    first, _, second = r.log.partition("kexec_core: Starting new kernel")
    assert "/kexec/initrd" in first and "LUOCHECK end sessions=2 files=68 errors=0" in second
