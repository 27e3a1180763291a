"""The kernel of Linux 7.3's own KHO selftest takes kho-built handovers.

``tools/testing/selftests/kho/vmtest.sh`` builds its kernel from its own config
fragment (``KEXEC_HANDOVER``, ``KEXEC_HANDOVER_DEBUG(FS)``,
``TEST_KEXEC_HANDOVER``, ``DEBUG_VM``, ``DEBUG_VM_PGFLAGS``,
``DEFERRED_STRUCT_PAGE_INIT``, ... plus ``arm64.conf``/``x86.conf``'s serial
console) and ``make olddefconfig``, boots it, kexecs it into itself and greps
the second kernel's log for ``KHO restore succeeded``.
``scripts/build-kho-selftest-kernel.sh`` runs vmtest.sh itself and keeps what
it built in ``~/.cache/kho-formats/linux-7.3-{arm64,x86_64}-kho-vmtest/``
(``Image``/``bzImage``, ``config``, ``vmtest.json``).  Here that kernel reads
kho-built fixtures with no first kernel (``kho boot``), judged by the same
line vmtest.sh greps and by ``kho boot``'s own verdict: the shipped kho_test
fixtures and a ``kho build`` one are accepted, a damaged one is rejected by
test_kho itself.

That kernel has ``CONFIG_KEXEC_FILE`` but not ``CONFIG_KEXEC`` (vmtest.sh's
init uses ``kexec_file_load``; ``olddefconfig`` leaves ``KEXEC`` off), so
``kho boot --via kexec``, whose first stage calls ``kexec_load(2)``, cannot run
on it: ``kho boot`` says so before booting.  Each kernel test is skipped, with
the reason, when that arch's kernel or QEMU is missing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from _kernel import (
    flip_folio_bit,
    folio_left_out,
    kho_v3_compatible,
    minimal_spec,
    minimal_spec_text,
    write_boot_fixture,
)

from kho_formats import boot
from kho_formats.cli import main
from kho_formats.errors import BootError
from kho_formats.model.spec import build_spec
from kho_formats.ops import target as tg

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
CACHE = Path(os.environ.get("KHO_KERNEL_CACHE") or Path.home() / ".cache" / "kho-formats")
IMAGE = {"arm64": "Image", "x86_64": "bzImage"}
QEMU = {"arm64": ("qemu-system-aarch64", "qemu-system-arm"), "x86_64": ("qemu-system-x86_64", "qemu-system-x86")}
#: the shipped kho_test fixture of each arch
SHIPPED = {"arm64": "v4-4k", "x86_64": "v4-4k-x86"}
#: what vmtest.sh greps in the second kernel's serial log (lib/test_kho.c)
RESTORED = "KHO restore succeeded"
#: vmtest.sh's fragment (its build_kernel()), then arm64.conf / x86.conf
FRAGMENT = (
    "BLK_DEV_INITRD",
    "KEXEC_HANDOVER",
    "KEXEC_HANDOVER_DEBUG",
    "KEXEC_HANDOVER_DEBUGFS",
    "TEST_KEXEC_HANDOVER",
    "DEBUG_KERNEL",
    "DEBUG_VM",
    "DEBUG_VM_PGFLAGS",
    "SMP",
    "DEFERRED_STRUCT_PAGE_INIT",
)
ARCH_FRAGMENT = {
    "arm64": ("SERIAL_AMBA_PL011", "SERIAL_AMBA_PL011_CONSOLE"),
    "x86_64": ("SERIAL_8250", "SERIAL_8250_CONSOLE"),
}


def vmtest_dir(arch: str) -> Path:
    return CACHE / f"linux-7.3-{arch}-kho-vmtest"


def vmtest_kernel(arch: str) -> Path:
    return vmtest_dir(arch) / IMAGE[arch]


def missing(arch: str, *, qemu: bool = True) -> str | None:
    if os.environ.get("KHO_BOOT_TESTS", "").strip().lower() in ("0", "false", "no", "off"):
        return "kernel boot tests disabled by KHO_BOOT_TESTS=0"
    if not vmtest_kernel(arch).is_file() or not (vmtest_dir(arch) / "config").is_file():
        return (
            f"no vmtest.sh kernel at {vmtest_kernel(arch)} (with its config): "
            f"build it with scripts/build-kho-selftest-kernel.sh {arch}"
        )
    binary, package = QEMU[arch]
    if qemu and shutil.which(binary) is None:
        return f"{binary} not on PATH (apt-get install {package})"
    return None


def arches(*, qemu: bool = True) -> list:
    return [
        pytest.param(
            a, id=a, marks=pytest.mark.skipif(missing(a, qemu=qemu) is not None, reason=missing(a, qemu=qemu) or "")
        )
        for a in IMAGE
    ]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def show(r: boot.BootResult) -> str:
    return f"{r.verdict}: {r.reason}\n" + "\n".join(r.kho_lines[-40:])


def boot_on(arch: str, fixture_dir: Path, **kw) -> boot.BootResult:
    r = boot.run_boot(fixture_dir, vmtest_kernel(arch), timeout=180, **kw)
    print(f"{fixture_dir.name} on the {arch} vmtest.sh kernel: {r.verdict} in {r.duration:.2f} s: {r.reason}")
    assert r.verdict != "error" and not r.timed_out, r.reason
    return r


# -- the kernel is the selftest's ------------------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("arch", arches(qemu=False))
def test_the_kernel_is_configured_as_vmtest_sh_configures_it(arch):
    """Every option of vmtest.sh's fragment and arch file is set; vmtest.sh itself passed on it."""
    opts = tg.parse_config((vmtest_dir(arch) / "config").read_text())
    assert [o for o in FRAGMENT + ARCH_FRAGMENT[arch] if opts.get(o) != "y"] == []
    assert opts.get("KEXEC_FILE") == "y" and "KEXEC" not in opts  # kexec_file_load only: no kexec_load(2)
    assert "LIVEUPDATE" not in opts
    run_json = json.loads((vmtest_dir(arch) / "vmtest.json").read_text())
    assert run_json["exit_status"] == 0 and run_json["result"] == "ok 1 KHO succeeded", run_json
    assert run_json["arch"] == arch


@pytest.mark.kernel
@pytest.mark.parametrize("arch", arches(qemu=False))
def test_its_config_reads_as_the_selftest_kho_profile(arch):
    t = tg.from_config(vmtest_dir(arch) / "config")
    p = tg.profile("selftest-kho")
    assert (t.arch, t.page_size, t.kho, t.kho_abi, t.liveupdate, t.handlers, t.handler_flbs, t.clients) == (
        arch,
        p.page_size,
        p.kho,
        p.kho_abi,
        p.liveupdate,
        p.handlers,
        p.handler_flbs,
        p.clients,
    )


# -- kho-built fixtures on it ----------------------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("arch", arches())
def test_the_shipped_kho_test_fixture_is_accepted(arch):
    r = boot_on(arch, FIXTURES / SHIPPED[arch])
    assert r.accepted, show(r)
    assert r.printed(f"test_kho: {RESTORED}"), show(r)
    assert r.clients.get("kho_test") == "ok", r.clients


@pytest.mark.kernel
@pytest.mark.parametrize("arch", arches())
def test_a_kho_built_fixture_is_accepted(arch, tmp_path):
    """``kho build`` of the minimal spec, then ``kho boot --json``: the CLI's own verdict."""
    spec = tmp_path / "minimal.toml"
    spec.write_text(minimal_spec_text(4096, arch))
    rc, _, err = run("build", str(spec), "-o", str(tmp_path / "fx"), "--target", "selftest-kho")
    assert rc == 0, err
    rc, out, err = run("boot", str(tmp_path / "fx"), "--kernel", str(vmtest_kernel(arch)), "--json")
    doc = json.loads(out)
    print(f"kho build fixture on the {arch} vmtest.sh kernel: {doc['verdict']}: {doc['reason']}")
    assert rc == 0 and doc["verdict"] == "accepted", (doc["reason"], err)
    assert f"test_kho: {RESTORED}" in doc["kho_lines"]


@pytest.mark.kernel
@pytest.mark.parametrize("arch", arches())
def test_a_flipped_folio_bit_is_rejected_by_test_kho(arch, tmp_path):
    """The negative control: one bit of the last kho_test folio flipped (its csum kept)."""
    fx, _ = flip_folio_bit(build_spec(minimal_spec(4096, arch)))
    r = boot_on(arch, write_boot_fixture(fx, tmp_path / "flipped"))
    assert not r.accepted and r.reason == "test_kho: KHO restore failed", show(r)
    assert not r.printed(RESTORED) and not r.printed("WARNING:")  # every folio restored; the csum differs


@pytest.mark.kernel
@pytest.mark.parametrize("arch", arches())
def test_a_folio_left_out_of_the_map_warns_under_debug_vm_as_without(arch, tmp_path, monkeypatch):
    """The order-1 kho_test folio left out of the preserved map: the same WARNING as on the
    project's non-DEBUG_VM kernels (kho_restore_page's magic check), then test_kho fails."""
    fx, _ = folio_left_out(monkeypatch, minimal_spec(4096, arch), 1)
    r = boot_on(arch, write_boot_fixture(fx, tmp_path / "left-out"))
    assert not r.accepted and r.reason.startswith(
        "kernel WARNING: WARNING: kernel/liveupdate/kexec_handover.c:529 at kho_restore_page"
    ), show(r)
    assert r.printed("test_kho: KHO restore failed") and r.printed("kho_restore_folio")


@pytest.mark.kernel
@pytest.mark.parametrize("arch", arches())
def test_a_kho_v3_root_is_refused(arch, tmp_path):
    fx = kho_v3_compatible(build_spec(minimal_spec(4096, arch)))
    r = boot_on(arch, write_boot_fixture(fx, tmp_path / "v3"))
    assert not r.accepted and "is incompatible with 'kho-v4': 1" in r.reason, show(r)
    assert r.printed("KHO: disabling KHO revival") and not r.printed(RESTORED)


@pytest.mark.kernel
@pytest.mark.skipif(missing("x86_64") is not None, reason=missing("x86_64") or "")
def test_via_kexec_is_refused_before_booting(tmp_path):
    """vmtest.sh's config has no CONFIG_KEXEC: kho boot's first stage could not call kexec_load(2)."""
    with pytest.raises(BootError, match=r"no CONFIG_KEXEC .*kexec_load"):
        boot.run_boot(FIXTURES / SHIPPED["x86_64"], vmtest_kernel("x86_64"), via="kexec", timeout=60)


# -- the profile (no kernel needed) --------------------------------------------------------------------------


def _codes(fixture: str, severities: tuple[str, ...] = ("error", "warning")) -> list[str]:
    """The ``target-*`` findings of ``kho check FIXTURE --target selftest-kho`` of these severities."""
    _, out, _ = run("check", str(FIXTURES / fixture), "--target", "selftest-kho", "--json")
    doc = json.loads(out)
    return [f["code"] for f in doc["findings"] if f["code"].startswith("target-") and f["severity"] in severities]


def test_the_profile_takes_the_4k_kho_test_fixtures_of_both_arches():
    assert _codes("v4-4k") == [] and _codes("v4-4k-x86") == []
    assert _codes("v4-4k-x86", ("info",)) == ["target-not-exercised"] * 2  # its notes and area0 sub-nodes


def test_the_profile_refuses_other_page_sizes_and_never_reads_luo_state():
    assert _codes("v4-16k") == ["target-page-size"] and _codes("v4-64k") == ["target-page-size"]
    assert _codes("v4-4k-luo") == ["target-luo"]
    assert _codes("v3-4k") == ["target-abi"]


def test_via_kexec_needs_config_kexec_when_the_kernels_config_says(tmp_path):
    from kho_formats.boot.runner import _check_kexec_load

    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"")
    _check_kexec_load(kernel)  # no config beside it: nothing known, the boot is tried
    (tmp_path / "config").write_text("CONFIG_KEXEC_CORE=y\nCONFIG_KEXEC_FILE=y\n# CONFIG_KEXEC is not set\n")
    with pytest.raises(BootError, match=r"has no CONFIG_KEXEC .* \(it has only kexec_file_load, CONFIG_KEXEC_FILE\)"):
        _check_kexec_load(kernel)
    (tmp_path / "config").write_text("CONFIG_KEXEC=y\nCONFIG_KEXEC_FILE=y\n")
    _check_kexec_load(kernel)
