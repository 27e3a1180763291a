"""kho boot on x86_64 without QEMU: the bzImage setup header, the patched copy
that names the SETUP_KEXEC_KHO setup_data entry, where that entry and the
scratch array go in QEMU pc RAM, and the refusals (arch mismatches, segments
over the kernel).  The real boots are in test_kernel_x86.py."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from kho_formats import boot
from kho_formats.abi.layout import SETUP_KEXEC_KHO, layout
from kho_formats.boot import x86
from kho_formats.boot.load import load_fixture
from kho_formats.boot.runner import plan_boot
from kho_formats.errors import BootError
from kho_formats.memory.image import PhysImage
from kho_formats.model.spec import build_spec, load_spec
from kho_formats.ops.locate import from_boot_info

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "fixtures" / "specs" / "kernel" / "x86.toml"
SHIPPED = ROOT / "fixtures" / "v4-4k-x86"
PREF, INIT = 0x100_0000, 0xB8_9000


def fake_bzimage(path: Path, *, protocol: int = 0x20F, setup_sects: int = 27, size: int = 1 << 16) -> Path:
    data = bytearray(size)
    data[0x1F1] = setup_sects
    data[0x200:0x202] = b"\xeb\x6a"  # jmp to the end of the header (0x26c), as in a real bzImage
    data[0x202:0x206] = b"HdrS"
    data[0x206:0x208] = protocol.to_bytes(2, "little")
    data[0x258:0x260] = PREF.to_bytes(8, "little")
    data[0x260:0x264] = INIT.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def fake_arm64_image(path: Path) -> Path:
    hdr = bytearray(64)
    hdr[16:24] = (0x13C_0000).to_bytes(8, "little")
    hdr[24:32] = (1 << 1).to_bytes(8, "little")  # 4 KiB pages
    hdr[56:60] = b"ARM\x64"
    path.write_bytes(bytes(hdr))
    return path


def x86_fixture(tmp_path: Path) -> Path:
    fx = build_spec(load_spec(SPEC))
    d = tmp_path / "fx"
    d.mkdir()
    (d / "root.dtb").write_bytes(fx.root_fdt)
    fx.image.to_bundle(d)
    (d / "handover.json").write_text(json.dumps(fx.handover()))
    return d


def test_setup_header_read_from_the_bzimage(tmp_path: Path) -> None:
    bz = x86.bzimage(fake_bzimage(tmp_path / "bzImage"))
    assert bz is not None
    assert (bz.protocol, bz.setup_size, bz.kernel_span) == (0x20F, 28 * 512, (PREF, INIT))
    assert bz.payload_size == (1 << 16) - 28 * 512
    assert x86.bzimage(fake_bzimage(tmp_path / "old0", setup_sects=0)).setup_size == 5 * 512  # 0 means 4
    assert x86.bzimage(fake_arm64_image(tmp_path / "Image")) is None
    for old in (0x208, 0x209):  # 2.09 has setup_data but no pref_address / init_size yet
        with pytest.raises(BootError, match=rf"protocol 2\.0{old & 0xF}.*2\.10 or later"):
            x86.bzimage(fake_bzimage(tmp_path / "old", protocol=old))


def test_patched_copy_names_the_setup_data_and_leaves_the_input(tmp_path: Path) -> None:
    src = fake_bzimage(tmp_path / "bzImage")
    before = src.read_bytes()
    out = x86.patched_bzimage(x86.bzimage(src), 0x3000_0000, tmp_path / "patched")
    after = out.read_bytes()
    assert src.read_bytes() == before
    diff = [i for i in range(len(before)) if before[i] != after[i]]
    assert diff and min(diff) >= x86.SETUP_DATA_FIELD and max(diff) < x86.SETUP_DATA_FIELD + 8
    assert int.from_bytes(after[0x250:0x258], "little") == 0x3000_0000
    # a header that already names a chain is not silently overwritten
    with pytest.raises(BootError, match="already points at setup_data"):
        x86.patched_bzimage(x86.bzimage(out), 0x1000, tmp_path / "again")


def _loaders(cmd: list[str]) -> list[dict[str, str]]:
    return [dict(x.split("=", 1) for x in a.split(",")[1:]) for a in cmd if a.startswith("loader,")]


def test_setup_data_entry_is_the_fixtures_own(tmp_path: Path) -> None:
    """The harness's entry equals the setup_data.bin kho build writes, given the same scratch array place."""
    hj = json.loads((SHIPPED / "handover.json").read_text())
    entry = x86.setup_data_entry(hj["fdt_phys"], hj["fdt_size"], hj["scratch_array_phys"], hj["scratch_array_size"])
    assert entry == (SHIPPED / "setup_data.bin").read_bytes()
    hdr = layout(4096, "little").setup_data_hdr.parse(entry[:16])
    assert (hdr.next, hdr.type, hdr.len) == (0, SETUP_KEXEC_KHO, 32)


def test_plan_chain_followed_by_the_library_reader(tmp_path: Path) -> None:
    """What QEMU is told to load, read back as a kernel would: boot_params (the
    patched header) -> setup_data at its physical address -> kho_data -> the
    root FDT and the scratch array, through kho_formats.ops.locate (an independent reader)."""
    d = x86_fixture(tmp_path)
    fx = load_fixture(d)
    assert fx.arch == "x86_64"
    wd = tmp_path / "wd"
    wd.mkdir()
    kernel = fake_bzimage(tmp_path / "bzImage")
    p = plan_boot(fx, kernel, None, wd)
    assert p.arch == "x86_64" and p.dtb is None and p.setup_data_phys is not None
    assert p.cmd[0] == "qemu-system-x86_64" and p.cmd[p.cmd.index("-M") + 1] == "pc"
    assert p.cmd[p.cmd.index("-kernel") + 1] == str(wd / "bzImage") and "-dtb" not in p.cmd
    assert p.cmdline.startswith(x86.X86_BASE_CMDLINE) and "reserve_mem=4194304:4096:trace_buf" in p.cmdline
    # every loader in the command line, placed into one image
    image = PhysImage()
    for arg in p.cmd[p.cmd.index("-append") + 2 :]:
        if arg.startswith("loader,"):
            kv = dict(x.split("=", 1) for x in arg.split(",")[1:])
            image.add(int(kv["addr"], 16), Path(kv["file"]).read_bytes())
    boot_params = (wd / "bzImage").read_bytes()[:4096]
    assert from_boot_info(boot_params, image) == [fx.fdt_phys]
    kd = layout(4096, "little").kho_data.parse(image.read(p.setup_data_phys + 16, 32))
    assert (kd.fdt_addr, kd.fdt_size) == (fx.fdt_phys, fx.fdt_size)
    assert (kd.scratch_addr, kd.scratch_size) == (p.scratch_array_phys, 16)
    assert image.read(kd.scratch_addr, 16) == fx.scratch_array()
    # the fixture's own scratch array is used; the harness's page is clear of the kernel
    assert p.scratch_array_phys == fx.scratch_array_phys
    assert p.setup_data_phys >= x86.X86_PREFERRED and not (PREF <= p.setup_data_phys < PREF + INIT)


def test_scratch_array_placed_when_the_fixture_lacks_it(tmp_path: Path) -> None:
    d = x86_fixture(tmp_path)
    hj = json.loads((d / "handover.json").read_text())
    hj.pop("scratch_array_phys")
    (d / "handover.json").write_text(json.dumps(hj))
    wd = tmp_path / "wd"
    wd.mkdir()
    p = plan_boot(load_fixture(d), fake_bzimage(tmp_path / "bzImage"), None, wd)
    assert (wd / "scratch-array.bin").is_file()
    assert p.scratch_array_phys != p.setup_data_phys
    assert abs(p.scratch_array_phys - p.setup_data_phys) >= 4096


def test_cold_boot_plan_boots_the_kernel_as_is(tmp_path: Path) -> None:
    kernel = fake_bzimage(tmp_path / "bzImage")
    p = plan_boot(None, kernel, None, tmp_path)
    assert p.arch == "x86_64" and p.setup_data_phys is None
    assert p.cmd[p.cmd.index("-kernel") + 1] == str(kernel) and "loader" not in " ".join(p.cmd)


def test_arch_mismatches_refused(tmp_path: Path) -> None:
    d = x86_fixture(tmp_path)
    with pytest.raises(BootError, match="arm64 Image; the fixture is for x86_64"):
        plan_boot(load_fixture(d), fake_arm64_image(tmp_path / "Image"), None, tmp_path)
    (tmp_path / "vmlinux").write_bytes(b"\x7fELF" + bytes(600))
    with pytest.raises(BootError, match="not an x86 bzImage"):
        plan_boot(load_fixture(d), tmp_path / "vmlinux", None, tmp_path)
    arm = ROOT / "fixtures" / "v4-4k"
    with pytest.raises(BootError, match="x86 bzImage; the fixture is for arm64"):
        plan_boot(load_fixture(arm), fake_bzimage(tmp_path / "bzImage"), b"", tmp_path)


def test_a_fixture_over_the_kernel_is_refused(tmp_path: Path) -> None:
    """A root FDT at 16 MiB (where fixtures/v4-4k-x86 had it) lies where the x86 kernel decompresses itself."""
    sp = load_spec(SPEC)
    sp.root_fdt_phys, sp.alloc = 0x100_0000, [(0x100_1000, 0xFFF000)]
    fx = build_spec(sp)
    d = tmp_path / "low"
    d.mkdir()
    fx.image.to_bundle(d)
    (d / "handover.json").write_text(json.dumps(fx.handover()))
    with pytest.raises(BootError, match=r"overlaps the kernel's decompression buffer \(pref_address"):
        plan_boot(load_fixture(d), fake_bzimage(tmp_path / "bzImage"), None, tmp_path)


def test_the_shipped_x86_fixture_plans_clear_of_the_kernel(tmp_path: Path) -> None:
    d = tmp_path / "v4-4k-x86"
    shutil.copytree(SHIPPED, d)
    p = plan_boot(load_fixture(d), fake_bzimage(tmp_path / "bzImage"), None, tmp_path)
    assert (
        p.setup_data_phys is not None
        and p.scratch_array_phys == json.loads((SHIPPED / "handover.json").read_text())["scratch_array_phys"]
    )
    busy = x86.x86_busy(x86.bzimage(fake_bzimage(tmp_path / "bz2")), 1 << 30)
    loads = [(int(kv["addr"], 16), Path(kv["file"]).stat().st_size) for kv in _loaders(p.cmd)]
    assert len(loads) == 2  # the fixture's segment and the setup_data entry
    for a, n in loads:  # every byte QEMU loads is clear of the kernel, the first MiB and the top of RAM
        assert not any(a < y and a + n > x for _, x, y in busy), (hex(a), n)


def test_segment_outside_pc_ram_refused(tmp_path: Path) -> None:
    d = x86_fixture(tmp_path)
    with pytest.raises(BootError, match="outside QEMU pc RAM"):
        plan_boot(load_fixture(d), fake_bzimage(tmp_path / "bzImage"), None, tmp_path, memory="512M")


def test_default_kernel_per_arch(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KHO_KERNEL_CACHE", str(tmp_path))
    assert boot.default_kernel(arch="x86_64") == tmp_path / "linux-7.3-x86_64-live" / "bzImage"
    assert boot.default_kernel() == tmp_path / "linux-7.3-arm64" / "Image"
    with pytest.raises(BootError, match="scripts/live/build-kernel.sh"):
        boot.run_boot(x86_fixture(tmp_path))


# -- --via kexec: the first-stage kernel's plan ---------------------------------------------------


def _plan_kexec(tmp_path: Path):
    from kho_formats.boot.kexec import plan_kexec

    d = x86_fixture(tmp_path)
    fx = load_fixture(d)
    kernel = fake_bzimage(tmp_path / "bzImage", size=3 << 20)
    loader = tmp_path / "loader"
    loader.write_bytes(b"\x7fELF not really")
    return fx, kernel, plan_kexec(fx, x86.bzimage(kernel), "console=ttyS0 kho=on", loader=loader)


def test_kexec_plan_segments(tmp_path: Path) -> None:
    from kho_formats.boot.initramfs import read_newc

    fx, kernel, kp = _plan_kexec(tmp_path)
    segs = sorted(kp.segments)
    assert len(segs) <= 16
    for a, n, name in segs:
        assert a % 4096 == 0 and n % 4096 == 0, (name, hex(a), hex(n))
    for (a, n, name), (b, _, _) in zip(segs, segs[1:]):
        assert a + n <= b, (name, hex(a), hex(n), hex(b))
    by_name = {name: (phys, memsz) for phys, memsz, name in kp.segments}
    bz = x86.bzimage(kernel)
    assert by_name["kernel"] == (PREF, INIT)  # at pref_address, room for init_size
    files = {e.name: e.data for e in read_newc(kp.initrd)}
    assert files["init"] == b"\x7fELF not really" and files["kexec/kernel"] == kernel.read_bytes()[bz.setup_size :]
    plan = files["kexec/plan"].decode().splitlines()
    assert plan[0] == f"entry {kp.entry:x}" and kp.entry == by_name["purgatory"][0]
    assert plan[-1] == f"bootparams {kp.boot_params_phys:x} /kexec/boot-params"
    for k, seg in enumerate(fx.segments):  # the fixture's bytes at their own addresses
        assert by_name[f"fixture-{k}"][0] == seg.phys
        assert files[f"kexec/fixture-{k}"] == fx.image.read(seg.phys, seg.size)
    # the harness's pages are clear of the kernel's buffer
    for name in ("setup-data", "cmdline", "purgatory", "boot-params"):
        a = by_name[name][0]
        assert not (PREF <= a < PREF + INIT) and a >= x86.X86_PREFERRED, name


def test_kexec_zero_page_and_purgatory(tmp_path: Path) -> None:
    """The zero page names the command line and the setup_data chain, read back
    through the library's own boot_params reader (locate.from_boot_info); the
    purgatory loads %rsi with it and jumps 0x200 into the protected-mode kernel."""
    from kho_formats.boot.initramfs import read_newc

    fx, kernel, kp = _plan_kexec(tmp_path)
    files = {e.name: e.data for e in read_newc(kp.initrd)}
    bp = files["kexec/boot-params"]
    src = kernel.read_bytes()
    end = 0x202 + src[0x201]
    assert bp[0x202:0x206] == b"HdrS" and bp[0x1F1:0x210] == src[0x1F1:0x210]  # the bzImage's setup header
    assert (
        bp[0x212:0x214] == src[0x212:0x214] and bp[0x230:0x250] == src[0x230:0x250] and bp[0x258:end] == src[0x258:end]
    )
    assert int.from_bytes(bp[0x250:0x258], "little") == kp.setup_data_phys  # setup_data names our entry
    assert bp[0x210] == 0xFF and bp[0x211] & 1  # type_of_loader, LOADED_HIGH
    by_name = {name: phys for phys, _, name in kp.segments}
    cmd = int.from_bytes(bp[0x228:0x22C], "little") | int.from_bytes(bp[0xC8:0xCC], "little") << 32
    assert cmd == by_name["cmdline"] and files["kexec/cmdline"] == b"console=ttyS0 kho=on\0"
    image = PhysImage()
    for name, phys in by_name.items():
        if name != "boot-params":
            image.add(phys, files[f"kexec/{name}"])
    assert from_boot_info(bp, image) == [fx.fdt_phys]
    p = files["kexec/purgatory"]
    assert (p[:2], p[10:12], p[20:]) == (b"\x48\xbe", b"\x48\xb8", b"\xff\xe0")  # movabs rsi; movabs rax; jmp rax
    assert int.from_bytes(p[2:10], "little") == kp.boot_params_phys
    assert int.from_bytes(p[12:20], "little") == PREF + 0x200


def test_kexec_second_initrd_named_by_the_ramdisk_fields(tmp_path: Path) -> None:
    from kho_formats.boot.initramfs import read_newc
    from kho_formats.boot.kexec import plan_kexec

    fx = load_fixture(x86_fixture(tmp_path))
    kernel = fake_bzimage(tmp_path / "bzImage", size=3 << 20)
    loader = tmp_path / "loader"
    loader.write_bytes(b"L")
    rd = bytes(range(256)) * 40  # 10 KiB
    kp = plan_kexec(fx, x86.bzimage(kernel), "x", loader=loader, second_initrd=rd)
    files = {e.name: e.data for e in read_newc(kp.initrd)}
    bp = files["kexec/boot-params"]
    phys = {name: p for p, _, name in kp.segments}["initrd"]
    assert files["kexec/initrd"] == rd and phys % 4096 == 0
    assert int.from_bytes(bp[0x218:0x21C], "little") | int.from_bytes(bp[0xC0:0xC4], "little") << 32 == phys
    assert int.from_bytes(bp[0x21C:0x220], "little") == len(rd) and bp[0xC4:0xC8] == bytes(4)
    # without one the fields are zero
    (tmp_path / "plain").mkdir()
    _, _, plain = _plan_kexec(tmp_path / "plain")
    bp0 = {e.name: e.data for e in read_newc(plain.initrd)}["kexec/boot-params"]
    assert bp0[0x218:0x220] == bytes(8) and bp0[0xC0:0xC8] == bytes(8)


def test_kexec_refusals(tmp_path: Path) -> None:
    with pytest.raises(BootError, match="x86_64 fixture over from a first-stage"):
        boot.run_boot(ROOT / "fixtures" / "v4-4k", fake_arm64_image(tmp_path / "Image"), via="kexec")
    with pytest.raises(BootError, match="via 'usb'"):
        boot.run_boot(SHIPPED, fake_bzimage(tmp_path / "bzImage"), via="usb")


def test_kexec_plan_refusals(tmp_path: Path) -> None:
    from kho_formats.boot.kexec import plan_kexec

    fx, kernel, _ = _plan_kexec(tmp_path)
    bz = x86.bzimage(kernel)
    loader = tmp_path / "loader"
    many = dataclasses.replace(fx, segments=[fx.segments[0]] * 12)
    with pytest.raises(BootError, match="at most 16"):
        plan_kexec(many, bz, "x", loader=loader)
    seg = fx.segments[0]
    odd_seg = dataclasses.replace(seg, phys=seg.phys + 0x800, size=16)
    odd = dataclasses.replace(fx, segments=[odd_seg], image=fx.image)
    with pytest.raises(BootError, match="page-aligned"):
        plan_kexec(odd, bz, "x", loader=loader)


@pytest.mark.parametrize(
    ("log", "verdict", "reason"),
    [
        (
            "[    0.1] Linux version\nKEXECLOAD begin\nKEXECLOAD error kexec_load: Function not implemented\n",
            "error",
            "KEXECLOAD error kexec_load: Function not implemented",
        ),
        (
            "[    0.1] Linux version\n[    2.0] Kernel panic - not syncing: No working init found\n",
            "error",
            "the first-stage kernel did not kexec",
        ),
        ("", "error", "the first-stage kernel did not kexec"),
        (
            "[    0.1] first\n[    0.7] kexec_core: Starting new kernel\n[    0.0] KHO: found kexec handover data.\n"
            "[    1.0] test_kho: KHO restore succeeded\n",
            "accepted",
            "handover found",
        ),
        (
            "[    0.1] first\n[    0.7] kexec_core: Starting new kernel\n[    0.0] Linux version\n",
            "rejected",
            "kernel did not accept the handover",
        ),
    ],
)
def test_kexec_verdict_judges_the_second_kernel_only(log: str, verdict: str, reason: str) -> None:
    """A first stage that never kexec'd is an error (the fixture reached no kernel);
    after the jump, the second kernel's lines alone are judged."""
    from kho_formats.boot.runner import _Clients, judge_kexec_log

    asks = _Clients(names=["kho_test"])
    r = judge_kexec_log(log, asks, None)
    assert (r.verdict, reason in r.reason) == (verdict, True), r.reason
    before = judge_kexec_log("[    0.1] KHO: found kexec handover data.\n", asks, None)  # only before a jump
    assert before.verdict == "error"
