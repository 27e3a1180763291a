"""The kernel's own liveupdate selftests as the judge of kho-built handovers.

Each test's stage 2 (``tools/testing/selftests/liveupdate/<test> -s 2``, built
by ``scripts/build-selftests.sh``) runs as the workload of the second kernel
(``kho boot FX --init PROGRAM -- -s 2``) on the handover of its spec in
``fixtures/specs/selftests/`` (what its stage 1 leaves), with no first
kernel.  Kernels:

* ``x86_64``: ``scripts/live/build-kernel.sh`` (``CONFIG_LIVEUPDATE_TEST=y``,
  as the selftests' config sets it), direct and through ``kexec_load``;
* ``arm64-luo``: ``KHO_KERNEL_LUO=1 scripts/build-kernel.sh`` (4 KiB, no
  ``LIVEUPDATE_TEST``);
* ``arm64-luo-test``: ``KHO_KERNEL_LUO_TEST=1 scripts/build-kernel.sh`` (4
  KiB, with ``LIVEUPDATE_TEST``).

On a ``LIVEUPDATE_TEST`` kernel every test FLB's ``finish()`` must run (its
count was exactly the number of files) and nothing may WARN.  The negative
controls are judged by the selftest itself (its ``Bail out!`` line is the
verdict's reason): one memfd byte changed, one session left out, the state
memfd holding stage 1, a kho-v3 root; and the shipped LUO fixture's single
test FLB on a ``LIVEUPDATE_TEST`` kernel (the refcount underflow WARNING
``kho check --target luo-test`` predicts).  Each is skipped, with the
reason, when its kernel, QEMU or the selftest programs are missing.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from _kernel import luo_kernel_image, luo_missing, write_boot_fixture, x86_kernel, x86_missing

from kho_formats import boot
from kho_formats.boot.workload import Workload
from kho_formats.model.fixture import Fixture
from kho_formats.model.spec import build_spec, spec_from_dict
from kho_formats.ops import target as tg

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "fixtures" / "specs" / "selftests"
TESTS = ("luo_kexec_simple", "luo_multi_session", "luo_stress_files", "luo_stress_sessions")
CACHE = Path(os.environ.get("KHO_KERNEL_CACHE") or Path.home() / ".cache" / "kho-formats")
#: what each test prints last when its stage 2 passed
PASSED = {
    "luo_kexec_simple": "--- SIMPLE KEXEC TEST PASSED ---",
    "luo_multi_session": "--- MULTI-SESSION KEXEC TEST PASSED ---",
    "luo_stress_files": "--- MANY-FILES KEXEC TEST PASSED (500 files) ---",
    "luo_stress_sessions": "--- MANY-SESSIONS KEXEC TEST PASSED (2000 sessions) ---",
}


def program(arch: str, test: str) -> Path:
    return CACHE / f"selftests-7.3-{arch}" / test


def luo_test_kernel() -> Path:
    env = os.environ.get("KHO_LUO_TEST_KERNEL")
    return Path(env).expanduser() if env else CACHE / "linux-7.3-arm64-4k-luo-test" / "Image"


def _arm64_luo_test_missing() -> str | None:
    why = luo_missing()
    if why is not None and "no LUO kernel" not in why:
        return why
    if not luo_test_kernel().is_file():
        return f"no LIVEUPDATE_TEST arm64 kernel at {luo_test_kernel()}: KHO_KERNEL_LUO_TEST=1 scripts/build-kernel.sh"
    return None


#: target -> (arch, kernel, why it cannot run, LIVEUPDATE_TEST)
TARGETS = {
    "x86_64": ("x86_64", x86_kernel, lambda: x86_missing(compiler=True), True),
    "arm64-luo": ("arm64", luo_kernel_image, luo_missing, False),
    "arm64-luo-test": ("arm64", luo_test_kernel, _arm64_luo_test_missing, True),
}


def _why(target: str, test: str) -> str | None:
    arch, _, missing, _ = TARGETS[target]
    why = missing()
    if why is None and not program(arch, test).is_file():
        why = f"no selftest program {program(arch, test)}: run scripts/build-selftests.sh"
    return why


def params(targets=tuple(TARGETS), tests=TESTS) -> list:
    out = []
    for t in targets:
        for test in tests:
            why = _why(t, test)
            out.append(
                pytest.param(t, test, id=f"{t}-{test}", marks=pytest.mark.skipif(why is not None, reason=why or ""))
            )
    return out


def selftest_dict(test: str) -> dict:
    return tomllib.loads((SPECS / f"{test}.toml").read_text())


def fixture(d: dict, arch: str) -> Fixture:
    sp = spec_from_dict(d, name=d.get("name", "selftest"))
    sp.arch = arch
    return build_spec(sp)


def stage2(fx: Fixture, tmp_path: Path, target: str, test: str, name: str, **kw) -> boot.BootResult:
    arch, kernel, _, _ = TARGETS[target]
    d = write_boot_fixture(fx, tmp_path / name)
    r = boot.run_boot(d, kernel(), timeout=240, workload=Workload(program(arch, test), ("-s", "2")), **kw)
    print(f"{name} on {target}: {r.verdict} in {r.duration:.2f} s: {r.reason}")
    assert r.verdict != "error", r.reason
    assert not r.timed_out, r.reason
    return r


def show(r: boot.BootResult) -> str:
    return f"{r.verdict}: {r.reason}\n" + "\n".join(r.kho_lines[-40:])


def _recount(d: dict) -> dict:
    """The FLB counts of ``d`` set to its number of files (after a control removed some)."""
    luo = d["blob"][0]
    n = sum(len(s["files"]) for s in luo["sessions"])
    for f in luo["flbs"]:
        f["count"] = n
    return d


@pytest.mark.parametrize(("target", "test"), params())
def test_stage_2_passes(target, test, tmp_path):
    arch, _, _, luo_test = TARGETS[target]
    r = stage2(fixture(selftest_dict(test), arch), tmp_path, target, test, test)
    assert r.accepted, show(r)
    assert PASSED[test] in r.log
    if luo_test:  # every test FLB's count was exact: each one's finish() ran, nothing underflowed
        for i in range(3):
            assert f"liveupdate-test-flb-v{i}: finish was triggered" in r.log, show(r)


@pytest.mark.parametrize(("target", "test"), params(("x86_64",), ("luo_kexec_simple", "luo_multi_session")))
def test_stage_2_passes_through_kexec(target, test, tmp_path):
    r = stage2(fixture(selftest_dict(test), "x86_64"), tmp_path, target, test, test, via="kexec")
    assert r.accepted, show(r)
    assert PASSED[test] in r.log and "kexec_core: Starting new kernel" in r.log


# -- negative controls: the selftest's own verdict ------------------------------------------------------------

CONTROL_TARGETS = ("x86_64", "arm64-luo", "arm64-luo-test")


@pytest.mark.parametrize(("target", "test"), params(CONTROL_TARGETS, ("luo_kexec_simple",)))
def test_one_memfd_byte_changed(target, test, tmp_path):
    d = selftest_dict(test)
    f = d["blob"][0]["sessions"][1]["files"][0]
    f["hex"] = "68656c6c70" + f["hex"][10:]  # "hello" -> "hellp"
    r = stage2(fixture(d, TARGETS[target][0]), tmp_path, target, test, "byte-changed")
    assert not r.accepted
    assert "Data mismatch! Expected 'hello kexec world', Got 'hellp kexec world'" in r.log
    assert "Bail out! [run_stage_2:" in r.reason and "restore_and_verify_memfd for token 0x1a" in r.reason, show(r)


@pytest.mark.parametrize(("target", "test"), params(CONTROL_TARGETS, ("luo_multi_session",)))
def test_one_session_left_out(target, test, tmp_path):
    d = selftest_dict(test)
    sessions = d["blob"][0]["sessions"]
    sessions[:] = [s for s in sessions if s["name"] != "multi-test-empty-2"]
    r = stage2(fixture(_recount(d), TARGETS[target][0]), tmp_path, target, test, "session-left-out")
    assert not r.accepted
    assert "Bail out! [run_stage_2:" in r.reason and "luo_retrieve_session for 'multi-test-empty-2'" in r.reason, show(
        r
    )


@pytest.mark.parametrize(("target", "test"), params(CONTROL_TARGETS, ("luo_kexec_simple",)))
def test_state_memfd_holding_stage_1(target, test, tmp_path):
    d = selftest_dict(test)
    d["blob"][0]["sessions"][0]["files"][0]["hex"] = "31"  # "1"
    r = stage2(fixture(d, TARGETS[target][0]), tmp_path, target, test, "stage-1")
    assert not r.accepted
    assert "Bail out! [run_stage_2:" in r.reason and "Expected stage 2, but state file contains 1" in r.reason, show(r)


@pytest.mark.parametrize(("target", "test"), params(CONTROL_TARGETS, ("luo_kexec_simple",)))
def test_kho_v3_root(target, test, tmp_path):
    d = selftest_dict(test)
    fx = fixture(d, TARGETS[target][0])
    assert fx.root_fdt.count(b"kho-v4\0") == 1
    fdt = fx.root_fdt.replace(b"kho-v4\0", b"kho-v3\0")
    image = fx.image.copy()
    image.write(fx.fdt_phys, fdt)
    r = stage2(dataclasses.replace(fx, root_fdt=fdt, image=image), tmp_path, target, test, "kho-v3")
    assert not r.accepted
    assert "incompatible with 'kho-v4'" in r.reason
    # the kernel kept no LUO state: the selftest finds no state session and says so itself
    assert "Bail out! Stage mismatch Requested stage 2, but system is in stage 1." in r.reason, show(r)


@pytest.mark.parametrize(("target", "test"), params(("x86_64", "arm64-luo-test"), ("luo_kexec_simple",)))
def test_one_test_flb_on_a_liveupdate_test_kernel(target, test, tmp_path):
    """The shipped fixtures' FLBs (v0 only): the selftest passes, the kernel WARNs
    (refcount underflow of v1 and v2), and ``kho check --target luo-test`` said so."""
    d = selftest_dict(test)
    d["blob"][0]["flbs"] = d["blob"][0]["flbs"][:1]
    fx = fixture(d, TARGETS[target][0])
    predicted = [f.code for f in tg.built_findings(fx, tg.profile("luo-test"))]
    assert predicted == ["target-flb-missing", "target-flb-missing"]
    r = stage2(fx, tmp_path, target, test, "one-flb")
    assert not r.accepted and "kernel WARNING" in r.reason, show(r)
    assert "liveupdate_flb_put_incoming" in r.log
    assert PASSED[test] in r.log  # the selftest itself saw nothing wrong
