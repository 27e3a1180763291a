"""kho boot: the /chosen patch of QEMU's virt DTB, done with the library's FDT
reader and writer, read back by dtc / fdtget (independent readers) and by ours."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kho_formats.boot.dtb import fdt_nodes, patch_chosen, repack_dtb
from kho_formats.errors import BootError, FdtError, KhoFormatError
from kho_formats.model.fdt import parse_fdt

DTC = shutil.which("dtc") or "dtc"
FDTGET = shutil.which("fdtget") or "fdtget"
needs_dtc = pytest.mark.skipif(
    shutil.which("dtc") is None or shutil.which("fdtget") is None, reason="dtc / fdtget not installed"
)

#: the shape of QEMU's virt DTB: 2/2 cells, a /chosen, a memory reservation
VIRT_DTS = """/dts-v1/;
/memreserve/ 0x48000000 0x10000;
/ {
	interrupt-parent = <0x8002>;
	#size-cells = <0x02>;
	#address-cells = <0x02>;
	compatible = "linux,dummy-virt";
	memory@40000000 {
		reg = <0x00 0x40000000 0x00 0x40000000>;
		device_type = "memory";
	};
	pl011@9000000 {
		clock-names = "uartclk", "apb_pclk";
		reg = <0x00 0x9000000 0x00 0x1000>;
		compatible = "arm,pl011", "arm,primecell";
	};
	chosen {
		stdout-path = "/pl011@9000000";
		rng-seed = <0x1 0x2>;
	};
};
"""

#: 1/1 cells and no /chosen at all
SMALL_DTS = """/dts-v1/;
/ {
	#address-cells = <1>;
	#size-cells = <1>;
	compatible = "test,small";
	memory@40000000 { device_type = "memory"; reg = <0x40000000 0x40000000>; };
};
"""

FDT = (0x7800_0000, 0x1000)
SCRATCH = (0x7802_8000, 0x20)


def dtb_from(dts: str, tmp_path: Path, *extra: str) -> bytes:
    src, out = tmp_path / "in.dts", tmp_path / "in.dtb"
    src.write_text(dts)
    subprocess.run([DTC, "-q", "-I", "dts", "-O", "dtb", *extra, "-o", str(out), str(src)], check=True)
    return out.read_bytes()


def fdtget(blob: bytes, tmp_path: Path, node: str, prop: str) -> list[int]:
    f = tmp_path / "get.dtb"
    f.write_bytes(blob)
    r = subprocess.run([FDTGET, "-t", "u", str(f), node, prop], capture_output=True, text=True, check=True)
    return [int(x) for x in r.stdout.split()]


def dts_of(blob: bytes, tmp_path: Path) -> str:
    f = tmp_path / "out.dtb"
    f.write_bytes(blob)
    r = subprocess.run([DTC, "-I", "dtb", "-O", "dts", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@needs_dtc
def test_virt_dtb_2_2_cells(tmp_path: Path) -> None:
    # padded to 1 MiB like QEMU's dumpdtb
    virt = dtb_from(VIRT_DTS, tmp_path, "-S", str(1 << 20))
    assert len(virt) == 1 << 20 and parse_fdt(virt).size == 1 << 20
    out = patch_chosen(virt, FDT, SCRATCH)
    assert len(out) < 4096 and parse_fdt(out).size == len(out)  # compact: no padding
    # independent readers
    assert fdtget(out, tmp_path, "/chosen", "linux,kho-fdt") == [0, 0x7800_0000, 0, 0x1000]
    assert fdtget(out, tmp_path, "/chosen", "linux,kho-scratch") == [0, 0x7802_8000, 0, 0x20]
    dts = dts_of(out, tmp_path)
    assert "linux,kho-fdt = <0x00 0x78000000 0x00 0x1000>;" in dts
    assert "linux,kho-scratch = <0x00 0x78028000 0x00 0x20>;" in dts
    assert "/memreserve/\t0x0000000048000000 0x0000000000010000;" in dts
    # our reader: everything else unchanged
    before, after = fdt_nodes(virt), fdt_nodes(out)
    chosen = after["/chosen"]
    assert chosen.pop("linux,kho-fdt") == bytes.fromhex("0000000078000000" + "0000000000001000")
    assert chosen.pop("linux,kho-scratch") == bytes.fromhex("0000000078028000" + "0000000000000020")
    assert after == before
    assert parse_fdt(out).reserve_map == [(0x4800_0000, 0x10000)]


@needs_dtc
def test_small_dtb_1_1_cells_chosen_created(tmp_path: Path) -> None:
    small = dtb_from(SMALL_DTS, tmp_path)
    assert "/chosen" not in fdt_nodes(small)
    out = patch_chosen(small, FDT, SCRATCH)
    assert fdtget(out, tmp_path, "/chosen", "linux,kho-fdt") == [0x7800_0000, 0x1000]
    assert fdtget(out, tmp_path, "/chosen", "linux,kho-scratch") == [0x7802_8000, 0x20]
    dts = dts_of(out, tmp_path)
    assert "linux,kho-fdt = <0x78000000 0x1000>;" in dts
    assert fdt_nodes(out)["/chosen"]["linux,kho-scratch"] == bytes.fromhex("78028000" + "00000020")


@needs_dtc
def test_patch_replaces_existing_properties(tmp_path: Path) -> None:
    virt = dtb_from(VIRT_DTS, tmp_path)
    once = patch_chosen(virt, (1, 2), (3, 4))
    twice = patch_chosen(once, FDT, SCRATCH)
    assert twice == patch_chosen(virt, FDT, SCRATCH)
    assert list(fdt_nodes(twice)["/chosen"]).count("linux,kho-fdt") == 1


@needs_dtc
def test_value_too_wide_for_the_cells(tmp_path: Path) -> None:
    small = dtb_from(SMALL_DTS, tmp_path)
    with pytest.raises(BootError, match="linux,kho-fdt address"):
        patch_chosen(small, (1 << 32, 0x1000), SCRATCH)
    bad_cells = dtb_from(SMALL_DTS.replace("#size-cells = <1>", "#size-cells = <3>"), tmp_path)
    with pytest.raises(BootError, match="#size-cells"):
        patch_chosen(bad_cells, FDT, SCRATCH)


@needs_dtc
def test_repack_is_compact_and_same_tree(tmp_path: Path) -> None:
    virt = dtb_from(VIRT_DTS, tmp_path, "-S", str(1 << 20))
    out = repack_dtb(virt)
    assert len(out) < 4096 and fdt_nodes(out) == fdt_nodes(virt)
    assert "stdout-path" in dts_of(out, tmp_path)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xd0\x0d\xfe\xed" + bytes(36),
        bytes.fromhex("d00dfeed") + (1 << 20).to_bytes(4, "big") + bytes(32),
        # a header pointing the struct block past the end
        bytes.fromhex("d00dfeed 00000048 00001000 00000040 00000028 00000011 00000010 00000000 00000000 00000010")
        + bytes(32),
    ],
)
def test_crafted_virt_dtb_is_a_typed_error(blob: bytes) -> None:
    with pytest.raises(FdtError) as ei:
        patch_chosen(blob, FDT, SCRATCH)
    assert isinstance(ei.value, KhoFormatError) and "QEMU virt DTB" in str(ei.value)
