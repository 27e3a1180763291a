"""Live capture (issue 14, deliverable 5) without a real kernel: a file laid out like
``/proc/kcore`` (tests/_kcore.py) holding the real LUO capture's memory, plus a debugfs
``kho/out`` whose ``fdt`` is the prefix a real Linux 7.3 exposes.

* ``kho capture -o DIR --kcore FILE --debugfs DIR`` writes a capture that parses to the
  same handover as the original: preserved set, sub-blobs, every decoded client (LUO,
  kho_test, memfd contents);
* the receiving side (``--side in``) finds the root FDT from ``setup_data`` type 10;
* the kcore reader uses only the RAM segments (text, vmalloc, vmemmap ignored), reads
  only what is asked of a huge sparse file, caches within its bound;
* odd and hostile kcore files, missing debugfs and missing privileges give typed errors.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
from _kcore import NO_PADDR, PAGE_OFFSET, TEXT_VADDR, core_ehdr, debugfs_copy, write_kcore

from kho_formats.cli import main
from kho_formats.errors import ImageError, KhoFormatError, LiveCaptureError
from kho_formats.memory.image import PhysImage, elf_structs
from kho_formats.memory.kcore import KcoreFile, load_kcore
from kho_formats.model.clients import decode_clients
from kho_formats.ops.capture import load_capture, parse_capture
from kho_formats.ops.live import live_capture, setup_data_kho

ROOT = Path(__file__).resolve().parents[1]
LUO = ROOT / "fixtures" / "captures" / "linux-7.3-x86_64-luo-v5-small"
V4 = ROOT / "fixtures" / "captures" / "linux-7.3-x86_64-kho-v4"
#: the RAM of a 1 GiB x86_64 QEMU guest as the e820 map gives it (two System RAM ranges)
RAM_1G = [(0x1000, 0x9E000), (0x100000, 0x3FEE0000)]


def run(*argv: str) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([*argv, "--json"])
    return rc, json.loads(out.getvalue()) if out.getvalue().strip() else {}


def fingerprint(path: Path) -> dict:
    """What a capture parses to: version, root FDT, preserved set, sub-blobs and every decoded client."""
    cap = load_capture(path)
    st = parse_capture(cap)
    assert cap.image is not None
    reps = decode_clients(st, cap.image)
    clients = {}
    for name, rep in reps.items():
        assert rep.error is None, (name, rep.error)
        clients[name] = rep.client.to_json(rep.decoded) if rep.decoded is not None and rep.client else None
    luo = reps["LUO"].decoded if "LUO" in reps else None
    contents = []
    if luo is not None:
        for _, f in luo.files():
            contents.append(b"".join(bytes(v) for _, v in f.handler.contents(f.decoded, cap.image, st.page_size)))
    return {
        "version": st.version,
        "root_fdt_phys": st.root_fdt_phys,
        "root_fdt": cap.root_fdt,
        "preserved": st.preserved,
        "subblobs": [(s.name, s.phys, s.size, bytes(s.data or b"")) for s in st.subblobs],
        "clients": clients,
        "luo_contents": contents,
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    src = PhysImage.from_elf(LUO / "image.elf")
    dbg = debugfs_copy(LUO / "debugfs" / "kho" / "out", d / "kho" / "out")
    prefix = (dbg / "fdt").read_bytes()
    kcore = write_kcore(d / "kcore", src, RAM_1G, decoy=prefix)
    yield d, kcore, dbg
    kcore.unlink()


def test_fixture_debugfs_is_a_prefix(live):
    _, _, dbg = live
    fdt = (dbg / "fdt").read_bytes()
    assert int.from_bytes(fdt[4:8], "big") > len(fdt)  # as Linux 7.3 exposes it


def test_kcore_reader_uses_only_ram_segments(live):
    _, kcore, _ = live
    with KcoreFile(kcore) as kf:
        kinds = {(s.vaddr, s.kind) for s in kf.segments}
        assert (TEXT_VADDR, "other-mapping") in kinds  # p_paddr valid, but not the direct map
        assert sum(s.kind == "no-paddr" for s in kf.segments) == 2 + len(RAM_1G)  # vmalloc, modules, vmemmaps
        assert kf.direct_map == PAGE_OFFSET
        assert kf.arch == "x86_64" and kf.page_size == 4096
        img = kf.image()
        assert img.covered() == [(a, a + s) for a, s in RAM_1G]
        src = PhysImage.from_elf(LUO / "image.elf")
        for seg in src:
            assert img.read(seg.phys, len(seg.data)) == bytes(seg.data)
        assert kf.bytes_read < 16 << 20


def test_live_capture_matches_the_original(live, tmp_path):
    _, kcore, dbg = live
    rc, j = run("capture", "-o", str(tmp_path / "c"), "--kcore", str(kcore), "--debugfs", str(dbg))
    assert rc == 0, j
    out = tmp_path / "c"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["live"]["side"] == "out" and meta["live"]["kcore"] == str(kcore)
    assert meta["source"].startswith("live:") and meta["arch"] == "x86_64"
    assert any("prefix" in n for n in j["notes"])
    assert j["source_bytes"] == sum(s for _, s in RAM_1G)
    assert (out / "image.elf").stat().st_size < 12 << 20  # the handover, not the GiB
    got, want = fingerprint(out), fingerprint(LUO)
    assert got == want
    assert want["clients"]["LUO"] and want["luo_contents"] and len(want["subblobs"]) == 3


def test_live_capture_referenced_only(live, tmp_path):
    _, kcore, dbg = live
    rc, j = run("capture", "-o", str(tmp_path / "r"), "--kcore", str(kcore), "--debugfs", str(dbg), "--referenced-only")
    assert rc == 0, j
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["preserved_contents"] is False
    got = fingerprint(tmp_path / "r")
    want = fingerprint(LUO)
    assert got["preserved"] == want["preserved"] and got["clients"] == want["clients"]
    assert got["luo_contents"] == want["luo_contents"]  # memfd folios are referenced by LUO


def test_kho_v4_capture_and_api(tmp_path):
    """The kho_test / memblock / kexec-metadata capture through the library API."""
    src = PhysImage.from_elf(V4 / "image.elf")
    dbg = debugfs_copy(V4 / "debugfs" / "kho" / "out", tmp_path / "out", prefix=200)
    kcore = write_kcore(tmp_path / "kcore", src, RAM_1G)
    cap = live_capture(kcore=kcore, debugfs=dbg)
    assert cap.kind == "live"
    st = parse_capture(cap)
    ref = parse_capture(load_capture(V4))
    assert st.preserved == ref.preserved and st.root_fdt_phys == ref.root_fdt_phys
    assert [(s.name, s.phys, s.size) for s in st.subblobs] == [(s.name, s.phys, s.size) for s in ref.subblobs]


def test_receiving_side_uses_setup_data(live, tmp_path):
    d, kcore, _ = live
    dbg_in = debugfs_copy(LUO / "debugfs" / "kho" / "in", tmp_path / "kho" / "in")
    sd = tmp_path / "setup_data"
    (sd / "0").mkdir(parents=True)
    (sd / "0" / "type").write_text("0x1\n")  # SETUP_E820_EXT: skipped
    (sd / "0" / "data").write_bytes(bytes(20))
    (sd / "1").mkdir()
    with open(sd / "1" / "type", "wb") as f:  # a sysfs attribute: stat says one page (seen on Linux 7.3)
        f.write(b"0xa\n")
        f.truncate(4096)
    root = json.loads((LUO / "meta.json").read_text())["root_fdt_phys"]
    kho_data = root.to_bytes(8, "little") + (4096).to_bytes(8, "little") + bytes(16)
    (sd / "1" / "data").write_bytes(kho_data)
    assert setup_data_kho(sd) == kho_data
    cap = live_capture(kcore=kcore, debugfs=dbg_in, side="in", setup_data=sd, firmware_fdt=tmp_path / "none")
    assert cap.root_fdt_phys == root
    assert any("setup_data" in n for n in cap.notes)
    # the receiving kernel has released the memory map's pages by now: it is not read
    assert cap.received
    st = parse_capture(cap)
    assert st.map_released and not st.map_read and st.preserved.num_pages == 0
    assert any("keeps the map's pages only until it has read them" in n for n in st.notes)
    sent = parse_capture(load_capture(LUO))
    assert [(s.name, s.phys, s.size) for s in st.subblobs] == [(s.name, s.phys, s.size) for s in sent.subblobs]
    from kho_formats.ops.check import check

    fs = check(st, cap.image)
    released = [f for f in fs if f.code == "map-released"]
    assert [f.severity for f in released] == ["info"] and "nor the clients' data" in released[0].message


def test_huge_sparse_kcore_reads_only_what_is_asked(tmp_path):
    """64 GiB of 'RAM' in a sparse file: opening it and reading a few bytes reads kilobytes."""
    ram = [(0x100000, 64 << 30)]
    src = PhysImage([(0x40000000, b"KHO!" * 2048)])
    kcore = write_kcore(tmp_path / "kcore", src, ram)
    assert os.path.getsize(kcore) > 64 << 30
    with KcoreFile(kcore, cache_pages=4) as kf:
        img = kf.image()
        assert img.total_bytes == 64 << 30
        head = kf.bytes_read
        assert head < 64 << 10  # ELF header, program headers, notes
        assert img.read(0x40000000, 8) == b"KHO!KHO!"
        assert img.read(0x40000000 + 4092, 8) == b"KHO!KHO!"  # across a cache block
        assert kf.bytes_read - head == 2 * 4096
        for k in range(16):  # cache bounded
            img.read(0x100000 + k * 4096, 4)
        assert len(kf._cache) == 4
        before = kf.bytes_read
        big = img.read(0x40000000, 1 << 20)  # large reads bypass the cache, read exactly once
        assert big[:4] == b"KHO!" and kf.bytes_read - before == 1 << 20 and len(kf._cache) == 4


def _kcore_bytes(phdrs: list[tuple[int, int, int, int, int]], *, ehdr: dict | None = None) -> bytes:
    elf = elf_structs("little")
    out = core_ehdr(len(phdrs), **(ehdr or {}))
    for pt, off, va, pa, size in phdrs:
        out += elf.phdr.build(
            dict(p_type=pt, p_flags=7, p_offset=off, p_vaddr=va, p_paddr=pa, p_filesz=size, p_memsz=size, p_align=4096)
        )
    return out + bytes(1 << 16)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "past the end"),
        (b"\x7fELF" + bytes(60), "not ELF64"),
        (b"NOTELF" + bytes(100), "not an ELF"),
        (_kcore_bytes([(1, 4096, PAGE_OFFSET, 0, 4096)], ehdr={"e_type": 2}), "ET_CORE"),
        (_kcore_bytes([]), "no program headers"),
        (_kcore_bytes([(1, 4096, PAGE_OFFSET, 0, 4096)], ehdr={"e_phnum": 60000}), "past the end"),
        (_kcore_bytes([(1, 4096, PAGE_OFFSET, 0, 4096)], ehdr={"e_phentsize": 32}), "e_phentsize"),
        (_kcore_bytes([(1, 4096, 0xFFFFC90000000000, 0, 4096), (1, 8192, PAGE_OFFSET, 0, 4096)]), "4.19"),
        (_kcore_bytes([(1, 4096, 0xFFFFC90000000000, NO_PADDR, 4096)]), "no PT_LOAD maps RAM"),
        (_kcore_bytes([(1, 4096, PAGE_OFFSET, 0x1000, 1 << 40)]), "past the end of the file"),
        (_kcore_bytes([(1, (1 << 64) - 4096, PAGE_OFFSET, 0x1000, 8192)]), "past the end of the file"),
        (
            _kcore_bytes(
                [(1, 4096, PAGE_OFFSET + 0x1000, 0x1000, 8192), (1, 4096, PAGE_OFFSET + 0x2000, 0x2000, 4096)]
            ),
            "overlaps",
        ),
        (_kcore_bytes([(1, 4096, PAGE_OFFSET - 1, (1 << 64) - 2048, 4096)]), "64-bit"),
    ],
    ids=lambda v: v if isinstance(v, str) else f"{len(v)}-bytes",
)
def test_hostile_kcore_is_typed(tmp_path, data, match):
    p = tmp_path / "kcore"
    p.write_bytes(data)
    with pytest.raises(ImageError, match=match):
        load_kcore(p)


def test_kcore_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ImageError, match="not a regular file"):
        KcoreFile(tmp_path / "fifo")
    with pytest.raises(ImageError, match="no such file"):
        KcoreFile(tmp_path / "missing")


def test_live_errors_are_clear(live, tmp_path, monkeypatch):
    _, kcore, dbg = live
    with pytest.raises(LiveCaptureError, match="kho=on"):
        live_capture(kcore=kcore, debugfs=tmp_path / "nope")
    with pytest.raises(LiveCaptureError, match="receiving side"):
        live_capture(kcore=kcore, debugfs=tmp_path / "nope", side="in")
    with pytest.raises(LiveCaptureError, match="CONFIG_PROC_KCORE"):
        live_capture(kcore=tmp_path / "nokcore", debugfs=dbg)
    with pytest.raises(LiveCaptureError, match="side"):
        live_capture(kcore=kcore, debugfs=dbg, side="sideways")
    real_open = os.open

    def denied(path, *a, **k):
        if os.fspath(path) == os.fspath(kcore):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(LiveCaptureError, match="needs root"):
        live_capture(kcore=kcore, debugfs=dbg)
    rc, j = run("capture", "-o", str(tmp_path / "x"), "--kcore", str(kcore), "--debugfs", str(dbg))
    assert rc == 1 and j["kind"] == "live" and "root" in j["message"]
    assert not (tmp_path / "x").exists()


def test_live_capture_usage_errors(live, tmp_path, capsys):
    _, kcore, dbg = live
    assert main(["capture", "-o", str(tmp_path / "a"), str(dbg)]) == 2
    assert "--debugfs" in capsys.readouterr().err
    assert main(["capture", "--from-dump", str(kcore), "--kcore", str(kcore), "-o", str(tmp_path / "b")]) == 2
    assert main(["capture", "-o", str(tmp_path / "c"), "--side", "up"]) == 2


def test_prefix_not_in_memory_is_typed(tmp_path):
    src = PhysImage.from_elf(V4 / "image.elf")
    dbg = debugfs_copy(LUO / "debugfs" / "kho" / "out", tmp_path / "out")  # another machine's FDT
    kcore = write_kcore(tmp_path / "kcore", src, RAM_1G)
    with pytest.raises(KhoFormatError, match="no page of the image starts with it"):
        live_capture(kcore=kcore, debugfs=dbg)
