"""Issue 21 item 5: ELF ``PN_XNUM``.  With 65535 program headers or more,
``e_phnum`` is ``0xffff`` and the real count is ``sh_info`` of section
header 0 (the ELF gABI; Linux's ``fill_extnum_info`` writes cores this way).
Our reader (``PhysImage.from_elf``, ``KcoreFile``) and writer
(``PhysImage.to_elf``/``write_elf``) follow it, checked against binutils'
``readelf`` and pyelftools."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from _kcore import write_kcore
from elftools.elf.elffile import ELFFile

from kho_formats.errors import ImageError
from kho_formats.memory.image import MAX_PHNUM, PN_XNUM, PhysImage
from kho_formats.memory.kcore import KcoreFile

READELF = shutil.which("readelf")


def sparse_image(n: int) -> PhysImage:
    """``n`` one-page segments with a gap between each (no merging), each page tagged."""
    img = PhysImage()
    for k in range(n):
        img.add(0x1_0000_0000 + k * 0x2000, k.to_bytes(4, "little") * 1024)
    return img


def header(blob: bytes) -> tuple[int, int, int, int]:
    """e_phnum, e_shoff, e_shnum, sh_info of section header 0 (or -1)."""
    (shoff,) = struct.unpack_from("<Q", blob, 0x28)
    phnum, _, shnum = struct.unpack_from("<HHH", blob, 0x38)
    info = struct.unpack_from("<I", blob, shoff + 44)[0] if shoff else -1
    return phnum, shoff, shnum, info


@pytest.mark.parametrize("n", [PN_XNUM - 1, PN_XNUM, 70000])
def test_writer_uses_pn_xnum_past_65534_segments_and_tools_agree(tmp_path: Path, n: int) -> None:
    img = sparse_image(n)
    path = tmp_path / "core.elf"
    with open(path, "wb") as fh:
        img.write_elf(fh)
    blob = path.read_bytes()
    phnum, shoff, shnum, info = header(blob)
    if n < PN_XNUM:
        assert (phnum, shoff, shnum) == (n, 0, 0)
    else:
        assert (phnum, shnum, info) == (PN_XNUM, 1, n)
    assert blob == img.to_elf()
    # pyelftools: the real count, every segment where we put it
    with open(path, "rb") as fh:
        ef = ELFFile(fh)
        assert ef.num_segments() == n
        last = ef.get_segment(n - 1)
        assert last["p_paddr"] == 0x1_0000_0000 + (n - 1) * 0x2000 and last.data()[:4] == (n - 1).to_bytes(4, "little")
    # binutils
    if READELF is None:
        pytest.fail("readelf (binutils) is not installed: apt-get install binutils")
    out = subprocess.run([READELF, "-h", "-l", "-W", str(path)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Number of program headers:\s+(\d+)(?: \((\d+)\))?", out)
    assert m is not None, out[:2000]
    assert int(m.group(2) or m.group(1)) == n
    assert len(re.findall(r"^\s+LOAD\s", out, flags=re.M)) == n
    # our reader reads it back whole
    back = PhysImage.from_elf(path)
    assert back.covered() == img.covered()
    assert back.read(0x1_0000_0000 + (n - 1) * 0x2000, 4) == (n - 1).to_bytes(4, "little")


def xnum_core(real: int, *, decoy: bool = True) -> bytes:
    """e_phnum PN_XNUM, sh_info ``real``; with ``decoy``, the slot after the
    real headers looks like a PT_LOAD (read only by a reader taking 65535)."""
    n_slots = real + 1
    phoff, shoff = 64, 64 + 56 * n_slots
    data = shoff + 64
    eh = bytearray(64)
    eh[:16] = b"\x7fELF\x02\x01\x01" + bytes(9)
    struct.pack_into("<HHIQQQIHHHHHH", eh, 16, 4, 62, 1, 0, phoff, shoff, 0, 64, 56, PN_XNUM, 64, 1, 0)
    ph = b"".join(
        struct.pack("<IIQQQQQQ", 1, 6, data + 4096 * k, 0, 0x100000 + 0x10000 * k, 4096, 4096, 0) for k in range(real)
    )
    ph += struct.pack("<IIQQQQQQ", 1, 6, data, 0, 0xDEAD0000, 4096, 4096, 0) if decoy else bytes(56)
    sh0 = bytes(44) + struct.pack("<I", real) + bytes(16)
    return bytes(eh) + ph + sh0 + b"".join(bytes([k + 1]) * 4096 for k in range(real))


def test_reader_takes_the_count_from_section_header_0() -> None:
    img = PhysImage.from_elf(xnum_core(3))
    assert img.covered() == [(0x100000 + 0x10000 * k, 0x101000 + 0x10000 * k) for k in range(3)]
    assert img.read(0x120000, 1) == b"\x03"
    assert not img.contains(0xDEAD0000) if hasattr(img, "contains") else all(a != 0xDEAD0000 for a, _ in img.covered())


@pytest.mark.parametrize(
    "patch, msg",
    [
        (lambda b: b[:0x28] + bytes(8) + b[0x30:], "no section header table"),
        (lambda b: b[:0x28] + struct.pack("<Q", 1 << 40) + b[0x30:], "past the end"),
        (lambda b: b[:0x3A] + struct.pack("<H", 40) + b[0x3C:], "e_shentsize 40"),
    ],
)
def test_hostile_pn_xnum_headers_are_typed_errors(patch, msg: str) -> None:
    with pytest.raises(ImageError, match=msg):
        PhysImage.from_elf(patch(xnum_core(3)))


def test_a_huge_sh_info_is_refused_before_reading() -> None:
    b = bytearray(xnum_core(3))
    shoff = struct.unpack_from("<Q", b, 0x28)[0]
    struct.pack_into("<I", b, shoff + 44, MAX_PHNUM + 1)
    with pytest.raises(ImageError, match=f"at most {MAX_PHNUM}"):
        PhysImage.from_elf(bytes(b))
    struct.pack_into("<I", b, shoff + 44, 0xFFFFFFFF)
    with pytest.raises(ImageError):
        PhysImage.from_elf(bytes(b))


def test_kcore_reader_follows_pn_xnum(tmp_path: Path) -> None:
    """The kcore-like file of the live-capture tests, re-headed with PN_XNUM:
    the same segments are read."""
    src = PhysImage()
    src.add(0x180000, b"k" * 4096)
    path = write_kcore(tmp_path / "kcore", src, [(0x100000, 1 << 20)])
    with KcoreFile(path) as kf:
        before = [(s.vaddr, s.kind) for s in kf.segments]
        covered = kf.image().covered()
    raw = bytearray(path.read_bytes())
    phnum = struct.unpack_from("<H", raw, 0x38)[0]
    shoff = len(raw)
    raw += bytes(44) + struct.pack("<I", phnum) + bytes(16)
    struct.pack_into("<Q", raw, 0x28, shoff)
    struct.pack_into("<HHHH", raw, 0x38, PN_XNUM, 64, 1, 0)
    path.write_bytes(bytes(raw))
    with KcoreFile(path) as kf:
        assert [(s.vaddr, s.kind) for s in kf.segments] == before
        assert kf.image().covered() == covered
