"""Memory images that lie: ELF cores with lying headers, bundle manifests
that lie.  Each is one ImageError naming the file (and address when known)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from _malformed import fails

from kho_formats.errors import ImageError
from kho_formats.memory.image import PhysImage

PAGE = bytes(range(256)) * 16


def elf(segs=((0x10000, PAGE), (0x30000, PAGE)), byteorder="little"):
    return bytearray(PhysImage(list(segs)).to_elf(byteorder=byteorder))


def put(buf, off, fmt, value, byteorder="little"):
    struct.pack_into(("<" if byteorder == "little" else ">") + fmt, buf, off, value)


def test_good_elf_round_trips():
    img = PhysImage.from_elf(bytes(elf()))
    assert img.read(0x30000, 4096) == PAGE and len(img) == 2


@pytest.mark.parametrize(
    "mutate,frag",
    [
        (lambda b: b.__setitem__(slice(0, 4), b"\x7fELG"), "not an ELF file"),
        (lambda b: b.__setitem__(4, 1), "not ELF64"),
        (lambda b: b.__setitem__(5, 7), "bad EI_DATA 7"),
        (lambda b: put(b, 54, "H", 32), "e_phentsize 32"),
        (lambda b: put(b, 32, "Q", 2**64 - 8), "program headers past end of file"),
        (lambda b: put(b, 56, "H", 0xFFFE), "program headers past end of file"),
        (lambda b: put(b, 56, "H", 0xFFFF), "PN_XNUM (0xffff) but there is no section header table"),
        (lambda b: put(b, 64 + 8, "Q", 2**63), "PT_LOAD #0 data"),  # p_offset
        (lambda b: put(b, 64 + 32, "Q", 2**40), "PT_LOAD #0 data"),  # p_filesz
        (lambda b: put(b, 64 + 56 + 24, "Q", 0x10800), "overlaps segment"),  # 2nd p_paddr inside the 1st
        (lambda b: put(b, 64 + 24, "Q", 2**64 - 4096 + 8), "does not fit the 64-bit address space"),
    ],
)
def test_lying_elf_headers(mutate, frag):
    b = elf()
    mutate(b)
    with fails(ImageError, frag, located=False):
        PhysImage.from_elf(bytes(b), name="core.elf")


def test_lying_elf_errors_name_the_file():
    b = elf()
    put(b, 64 + 32, "Q", 2**40)
    with pytest.raises(ImageError) as info:
        PhysImage.from_elf(bytes(b), name="core.elf")
    assert "core.elf" in str(info.value) and info.value.phys == 0x10000


def test_big_endian_elf_lies_too():
    b = elf(byteorder="big")
    put(b, 64 + 32, "Q", 2**40, "big")
    with fails(ImageError, "PT_LOAD #0 data", phys=0x10000):
        PhysImage.from_elf(bytes(b))


def test_truncated_elf():
    b = elf()
    for cut in (0, 10, 63, 64 + 56, len(b) - 1):
        with pytest.raises(ImageError):
            PhysImage.from_elf(bytes(b[:cut]))


def test_65535_program_headers_are_read():
    # the largest e_phnum, every PT_LOAD one byte, in descending address order:
    # parsing each header with construct and inserting each segment at the
    # front of a list took seconds; now it is one numpy read and a sort
    # (65535 headers: e_phnum is PN_XNUM and section header 0's sh_info holds the count)
    n = 0xFFFF
    phoff = 64
    shoff = phoff + 56 * n
    data_off = shoff + 64
    hdr = bytearray(elf(segs=((0x10000, b"x"),))[:64])
    put(hdr, 32, "Q", phoff)
    put(hdr, 40, "Q", shoff)
    put(hdr, 56, "H", n)
    put(hdr, 58, "H", 64)
    put(hdr, 60, "H", 1)
    phdrs = bytearray()
    for k in range(n):
        # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        phdrs += struct.pack("<IIQQQQQQ", 1, 6, data_off + k, 0, 0x1000_0000 - 2 * k, 1, 1, 0)
    sh0 = bytes(44) + struct.pack("<I", n) + bytes(16)
    blob = bytes(hdr) + bytes(phdrs) + sh0 + bytes(range(256)) * (n // 256 + 1)
    img = PhysImage.from_elf(blob)
    assert len(img) == n and img.read(0x1000_0000, 1) == bytes([0])


def test_elf_phdrs_overlapping_each_other_in_reverse_order():
    b = elf()
    put(b, 64 + 24, "Q", 0x30800)  # 1st p_paddr now inside the 2nd (added first after sorting)
    with fails(ImageError, "overlaps segment", phys=0x30800):
        PhysImage.from_elf(bytes(b))


# -- bundles -------------------------------------------------------------------------


def bundle(tmp_path, manifest=None, files=None):
    d = tmp_path / "bundle"
    d.mkdir()
    files = {"seg-a.bin": PAGE} if files is None else files
    for name, data in files.items():
        (d / name).write_bytes(data)
    if manifest is None:
        manifest = {
            "format": "kho-formats-image",
            "version": 1,
            "segments": [{"file": "seg-a.bin", "phys": 0x10000, "size": 4096}],
        }
    (d / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return d


def segs(*entries):
    return {"format": "kho-formats-image", "version": 1, "segments": list(entries)}


def test_good_bundle(tmp_path):
    assert PhysImage.from_bundle(bundle(tmp_path)).read(0x10000, 4096) == PAGE


LYING_MANIFESTS = [
    ("{not json", "bad manifest"),
    ("[" * 100_000 + "]" * 100_000, "bad manifest"),  # RecursionError in json
    ('{"segments": 5}', "segments is not a list"),
    ("[1, 2]", "bad manifest"),
    ('"x"', "bad manifest"),
    (segs({"phys": 1}), 'segment #0 has no "file"'),
    (segs({"file": "seg-a.bin"}), 'segment #0 has no "phys"'),
    (
        segs({"file": "seg-a.bin", "phys": float("inf")}),
        "segment #0 phys inf is not an integer",
    ),  # json Infinity: int() overflowed
    ('{"segments": [{"file": "seg-a.bin", "phys": NaN}]}', "segment #0 phys nan is not an integer"),
    (segs({"file": "seg-a.bin", "phys": "0x1000"}), 'segment #0 phys "0x1000" is not an integer'),
    (segs({"file": 12, "phys": 4096}), "segment #0 file 12 is not a file name"),  # Path / int: TypeError
    (segs({"file": "a\0b", "phys": 4096}), "is not a file name"),  # embedded NUL
    (segs({"file": "seg-a.bin", "phys": 4096, "size": True}), "segment #0 size true is not an integer"),
    (segs(7), "segment #0 is an integer"),
    (segs({"file": "../../etc/passwd", "phys": 4096}), "is outside the bundle"),
    (segs({"file": "/etc/passwd", "phys": 4096}), "is outside the bundle"),
    (segs({"file": "missing.bin", "phys": 4096}), "cannot read segment #0"),
    (segs({"file": "seg-a.bin", "phys": 4096, "size": 4095}), "manifest says 4095"),
    (segs({"file": "seg-a.bin", "phys": -4096}), "does not fit the 64-bit address space"),
    (segs({"file": "seg-a.bin", "phys": 2**64 - 1}), "does not fit the 64-bit address space"),
    (segs({"file": "seg-a.bin", "phys": 4096}, {"file": "seg-a.bin", "phys": 6144}), "overlaps segment"),
]


@pytest.mark.parametrize("manifest,frag", LYING_MANIFESTS, ids=[f"manifest{i}" for i in range(len(LYING_MANIFESTS))])
def test_lying_manifests(tmp_path, manifest, frag):
    d = bundle(tmp_path, manifest)
    with fails(ImageError, frag, located=False):
        PhysImage.from_bundle(d)


def test_manifest_that_is_a_directory(tmp_path):
    d = tmp_path / "b"
    (d / "manifest.json").mkdir(parents=True)
    with fails(ImageError, "cannot read the manifest", located=False):
        PhysImage.from_bundle(d)


def test_segment_that_is_a_directory(tmp_path):
    d = bundle(tmp_path, segs({"file": "sub", "phys": 4096}))
    (d / "sub").mkdir()
    with fails(ImageError, "cannot read segment #0", located=False):
        PhysImage.from_bundle(d)


def test_no_manifest(tmp_path):
    with fails(ImageError, "no manifest", located=False):
        PhysImage.from_bundle(tmp_path)


def test_symlink_loop(tmp_path):
    d = bundle(tmp_path, segs({"file": "loop", "phys": 4096}))
    os.symlink("loop", d / "loop")
    with pytest.raises(ImageError):
        PhysImage.from_bundle(d)


@pytest.mark.parametrize("spec", ["nope@0x1000", "x@zz", "@"])
def test_load_spec_errors(tmp_path, spec):
    with pytest.raises(ImageError):
        PhysImage.load(str(tmp_path / spec))


def test_raw_image_at_a_negative_or_wrapping_base(tmp_path):
    f = tmp_path / "raw.bin"
    f.write_bytes(PAGE)
    with fails(ImageError, "does not fit the 64-bit address space", located=False):
        PhysImage.load(f"{f}@{2**64 - 16}")


# -- capture directories (kho inspect DIR) -------------------------------------------------


CAPTURE_ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "captures" / "linux-7.3-x86_64-kho-v4" / "root.dtb"


@pytest.mark.parametrize(
    "meta,frag",
    [
        ('{"fdt_phys": "abc"}', 'fdt_phys is "abc"'),  # used to escape as ValueError
        ('{"page_size": [1]}', "page_size is [1]"),  # TypeError
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),  # RecursionError
        ('{"fdt_phys": 1e400}', "fdt_phys is inf"),  # OverflowError
        ('{"scratch": [[1e400, 1]]}', "expected a list of [address, size] pairs"),
        ('{"v1_bitmap_bytes": "x"}', 'v1_bitmap_bytes is "x"'),
        ('{"scratch_array_phys": true, "scratch": [[4096, 4096]]}', "scratch_array_phys is true"),
    ],
)
def test_capture_metadata_that_lies(tmp_path, meta, frag):
    from kho_formats.errors import KhoFormatError
    from kho_formats.ops.capture import load_capture

    d = tmp_path / "cap"
    d.mkdir()
    (d / "root.dtb").write_bytes(CAPTURE_ROOT.read_bytes())
    (d / "meta.json").write_text(meta)
    with fails(KhoFormatError, frag, located=False):
        load_capture(d)


def test_capture_metadata_good(tmp_path):
    from kho_formats.ops.capture import load_capture

    d = tmp_path / "cap"
    d.mkdir()
    (d / "root.dtb").write_bytes(CAPTURE_ROOT.read_bytes())
    (d / "meta.json").write_text('{"fdt_phys": 18821120, "page_size": 4096, "v1_bitmap_bytes": 512}')
    cap = load_capture(d)
    assert (cap.root_fdt_phys, cap.page_size, cap.map_params) == (18821120, 4096, {"v1_bitmap_bytes": 512})
