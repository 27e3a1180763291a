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
  KiB, with ``LIVEUPDATE_TEST``);
* ``arm64-16k-luo-test``, ``arm64-64k-luo-test``: the same at 16 and 64 KiB
  pages (``KHO_KERNEL_PAGE_SIZE=16K|64K KHO_KERNEL_LUO_TEST=1
  scripts/build-kernel.sh``), for ``luo_kexec_simple`` and
  ``luo_multi_session``: the spec at that page size
  (``scripts/gen_selftest_specs.py``'s ``render(t, page_size)``: each memfd
  one page of ``getpagesize()`` bytes, as ``lu_utils.c`` makes it).

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
import importlib.util
import os
import sys
from collections.abc import Callable
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


def luo_test_kernel(page_size: int = 4096) -> Path:
    env = os.environ.get("KHO_LUO_TEST_KERNEL") if page_size == 4096 else None
    if env:
        return Path(env).expanduser()
    return CACHE / f"linux-7.3-arm64-{page_size // 1024}k-luo-test" / "Image"


def _arm64_luo_test_missing(page_size: int = 4096) -> str | None:
    why = luo_missing()
    if why is not None and "no LUO kernel" not in why:
        return why
    if not luo_test_kernel(page_size).is_file():
        how = "" if page_size == 4096 else f"KHO_KERNEL_PAGE_SIZE={page_size // 1024}K "
        return (
            f"no LIVEUPDATE_TEST arm64 kernel at {luo_test_kernel(page_size)}:"
            f" {how}KHO_KERNEL_LUO_TEST=1 scripts/build-kernel.sh"
        )
    return None


@dataclasses.dataclass(frozen=True)
class Target:
    arch: str
    kernel: Callable[[], Path]
    #: why it cannot run here, or None
    missing: Callable[[], str | None]
    #: the kernel has CONFIG_LIVEUPDATE_TEST (the three test FLBs)
    luo_test: bool
    page_size: int = 4096


TARGETS = {
    "x86_64": Target("x86_64", x86_kernel, lambda: x86_missing(compiler=True), True),
    "arm64-luo": Target("arm64", luo_kernel_image, luo_missing, False),
    "arm64-luo-test": Target("arm64", luo_test_kernel, _arm64_luo_test_missing, True),
    "arm64-16k-luo-test": Target(
        "arm64", lambda: luo_test_kernel(16384), lambda: _arm64_luo_test_missing(16384), True, 16384
    ),
    "arm64-64k-luo-test": Target(
        "arm64", lambda: luo_test_kernel(65536), lambda: _arm64_luo_test_missing(65536), True, 65536
    ),
}
#: the targets every test runs on; the 16/64 KiB ones run the two small tests
FOUR_K = ("x86_64", "arm64-luo", "arm64-luo-test")
LARGE_PAGES = ("arm64-16k-luo-test", "arm64-64k-luo-test")


def _why(target: str, test: str) -> str | None:
    arch, missing = TARGETS[target].arch, TARGETS[target].missing
    why = missing()
    if why is None and not program(arch, test).is_file():
        why = f"no selftest program {program(arch, test)}: run scripts/build-selftests.sh"
    return why


def params(targets=FOUR_K, tests=TESTS) -> list:
    out = []
    for t in targets:
        for test in tests:
            why = _why(t, test)
            out.append(
                pytest.param(t, test, id=f"{t}-{test}", marks=pytest.mark.skipif(why is not None, reason=why or ""))
            )
    return out


def _gen():
    spec = importlib.util.spec_from_file_location("gen_selftest_specs", ROOT / "scripts" / "gen_selftest_specs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_selftest_specs", mod)
    spec.loader.exec_module(mod)
    return mod


def selftest_dict(test: str, target: str = "x86_64") -> dict:
    """The committed spec of ``test`` (4 KiB pages), or at another target's page
    size what the generator writes for it (each memfd one page of that size)."""
    ps = TARGETS[target].page_size
    if ps == 4096:
        return tomllib.loads((SPECS / f"{test}.toml").read_text())
    gen = _gen()
    return tomllib.loads(gen.render(next(t for t in gen.SELFTESTS if t.test == test), ps))


def fixture(d: dict, target: str) -> Fixture:
    t = TARGETS[target]
    assert d["page_size"] == t.page_size, "selftest_dict(test, target) gives the spec at the target's page size"
    sp = spec_from_dict(d, name=d.get("name", "selftest"))
    sp.arch = t.arch
    return build_spec(sp)


def stage2(fx: Fixture, tmp_path: Path, target: str, test: str, name: str, **kw) -> boot.BootResult:
    t = TARGETS[target]
    d = write_boot_fixture(fx, tmp_path / name)
    r = boot.run_boot(d, t.kernel(), timeout=240, workload=Workload(program(t.arch, test), ("-s", "2")), **kw)
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


SMALL = ("luo_kexec_simple", "luo_multi_session")


@pytest.mark.parametrize(("target", "test"), params() + params(LARGE_PAGES, SMALL))
def test_stage_2_passes(target, test, tmp_path):
    fx = fixture(selftest_dict(test, target), target)
    assert fx.page_size == TARGETS[target].page_size
    r = stage2(fx, tmp_path, target, test, test)
    assert r.accepted, show(r)
    assert r.printed(PASSED[test]), show(r)  # its own line, kernel records moved out (boot.judge.console_lines)
    if TARGETS[target].luo_test:  # every test FLB's count was exact: each one's finish() ran, nothing underflowed
        for i in range(3):
            assert r.printed(f"liveupdate-test-flb-v{i}: finish was triggered"), show(r)


@pytest.mark.parametrize(("target", "test"), params(("x86_64",), SMALL))
def test_stage_2_passes_through_kexec(target, test, tmp_path):
    r = stage2(fixture(selftest_dict(test, target), target), tmp_path, target, test, test, via="kexec")
    assert r.accepted, show(r)
    assert r.printed(PASSED[test]) and "kexec_core: Starting new kernel" in r.log


# -- negative controls: the selftest's own verdict ------------------------------------------------------------

CONTROL_TARGETS = FOUR_K + LARGE_PAGES


@pytest.mark.parametrize(("target", "test"), params(CONTROL_TARGETS, ("luo_kexec_simple",)))
def test_one_memfd_byte_changed(target, test, tmp_path):
    d = selftest_dict(test, target)
    f = d["blob"][0]["sessions"][1]["files"][0]
    f["hex"] = "68656c6c70" + f["hex"][10:]  # "hello" -> "hellp"
    r = stage2(fixture(d, target), tmp_path, target, test, "byte-changed")
    assert not r.accepted
    assert r.printed("Data mismatch! Expected 'hello kexec world', Got 'hellp kexec world'")
    assert "Bail out! [run_stage_2:" in r.reason and "restore_and_verify_memfd for token 0x1a" in r.reason, show(r)


@pytest.mark.parametrize(("target", "test"), params(CONTROL_TARGETS, ("luo_multi_session",)))
def test_one_session_left_out(target, test, tmp_path):
    d = selftest_dict(test, target)
    sessions = d["blob"][0]["sessions"]
    sessions[:] = [s for s in sessions if s["name"] != "multi-test-empty-2"]
    r = stage2(fixture(_recount(d), target), tmp_path, target, test, "session-left-out")
    assert not r.accepted
    assert "Bail out! [run_stage_2:" in r.reason and "luo_retrieve_session for 'multi-test-empty-2'" in r.reason, show(
        r
    )


@pytest.mark.parametrize(("target", "test"), params(CONTROL_TARGETS, ("luo_kexec_simple",)))
def test_state_memfd_holding_stage_1(target, test, tmp_path):
    d = selftest_dict(test, target)
    d["blob"][0]["sessions"][0]["files"][0]["hex"] = "31"  # "1"
    r = stage2(fixture(d, target), tmp_path, target, test, "stage-1")
    assert not r.accepted
    assert "Bail out! [run_stage_2:" in r.reason and "Expected stage 2, but state file contains 1" in r.reason, show(r)


@pytest.mark.parametrize(("target", "test"), params(CONTROL_TARGETS, ("luo_kexec_simple",)))
def test_kho_v3_root(target, test, tmp_path):
    d = selftest_dict(test, target)
    fx = fixture(d, target)
    assert fx.root_fdt.count(b"kho-v4\0") == 1
    fdt = fx.root_fdt.replace(b"kho-v4\0", b"kho-v3\0")
    image = fx.image.copy()
    image.write(fx.fdt_phys, fdt)
    r = stage2(dataclasses.replace(fx, root_fdt=fdt, image=image), tmp_path, target, test, "kho-v3")
    assert not r.accepted
    assert "incompatible with 'kho-v4'" in r.reason
    if TARGETS[target].page_size == 65536:
        # with revival off the 64 KiB kernel fails to reserve its own scratch and disables KHO, so LUO
        # never starts: the selftest cannot open /dev/liveupdate and skips (KSFT_SKIP), by its own words
        assert "KHO: Failed to reserve scratch area, disabling kexec handover" in r.log, show(r)
        assert "Failed to open /dev/liveupdate. Is the luo module loaded?" in r.reason, show(r)
        return
    # the kernel kept no LUO state: the selftest finds no state session and says so itself
    assert "Bail out! Stage mismatch Requested stage 2, but system is in stage 1." in r.reason, show(r)


@pytest.mark.parametrize(("target", "test"), params(("x86_64", "arm64-luo-test", *LARGE_PAGES), ("luo_kexec_simple",)))
def test_one_test_flb_on_a_liveupdate_test_kernel(target, test, tmp_path):
    """The shipped fixtures' FLBs (v0 only): the selftest passes, the kernel WARNs
    (refcount underflow of v1 and v2), and ``kho check --target luo-test`` said so."""
    d = selftest_dict(test, target)
    d["blob"][0]["flbs"] = d["blob"][0]["flbs"][:1]
    fx = fixture(d, target)
    predicted = [f.code for f in tg.built_findings(fx, tg.profile("luo-test"))]
    assert predicted == ["target-flb-missing", "target-flb-missing"]
    r = stage2(fx, tmp_path, target, test, "one-flb")
    assert not r.accepted and "kernel WARNING" in r.reason, show(r)
    assert "liveupdate_flb_put_incoming" in r.log
    assert r.printed(PASSED[test])  # the selftest itself saw nothing wrong
