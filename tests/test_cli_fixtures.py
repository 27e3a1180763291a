"""The shipped fixtures: regenerating them gives identical bytes, every one
passes ``kho check``, and migrating the kho-v1 ones to v2/v3/v4 and back keeps
the preserved set and sub-blobs (``kho diff`` exit 0)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
SPECS = FIX / "specs"
CAP = FIX / "captures" / "linux-7.3-x86_64-kho-v4"
SPEC_FILES = sorted(p for p in SPECS.iterdir() if p.suffix in (".toml", ".yaml", ".yml"))
NAMES = [p.stem for p in SPEC_FILES]
V1 = [n for n in NAMES if n.startswith("v1-")]


def kho(*args, check_rc=None):
    r = subprocess.run(
        [sys.executable, "-m", "kho_formats.cli", *map(str, args)], capture_output=True, text=True, cwd=ROOT
    )
    if check_rc is not None:
        assert r.returncode == check_rc, (args, r.returncode, r.stdout[-3000:], r.stderr)
    return r


def test_the_required_fixtures_exist():
    have = set(NAMES)
    assert {"v1-512-4k", "v1-page-4k", "v2-4k", "v3-4k", "v4-4k"} <= have
    sizes = {json.loads((FIX / n / "handover.json").read_text())["page_size"] for n in NAMES}
    assert {4096, 16384, 65536} <= sizes
    for n in NAMES:
        assert (FIX / n / "handover.json").is_file(), f"fixtures/{n} missing: run scripts/gen_fixtures.py"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("regen")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_fixtures.py"), "-o", str(out)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return out


@pytest.mark.parametrize("name", NAMES)
def test_regenerating_gives_identical_bytes(regenerated, name):
    shipped, fresh = FIX / name, regenerated / name
    files = sorted(p.name for p in shipped.iterdir())
    assert files == sorted(p.name for p in fresh.iterdir())
    for f in files:
        assert (shipped / f).read_bytes() == (fresh / f).read_bytes(), f"fixtures/{name}/{f} differs"


@pytest.mark.parametrize("name", NAMES)
def test_shipped_fixture_checks_clean(name):
    j = json.loads(kho("check", FIX / name, "--json", "--strict", check_rc=0).stdout)
    assert j["ok"] and j["errors"] == 0 and j["warnings"] == 0


#: bytes of client data a fixture holds on purpose (beyond a few pages)
LARGE_DATA = {"v4-4k-luo": (2 << 20) + (512 << 10)}


@pytest.mark.parametrize("name", NAMES)
def test_fixture_is_small(name):
    total = sum(p.stat().st_size for p in (FIX / name).iterdir())
    ps = json.loads((FIX / name / "handover.json").read_text())["page_size"]
    # image.elf + the same bytes as segments + the C header: about 40 pages' worth
    limit = 40 * ps + 512 * 1024
    # v4-4k-luo holds a 2 MiB memfd (twice: image.elf and its segment), mostly
    # zeros, so about 150 KiB in git
    limit += LARGE_DATA.get(name, 0) * 2
    assert total <= limit, (name, total)


@pytest.mark.parametrize("target", ["kho-v2", "kho-v3", "kho-v4"])
@pytest.mark.parametrize("name", V1)
def test_v1_to_target_and_back(tmp_path, name, target):
    src = FIX / name
    there, back = tmp_path / "there", tmp_path / "back"
    r = kho("convert", "--to", target, src, there, check_rc=0)
    assert f"converted kho-v1 -> {target}" in r.stdout
    kho("check", there, "--strict", check_rc=0)
    kho("diff", src, there, check_rc=0)
    fdt = (there / "root.dtb").read_bytes()
    assert target.encode() in fdt and b"preserved-data" in fdt and b"blob-size" in fdt
    j = json.loads(kho("convert", "--to", "kho-v1", there, back, "--json", check_rc=0).stdout)
    assert j["from"]["version"] == target and j["to"]["version"] == "kho-v1"
    kho("check", back, "--strict", check_rc=0)
    kho("diff", src, back, check_rc=0)
    kho("diff", there, back, check_rc=0)
    assert b"preserved-data" not in (back / "root.dtb").read_bytes()


@pytest.mark.parametrize("bitmap", ["512", "page"])
def test_convert_into_v1_bitmap_size(tmp_path, bitmap):
    kho("convert", "--to", "kho-v1", "--v1-bitmap-out", bitmap, FIX / "v3-4k", tmp_path / "o", check_rc=0)
    j = json.loads(kho("inspect", tmp_path / "o", "--json", check_rc=0).stdout)
    assert j["v1_bitmap_bytes"] == (512 if bitmap == "512" else 4096)
    kho("diff", FIX / "v3-4k", tmp_path / "o", check_rc=0)


@pytest.mark.parametrize(
    "name,target",
    [("v4-4k", "kho-v2"), ("v4-16k", "kho-v3"), ("v3-16k", "kho-v4"), ("v4-64k", "kho-v2"), ("v4-4k-x86", "kho-v3")],
)
def test_convert_between_radix_versions(tmp_path, name, target):
    kho("convert", "--to", target, FIX / name, tmp_path / "o", check_rc=0)
    kho("check", tmp_path / "o", "--strict", check_rc=0)
    kho("diff", FIX / name, tmp_path / "o", check_rc=0)
    ho = json.loads((tmp_path / "o" / "handover.json").read_text())
    assert ho["version"] == target and ho["converted_from"].startswith("kho-v")
    assert ho["arch"] == json.loads((FIX / name / "handover.json").read_text())["arch"]


def test_real_capture_round_trip_is_byte_exact(tmp_path):
    """kho-v4 -> kho-v2 -> kho-v4 on the real capture: same root FDT bytes,
    and the map pages are reused in place (no new memory needed)."""
    j = json.loads(kho("convert", "--to", "kho-v2", CAP, tmp_path / "v2", "--json", check_rc=0).stdout)
    assert j["to"]["memmap_phys"] == j["from"]["memmap_phys"]
    assert any("kho_scratch array" in n for n in j["notes"])  # no free page for it: said, not guessed
    kho("diff", CAP, tmp_path / "v2", check_rc=0)
    kho("convert", "--to", "kho-v4", tmp_path / "v2", tmp_path / "v4", check_rc=0)
    assert (tmp_path / "v4" / "root.dtb").read_bytes() == (CAP / "root.dtb").read_bytes()
    kho("diff", CAP, tmp_path / "v4", check_rc=0)


def test_convert_with_alloc_region(tmp_path):
    # with room given, the capture's conversion also places the scratch array
    j = json.loads(
        kho("convert", "--to", "kho-v3", CAP, tmp_path / "o", "--alloc", "0x3f000000:1M", "--json", check_rc=0).stdout
    )
    assert [0x3F000000, 1 << 20] in j["alloc"] and not j["notes"]
    ho = json.loads((tmp_path / "o" / "handover.json").read_text())
    assert 0x3F000000 <= ho["scratch_array_phys"] < 0x3F100000
    kho("check", tmp_path / "o", check_rc=0)
