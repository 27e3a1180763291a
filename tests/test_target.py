"""``kho check --target-config/--target``: a handover against the kernel that reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kho_formats.cli import main
from kho_formats.errors import KhoFormatError
from kho_formats.model.spec import build_spec, spec_from_dict
from kho_formats.ops import target as tg

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
SELFTESTS = ROOT / "fixtures" / "specs" / "selftests"

ARM64_LUO_TEST = """\
# comment
CONFIG_ARM64=y
CONFIG_ARM64_4K_PAGES=y
CONFIG_KEXEC_HANDOVER=y
CONFIG_LIVEUPDATE=y
CONFIG_LIVEUPDATE_MEMFD=y
CONFIG_LIVEUPDATE_TEST=y
CONFIG_LOCALVERSION="-x"
# CONFIG_TEST_KEXEC_HANDOVER is not set
"""


def codes(argv: list[str], capsys) -> tuple[int, list[str]]:
    rc = main(["--json", *argv])
    out = json.loads(capsys.readouterr().out)
    if "findings" in out:  # kho check: the target's findings only
        return rc, [f["code"] for f in out["findings"] if f["code"].startswith("target-")]
    return rc, out["target"]["findings"]


def test_from_config(tmp_path):
    p = tmp_path / "config"
    p.write_text(ARM64_LUO_TEST)
    t = tg.from_config(p)
    assert (t.arch, t.page_size, t.kho, t.liveupdate) == ("arm64", 4096, True, True)
    assert t.handlers == ("memfd-v2",) and t.handler_flbs == tg.TEST_FLBS
    assert "kho_test" not in t.clients and t.options["LOCALVERSION"] == "-x"
    p.write_text(ARM64_LUO_TEST.replace("CONFIG_LIVEUPDATE_TEST=y\n", "").replace("4K_PAGES", "64K_PAGES"))
    t = tg.from_config(p)
    assert t.page_size == 65536 and t.handler_flbs == ()
    p.write_text("CONFIG_X86_64=y\nCONFIG_KEXEC_HANDOVER=y\n")
    t = tg.from_config(p)
    assert (t.arch, t.page_size, t.liveupdate, t.handlers) == ("x86_64", 4096, False, ())
    for bad in ("not a config\n", ""):
        p.write_text(bad)
        with pytest.raises(KhoFormatError, match="config"):
            tg.from_config(p)
    with pytest.raises(KhoFormatError):
        tg.from_config(tmp_path / "missing")
    with pytest.raises(KhoFormatError, match="selftest-liveupdate"):
        tg.profile("nope")


def test_shipped_luo_fixture_is_for_a_kernel_without_liveupdate_test(capsys):
    """fixtures/v4-4k-luo carries test FLB v0 only: fine where LIVEUPDATE_TEST is off,
    two missing FLBs (a refcount underflow WARNING) where it is on."""
    rc, found = codes(["check", str(ROOT / "fixtures" / "v4-4k-luo"), "--target", "luo"], capsys)
    assert rc == 0 and found == ["target-flb-unused"]
    rc, found = codes(["check", str(ROOT / "fixtures" / "v4-4k-luo"), "--target", "luo-test"], capsys)
    assert rc == 1 and found == ["target-flb-missing", "target-flb-missing"]


def selftest_dict(test: str) -> dict:
    return tomllib.loads((SELFTESTS / f"{test}.toml").read_text())


def built_findings(d: dict, t: tg.TargetKernel) -> list[str]:
    return [f.code for f in tg.built_findings(build_spec(spec_from_dict(d, name="t")), t)]


@pytest.mark.parametrize("test", ["luo_kexec_simple", "luo_multi_session"])
def test_selftest_specs_fit_both_kinds_of_kernel(test):
    d = selftest_dict(test)
    assert built_findings(d, tg.profile("selftest-liveupdate")) == []
    assert built_findings(d, tg.profile("luo")) == ["target-flb-unused"] * 3


def test_flb_counts_against_the_files():
    d = selftest_dict("luo_multi_session")  # 4 files
    t = tg.profile("selftest-liveupdate")
    flbs = d["blob"][0]["flbs"]
    flbs[0]["count"] = 3
    flbs[1]["count"] = 5
    del flbs[2]
    assert built_findings(d, t) == ["target-flb-underflow", "target-flb-unfinished", "target-flb-missing"]


def test_page_size_abi_handler_and_luo(tmp_path):
    d = selftest_dict("luo_kexec_simple")
    t = tg.profile("selftest-liveupdate")
    assert built_findings({**d, "version": "kho-v3"}, t) == ["target-abi"]
    assert built_findings({**d, "page_size": 16384}, tg.TargetKernel("k", page_size=4096)) == [
        "target-page-size",
        "target-luo",
    ]
    no_memfd = tg.TargetKernel("k", liveupdate=True, handler_flbs=tg.TEST_FLBS)
    assert built_findings(d, no_memfd) == ["target-handler", "target-handler"]  # no handler: no FLB users
    assert built_findings(d, tg.TargetKernel("k", kho=False)) == ["target-kho"]
    fx = build_spec(spec_from_dict(d, name="t"))
    assert [f.code for f in tg.built_findings(fx, tg.TargetKernel("k", arch="x86_64"))][:1] == ["target-arch"]


def test_kho_test_not_exercised(capsys):
    rc, found = codes(["check", str(ROOT / "fixtures" / "v4-4k"), "--target", "luo-test"], capsys)
    assert rc == 0 and found == []
    rc, found = codes(["check", str(ROOT / "fixtures" / "v4-4k"), "--target", "selftest-liveupdate"], capsys)
    assert rc == 0 and found == ["target-not-exercised"]


def test_build_target_reports_and_fails_on_errors(tmp_path, capsys):
    spec = SELFTESTS / "luo_kexec_simple.toml"
    rc, found = codes(["build", str(spec), "-o", str(tmp_path / "a"), "--target", "selftest-liveupdate"], capsys)
    assert rc == 0 and found == []
    cfg = tmp_path / "config"
    cfg.write_text(ARM64_LUO_TEST.replace("4K_PAGES", "16K_PAGES"))
    rc, found = codes(["build", str(spec), "-o", str(tmp_path / "b"), "--target-config", str(cfg)], capsys)
    assert rc == 1 and [f["code"] for f in found] == ["target-page-size"]
    assert (tmp_path / "b" / "handover.json").is_file()
