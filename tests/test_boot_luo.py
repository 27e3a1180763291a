"""kho boot for LUO state without a kernel: the newc cpio writer and the
initramfs, the luo_check list and output lines, the LUO boot rule's
judgement, and the QEMU command line with ``-initrd`` (``plan_boot`` runs
nothing).  The real boots are in ``test_kernel_luo.py``."""

from __future__ import annotations

import random
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from test_boot_plan import plan
from test_kernel_boot import write_boot_fixture

from kho_formats import boot
from kho_formats.boot import initramfs as ir
from kho_formats.boot.load import load_fixture
from kho_formats.boot.qemu import QEMU_INITRD_ADDR, dtb_addr
from kho_formats.errors import BootError
from kho_formats.model.clients import BootLog, decode_clients
from kho_formats.model.clients.luo import boot as luo_boot
from kho_formats.model.spec import build_spec, load_spec

ROOT = Path(__file__).resolve().parent.parent
LUO_SPEC = ROOT / "fixtures" / "specs" / "kernel" / "luo.toml"
ORDERS_SPEC = ROOT / "fixtures" / "specs" / "kernel" / "orders-0-10.toml"


@pytest.fixture(scope="module")
def luo_fx():
    return build_spec(load_spec(LUO_SPEC))


@pytest.fixture(scope="module")
def luo_state(luo_fx):
    rep = decode_clients(luo_fx.state, luo_fx.image)["LUO"]
    assert rep.error is None
    return rep.decoded


@pytest.fixture(scope="module")
def truth(luo_fx, luo_state):
    t = luo_boot.luo_truth(luo_state, luo_fx.image, 4096)
    assert t is not None
    return t


# -- cpio ------------------------------------------------------------------------------------------------------


def test_newc_round_trip_and_alignment():
    entries = [
        ir.CpioEntry("dev", stat.S_IFDIR | 0o755),
        ir.CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        ir.CpioEntry("init", stat.S_IFREG | 0o755, b"\x7fELF" + bytes(range(200))),
        ir.CpioEntry("a/odd-name.txt", stat.S_IFREG | 0o644, b"xyz"),
        ir.CpioEntry("empty", stat.S_IFREG | 0o644),
    ]
    data = ir.newc_archive(entries)
    assert data.startswith(b"070701") and len(data) % 4 == 0
    assert b"TRAILER!!!\0" in data
    assert ir.read_newc(data) == entries
    assert ir.newc_archive(entries) == data  # deterministic
    # every header starts 4-aligned: walk the magic positions
    at = 0
    for e in entries:
        assert data[at : at + 6] == b"070701"
        namesize = int(data[at + 94 : at + 102], 16)
        at += 110 + namesize
        at += -at % 4
        at += len(e.data) + (-len(e.data) % 4)
    assert data[at : at + 6] == b"070701"


def test_newc_refuses_bad_members():
    with pytest.raises(ValueError):
        ir.newc_archive([ir.CpioEntry("", stat.S_IFREG)])
    with pytest.raises(ValueError):
        ir.newc_archive([ir.CpioEntry("d", stat.S_IFDIR | 0o755, b"data")])
    with pytest.raises(ValueError):
        ir.read_newc(b"070702" + bytes(200))


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio(1) not installed")
def test_newc_read_by_cpio(tmp_path):
    data = ir.initramfs(b"#!init", {"luo-list": b"S a\n", "etc/x": b"1"})
    out = subprocess.run(["cpio", "-t"], input=data, capture_output=True, check=True).stdout.decode().split()
    assert out == ["dev", "dev/console", "proc", "sys", "init", "etc", "etc/x", "luo-list"]


def test_initramfs_layout():
    data = ir.initramfs(b"INIT", {"luo-list": b"S vm-a\nF 1\n", "/sub/dir/f": b"z"})
    got = {e.name: e for e in ir.read_newc(data)}
    assert list(got) == ["dev", "dev/console", "proc", "sys", "init", "luo-list", "sub", "sub/dir", "sub/dir/f"]
    assert stat.S_ISCHR(got["dev/console"].mode) and got["dev/console"].rdev == (5, 1)
    assert got["init"].data == b"INIT" and got["init"].mode == stat.S_IFREG | 0o755
    assert got["luo-list"].data == b"S vm-a\nF 1\n"
    for bad in ("init", "../x", "a/../b", "dev/console", ""):
        with pytest.raises(BootError):
            ir.initramfs(b"", {bad: b""})


def test_luo_check_binary_missing_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("KHO_CROSS_CC", "no-such-cross-gcc-xyz")
    assert ir.cross_compiler() is None
    with pytest.raises(BootError, match="apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"):
        ir.luo_check_binary(tmp_path)


@pytest.mark.skipif(ir.cross_compiler() is None, reason=f"{ir.CROSS_CC} not installed")
def test_luo_check_binary_is_static_arm64_and_cached(tmp_path):
    b = ir.luo_check_binary(tmp_path)
    head = b.read_bytes()[:64]
    assert head[:4] == b"\x7fELF" and head[4] == 2 and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    mtime = b.stat().st_mtime_ns
    assert ir.luo_check_binary(tmp_path) == b and b.stat().st_mtime_ns == mtime


# -- FNV-1a 64, names ------------------------------------------------------------------------------------------


def naive_fnv(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def test_fnv1a64():
    assert luo_boot.fnv1a64([]) == 0xCBF29CE484222325
    assert luo_boot.fnv1a64([b"a"]) == 0xAF63DC4C8601EC8C
    rnd = random.Random(5)
    data = bytes(rnd.randrange(256) for _ in range(5000)) + bytes(3 * 4096 + 7) + b"\x01" + bytes(4096)
    assert luo_boot.fnv1a64([data]) == naive_fnv(data)
    pieces = [data[:100], memoryview(data)[100:9000], data[9000:]]  # split anywhere
    assert luo_boot.fnv1a64(pieces) == naive_fnv(data)


@pytest.mark.parametrize("raw", [b"vm-a", b"with space", b"%&/\xff\x01", b"a" * 63])
def test_session_names_escape_round_trip(raw):
    e = luo_boot.esc_name(raw + b"\0junk")
    assert all(c.isalnum() or c in "._-%" for c in e) and " " not in e
    assert luo_boot.unesc_name(e) == raw


# -- the list and the truth ------------------------------------------------------------------------------------


def test_luo_list_and_truth(luo_state, truth):
    lines = luo_boot.luo_list(luo_state).decode().splitlines()
    assert lines[0] == "S vm-a" and lines[1] == "F 0" and lines[3] == "F ffffffffffffffff"
    assert lines[-2:] == ["S vm-b", "F 1"] and len(lines) == 70
    assert truth.liveupdate_num == 1 and truth.sessions == ("vm-a", "vm-b")
    by_token = {f.token: f for f in truth.files}
    assert len(truth.files) == 68
    assert by_token[0].size == 0 and by_token[0].fnv1a64 == 0xCBF29CE484222325
    assert (by_token[0x1001].size, by_token[0x1001].seals, by_token[0x1001].pos) == (12388, 1, 100)
    big = by_token[0xFFFFFFFFFFFFFFFF]
    assert (big.size, big.seals, big.pos) == (2 << 20, 7, 9029)
    # the contents as luo_check reads them: a marker, then zeros to 2 MiB
    assert big.fnv1a64 == naive_fnv(bytes.fromhex("4b484f2d4c554f21").ljust(2 << 20, b"\0"))
    assert luo_boot.initrd_files(luo_state) == {"luo-list": luo_boot.luo_list(luo_state)}


def test_sparse_memfd_truth_uses_folio_orders(luo_fx, luo_state, truth):
    """vm-b's memfd has an order-2 folio at index 0 and an order-1 at 16: the
    truth covers whole folios (the memory map's orders), holes read as zeros."""
    f = luo_state.sessions[1].files[0]
    m = f.decoded
    assert m.order.tolist() == [2, 1] and m.index.tolist() == [0, 16]
    buf = bytearray(m.size)
    for p, i, o in zip(m.phys.tolist(), m.index.tolist(), m.order.tolist()):
        buf[i * 4096 : (i + (1 << o)) * 4096] = luo_fx.image.read(p, 4096 << o)
    assert truth.files[-1].fnv1a64 == naive_fnv(bytes(buf))


# -- the program's lines and the judgement ---------------------------------------------------------------------


def program_lines(truth: luo_boot.LuoTruth, **override: str) -> list[str]:
    """What luo_check prints for a kernel that gave everything back."""
    out = [f"LUOCHECK begin list={len(truth.sessions) + len(truth.files)}"]
    for s in truth.sessions:
        out.append(f"LUOCHECK session name={s} fd=5")
        for f in truth.files:
            if f.session != s:
                continue
            h = override.get(f"{f.token:#x}", f"0x{f.fnv1a64:016x}")
            out.append(
                f"LUOCHECK file session={s} token={f.token:#x} size={f.size} seals={f.seals:#x} pos={f.pos} fnv1a64={h}"
            )
    out.append(f"LUOCHECK end sessions={len(truth.sessions)} files={len(truth.files)} errors=0")
    return out


RETRIEVED = "luo: Retrieved live update data, liveupdate number: 1"


def test_parse_check_output(truth):
    lines = program_lines(truth)
    lines[5] = "[    1.0] some kernel message" + lines[5]  # a printk sharing the console line
    out = luo_boot.parse_check_output(["noise", *lines])
    assert out.begun and out.end == {"sessions": "2", "files": "68", "errors": "0"}
    assert out.sessions == {"vm-a": None, "vm-b": None} and len(out.files) == 68
    assert out.files[("vm-a", 0x1001)]["size"] == "12388"
    bad = luo_boot.parse_check_output(["LUOCHECK file token=zz", "LUOCHECK bogus"])
    assert len(bad.errors) == 2 and all(e.startswith("unparsed") for e in bad.errors)


def test_judge_accepts_every_file_equal(truth):
    log = BootLog([RETRIEVED, *program_lines(truth)], True, ("liveupdate",), truth)
    assert luo_boot.judge(log) == ("ok", None)


def test_judge_content_mismatch(truth):
    lines = program_lines(truth, **{"0x1001": "0x0123456789abcdef"})
    status, why = luo_boot.judge(BootLog([RETRIEVED, *lines], True, (), truth))
    assert status == "failed"
    assert why is not None and why.startswith("LUO session 'vm-a' file token 0x1001: content mismatch")
    assert "fnv1a64 0x0123456789abcdef != fixture" in why and "12388 bytes" in why


def test_judge_size_seals_pos(truth):
    lines = [l.replace("size=12388 seals=0x1 pos=100", "size=12388 seals=0x3 pos=0") for l in program_lines(truth)]
    _, why = luo_boot.judge(BootLog([RETRIEVED, *lines], True, (), truth))
    assert (
        why
        == "LUO session 'vm-a' file token 0x1001: seals 0x3 != fixture 1; LUO session 'vm-a' file token 0x1001: pos 0 != fixture 100"
    )


def test_judge_refusals_and_missing_lines(truth):
    lines = program_lines(truth)
    i = next(k for k, l in enumerate(lines) if "token=0x1001 " in l)
    lines[i] = "LUOCHECK file session=vm-a token=0x1001 err=5 op=retrieve_fd"
    _, why = luo_boot.judge(BootLog([RETRIEVED, *lines], True, (), truth))
    assert why == "LUO session 'vm-a' file token 0x1001: the kernel refused it (retrieve_fd): EIO (Input/output error)"
    # a session the kernel does not have
    lines = [l for l in program_lines(truth) if "session=vm-b" not in l and "name=vm-b" not in l]
    lines.insert(-1, "LUOCHECK session name=vm-b err=2 op=retrieve_session")
    _, why = luo_boot.judge(BootLog([RETRIEVED, *lines], True, (), truth))
    assert why is not None and "LUO session 'vm-b': the kernel refused to retrieve it: ENOENT" in why
    # the program stopped half-way
    _, why = luo_boot.judge(BootLog([RETRIEVED, *program_lines(truth)[:10]], True, (), truth))
    assert why is not None and "not reported" in why and "no 'LUOCHECK end' line" in why
    # no /dev/liveupdate (a kernel without LIVEUPDATE)
    lines = ["LUOCHECK begin list=70", "LUOCHECK error err=2 op=open_dev", "LUOCHECK end sessions=0 files=0 errors=1"]
    _, why = luo_boot.judge(BootLog([RETRIEVED, *lines], True, (), truth))
    assert why is not None and why.startswith("luo_check could not open /dev/liveupdate: ENOENT")
    # no initramfs program at all
    assert luo_boot.judge(BootLog([RETRIEVED], True, (), truth))[1] == (
        "luo_check did not run (no 'LUOCHECK begin' line: is the initramfs /init running?)"
    )


def test_judge_kernel_lines(truth):
    ok = program_lines(truth)
    msg = "luo: LUO state is incompatible with 'luo-v5'"
    assert luo_boot.judge(BootLog([msg, *ok], True, (), truth)) == ("failed", msg)
    restore = "memfd_luo: Unable to restore folio at physical address: 70002000"
    assert luo_boot.judge(BootLog([RETRIEVED, restore, *ok], True, (), truth)) == ("failed", restore)
    assert luo_boot.judge(BootLog(ok, True, (), truth))[0] == "not-reported"
    # a kernel without LIVEUPDATE: no LUO line, no /dev/liveupdate
    nodev = ["LUOCHECK begin list=70", "LUOCHECK error err=2 op=open_dev", "LUOCHECK end sessions=0 files=0 errors=1"]
    assert luo_boot.judge(BootLog(nodev, True, (), truth)) == (
        "not-reported",
        "the kernel did not report retrieving LUO state (luo: Retrieved live update data);"
        " luo_check could not open /dev/liveupdate: ENOENT (No such file or directory) (a kernel without LIVEUPDATE?)",
    )
    other = RETRIEVED.replace("number: 1", "number: 2")
    assert luo_boot.judge(BootLog([other, *ok], True, (), truth)) == ("failed", "LUO liveupdate number 2 != fixture 1")
    # no truth (a state with nothing to retrieve): the kernel's word alone
    assert luo_boot.judge(BootLog([RETRIEVED], True)) == ("ok", None)


def test_unserialized_or_unknown_state_gets_no_userspace_check(luo_fx, luo_state):
    import dataclasses

    unser = dataclasses.replace(luo_state, ser=dataclasses.replace(luo_state.ser, sessions_pa=0))
    assert luo_boot.initrd_files(unser) is None and luo_boot.luo_truth(unser, luo_fx.image, 4096) is None
    unknown = dataclasses.replace(luo_state, known=False)
    assert luo_boot.initrd_files(unknown) is None


# -- the QEMU command line -------------------------------------------------------------------------------------


def test_plan_with_initrd(tmp_path, luo_fx, truth):
    d = write_boot_fixture(luo_fx, tmp_path / "fx")
    init = tmp_path / "fake-init"
    init.write_bytes(b"\x7fELF fake")
    p = plan(load_fixture(d), tmp_path, init_binary=init)
    assert p.initrd is not None and p.cmd[p.cmd.index("-initrd") + 1] == str(p.initrd)
    assert p.cmd.index("-initrd") < p.cmd.index("-device")
    assert p.cmdline.endswith(" liveupdate=on") and p.expected["LUO"] == ["liveupdate"]
    members = {e.name: e.data for e in ir.read_newc(p.initrd.read_bytes())}
    assert members["init"] == b"\x7fELF fake"
    assert members["luo-list"].decode().splitlines()[:2] == ["S vm-a", "F 0"]
    assert p.truths["LUO"] == truth
    assert set(p.clients) == {"LUO", "kexec-metadata"}


def test_plan_without_luo_has_no_initrd(tmp_path):
    fx = build_spec(load_spec(ORDERS_SPEC))
    d = write_boot_fixture(fx, tmp_path / "fx")
    p = plan(load_fixture(d), tmp_path, init_binary=tmp_path / "never-read")
    assert "-initrd" not in p.cmd and p.initrd is None and "liveupdate" not in p.cmdline
    assert p.truths == {}


def test_initrd_and_dtb_placement(tmp_path, luo_fx):
    assert dtb_addr(0) == boot.QEMU_DTB_ADDR
    assert dtb_addr(1) == QEMU_INITRD_ADDR + (2 << 20)
    assert dtb_addr(2 << 20) == QEMU_INITRD_ADDR + (2 << 20)
    # a segment on the initramfs is refused
    d = write_boot_fixture(luo_fx, tmp_path / "fx")
    (d / "seg-0000000048000000.bin").write_bytes(bytes(4096))
    import json

    man = json.loads((d / "manifest.json").read_text())
    man["segments"].append({"file": "seg-0000000048000000.bin", "phys": 0x48000000, "size": 4096})
    (d / "manifest.json").write_text(json.dumps(man))
    init = tmp_path / "fake-init"
    init.write_bytes(b"x")
    with pytest.raises(BootError, match="overlaps the initramfs"):
        plan(load_fixture(d), tmp_path, init_binary=init)


def test_default_kernel_for_luo(monkeypatch, tmp_path):
    monkeypatch.setenv("KHO_KERNEL_CACHE", str(tmp_path))
    assert boot.default_kernel() == tmp_path / "linux-7.3-arm64" / "Image"
    assert boot.default_kernel(luo=True) == tmp_path / "linux-7.3-arm64-4k-luo" / "Image"
