"""Issue 14 (real dumps) and issue 12 deliverable 2 (checked inputs).

Full-dump-like inputs are synthesized: a sparse ELF core with one PT_LOAD over
the guest's first GiB, the real LUO capture's pages written at their physical
addresses among other data, created in tmp (few real bytes) and deleted after.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from _kcore import core_ehdr

from kho_formats.cli import main
from kho_formats.errors import ImageError, KhoFormatError
from kho_formats.memory.image import PhysImage, elf_structs
from kho_formats.memory.kdump import write_kdump
from kho_formats.ops.capture import load_capture, parse_capture
from kho_formats.safeio import map_regular, read_regular

ROOT = Path(__file__).resolve().parents[1]
LUO = ROOT / "fixtures" / "captures" / "linux-7.3-x86_64-luo-v5-small"
V4 = ROOT / "fixtures" / "captures" / "linux-7.3-x86_64-kho-v4"
QEMU_KDUMP = ROOT / "tests" / "data" / "qemu-7.2-x86_64-firmware-16m.kdump"
ROOT_PHYS = 0x1CFE000


@contextmanager
def no_hang(seconds: int = 10):
    """Fail (instead of hanging the suite) if the body blocks."""

    def boom(*_):
        raise TimeoutError("blocked")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def full_dump(path: Path, size: int = 1 << 30, *, noise: bool = True) -> Path:
    """A sparse ELF core of ``size`` bytes of RAM at phys 0 holding the LUO capture's pages."""
    src = PhysImage.from_elf(LUO / "image.elf")
    elf = elf_structs("little")
    data_off = 4096
    with open(path, "wb") as fh:
        fh.write(core_ehdr(1, e_shentsize=64))
        fh.write(
            elf.phdr.build(
                dict(
                    p_type=1,
                    p_flags=6,
                    p_offset=data_off,
                    p_vaddr=0,
                    p_paddr=0,
                    p_filesz=size,
                    p_memsz=size,
                    p_align=0,
                )
            )
        )
        fh.truncate(data_off + size)
        for seg in src:
            fh.seek(data_off + seg.phys)
            fh.write(bytes(seg.data))
        if noise:  # other data of the machine: not part of the handover
            for k in range(1, 64):
                fh.seek(data_off + k * (16 << 20) + 0x800)
                fh.write(os.urandom(4096))
    return path


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    d = tmp_path_factory.mktemp("dump")
    p = full_dump(d / "vmcore.elf")
    yield p
    p.unlink()


def same(a, b) -> bool:
    """The same handover: version, preserved set, sub-blobs (name, address, size, bytes)."""
    key = lambda st: [(s.name, s.phys, s.size, bytes(s.data or b"")) for s in st.subblobs]
    return (a.version, a.preserved, key(a), a.root_fdt_phys) == (b.version, b.preserved, key(b), b.root_fdt_phys)


def run(*argv: str) -> tuple[int, dict]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([*argv, "--json"])
    return rc, json.loads(out.getvalue()) if out.getvalue().strip() else {}


# -- 1. finding the root FDT ----------------------------------------------------------------


def test_luo_debugfs_fdt_is_a_prefix_completed_from_the_image():
    assert (LUO / "debugfs/kho/out/fdt").stat().st_size == 233
    cap = load_capture(LUO / "debugfs", [str(LUO / "image.elf")])
    assert cap.root_fdt == (LUO / "root.dtb").read_bytes()
    assert cap.root_fdt_phys == ROOT_PHYS
    assert any("is a prefix (233 of 345 bytes" in n for n in cap.notes)
    st = parse_capture(cap)
    assert st.preserved.num_pages == 37


def test_root_phys_reads_the_fdt_from_the_image():
    rc, j = run(
        "inspect", str(LUO / "debugfs/kho/out/fdt"), "--mem", str(LUO / "image.elf"), "--root-phys", "0x1cfe000"
    )
    assert rc == 0 and j["root_fdt"]["size"] == 345 if "root_fdt" in j else rc == 0
    cap = load_capture(LUO / "debugfs/kho/out/fdt", [str(LUO / "image.elf")], root_phys=ROOT_PHYS)
    assert cap.root_fdt == (LUO / "root.dtb").read_bytes()
    with pytest.raises(ImageError, match="no memory at --root-phys"):
        load_capture(LUO / "debugfs/kho/out/fdt", [str(LUO / "image.elf")], root_phys=0x1000)


def test_prefix_without_image_match_says_what_to_pass(tmp_path):
    img = PhysImage.from_elf(LUO / "image.elf")
    other = PhysImage([(s.phys, s.data) for s in img if not s.phys <= ROOT_PHYS < s.end])
    (tmp_path / "b").mkdir()
    other.to_bundle(tmp_path / "b")
    with pytest.raises(KhoFormatError, match="--root-phys"):
        load_capture(LUO / "debugfs", [str(tmp_path / "b")])


def test_image_alone_scan_and_candidates(tmp_path):
    cap = load_capture(LUO / "image.elf")
    assert cap.root_fdt_phys == ROOT_PHYS and cap.arch == "x86_64"
    assert any("root FDT found in the image" in n for n in cap.notes)
    # a second root FDT elsewhere: both listed, the first used
    img = PhysImage.from_elf(LUO / "image.elf")
    img.add(0x100000, img.read(ROOT_PHYS, 4096))
    (tmp_path / "two.elf").write_bytes(img.to_elf())
    cap = load_capture(tmp_path / "two.elf")
    assert cap.sources["root_fdt_candidates"] == [0x100000, ROOT_PHYS]
    assert any("2 KHO root FDTs" in n for n in cap.notes)


def test_boot_info_setup_data_and_kho_data(tmp_path):
    from kho_formats.abi.layout import SETUP_KEXEC_KHO, KhoData, SetupDataHdr, layout

    lay = layout()
    kd = lay.kho_data.build(KhoData(fdt_addr=ROOT_PHYS, fdt_size=4096, scratch_addr=0, scratch_size=0))
    (tmp_path / "kd.bin").write_bytes(kd)
    (tmp_path / "sd.bin").write_bytes(
        lay.setup_data_hdr.build(SetupDataHdr(next=0, type=SETUP_KEXEC_KHO, len=len(kd))) + kd
    )
    for f in ("kd.bin", "sd.bin"):
        cap = load_capture(LUO / "image.elf", boot_info=tmp_path / f)
        assert cap.root_fdt_phys == ROOT_PHYS and any("boot info" in n for n in cap.notes)


def test_no_root_fdt_in_image_is_a_typed_error(tmp_path):
    PhysImage([(0x1000, os.urandom(8192))]).to_bundle(tmp_path / "b")
    (tmp_path / "x.elf").write_bytes(PhysImage([(0x1000, bytes(8192))]).to_elf())
    assert main(["inspect", str(tmp_path / "x.elf")]) == 1


# -- 2. images by mmap ------------------------------------------------------------------------


def test_mapped_image_writes_never_reach_the_file(tmp_path):
    p = tmp_path / "i.elf"
    p.write_bytes(PhysImage([(0, os.urandom(4 << 20))]).to_elf())
    before = p.read_bytes()
    img = PhysImage.from_elf(p)
    assert isinstance(img.segments[0].data.obj, __import__("mmap").mmap)
    cp = img.copy()
    assert cp.segments[0].data.obj is img.segments[0].data.obj  # shared, not duplicated
    img.write(0x201003, b"hello")
    assert img.read(0x201003, 5) == b"hello" and len(img) == 3  # split: one private page
    assert cp.read(0x201003, 5) != b"hello" or before[4096 + 0x201003 : 4096 + 0x201008] == b"hello"
    assert p.read_bytes() == before


def test_inspect_full_dump_rss_and_time(dump):
    """kho inspect of a 1 GiB dump alone: found, parsed, RSS far below the dump size."""
    code = (
        "import sys, time; from kho_formats.cli import main; t = time.time(); "
        f"rc = main(['inspect', {str(dump)!r}]); "
        # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so the
        # test process's own peak (the whole suite's) would be counted
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]; "
        "print('RESULT', rc, time.time() - t, hwm)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")][0].split()
    rc, secs, rss_kib = int(line[1]), float(line[2]), int(line[3])
    assert rc == 0, out.stderr
    assert "0x1cfe000" in out.stdout
    # 117 MiB when run alone; up to ~390 MiB and later 650 MiB "seen inside the full
    # suite" were the suite's own peak (ru_maxrss survives exec); before mmap it was
    # the dump size + 20 MiB
    assert rss_kib < 512 * 1024, f"peak RSS {rss_kib} KiB for a 1 GiB dump"
    assert secs < 20


# -- 3. outputs hold the handover ---------------------------------------------------------


def test_capture_from_dump_keeps_the_handover(dump, tmp_path):
    rc, j = run("capture", "--from-dump", str(dump), str(LUO / "debugfs"), "-o", str(tmp_path / "c"))
    assert rc == 0, j
    out = tmp_path / "c"
    size = (out / "image.elf").stat().st_size
    assert size < 12 << 20  # the handover, not the GiB
    assert same(parse_capture(load_capture(out)), parse_capture(load_capture(LUO)))
    assert json.loads((out / "meta.json").read_text())["arch"] == "x86_64"
    rc, j2 = run("capture", "--from-dump", str(dump), "--referenced-only", "-o", str(tmp_path / "r"))
    assert rc == 0 and j2["image_bytes"] < j["image_bytes"]
    assert main(["capture", "--from-dump", str(dump), "-o", str(tmp_path / "c")]) == 1  # not empty: refused


def test_convert_full_dump(dump, tmp_path):
    rc, j = run("convert", "--to", "kho-v4", str(LUO / "debugfs"), str(tmp_path / "fx"), "--mem", str(dump))
    assert rc == 0, j
    ho = json.loads((tmp_path / "fx" / "handover.json").read_text())
    assert ho["arch"] == "x86_64"
    assert ho["scratch_array_phys"] is not None
    assert (tmp_path / "fx" / "image.elf").stat().st_size < 16 << 20
    assert any("kept the handover only" in n for n in j["notes"])


def test_client_referenced_hook():
    from kho_formats.model.clients import decode_clients
    from kho_formats.ops.extract import handover_ranges, referenced_ranges

    cap = load_capture(LUO)
    st = parse_capture(cap)
    cl = decode_clients(st, cap.image)
    kt = cl["kho_test"]
    refs = kt.client.referenced(kt.decoded, 4096)
    assert (0x1F00000, 0x1F00000 + (4096 << 6)) in refs
    assert referenced_ranges(st, cl)
    assert handover_ranges(st, cl, referenced_only=True) != handover_ranges(st, cl)


# -- 4. kdump files -----------------------------------------------------------------------------


@pytest.mark.parametrize("comp", ["zlib", "none", "snappy", "zstd"])
@pytest.mark.parametrize("flat", [False, True])
def test_kdump_round_trip_and_inspect(tmp_path, comp, flat):
    if comp in ("snappy", "zstd"):
        pytest.importorskip("cramjam")
    img = PhysImage.from_elf(LUO / "image.elf")
    p = tmp_path / "dump.kdump"
    with open(p, "wb") as fh:
        write_kdump(img, fh, compression=comp, flattened=flat)
    k = PhysImage.load(str(p))
    assert k.covered() == img.covered()
    assert all(k.read(a, b - a) == img.read(a, b - a) for a, b in img.covered())
    assert same(parse_capture(load_capture(p)), parse_capture(load_capture(LUO)))


def test_qemu_made_kdump():
    """QEMU 7.2 ``dump-guest-memory -z`` of a 16 MiB machine running its firmware (flattened, zlib)."""
    k = PhysImage.load(str(QEMU_KDUMP))
    assert k.covered() == [(0, 16 << 20), (0xFFFC0000, 1 << 32)]
    assert k.read(0xFFFFFFF0, 1) == b"\xea"  # the reset vector's far jump
    assert b"SeaBIOS" in k.read(0xFFFC0000, 0x40000)
    with pytest.raises(KhoFormatError, match="no KHO root FDT"):
        load_capture(QEMU_KDUMP)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
def test_qemu_kdump_matches_its_elf_dump(tmp_path):
    cmds = f"dump-guest-memory -z {tmp_path}/d.kdump\ndump-guest-memory {tmp_path}/d.elf\nquit\n"
    subprocess.run(
        ["qemu-system-x86_64", "-machine", "pc", "-m", "16", "-S", "-display", "none", "-nodefaults"]
        + ["-monitor", "stdio", "-accel", "tcg"],
        input=cmds,
        capture_output=True,
        text=True,
        timeout=120,
    )
    k, e = PhysImage.load(str(tmp_path / "d.kdump")), PhysImage.load(str(tmp_path / "d.elf"))
    assert k.covered() == e.covered()
    assert all(k.read(a, b - a) == e.read(a, b - a) for a, b in e.covered())


def test_kdump_corrupt_page_is_typed(tmp_path):
    img = PhysImage([(0x1000, b"A" * 4000 + os.urandom(96))])
    p = tmp_path / "d.kdump"
    with open(p, "wb") as fh:
        write_kdump(img, fh)
    b = bytearray(p.read_bytes())
    b[-100:] = bytes(100)
    p.write_bytes(bytes(b))
    with pytest.raises(ImageError, match="decompress"):
        PhysImage.load(str(p)).read(0x1000, 4096)


# -- issue 12 deliverable 2: inputs --------------------------------------------------------------


def test_fifos_do_not_block(tmp_path):
    b = tmp_path / "b"
    b.mkdir()
    os.mkfifo(b / "manifest.json")
    with no_hang(), pytest.raises(ImageError, match="FIFO"):
        PhysImage.from_bundle(b)
    os.unlink(b / "manifest.json")
    os.mkfifo(b / "seg.bin")
    (b / "manifest.json").write_text(json.dumps({"segments": [{"file": "seg.bin", "phys": 0}]}))
    with no_hang(), pytest.raises(ImageError, match="FIFO"):
        PhysImage.from_bundle(b)
    d = tmp_path / "dbg"
    shutil.copytree(LUO / "debugfs", d)
    os.unlink(d / "kho/out/scratch_phys")
    os.mkfifo(d / "kho/out/scratch_phys")
    with no_hang(), pytest.raises(KhoFormatError, match="FIFO"):
        load_capture(d)
    with no_hang(), pytest.raises(KhoFormatError, match="FIFO"):
        read_regular(d / "kho/out/scratch_phys", "x")


def test_huge_sparse_files_are_not_read(tmp_path):
    big = tmp_path / "root.dtb"
    with open(big, "wb") as fh:
        fh.write((LUO / "root.dtb").read_bytes())
        fh.truncate(8 << 30)
    t = time.time()
    with pytest.raises(KhoFormatError, match="more than"):
        load_capture(big)
    # a bundle segment of 8 GiB: mapped, not read
    b = tmp_path / "b"
    b.mkdir()
    with open(b / "seg.bin", "wb") as fh:
        fh.truncate(8 << 30)
    (b / "manifest.json").write_text(json.dumps({"segments": [{"file": "seg.bin", "phys": 0}]}))
    img = PhysImage.from_bundle(b)
    assert img.total_bytes == 8 << 30 and img.read(5 << 30, 4) == bytes(4)
    # an unused sub_fdts file of 8 GiB: never read
    d = tmp_path / "dbg"
    shutil.copytree(LUO / "debugfs", d)
    with open(d / "kho/out/sub_fdts/unused", "wb") as fh:
        fh.truncate(8 << 30)
    cap = load_capture(d, [str(LUO / "image.elf")])
    parse_capture(cap)
    assert time.time() - t < 10
    (d / "kho/out/sub_fdts/unused").unlink()
    big.unlink()
    (b / "seg.bin").unlink()


def test_sub_fdts_symlink_leaving_the_capture_is_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"\xd0\x0d\xfe\xed" + bytes(60))
    d = tmp_path / "cap"
    shutil.copytree(V4 / "debugfs", d)
    (d / "kho/out/sub_fdts/kexec-metadata").rename(d / "kexec-metadata")
    (d / "kho/out/sub_fdts/kexec-metadata").symlink_to(secret)
    cap = load_capture(d)  # no image: sub-blobs come from sub_fdts
    with pytest.raises(KhoFormatError, match="outside"):
        parse_capture(cap)
    # a symlink that stays inside is fine
    (d / "kho/out/sub_fdts/kexec-metadata").unlink()
    (d / "kho/out/sub_fdts/kexec-metadata").symlink_to(d / "kexec-metadata")
    parse_capture(load_capture(d))


def test_safeio_api(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    assert read_regular(f, "x") == b"abc"
    assert bytes(map_regular(f, "x")) == b"abc"
    with pytest.raises(KhoFormatError, match="more than the 2"):
        read_regular(f, "x", max_size=2)
    with pytest.raises(KhoFormatError, match="directory"):
        read_regular(tmp_path, "x")
    with pytest.raises(KhoFormatError, match="character device"):
        read_regular("/dev/zero", "x")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "l").symlink_to(f)
    with pytest.raises(KhoFormatError, match="outside"):
        read_regular(tmp_path / "in" / "l", "x", inside=tmp_path / "in")
    assert map_regular(tmp_path / "in" / "l", "x") is not None
