"""kho boot without QEMU: reading a fixture directory through the library,
refusing hostile ones with typed errors, and the QEMU command line planned
for a fixture (``plan_boot`` builds the argv and the boot DTB, runs nothing)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from kho_formats import boot
from kho_formats.abi.layout import KhoScratch, layout
from kho_formats.boot.dtb import fdt_nodes
from kho_formats.boot.judge import client_rule
from kho_formats.boot.load import BootFixture, load_fixture
from kho_formats.boot.qemu import BASE_CMDLINE, kernel_span, qemu_opt, ram_bytes
from kho_formats.errors import BootError, FdtError, KhoFormatError
from kho_formats.memory.image import PhysImage
from kho_formats.model.fdt import FdtNode, build_fdt, u64_bytes

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "v4-4k"
SEG = "seg-0000000078000000.bin"
SEG_PHYS = 0x7800_0000


def copy_fixture(dst: Path) -> Path:
    """The files kho boot reads from fixtures/v4-4k."""
    dst.mkdir(parents=True)
    for name in ("root.dtb", "handover.json", "manifest.json", SEG):
        shutil.copyfile(FIX / name, dst / name)
    return dst


def edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    path.write_text(json.dumps(data))


def set_segments(d: Path, segs: list[dict]) -> None:
    (d / "manifest.json").write_text(json.dumps({"segments": segs}))


def fake_kernel(path: Path, image_size: int = 0x13C_0000, text_offset: int = 0) -> Path:
    hdr = bytearray(64)
    hdr[8:16] = text_offset.to_bytes(8, "little")
    hdr[16:24] = image_size.to_bytes(8, "little")
    hdr[56:60] = b"ARM\x64"
    path.write_bytes(bytes(hdr))
    return path


def virt_dtb() -> bytes:
    root = FdtNode("")
    root.set("#address-cells", (2).to_bytes(4, "big"))
    root.set("#size-cells", (2).to_bytes(4, "big"))
    root.set("compatible", b"linux,dummy-virt\0")
    root.add_child("chosen").set("stdout-path", b"/pl011@9000000\0")
    return build_fdt(root).ljust(1 << 20, b"\0")  # QEMU pads; totalsize stays compact here


def plan(fx: boot.BootFixture | None, tmp_path: Path, **kw: object) -> boot.BootPlan:
    wd = tmp_path / "work"
    wd.mkdir(exist_ok=True)
    return boot.plan_boot(fx, fake_kernel(tmp_path / "Image"), virt_dtb(), wd, **kw)  # type: ignore[arg-type]


def loaders(cmd: list[str]) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == "-device"]


# -- loading -------------------------------------------------------------------------------------------------


def test_load_v4_4k_through_the_library(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path / "fx")
    fx = load_fixture(d)
    ho = json.loads((d / "handover.json").read_text())
    assert [(s.file, s.phys, s.size) for s in fx.segments] == [(SEG, SEG_PHYS, (d / SEG).stat().st_size)]
    assert fx.image == PhysImage.from_bundle(d)
    assert fx.clients == ["kho_test", "memblock", "kexec-metadata"]
    assert fx.scratch == [tuple(p) for p in ho["scratch"]]
    lay = layout(4096, "little")
    arr = b"".join(lay.kho_scratch.build(KhoScratch(a, n)) for a, n in fx.scratch)
    assert fx.scratch_array() == arr
    # the fixture's own array is in its segments, where handover.json says
    assert fx.image.read(ho["scratch_array_phys"], len(arr)) == arr


def test_root_fdt_from_memory_when_root_dtb_is_missing(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path / "fx")
    (d / "root.dtb").unlink()
    assert load_fixture(d).clients == ["kho_test", "memblock", "kexec-metadata"]
    # garbage at fdt_phys in memory: the kernel judges it, no client is judged
    data = bytearray((d / SEG).read_bytes())
    data[:8] = b"garbage!"
    (d / SEG).write_bytes(bytes(data))
    fx = load_fixture(d)
    assert fx.root_fdt is None and fx.clients == []


@pytest.mark.parametrize(
    "change, match",
    [
        ({"page_size": 8192}, "fixture page_size 8192"),
        ({"page_size": "lots"}, "page_size"),
        ({"arch": "riscv64"}, 'fixture is for "riscv64"'),
        ({"arch": "x86_64", "page_size": 16384}, "x86_64 with 16 KiB"),
        ({"arch": "x86_64", "byte_order": "big"}, "big-endian"),
        ({"byte_order": "middle"}, "byte_order"),
        ({"fdt_phys": None}, "fdt_phys"),
        ({"fdt_phys": "0xzz"}, "fdt_phys"),
        ({"fdt_phys": -1}, "out of range"),
        ({"scratch": [[1, 2, 3]]}, "scratch"),
        ({"scratch": [[1 << 64, 2]]}, "out of range"),
        ({"scratch_array_phys": [1]}, "scratch_array_phys"),
        ({"cmdline": 7}, "cmdline"),
    ],
)
def test_handover_refusals(tmp_path: Path, change: dict[str, object], match: str) -> None:
    d = copy_fixture(tmp_path / "fx")
    edit_json(d / "handover.json", **change)
    with pytest.raises(BootError, match=match):
        load_fixture(d)


def test_sizes_in_handover_json_through_parse_int(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path / "fx")
    edit_json(d / "handover.json", fdt_phys=hex(SEG_PHYS), fdt_size="4K", cmdline=["a=1", "b=2"])
    fx = load_fixture(d)
    assert (fx.fdt_phys, fx.fdt_size, fx.cmdline) == (SEG_PHYS, 4096, "a=1 b=2")


def test_missing_and_bad_json(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path / "fx")
    (d / "manifest.json").write_text("{nope")
    with pytest.raises(BootError, match="bad JSON in manifest.json"):
        load_fixture(d)
    (d / "manifest.json").unlink()
    with pytest.raises(BootError, match="missing .*manifest.json"):
        load_fixture(d)


# -- hostile fixture directories --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "blob",
    [
        b"\xd0\x0d\xfe\xed",
        bytes.fromhex("d00dfeed 00000100 00000038 000000ff 00000028 00000011 00000010 00000000 00000010 00000100"),
        # BEGIN_NODE "" then a PROP whose length runs far past the struct block
        struct.pack(">10I", 0xD00DFEED, 0x60, 0x38, 0x58, 0x28, 17, 16, 0, 8, 0x20)
        + bytes(16)
        + struct.pack(">IIII", 1, 0, 3, 0xFFFFFF)
        + bytes(0x10)
        + b"x\0\0\0\0\0\0\0",
        b"not an FDT at all, just text" * 4,
    ],
)
def test_crafted_root_dtb_is_a_typed_error(tmp_path: Path, blob: bytes) -> None:
    d = copy_fixture(tmp_path / "fx")
    (d / "root.dtb").write_bytes(blob)
    with pytest.raises(FdtError) as ei:
        load_fixture(d)
    assert "root.dtb" in str(ei.value)


def test_crafted_root_dtb_through_the_cli(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path / "fx")
    (d / "root.dtb").write_bytes(b"\xd0\x0d\xfe\xed" + bytes(60))
    r = subprocess.run(
        [sys.executable, "-m", "kho_formats.cli", "boot", str(d), "--kernel", str(tmp_path / "Image")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert r.returncode == 1
    assert "root.dtb" in r.stderr and "internal error" not in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/hostname", "sub/../../outside.bin", "", "a\0b"])
def test_segment_path_must_stay_inside(tmp_path: Path, name: str) -> None:
    d = copy_fixture(tmp_path / "fx")
    (tmp_path / "outside.bin").write_bytes(bytes(4096))
    set_segments(d, [{"file": name, "phys": SEG_PHYS, "size": 4096}])
    with pytest.raises(BootError, match="not a relative path inside the fixture directory"):
        load_fixture(d)


def test_symlinks(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path / "fx")
    (tmp_path / "outside.bin").write_bytes((d / SEG).read_bytes())
    (d / "link-out.bin").symlink_to(tmp_path / "outside.bin")
    set_segments(d, [{"file": "link-out.bin", "phys": SEG_PHYS}])
    with pytest.raises(BootError, match="link-out.bin leads outside the fixture directory"):
        load_fixture(d)
    (d / "link-in.bin").symlink_to(d / SEG)  # inside the directory: fine
    set_segments(d, [{"file": "link-in.bin", "phys": SEG_PHYS}])
    assert load_fixture(d).segments[0].path == (d / SEG).resolve()
    (d / "loop.bin").symlink_to(d / "loop.bin")
    set_segments(d, [{"file": "loop.bin", "phys": SEG_PHYS}])
    with pytest.raises(BootError, match="loop.bin"):
        load_fixture(d)


def test_fifo_and_directory_are_not_segments(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path / "fx")
    os.mkfifo(d / "fifo.bin")  # opening it would block: it must be refused unopened
    set_segments(d, [{"file": "fifo.bin", "phys": SEG_PHYS, "size": 4096}])
    with pytest.raises(BootError, match="fifo.bin is not a regular file"):
        load_fixture(d)
    (d / "dir.bin").mkdir()
    set_segments(d, [{"file": "dir.bin", "phys": SEG_PHYS}])
    with pytest.raises(BootError, match="dir.bin is not a regular file"):
        load_fixture(d)
    os.mkfifo(d / "root.dtb.fifo")
    (d / "root.dtb").unlink()
    (d / "root.dtb").symlink_to("root.dtb.fifo")
    set_segments(d, [{"file": SEG, "phys": SEG_PHYS}])
    with pytest.raises(BootError, match="root.dtb is not a regular file"):
        load_fixture(d)


def test_segment_refusals(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path / "fx")
    set_segments(d, [{"file": SEG, "phys": SEG_PHYS, "size": 1}])
    with pytest.raises(BootError, match="size"):
        load_fixture(d)
    set_segments(d, [{"file": "nope.bin", "phys": SEG_PHYS}])
    with pytest.raises(BootError, match="nope.bin missing"):
        load_fixture(d)
    set_segments(d, [{"file": SEG, "phys": SEG_PHYS}, {"file": SEG, "phys": SEG_PHYS + 0x1000}])
    with pytest.raises(BootError, match="overlaps"):
        load_fixture(d)
    set_segments(d, [{"file": SEG}])
    with pytest.raises(BootError, match="phys"):
        load_fixture(d)
    (d / "manifest.json").write_text(json.dumps({"segments": "all of them"}))
    with pytest.raises(BootError, match="no segment list"):
        load_fixture(d)
    (d / "manifest.json").write_text(json.dumps([{"file": SEG, "phys": SEG_PHYS}]))  # a bare list is fine
    assert len(load_fixture(d).segments) == 1


# -- the QEMU command line ---------------------------------------------------------------------------------------


def test_command_line_for_a_fixture(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path / "fx")
    fx = load_fixture(d)
    p = plan(fx, tmp_path)
    k = str(tmp_path / "Image")
    assert p.cmd[: p.cmd.index("-append")] == [
        *("qemu-system-aarch64", "-M", "virt", "-cpu", "max,pauth-impdef=on", "-m", "1G"),
        *("-nographic", "-no-reboot", "-kernel", k, "-dtb", str(p.dtb_path)),
    ]
    assert p.cmd[p.cmd.index("-append") + 1] == p.cmdline == BASE_CMDLINE + " reserve_mem=4194304:4096:trace_buf"
    assert loaders(p.cmd) == [f"loader,file={(d / SEG).resolve()},addr={SEG_PHYS:#x},force-raw=on"]
    assert p.clients == ["kho_test", "memblock", "kexec-metadata"] and p.expected == {"memblock": ["trace_buf"]}
    assert p.dtb_path.read_bytes() == p.dtb and len(p.dtb) < 4096
    chosen = fdt_nodes(p.dtb)["/chosen"]
    assert chosen["linux,kho-fdt"] == (SEG_PHYS).to_bytes(8, "big") + (4096).to_bytes(8, "big")
    assert chosen["linux,kho-scratch"] == (fx.scratch_array_phys or 0).to_bytes(8, "big") + (32).to_bytes(8, "big")
    assert chosen["stdout-path"] == b"/pl011@9000000\0"


def test_command_line_extras_and_cold_boot(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path / "fx")
    edit_json(d / "handover.json", cmdline="memblock=debug")
    p = plan(load_fixture(d), tmp_path, extra_cmdline="initcall_debug", memory="1024", cpu="cortex-a57")
    assert p.cmdline.endswith(" reserve_mem=4194304:4096:trace_buf memblock=debug initcall_debug")
    assert p.cmd[2:7] == ["virt", "-cpu", "cortex-a57", "-m", "1024"]
    cold = plan(None, tmp_path)
    assert cold.cmdline == BASE_CMDLINE and not loaders(cold.cmd) and cold.clients == []
    assert "linux,kho-fdt" not in fdt_nodes(cold.dtb)["/chosen"] and len(cold.dtb) < 4096


def test_comma_in_a_path_is_escaped(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path / "a,b")
    edit_json(d / "handover.json", scratch_array_phys=None)
    work = tmp_path / "w,1"
    work.mkdir()
    p = boot.plan_boot(load_fixture(d), fake_kernel(tmp_path / "Image"), virt_dtb(), work)
    assert loaders(p.cmd) == [
        f"loader,file={qemu_opt(str(work / 'scratch-array.bin'))},addr={p.scratch_array_phys:#x},force-raw=on",
        f"loader,file={tmp_path.resolve()}/a,,b/{SEG},addr={SEG_PHYS:#x},force-raw=on",
    ]
    assert ",,1/scratch-array.bin" in loaders(p.cmd)[0]
    assert qemu_opt("x,y,,z") == "x,,y,,,,z"


def test_scratch_array_placed_in_a_free_page(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path / "fx")
    edit_json(d / "handover.json", scratch_array_phys=None)
    fx = load_fixture(d)
    p = plan(fx, tmp_path)
    assert p.scratch_array_phys == boot.KHO_BOOT_SCRATCH_ARRAY
    arr = (p.dtb_path.parent / "scratch-array.bin").read_bytes()
    assert arr == fx.scratch_array() and len(arr) == 16 * len(fx.scratch)
    chosen = fdt_nodes(p.dtb)["/chosen"]
    assert chosen["linux,kho-scratch"] == boot.KHO_BOOT_SCRATCH_ARRAY.to_bytes(8, "big") + len(arr).to_bytes(8, "big")
    # the preferred page taken by a segment: the next free page
    (d / "busy.bin").write_bytes(bytes(0x1800))
    set_segments(
        d, [{"file": SEG, "phys": SEG_PHYS}, {"file": "busy.bin", "phys": boot.KHO_BOOT_SCRATCH_ARRAY, "size": 0x1800}]
    )
    p = plan(load_fixture(d), tmp_path)
    assert p.scratch_array_phys == boot.KHO_BOOT_SCRATCH_ARRAY + 0x2000
    # an array recorded in handover.json but absent from the segments is placed anyway
    edit_json(d / "handover.json", scratch_array_phys=0x7000_0000)
    assert plan(load_fixture(d), tmp_path).scratch_array_phys == boot.KHO_BOOT_SCRATCH_ARRAY + 0x2000


def test_layout_refusals(tmp_path: Path) -> None:
    d = copy_fixture(tmp_path / "fx")
    fx = load_fixture(d)
    with pytest.raises(BootError, match="outside QEMU virt RAM"):
        plan(fx, tmp_path, memory="512M")
    wd = tmp_path / "w"
    wd.mkdir()
    big = fake_kernel(tmp_path / "Big", image_size=0x3800_0000)
    with pytest.raises(BootError, match="overlaps the kernel Image"):
        boot.plan_boot(fx, big, virt_dtb(), wd)
    with pytest.raises(BootError, match="memory size"):
        plan(fx, tmp_path, memory="a lot")


def test_ram_and_kernel_header(tmp_path: Path) -> None:
    assert ram_bytes("1G") == ram_bytes("1024M") == ram_bytes("1024") == 1 << 30
    assert kernel_span(fake_kernel(tmp_path / "I", 0x100_0000)) == (boot.QEMU_RAM_BASE + (2 << 20), 0x100_0000)
    (tmp_path / "raw").write_bytes(bytes(100))
    assert kernel_span(tmp_path / "raw") == (boot.QEMU_RAM_BASE, 100)
    with pytest.raises(BootError):
        kernel_span(tmp_path / "missing")


def _memblock_fixture(tmp_path: Path, image: PhysImage, blob_len: int) -> BootFixture:
    root = FdtNode("")
    root.set("compatible", b"kho-v4\0")
    root.set("preserved-memory-map", u64_bytes(0, "little"))
    node = root.add_child("memblock")
    node.set("preserved-data", u64_bytes(0x7000_0000, "little"))
    node.set("blob-size", u64_bytes(blob_len, "little"))
    fx = BootFixture(tmp_path, [], image, 0x7100_0000, 4096, [], None)
    fx.root_fdt_bytes = build_fdt(root)
    return fx


def test_memblock_rule_reads_the_sub_blob_leniently(tmp_path: Path) -> None:
    rule = client_rule("memblock")
    assert rule is not None and rule.cmdline is not None
    sub = FdtNode("")
    sub.set("compatible", b"memblock-v1\0")
    for name, size in (("trace_buf", 0x40_0000), ("bad name!", 0x1000), ("empty", 0)):
        r = sub.add_child(name)
        r.set("compatible", b"reserve-mem-v1\0")
        r.set("start", u64_bytes(0x6000_0000, "little"))
        r.set("size", u64_bytes(size, "little"))
    blob = build_fdt(sub)
    decoded = _memblock_fixture(tmp_path, PhysImage([(0x7000_0000, blob)]), len(blob)).decoded_clients()
    assert rule.cmdline(decoded["memblock"]) == [("trace_buf", "reserve_mem=4194304:4096:trace_buf")]
    # crafted or absent sub-blob bytes: nothing decoded, nothing asked, no exception (the kernel judges those bytes)
    crafted = PhysImage([(0x7000_0000, b"\xd0\x0d\xfe\xed" + bytes(len(blob) - 4))])
    assert "memblock" not in _memblock_fixture(tmp_path, crafted, len(blob)).decoded_clients()
    assert "memblock" not in _memblock_fixture(tmp_path, PhysImage(), len(blob)).decoded_clients()
    broken_root = _memblock_fixture(tmp_path, PhysImage([(0x7000_0000, blob)]), len(blob))
    broken_root.root_fdt_bytes = b"\xd0\x0d\xfe\xed" + bytes(60)
    assert broken_root.decoded_clients() == {}


def test_boot_error_is_a_kho_format_error() -> None:
    assert issubclass(BootError, KhoFormatError) and BootError("x").to_json()["kind"] == "boot"
    assert boot.BootError is BootError


def _image_with_flags(path: Path, flags: int) -> Path:
    """A file with an arm64 Image header (magic ``ARM\\x64`` at 56, flags at 24)."""
    hdr = bytearray(64)
    hdr[8:16] = (0x80000).to_bytes(8, "little")  # text_offset
    hdr[16:24] = (1 << 20).to_bytes(8, "little")  # image_size
    hdr[24:32] = flags.to_bytes(8, "little")
    hdr[56:60] = b"ARM\x64"
    path.write_bytes(bytes(hdr) + bytes(4096))
    return path


@pytest.mark.parametrize(("bits", "size"), [(1, 4096), (2, 16384), (3, 65536), (0, None)])
def test_kernel_page_size_from_the_image_header(tmp_path: Path, bits: int, size: int | None) -> None:
    from kho_formats.boot.qemu import kernel_page_size

    # bit 0 (big-endian kernel) and bit 3 (placement) must not disturb bits 1-2
    assert kernel_page_size(_image_with_flags(tmp_path / "Image", (bits << 1) | 0b1001)) == size
    (tmp_path / "raw").write_bytes(bytes(100))
    assert kernel_page_size(tmp_path / "raw") is None


def test_a_kernel_of_another_page_size_is_refused(tmp_path: Path) -> None:
    from kho_formats.boot.qemu import check_kernel_page_size

    k16 = _image_with_flags(tmp_path / "Image16", 2 << 1)
    with pytest.raises(BootError, match="built for 16 KiB pages, the fixture has 4 KiB pages.*KHO_KERNEL_PAGE_SIZE=4K"):
        check_kernel_page_size(k16, 4096)
    check_kernel_page_size(k16, 16384)  # the same: fine
    check_kernel_page_size(_image_with_flags(tmp_path / "Image0", 0), 65536)  # unspecified: not refused
    # and plan_boot refuses before building anything
    fx = load_fixture(copy_fixture(tmp_path / "fx"))
    with pytest.raises(BootError, match="built for 16 KiB pages"):
        boot.plan_boot(fx, k16, virt_dtb(), tmp_path / "wd")


def test_fixtures_of_every_arm64_page_size_load(tmp_path: Path) -> None:
    from kho_formats.boot.qemu import default_kernel

    for name, ps in (("v4-16k", 16384), ("v4-64k", 65536)):
        fx = load_fixture(FIX.parent / name)
        assert fx.page_size == ps and fx.clients
        assert default_kernel(page_size=ps).parent.name == f"linux-7.3-arm64-{ps // 1024}k"
    assert default_kernel().parent.name == "linux-7.3-arm64"
    assert default_kernel(luo=True).parent.name == "linux-7.3-arm64-4k-luo"
