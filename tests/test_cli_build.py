"""``kho build``: every output file, read back by independent tools
(pyelftools, dtc, gcc) and checked against the spec; determinism; spec errors."""

from __future__ import annotations

import filecmp
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from kho_formats.errors import SpecError
from kho_formats.model.fdt import parse_fdt
from kho_formats.model.spec import gen_bytes, loads_spec, parse_int

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "fixtures" / "specs"


def kho(*args, check_rc=None):
    r = subprocess.run(
        [sys.executable, "-m", "kho_formats.cli", *map(str, args)], capture_output=True, text=True, cwd=ROOT
    )
    if check_rc is not None:
        assert r.returncode == check_rc, (r.returncode, r.stdout[-2000:], r.stderr)
    return r


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """v4-4k (TOML, arm64) and v4-4k-x86 (YAML, x86_64), each built twice."""
    base = tmp_path_factory.mktemp("build")
    out = {}
    for name, spec in (("v4-4k", SPECS / "v4-4k.toml"), ("v4-4k-x86", SPECS / "v4-4k-x86.yaml")):
        for k in (1, 2):
            kho("build", spec, "-o", base / f"{name}-{k}", check_rc=0)
        out[name] = base / f"{name}-1"
        out[name + "-again"] = base / f"{name}-2"
    return out


def test_build_prints_and_json(tmp_path):
    r = kho("build", SPECS / "v3-4k.toml", "-o", tmp_path / "a", check_rc=0)
    assert r.stdout.startswith("built v3-4k: kho-v3, 4 KiB pages")
    j = json.loads(kho("build", SPECS / "v3-4k.toml", "-o", tmp_path / "b", "--json", check_rc=0).stdout)
    assert j["schema"] == "kho-formats/build/1" and j["version"] == "kho-v3"
    assert "root.dtb" in j["files"] and "image.elf" in j["files"]


@pytest.mark.parametrize("name", ["v4-4k", "v4-4k-x86"])
def test_build_is_deterministic(built, name):
    a, b = built[name], built[name + "-again"]
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors


@pytest.mark.parametrize("name,machine", [("v4-4k", "EM_AARCH64"), ("v4-4k-x86", "EM_X86_64")])
def test_elf_read_back_by_pyelftools(built, name, machine):
    d = built[name]
    manifest = json.loads((d / "manifest.json").read_text())
    with open(d / "image.elf", "rb") as f:
        elf = ELFFile(f)
        assert elf.header["e_type"] == "ET_CORE"
        assert elf.header["e_machine"] == machine
        assert elf.little_endian and elf.elfclass == 64
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        assert [(s["p_paddr"], s["p_filesz"]) for s in loads] == [(m["phys"], m["size"]) for m in manifest["segments"]]
        for s, m in zip(loads, manifest["segments"]):
            assert s["p_vaddr"] == s["p_paddr"] and s["p_memsz"] == s["p_filesz"]
            assert s.data() == (d / m["file"]).read_bytes()
    ho = json.loads((d / "handover.json").read_text())

    # the root FDT, the memory map and every sub-blob are inside the segments
    def covered(addr, size):
        return any(m["phys"] <= addr and addr + size <= m["phys"] + m["size"] for m in manifest["segments"])

    assert covered(ho["fdt_phys"], ho["fdt_len"]) and covered(ho["memmap_phys"], ho["page_size"])
    assert all(covered(s["phys"], s["size"]) for s in ho["subblobs"])
    assert covered(ho["scratch_array_phys"], 16 * len(ho["scratch"]))


@pytest.mark.parametrize("name", ["v4-4k", "v4-4k-x86"])
def test_root_dtb_passes_dtc(built, name):
    r = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(built[name] / "root.dtb")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'compatible = "kho-v4";' in r.stdout and "kho_test {" in r.stdout


def test_handover_json(built):
    d = built["v4-4k"]
    ho = json.loads((d / "handover.json").read_text())
    for key in (
        "version",
        "page_size",
        "byte_order",
        "fdt_phys",
        "fdt_size",
        "scratch",
        "scratch_array_phys",
        "memmap_phys",
    ):
        assert key in ho
    assert ho["version"] == "kho-v4" and ho["page_size"] == 4096 and ho["byte_order"] == "little"
    assert ho["fdt_size"] == 4096 and ho["fdt_len"] == len((d / "root.dtb").read_bytes())
    assert ho["scratch"] == [[0x50000000, 256 << 20], [0x68000000, 32 << 20]]
    fdt = parse_fdt((d / "root.dtb").read_bytes())
    assert int.from_bytes(fdt.root.get("preserved-memory-map"), "little") == ho["memmap_phys"]
    assert [c.name for c in fdt.root.children] == ["kho_test", "memblock", "kexec-metadata"]
    # the root FDT bytes are in the image at fdt_phys
    seg = json.loads((d / "manifest.json").read_text())["segments"][0]
    data = (d / seg["file"]).read_bytes()
    off = ho["fdt_phys"] - seg["phys"]
    assert data[off : off + ho["fdt_len"]] == (d / "root.dtb").read_bytes()
    # and the kho_scratch array at scratch_array_phys
    off = ho["scratch_array_phys"] - seg["phys"]
    arr = data[off : off + 32]
    assert struct.unpack("<4Q", arr) == (0x50000000, 256 << 20, 0x68000000, 32 << 20)


def test_setup_data_and_chosen(built, tmp_path):
    d = built["v4-4k-x86"]
    ho = json.loads((d / "handover.json").read_text())
    sd = (d / "setup_data.bin").read_bytes()
    nxt, typ, ln = struct.unpack_from("<QII", sd)
    assert (nxt, typ, ln) == (0, 10, 32) and len(sd) == 16 + 32
    fdt_addr, fdt_size, sc_addr, sc_size = struct.unpack_from("<4Q", sd, 16)
    assert (fdt_addr, fdt_size) == (ho["fdt_phys"], 4096)
    assert (sc_addr, sc_size) == (ho["scratch_array_phys"], 16 * len(ho["scratch"]))
    ch = json.loads((d / "chosen.json").read_text())
    cells = ch["linux,kho-fdt"]["cells"]
    assert (cells[0] << 32 | cells[1], cells[2] << 32 | cells[3]) == (fdt_addr, 4096)
    assert ch["linux,kho-scratch"]["address"] == sc_addr and ch["linux,kho-scratch"]["size"] == sc_size
    # chosen.dtsi compiles into a DT whose /chosen properties are 2+2 big-endian cells
    dts = tmp_path / "t.dts"
    dts.write_text("/dts-v1/;\n/ { #address-cells = <2>; #size-cells = <2>; };\n" + (d / "chosen.dtsi").read_text())
    subprocess.run(
        ["dtc", "-I", "dts", "-O", "dtb", "-o", str(tmp_path / "t.dtb"), str(dts)], check=True, capture_output=True
    )
    chosen = parse_fdt((tmp_path / "t.dtb").read_bytes()).root.child("chosen")
    assert struct.unpack(">QQ", chosen.get("linux,kho-fdt")) == (fdt_addr, 4096)
    assert struct.unpack(">QQ", chosen.get("linux,kho-scratch")) == (sc_addr, sc_size)
    assert chosen.get("linux,kho-fdt").hex() == ch["linux,kho-fdt"]["bytes"]


def test_qemu_args(built):
    d = built["v4-4k"]
    segs = json.loads((d / "manifest.json").read_text())["segments"]
    lines = (d / "qemu-args.txt").read_text().splitlines()
    assert lines == [f"-device loader,file={s['file']},addr={s['phys']:#x},force-raw=on" for s in segs]


C_PROGRAM = r"""
#include <stdio.h>
#include "kho_fixture.h"
int main(void)
{
	unsigned i;
	FILE *f = fopen("dump.bin", "wb");
	for (i = 0; i < sizeof(kho_fixture_segments) / sizeof(kho_fixture_segments[0]); i++)
		fwrite(kho_fixture_segments[i].data, 1, kho_fixture_segments[i].size, f);
	fclose(f);
	f = fopen("root.bin", "wb");
	fwrite(kho_fixture_root_fdt, 1, sizeof(kho_fixture_root_fdt), f);
	fclose(f);
	printf("%llx %llx %d %d\n", (unsigned long long)KHO_FIXTURE_FDT_PHYS,
	       (unsigned long long)KHO_FIXTURE_SEG0_PHYS, KHO_FIXTURE_NR_SEGMENTS, KHO_FIXTURE_NR_SCRATCH);
	return 0;
}
"""


@pytest.mark.parametrize("name", ["v4-4k", "v4-4k-x86"])
def test_c_header_compiles_and_holds_the_image(built, name, tmp_path):
    d = built[name]
    (tmp_path / "t.c").write_text(C_PROGRAM)
    r = subprocess.run(
        [
            "gcc",
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(d),
            "-o",
            str(tmp_path / "t"),
            str(tmp_path / "t.c"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(tmp_path / "t")], capture_output=True, text=True, cwd=tmp_path, check=True)
    ho = json.loads((d / "handover.json").read_text())
    segs = json.loads((d / "manifest.json").read_text())["segments"]
    fdt_phys, seg0, nseg, nscratch = r.stdout.split()
    assert int(fdt_phys, 16) == ho["fdt_phys"] and int(seg0, 16) == segs[0]["phys"]
    assert int(nseg) == len(segs) and int(nscratch) == len(ho["scratch"])
    assert (tmp_path / "dump.bin").read_bytes() == b"".join((d / s["file"]).read_bytes() for s in segs)
    assert (tmp_path / "root.bin").read_bytes() == (d / "root.dtb").read_bytes()


def test_kho_test_folios_are_seeded_data(built):
    j = json.loads(kho("inspect", built["v4-4k"], "--json", check_rc=0).stdout)
    kt = {s["name"]: s for s in j["subblobs"]}["kho_test"]["decoded"]
    assert [f["order"] for f in kt["folios"]] == [0, 1, 2, 0]
    assert kt["csum_check"]["arm64"] == kt["csum"] != kt["csum_check"]["x86_64"]
    from kho_formats.memory.image import PhysImage

    img = PhysImage.from_elf(built["v4-4k"] / "image.elf")
    for k, f in enumerate(kt["folios"]):
        data = img.read(f["phys"], 4096 << f["order"])
        assert data == gen_bytes(7, f"kho_test/folio{k}", len(data))
        assert data.count(0) < len(data) // 100
    jx = json.loads(kho("inspect", built["v4-4k-x86"], "--json", check_rc=0).stdout)
    ktx = {s["name"]: s for s in jx["subblobs"]}["kho_test"]["decoded"]
    assert ktx["csum_check"]["x86_64"] == ktx["csum"]


def test_yaml_spec_extras(built):
    j = json.loads(kho("inspect", built["v4-4k-x86"], "--json", check_rc=0).stdout)
    subs = {s["name"]: s for s in j["subblobs"]}
    assert list(subs) == ["kho_test", "memblock", "kexec-metadata", "notes", "area0"]
    assert subs["kexec-metadata"]["decoded"]["kexec_count"] == 2
    assert subs["notes"]["kind"] == "unknown" and subs["notes"]["size"] == len(
        "raw sub-blob bytes, passed through as is\n"
    )
    assert subs["area0"]["size"] == 16
    assert j["root_fdt"]["phys"] == 0x20000000
    kho("check", built["v4-4k-x86"], check_rc=0)


def test_build_overrides(tmp_path):
    kho("--abi", "kho-v3", "build", SPECS / "v4-4k.toml", "-o", tmp_path / "o", "--name", "renamed", check_rc=0)
    ho = json.loads((tmp_path / "o" / "handover.json").read_text())
    assert ho["version"] == "kho-v3"
    assert "renamed" in (tmp_path / "o" / "kho_fixture.h").read_text()


def test_build_v1_refuses_raw_blob(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('version = "kho-v1"\n[[blob]]\nname = "kexec-metadata"\nprevious_release = "x"\n')
    r = kho("build", spec, "-o", tmp_path / "o", check_rc=1)
    assert "not an FDT" in r.stderr


# -- spec loader -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,needle",
    [
        ('versoin = "kho-v4"\n', "unknown key(s) versoin"),
        ('version = "kho-v7"\n', "unknown version"),
        ("page_size = 8192\n", "page_size"),
        ('arch = "riscv"\n', "arch"),
        ('arch = "x86_64"\npage_size = 16384\n', "4096-byte pages only"),
        ('[[blob]]\nname = "x"\ntype = "raw"\n', "exactly one of file / hex / text"),
        ('[[blob]]\nname = "x"\ntype = "raw"\nhex = "zz"\n', "not hex"),
        ('[[blob]]\nname = "x"\ntype = "wat"\n', "type"),
        ('[[blob]]\nname = "k"\ntype = "kho_test"\nregions = []\n', "not a key of a kho_test blob"),
        ('[[blob]]\nname = "a"\ntext = "1"\n[[blob]]\nname = "a"\ntext = "2"\n', "duplicate"),
        ('[[preserve]]\nphys = "0x1001"\norder = 1\n', "not aligned"),
        ('[[preserve]]\nphys = "zz"\n', "expected an integer"),
        ("[[scratch]]\nstart = 0\n", "size / end"),
        ("this is not toml", "bad TOML"),
    ],
)
def test_spec_errors(tmp_path, text, needle):
    spec = tmp_path / "s.toml"
    spec.write_text(text)
    r = kho("build", spec, "-o", tmp_path / "o", check_rc=1)
    assert r.stderr.startswith("kho: error: ") and needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_spec_overlaps_refused(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('[[scratch]]\nstart = "0x74000000"\nsize = "4M"\n[[preserve]]\nphys = "0x74000000"\n')
    r = kho("build", spec, "-o", tmp_path / "o", check_rc=1)
    assert "lies in scratch area" in r.stderr


def test_parse_int_forms():
    assert parse_int("0x1000", "x") == 4096 and parse_int("16M", "x") == 16 << 20
    assert parse_int("4K", "x") == 4096 and parse_int(12, "x") == 12 and parse_int("1_000", "x") == 1000
    assert parse_int("2MiB", "x") == 2 << 20
    with pytest.raises(SpecError):
        parse_int(True, "x")


def test_yaml_and_toml_give_the_same_spec():
    y = loads_spec(
        "version: kho-v3\npage_size: 16K\nalloc: ['0x78000000:16M']\nblob: [{name: kho_test, orders: [0, 1]}]\n",
        fmt="yaml",
    )
    t = loads_spec(
        'version = "kho-v3"\npage_size = "16K"\nalloc = ["0x78000000:16M"]\n'
        '[[blob]]\nname = "kho_test"\norders = [0, 1]\n',
        fmt="toml",
    )
    assert y == t
    assert y.blobs[0].type == "kho_test" and y.page_size == 16384


def test_big_endian_build_convert_and_elf(tmp_path):
    spec = tmp_path / "be.toml"
    spec.write_text(
        (SPECS / "v1-512-4k.toml").read_text().replace('name = "v1-512-4k"', 'name = "v1-be"\nbyte_order = "big"')
    )
    kho("build", spec, "-o", tmp_path / "v1", check_rc=0)
    j = json.loads(kho("inspect", tmp_path / "v1", "--json", check_rc=0).stdout)
    assert j["byte_order"] == "big" and j["v1_bitmap_bytes"] == 512
    kt = {s["name"]: s for s in j["subblobs"]}["kho_test"]["decoded"]
    assert kt["csum_check"]["arm64"] == kt["csum"]
    kho("check", tmp_path / "v1", "--strict", check_rc=0)
    kho("convert", "--to", "kho-v4", tmp_path / "v1", tmp_path / "v4", check_rc=0)
    kho("check", tmp_path / "v4", "--strict", check_rc=0)
    kho("diff", tmp_path / "v1", tmp_path / "v4", check_rc=0)
    with open(tmp_path / "v4" / "image.elf", "rb") as f:
        elf = ELFFile(f)
        assert not elf.little_endian and elf.header["e_machine"] == "EM_AARCH64"
    sd = (tmp_path / "v4" / "setup_data.bin").read_bytes()
    assert struct.unpack_from(">QII", sd) == (0, 10, 32)
    dts = kho("dts", tmp_path / "v4", check_rc=0).stdout
    assert "u64 big-endian" in dts
    # read as little-endian, the map pointer is implausible: a clear error, exit 1
    r = kho("--byte-order", "little", "inspect", tmp_path / "v4", check_rc=1)
    assert r.stderr.startswith("kho: error: ")


def test_islands_join_gaps_up_to_gap_zero_bytes():
    from kho_formats.model.fixture import islands

    assert islands(b"") == [] and islands(bytes(10)) == []
    assert islands(b"\x01" + bytes(3) + b"\x02", gap=3) == [(0, b"\x01\x00\x00\x00\x02")]
    assert islands(b"\x01" + bytes(4) + b"\x02", gap=3) == [(0, b"\x01"), (5, b"\x02")]
    assert islands(bytes(2) + b"\x07\x08" + bytes(9), gap=3) == [(2, b"\x07\x08")]
