"""Independent readers accept what we write: ``dtc`` and ``fdtdump`` (Debian
device-tree-compiler) for every root FDT and sub-FDT, ``pyelftools`` for
every ELF core.  A missing tool is a failure, not a skip."""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from kho_formats.abi.layout import layout
from kho_formats.memory.alloc import PageAllocator, merge_ranges
from kho_formats.memory.image import PhysImage
from kho_formats.memory.pageset import PageSet
from kho_formats.model.clients import kexec_metadata, kho_test, memblock
from kho_formats.model.fdt import parse_fdt
from kho_formats.model.state import KhoState, SubBlob, build, parse

PAGE_SIZES = (4096, 16384, 65536)
BYTE_ORDERS = ("little", "big")
VERSIONS = ("kho-v1", "kho-v2", "kho-v3", "kho-v4")
ROOT_PHYS = 0x100_0000
CLIENT_ALLOC = (0x2000_0000, 0x100_0000)
MAP_ALLOC = [(0x4000_0000, 0x100_0000)]


def built_handover(version, page_size, bo):
    """A handover with memblock, kho_test and (v2+) kexec-metadata clients."""
    lay = layout(page_size, bo)
    mo = 1 if (version == "kho-v2" and page_size == 16384) else 0
    grain = page_size << mo
    calloc = PageAllocator([CLIENT_ALLOC], page_size)
    folios = [
        (0x3000_0000 + k * (grain << 2), mo + (k % 3), bytes([k + 1]) * (page_size << (mo + k % 3))) for k in range(5)
    ]
    kt = kho_test.encode(folios, lay, calloc, csum=0x1234ABCD)
    mb = memblock.encode([memblock.ReserveMem("trace_buf", 0x3800_0000, 4 << 20)], bo)
    mb_phys = calloc.alloc(grain, align=grain)
    segments = list(kt.segments) + [(mb_phys, mb)]
    pres = kt.preserve.copy() if mo == 0 else PageSet(page_size)
    if mo:  # v2 16 KiB: only orders >= 1, so preserve by ranges of 2 pages
        ranges = [(p - p % grain, -(-(p + len(d)) // grain) * grain) for p, d in segments]
        pres = PageSet.from_ranges(page_size, merge_ranges(ranges))
    pres.update(
        PageSet.from_ranges(
            page_size, [(mb_phys, mb_phys + grain), (ROOT_PHYS, ROOT_PHYS + grain), (0x3800_0000, 0x3840_0000)]
        )
    )
    subs = [
        SubBlob("memblock", mb_phys, len(mb), mb, "fdt-header" if version == "kho-v1" else "blob-size"),
        SubBlob("kho_test", kt.fdt_phys, len(kt.fdt), kt.fdt, "fdt-header" if version == "kho-v1" else "blob-size"),
    ]
    if version != "kho-v1":
        md = kexec_metadata.encode(lay, "7.3.4", 2)
        md_phys = calloc.alloc(grain, align=grain)
        pres.update(PageSet.from_ranges(page_size, [(md_phys, md_phys + grain)]))
        subs.insert(0, SubBlob("kexec-metadata", md_phys, len(md), md, "blob-size"))
    img = PhysImage()
    for p, d in segments:
        img.write(p, d)
    st = KhoState(
        version=version,
        page_size=page_size,
        byteorder=bo,
        preserved=pres,
        subblobs=subs,
        root_fdt_phys=ROOT_PHYS,
        map_params={"v1_bitmap_bytes": page_size} if version == "kho-v1" else {},
    )
    return st, build(st, alloc=MAP_ALLOC, image=img), kt


def run_tool(*args, data: bytes, tmp_path):
    exe = shutil.which(args[0])
    assert exe is not None, f"{args[0]} is not installed (apt-get install device-tree-compiler)"
    f = tmp_path / "blob.dtb"
    f.write_bytes(data)
    p = subprocess.run([exe, *args[1:], str(f)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (args, p.stderr)
    return p.stdout


def dts_props(text: str):
    """{(node path, prop): value text} from dtc/fdtdump DTS output."""
    out = {}
    stack = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("//") or s.startswith("/dts-v1/") or s.startswith("****"):
            continue
        if s.endswith("{"):
            name = s[:-1].strip()
            stack.append("" if name == "/" else name)
            continue
        if s == "};":
            stack.pop()
            continue
        m = re.match(r"([\w,.+\-#]+)\s*=\s*(.*);$", s)
        if m:
            out[("/" + "/".join(x for x in stack if x), m.group(1))] = m.group(2)
    return out


def cells_bytes(value: str) -> bytes:
    cells = value.strip("<>").split()
    return b"".join(struct.pack(">I", int(c, 16)) for c in cells)


def combos():
    for v in VERSIONS:
        for ps in PAGE_SIZES:
            for bo in BYTE_ORDERS:
                yield pytest.param(v, ps, bo, id=f"{v}-{ps // 1024}k-{bo}")


@pytest.mark.parametrize("version,page_size,bo", list(combos()))
def test_dtc_and_fdtdump_read_everything(version, page_size, bo, tmp_path):
    st, b, kt = built_handover(version, page_size, bo)
    # sanity: the library reads it back
    got = parse(b.root_fdt, b.image, page_size=page_size, byteorder=bo, root_fdt_phys=ROOT_PHYS)
    assert got == st
    # root FDT, through dtc
    dts = run_tool("dtc", "-I", "dtb", "-O", "dts", data=b.root_fdt, tmp_path=tmp_path)
    props = dts_props(dts)
    assert props[("/", "compatible")] == f'"{version}"'
    assert cells_bytes(props[("/", "preserved-memory-map")]) == b.memmap_phys.to_bytes(8, bo)
    addr_prop = "fdt" if version == "kho-v1" else "preserved-data"
    for sb in st.subblobs:
        assert cells_bytes(props[(f"/{sb.name}", addr_prop)]) == sb.phys.to_bytes(8, bo)
        if version != "kho-v1":
            assert cells_bytes(props[(f"/{sb.name}", "blob-size")]) == sb.size.to_bytes(8, bo)
        else:
            assert (f"/{sb.name}", "blob-size") not in props
    # root FDT, through fdtdump
    dump = run_tool("fdtdump", data=b.root_fdt, tmp_path=tmp_path)
    assert re.search(rf"totalsize:\s+0x[0-9a-f]+ \({len(b.root_fdt)}\)", dump)
    assert re.search(r"// version:\s+17", dump)
    dprops = dts_props(dump)
    assert dprops[("/", "compatible")] == f'"{version}"'
    assert cells_bytes(dprops[("/", "preserved-memory-map")]) == b.memmap_phys.to_bytes(8, bo)
    # dtc recompiles its own output into a tree with the same nodes and properties
    out = tmp_path / "re.dtb"
    (tmp_path / "re.dts").write_text(dts)
    subprocess.run(
        [shutil.which("dtc"), "-I", "dts", "-O", "dtb", "-o", str(out), str(tmp_path / "re.dts")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    a, c = parse_fdt(b.root_fdt).root, parse_fdt(out.read_bytes()).root
    assert [(n.path, n.props) for n in a.walk()] == [(n.path, n.props) for n in c.walk()]
    # sub-FDTs
    for sb in st.subblobs:
        if sb.data[:4] != b"\xd0\x0d\xfe\xed":
            continue
        sdts = dts_props(run_tool("dtc", "-I", "dtb", "-O", "dts", data=sb.data, tmp_path=tmp_path))
        sdump = dts_props(run_tool("fdtdump", data=sb.data, tmp_path=tmp_path))
        for p in (sdts, sdump):
            if sb.name == "memblock":
                assert p[("/", "compatible")] == '"memblock-v1"'
                assert cells_bytes(p[("/trace_buf", "start")]) == (0x3800_0000).to_bytes(8, bo)
                assert cells_bytes(p[("/trace_buf", "size")]) == (4 << 20).to_bytes(8, bo)
            else:
                assert p[("/", "compatible")] == '"kho-test-v1"'
                assert cells_bytes(p[("/", "magic")]) == (0x4B484F21).to_bytes(4, bo)
                assert cells_bytes(p[("/data", "nr_folios")]) == (5).to_bytes(4, bo)
                assert cells_bytes(p[("/data", "folios_info")]) == layout(page_size, bo).kho_vmalloc.build(kt.desc)


def test_dtc_reads_the_capture_sub_fdts(tmp_path):
    from pathlib import Path

    d = Path(__file__).resolve().parent.parent / "fixtures" / "captures" / "linux-7.3-x86_64-kho-v4"
    props = dts_props(run_tool("dtc", "-I", "dtb", "-O", "dts", data=(d / "root.dtb").read_bytes(), tmp_path=tmp_path))
    # the known rendering of a little-endian u64: 0x10f4000 -> <0x400f01 0x00>
    assert cells_bytes(props[("/", "preserved-memory-map")]) == (0x10F_4000).to_bytes(8, "little")


# -- ELF cores through pyelftools ------------------------------------------------------------


@pytest.mark.parametrize("version,page_size,bo", list(combos()))
def test_pyelftools_reads_our_elf(version, page_size, bo):
    st, b, _ = built_handover(version, page_size, bo)
    img = b.image
    machine = "x86_64" if bo == "little" else "aarch64"
    for merge in (True, False):
        raw = img.to_elf(byteorder=bo, machine=machine, merge=merge)
        elf = ELFFile(io.BytesIO(raw))
        assert elf.little_endian == (bo == "little")
        assert elf.elfclass == 64
        assert elf["e_type"] == "ET_CORE"
        assert elf["e_machine"] == ("EM_X86_64" if machine == "x86_64" else "EM_AARCH64")
        want = img.covered() if merge else [(s.phys, s.end) for s in img.segments]
        segs = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        assert elf.num_segments() == len(segs) == len(want)
        for seg, (lo, hi) in zip(segs, want):
            assert seg["p_paddr"] == lo
            assert seg["p_filesz"] == seg["p_memsz"] == hi - lo
            assert seg.data() == img.read(lo, hi - lo)
        # and our own loader reads it back, as does a full parse from it
        back = PhysImage.from_elf(raw)
        assert back == img
    got = parse(
        b.root_fdt,
        PhysImage.from_elf(img.to_elf(byteorder=bo)),
        page_size=page_size,
        byteorder=bo,
        root_fdt_phys=ROOT_PHYS,
    )
    assert got == st


def test_pyelftools_reads_empty_image():
    raw = PhysImage().to_elf()
    elf = ELFFile(io.BytesIO(raw))
    assert elf.num_segments() == 0
    assert PhysImage.from_elf(raw) == PhysImage()
