"""kho boot: log judgement (canned serial logs) and, when a kernel is built, a real boot."""

import json
import struct
from pathlib import Path

import pytest
from _kernel import kernel_image, requires_kernel

from kho_formats import boot
from kho_formats.boot.dtb import fdt_nodes
from kho_formats.boot.load import load_fixture

HEAD = "[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]\n[    0.000000] Linux version 7.3.4\n"
FOUND = "[    0.000000] KHO: found kexec handover data.\n"
END = "[    2.000000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"


def test_accepted():
    log = (
        HEAD
        + FOUND
        + "[ 1.0] KHO: exec from: 7.3.4 (count 2)\n[ 1.5] test_kho: KHO restore succeeded\n"
        + "[ 1.6] Revived memory reservation 'trace_buf' from KHO\n"
        + END
    )
    v, why, st, lines = boot.judge_log(log, ["kexec-metadata", "kho_test", "memblock", "unknown"], ["trace_buf"])
    assert v == "accepted", why
    assert st == {"kexec-metadata": "ok", "kho_test": "ok", "memblock": "ok", "unknown": "not-exercised"}
    assert any("test_kho" in l for l in lines)


def test_rejections():
    ok = HEAD + FOUND + "[ 1.5] test_kho: KHO restore succeeded\n" + END
    assert boot.judge_log(ok, ["kho_test"])[0] == "accepted"
    bad = HEAD + FOUND + "[ 1.5] test_kho: KHO restore failed\n" + END
    v, why, st, _ = boot.judge_log(bad, ["kho_test"])
    assert v == "rejected" and st["kho_test"] == "failed" and "restore failed" in why
    warn = (
        HEAD
        + FOUND
        + "[ 1.4] WARNING: CPU: 0 PID: 1 at kernel/liveupdate/kexec_handover.c:529\n"
        + "[ 1.5] test_kho: KHO restore succeeded\n"
        + END
    )
    assert boot.judge_log(warn, ["kho_test"])[0] == "rejected"
    compat = (
        HEAD + "[ 0.0] KHO: setup: handover FDT (0x70000000) is incompatible with 'kho-v4': 1\n"
        "[ 0.0] KHO: disabling KHO revival\n" + END
    )
    v, why, _, _ = boot.judge_log(compat, ["kho_test"])
    assert v == "rejected" and "incompatible" in why
    assert boot.judge_log(HEAD + FOUND, ["kho_test"], timed_out=True)[0] == "rejected"
    assert boot.judge_log("", [])[0] == "error"
    other_panic = (
        HEAD + FOUND + "[ 1.5] test_kho: KHO restore succeeded\n"
        "[ 1.6] Kernel panic - not syncing: Attempted to kill init!\n"
    )
    assert boot.judge_log(other_panic, ["kho_test"])[0] == "rejected"
    memblock_bad = HEAD + FOUND + "[ 0.1] KHO reserve-mem 'trace_buf' has wrong size (0x1000 != 0x400000)\n" + END
    v, why, st, _ = boot.judge_log(memblock_bad, ["memblock"], ["trace_buf"])
    assert v == "rejected" and st["memblock"] == "failed" and "wrong size" in why


def test_fdt_reader():
    # a tiny FDT: / { compatible = "kho-v4"; a { x = <1>; }; }
    strings = b"compatible\0x\0"
    st = (
        struct.pack(">I", 1)
        + b"\0\0\0\0"
        + struct.pack(">III", 3, 7, 0)
        + b"kho-v4\0\0"
        + struct.pack(">I", 1)
        + b"a\0\0\0"
        + struct.pack(">III", 3, 4, 11)
        + struct.pack(">I", 1)
        + struct.pack(">II", 2, 2)
        + struct.pack(">I", 9)
    )
    off = 40 + 16
    hdr = struct.pack(
        ">10I", 0xD00DFEED, off + len(st) + len(strings), off, off + len(st), 40, 17, 16, 0, len(strings), len(st)
    )
    nodes = fdt_nodes(hdr + bytes(16) + st + strings)
    assert nodes["/"]["compatible"] == b"kho-v4\0"
    assert nodes["/a"]["x"] == b"\0\0\0\1"


# Real boots run whenever the kernel Image and QEMU are there (KHO_BOOT_TESTS=0
# skips them): see tests/_kernel.py. The Image: $KHO_KERNEL, else the cache.
KERNEL = kernel_image()


@pytest.mark.kernel
@requires_kernel
def test_cold_boot():
    r = boot.run_boot(None, KERNEL, timeout=600)
    assert r.verdict == "accepted", r.reason
    assert "KHO: found kexec handover data." not in r.log


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.mark.kernel
@requires_kernel
@pytest.mark.skipif(
    not (FIXTURES / "v4-4k" / "handover.json").is_file(),
    reason="fixtures/v4-4k not built (python scripts/gen_fixtures.py)",
)
def test_real_kernel_verdicts():
    good = boot.run_boot(FIXTURES / "v4-4k", KERNEL, timeout=600)
    assert good.verdict == "accepted", good.reason
    assert good.clients == {"kho_test": "ok", "memblock": "ok", "kexec-metadata": "ok"}
    old = boot.run_boot(FIXTURES / "v3-4k", KERNEL, timeout=600)
    assert old.verdict == "rejected" and "incompatible with 'kho-v4'" in old.reason


def test_refuses_foreign_fixtures(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"segments": []}))
    (tmp_path / "handover.json").write_text(
        json.dumps({"arch": "riscv64", "fdt_phys": 0x1000000, "fdt_size": 4096, "scratch": []})
    )
    with pytest.raises(boot.BootError, match="riscv64.*arm64 and x86_64"):
        load_fixture(tmp_path)


def test_terminal_escapes_are_stripped_from_log_lines():
    """SeaBIOS on QEMU pc clears the screen (ESC c, CSI sequences) right before the kernel's first line."""
    from kho_formats.boot.judge import has_kernel_output, strip_timestamp

    first = "\x1bc\x1b[?7l\x1b[2J[    0.000000] Linux version 7.3.4"
    assert strip_timestamp(first) == "Linux version 7.3.4"
    assert has_kernel_output(first + "\n")
    assert not has_kernel_output("\x1bc\x1b[2J no timestamp here\n")
    log = first + "\n[    0.1] KHO: found kexec handover data.\n[    1.0] \x1b[1mtest_kho: KHO restore succeeded\n"
    verdict, _, status, lines = boot.judge_log(log, ["kho_test"])
    assert verdict == "accepted" and status == {"kho_test": "ok"}
    assert lines[0] == boot.FOUND and not any("\x1b" in l for l in lines)
