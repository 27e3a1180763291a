"""``kho boot --init PROGRAM -- ARGS`` without a kernel: the program checks,
the initramfs, the KTAP / exit-status verdict, the command line."""

from __future__ import annotations

import stat

import pytest

from kho_formats.boot import initramfs as ir
from kho_formats.boot.workload import (
    Workload,
    elf_machine,
    judge_workload,
    parse_workload,
    split_program_args,
    workload_lines,
    workload_of,
)
from kho_formats.cli import build_parser, main
from kho_formats.errors import BootError, KhoFormatError


def elf(machine: int, interp: bool = False) -> bytes:
    """A minimal ELF64 little-endian ET_EXEC header with one program header."""
    h = bytearray(64 + 56)
    h[:4] = b"\x7fELF"
    h[4], h[5], h[6] = 2, 1, 1
    h[16:18] = (2).to_bytes(2, "little")
    h[18:20] = machine.to_bytes(2, "little")
    h[32:40] = (64).to_bytes(8, "little")
    h[54:56] = (56).to_bytes(2, "little")
    h[56:58] = (1).to_bytes(2, "little")
    h[64:68] = (3 if interp else 1).to_bytes(4, "little")
    return bytes(h)


def test_elf_machine():
    assert elf_machine(elf(62), "x") == (62, True)
    assert elf_machine(elf(183, interp=True), "x") == (183, False)
    for bad in (b"#!/bin/sh\n", b"\x7fELF\x01\x01" + bytes(60)):
        with pytest.raises(BootError):
            elf_machine(bad, "x")


def test_program_checks(tmp_path):
    p = tmp_path / "prog"
    p.write_bytes(elf(183))
    assert Workload(p).check("arm64") == elf(183)
    with pytest.raises(BootError, match="built for arm64 .*the fixture is for x86_64"):
        Workload(p).check("x86_64")
    p.write_bytes(elf(62, interp=True))
    with pytest.raises(BootError, match="dynamically linked"):
        Workload(p).check("x86_64")
    with pytest.raises(BootError, match="not found .*build-selftests.sh"):
        Workload(tmp_path / "nope").check("x86_64")
    p.write_bytes(elf(62))
    with pytest.raises(BootError, match="newline"):
        Workload(p, ("a\nb",)).check("x86_64")
    assert issubclass(BootError, KhoFormatError)


@pytest.mark.skipif(ir.cross_compiler("x86_64") is None, reason="x86_64-linux-gnu-gcc not installed")
def test_initramfs_holds_init_program_and_args(tmp_path):
    p = tmp_path / "prog"
    p.write_bytes(elf(62))
    members = {e.name: e for e in ir.read_newc(Workload(p, ("-s", "2")).initramfs("x86_64", cache=tmp_path))}
    assert members["workload"].data == elf(62) and members["workload"].mode == stat.S_IFREG | 0o755
    assert members["workload-args"].data == b"-s\n2\n"
    init = members["init"].data
    assert init[:4] == b"\x7fELF" and int.from_bytes(init[18:20], "little") == 62
    assert members["dev/console"].rdev == (5, 1)


LOG_PASS = """\
[    1.0] luo: Retrieved live update data, liveupdate number: 1

KHOINIT begin argc=2
# [STAGE 2] Starting post-kexec verification...
[    1.2] liveupdate-test-flb-v0: finish was triggered
# --- SIMPLE KEXEC TEST PASSED ---

KHOINIT end status=0
[    1.3] reboot: Power down
"""

LOG_BAIL = """\
KHOINIT begin argc=2
# [STAGE 2] Starting post-kexec verification...
# Data mismatch! Expected 'hello kexec world', Got 'hellp kexec world'
Bail out! [run_stage_2:63] restore_and_verify_memfd for token 0x1a (errno: Invalid argument)
# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:0
KHOINIT end status=1
"""


def test_parse_and_judge_pass():
    lines = LOG_PASS.splitlines()
    w = parse_workload(lines)
    assert w.begun and w.status == 0 and not w.bail_out
    assert judge_workload("accepted", "fine", lines)[0] == "accepted"
    assert "# --- SIMPLE KEXEC TEST PASSED ---" in workload_lines(lines)


def test_bail_out_names_the_selftests_line():
    v, why = judge_workload("accepted", "fine", LOG_BAIL.splitlines())
    assert v == "rejected"
    assert "Bail out! [run_stage_2:63] restore_and_verify_memfd for token 0x1a" in why
    assert "exit 1" in why


def test_kernel_rejection_is_kept_and_the_workload_line_comes_first():
    v, why = judge_workload("rejected", "kernel WARNING: WARNING: lib/refcount.c:28", LOG_BAIL.splitlines())
    assert v == "rejected"
    assert why.index("Bail out!") < why.index("kernel WARNING")
    v, why = judge_workload("rejected", "kernel WARNING: x", LOG_PASS.splitlines())
    assert (v, why) == ("rejected", "kernel WARNING: x")


def test_ktap_results_skip_and_unfinished():
    lines = ["KHOINIT begin argc=0", "ok 1 first", "not ok 2 second # something", "KHOINIT end status=1"]
    assert "not ok 2 second" in judge_workload("accepted", "", lines)[1]
    lines = ["KHOINIT begin argc=0", "1..0 # SKIP Failed to open /dev/liveupdate.", "KHOINIT end status=4"]
    v, why = judge_workload("accepted", "", lines)
    assert v == "rejected" and "skipped" in why and "Failed to open /dev/liveupdate." in why
    v, why = judge_workload("accepted", "", ["KHOINIT begin argc=0", "# working"])
    assert v == "rejected" and "did not finish" in why
    v, why = judge_workload("accepted", "", ["no init here"])
    assert v == "rejected" and "did not start" in why
    v, why = judge_workload("accepted", "", ["KHOINIT begin argc=0", "KHOINIT error op=exec err=8"])
    assert v == "rejected" and "op=exec err=8" in why
    v, why = judge_workload("accepted", "", ["KHOINIT begin argc=0", "KHOINIT end signal=11"])
    assert v == "rejected" and "signal 11" in why
    assert judge_workload("error", "QEMU failed", [])[0] == "error"


def test_cli_takes_program_and_args_after_dashes(tmp_path, capsys):
    argv, rest = split_program_args(["boot", "FX", "--init", "/p", "--", "-s", "2", "--", "x"])
    assert rest == ["-s", "2", "--", "x"]
    a = build_parser().parse_args(argv)
    assert (a.fixture, a.init) == ("FX", "/p")
    assert split_program_args(["inspect", "--", "boot"]) == (["inspect", "--", "boot"], None)
    # through main: a fixture that is not one is refused before anything boots
    assert main(["boot", str(tmp_path), "--init", "/p", "--", "-s", "2"]) == 1
    with pytest.raises(BootError, match="give --init"):
        workload_of(None, ["-s", "2"])
