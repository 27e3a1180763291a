"""The real Linux 7.3 x86_64 kho-v4 capture, against the kernel's own walk
and the capture's metadata."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from kho_formats.memory.image import PhysImage
from kho_formats.model.clients import decode_clients, kexec_metadata, kho_test, memblock
from kho_formats.model.fdt import parse_fdt
from kho_formats.model.state import build, parse
from kho_formats.ops.check import ERROR, WARNING, check, has_errors

CAP = Path(__file__).resolve().parent.parent / "fixtures" / "captures" / "linux-7.3-x86_64-kho-v4"
DEBUGFS = CAP / "debugfs" / "kho" / "out"


@pytest.fixture(scope="module")
def meta():
    return json.loads((CAP / "meta.json").read_text())


@pytest.fixture(scope="module")
def root_dtb():
    return (CAP / "root.dtb").read_bytes()


@pytest.fixture(scope="module")
def image():
    return PhysImage.from_elf(CAP / "image.elf")


def read_scratch():
    """debugfs scratch_phys holds the addresses, scratch_len the sizes (hex text, one a line)."""
    addrs = [int(x, 16) for x in (DEBUGFS / "scratch_phys").read_text().split()]
    sizes = [int(x, 16) for x in (DEBUGFS / "scratch_len").read_text().split()]
    assert len(addrs) == len(sizes)
    return list(zip(addrs, sizes))


@pytest.fixture(scope="module")
def state(root_dtb, image, meta):
    return parse(root_dtb, image, root_fdt_phys=meta["root_fdt_phys"], scratch=read_scratch())


def kernel_walk():
    out = []
    for line in (CAP / "kernel-walk.txt").read_text().splitlines():
        if line.strip():
            phys, order = line.split()
            out.append((int(phys, 16), int(order)))
    return out


def test_debugfs_fdt_is_root_dtb(root_dtb):
    assert (DEBUGFS / "fdt").read_bytes() == root_dtb


def test_version_and_map(state, meta):
    assert meta["compatible"] == "kho-v4" and meta["page_size"] == 4096 and meta["byte_order"] == "little"
    assert state.version == "kho-v4"
    assert state.extra_compatible == []
    assert state.memmap_phys == meta["preserved_memory_map"]
    assert state.memmap.depth == 6
    assert state.memmap.root == meta["preserved_memory_map"]
    assert state.memmap.tables == meta["radix_nodes"]
    assert state.memmap.leaves == meta["radix_leaves"]


def test_preserved_set_equals_kernel_walk(state, meta):
    walk = kernel_walk()
    assert len(walk) == len(set(walk)) == meta["pages"] == 36
    ours = list(state.preserved.iter_pages())
    assert len(ours) == len(walk)
    assert set(ours) == set(walk)
    assert state.preserved.num_pages == 36
    # the reserve_mem region is one order-10 page
    assert (0x3E80_0000, 10) in set(walk)


def test_subblobs_match_meta(state, meta):
    got = [(s.name, s.phys, s.size) for s in state.subblobs]
    want = [(s["name"], s["phys"], s["size"]) for s in meta["subtrees"]]
    assert got == want  # same order: the kernel adds sub-nodes at the front
    for sb in state.subblobs:
        assert sb.size_source == "blob-size"
        assert sb.extra_props == []
        assert sb.data == (DEBUGFS / "sub_fdts" / sb.name).read_bytes()


def test_kho_test_decode(state, image, meta):
    sb = state.subblob("kho_test")
    kt = kho_test.decode(sb.data, state.layout, image)
    assert kt.nr_folios == meta["kho_test"]["nr_folios"] == 29
    assert kt.folios == [tuple(f) for f in meta["kho_test"]["folios"]]
    fi = meta["kho_test"]["folios_info"]
    assert (kt.folios_info.first, kt.folios_info.total_pages, kt.folios_info.flags, kt.folios_info.order) == (
        fi["first"],
        fi["total_pages"],
        fi["flags"],
        fi["order"],
    )
    assert kt.problems == []
    assert kt.area.chunks == [fi["first"]]
    # every folio is preserved as one page of its order
    for phys, order in kt.folios:
        assert state.preserved.contains(phys, order)
    # the csum property, by hand from the FDT bytes (u32, little-endian)
    data = parse_fdt(sb.data).root.child("data")
    assert kt.csum == struct.unpack("<I", data.get("csum"))[0]
    assert struct.unpack("<I", data.get("nr_folios"))[0] == 29


def test_memblock_decode(state):
    regs = memblock.decode(state.subblob("memblock").data, "little")
    assert regs == [memblock.ReserveMem("trace_buf", 0x3E80_0000, 4 << 20)]
    assert state.preserved.contains(0x3E80_0000, 10)  # 4 MiB = one order-10 page


def test_kexec_metadata_decode(state):
    raw = state.subblob("kexec-metadata").data
    assert len(raw) == 73
    md = kexec_metadata.decode(raw, state.layout)
    assert md.version == 1
    assert md.previous_release == "7.3.4"
    version, release, count = struct.unpack("<I65sI", raw)
    assert (version, release.rstrip(b"\0").decode(), count) == (1, "7.3.4", md.kexec_count)


def test_decode_clients_all_known(state, image):
    reps = decode_clients(state, image)
    assert {n: r.kind for n, r in reps.items()} == {
        "memblock": "memblock",
        "kho_test": "kho_test",
        "kexec-metadata": "kexec-metadata",
    }
    assert all(r.error is None for r in reps.values())
    assert reps["kexec-metadata"].decoded.previous_release == "7.3.4"
    assert reps["kexec-metadata"].to_json()["decoded"]["previous_release"] == "7.3.4"
    assert reps["memblock"].decoded == memblock.Memblock([memblock.ReserveMem("trace_buf", 0x3E80_0000, 4 << 20)])
    assert reps["memblock"].to_json()["decoded"] == [{"name": "trace_buf", "start": 0x3E80_0000, "size": 4 << 20}]


def test_rebuild_byte_for_byte(state, root_dtb, image):
    b = build(state, reuse_placement=True)
    assert b.root_fdt == root_dtb
    assert b.memmap_phys == state.memmap_phys
    assert len(b.metadata) == state.memmap.tables + state.memmap.leaves == 48
    assert sorted(p for p, _ in b.metadata) == sorted(state.memmap.pages)
    for phys, data in b.metadata:
        assert data == image.read(phys, 4096), hex(phys)
    # the root FDT lands at its captured address too
    assert b.image.read(state.root_fdt_phys, len(root_dtb)) == root_dtb


def test_rebuild_from_scratch_reads_back(state):
    # a fresh placement (not the captured one) still gives the same preserved set
    b = build(state, alloc=[(0x8000_0000, 0x100_0000)])
    again = parse(b.root_fdt, b.image, root_fdt_phys=state.root_fdt_phys, scratch=state.scratch)
    assert again == state
    assert all(0x8000_0000 <= p < 0x8100_0000 for p in b.memmap.pages)


def test_check_is_clean(state, image):
    assert state.scratch == [(0x3980_0000, 0x4C0_0000), (0x3E40_0000, 0), (0x2B40_0000, 0xE40_0000)]
    findings = check(state, image)
    assert not has_errors(findings), [str(f) for f in findings]
    assert [f for f in findings if f.severity in (ERROR, WARNING)] == []
    # the root FDT page is preserved (no root-not-preserved warning)
    assert state.preserved.contains(state.root_fdt_phys, 0) or any(
        a <= state.root_fdt_phys < b for a, b in state.preserved.ranges()
    )


def test_check_catches_a_dropped_blob(state, image):
    # negative control: drop the kexec-metadata page from the preserved set
    s = state.copy()
    sb = s.subblob("kexec-metadata")
    keep = [(p, o) for p, o in s.preserved.iter_pages() if not (p <= sb.phys < p + (4096 << o))]
    from kho_formats.memory.pageset import PageSet

    s.preserved = PageSet.from_pages(4096, keep)
    findings = check(s, image)
    assert any(f.code == "blob-not-preserved" and f.phys == sb.phys for f in findings)
