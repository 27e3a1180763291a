"""PhysImage: sparse physical memory, raw / ELF / bundle containers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kho_formats.errors import ImageError
from kho_formats.memory.image import PhysImage


def test_read_across_adjacent_segments():
    img = PhysImage([(0x1000, b"A" * 0x1000), (0x2000, b"B" * 0x1000)])
    assert img.read(0x1FF0, 0x20) == b"A" * 0x10 + b"B" * 0x10
    assert img.view(0x1FF0, 0x20).tobytes() == b"A" * 0x10 + b"B" * 0x10
    assert img.has(0x1000, 0x2000)
    assert img.covered() == [(0x1000, 0x3000)]
    assert len(img) == 2 and img.total_bytes == 0x2000


def test_missing_memory_names_the_address():
    img = PhysImage([(0x1000, b"A" * 0x1000), (0x3000, b"C" * 0x1000)])
    with pytest.raises(ImageError) as ei:
        img.read(0x1800, 0x1000, "radix leaf")  # runs into the hole at 0x2000
    assert ei.value.phys == 0x2000
    assert "0x2000" in str(ei.value) and "radix leaf" in str(ei.value)
    with pytest.raises(ImageError) as ei:
        img.read(0x9000, 8)
    assert ei.value.phys == 0x9000 and "0x9000" in str(ei.value)
    assert not img.has(0x1800, 0x1000)
    assert img.covered() == [(0x1000, 0x2000), (0x3000, 0x4000)]


def test_overlapping_segments_refused():
    img = PhysImage([(0x1000, b"A" * 0x1000)])
    for phys, n in ((0x1800, 0x1000), (0x800, 0x1000), (0x1000, 1), (0x0, 0x3000)):
        with pytest.raises(ImageError):
            img.add(phys, b"x" * n)
    img.add(0x2000, b"B")  # touching is fine
    img.add(0xFFF, b"C")
    assert img.read(0xFFF, 2) == b"CA"
    with pytest.raises(ImageError):
        PhysImage([(0x1000, b"A" * 16), (0x1008, b"B" * 16)])


def test_write_overwrites_inside_a_segment():
    img = PhysImage([(0x1000, bytes(0x1000))])
    img.write(0x1010, b"hello")
    assert img.read(0x1010, 5) == b"hello"
    assert len(img) == 1
    img.write(0x5000, b"new")
    assert len(img) == 2 and img.read(0x5000, 3) == b"new"
    # a read-only segment is copied, not mutated in place
    src = b"\0" * 16
    ro = PhysImage([(0, src)])
    ro.write(4, b"ab")
    assert ro.read(0, 8) == b"\0\0\0\0ab\0\0" and src == bytes(16)


def test_raw_and_base(tmp_path):
    data = bytes(range(256)) * 32
    img = PhysImage.from_raw(data, 0x8000_0000)
    assert img.read(0x8000_0010, 4) == bytes([16, 17, 18, 19])
    with pytest.raises(ImageError):
        img.read(0x7FFF_FFFF, 2)
    f = tmp_path / "dump.bin"
    f.write_bytes(data)
    assert PhysImage.from_raw(f, 0x8000_0000) == img
    assert PhysImage.load(f"{f}@0x80000000") == img
    with pytest.raises(ImageError):
        PhysImage.load(f"{f}@nonsense")


def test_bundle_round_trip(tmp_path):
    img = PhysImage([(0x1000, b"A" * 100), (0x10_0000, b"B" * 0x2000), (0x10_2000, b"C" * 10)])
    m = img.to_bundle(tmp_path / "b", extra={"note": "x"})
    # adjacent segments merge into one file
    assert [(s["phys"], s["size"]) for s in m["segments"]] == [(0x1000, 100), (0x10_0000, 0x200A)]
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["format"] == "kho-formats-image" and manifest["note"] == "x"
    back = PhysImage.from_bundle(tmp_path / "b")
    assert back == img
    assert PhysImage.load(str(tmp_path / "b")) == img
    # unmerged: one file per segment
    m = img.to_bundle(tmp_path / "u", merge=False)
    assert len(m["segments"]) == 3
    assert PhysImage.from_bundle(tmp_path / "u") == img


def test_bundle_refuses_files_outside(tmp_path):
    d = tmp_path / "b"
    d.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"x")
    (d / "manifest.json").write_text(json.dumps({"segments": [{"file": "../secret.bin", "phys": 0}]}))
    with pytest.raises(ImageError):
        PhysImage.from_bundle(d)


def test_elf_round_trip_and_load(tmp_path):
    img = PhysImage([(0x1000, b"A" * 100), (0x20_0000, b"B" * 0x3000)])
    for bo in ("little", "big"):
        raw = img.to_elf(byteorder=bo)
        assert raw[5] == (1 if bo == "little" else 2)
        assert PhysImage.from_elf(raw) == img
    f = tmp_path / "x.elf"
    f.write_bytes(img.to_elf())
    assert PhysImage.load(str(f)) == img
    with pytest.raises(ImageError):
        PhysImage.from_elf(b"not an elf" * 10)


def test_equality():
    a = PhysImage([(0x1000, b"AB"), (0x1002, b"CD")])
    b = PhysImage([(0x1000, b"ABCD")])
    assert a == b  # same bytes at the same addresses, however split
    assert a != PhysImage([(0x1000, b"ABCE")])
    assert a != PhysImage([(0x1001, b"ABCD")])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 64), st.binary(min_size=1, max_size=40)), max_size=8))
def test_reads_match_a_flat_model(segs):
    # non-overlapping segments at 64-byte slots; reads agree with a flat buffer
    img = PhysImage()
    flat = {}
    used = set()
    for slot, data in segs:
        if slot in used:
            continue
        used.add(slot)
        img.add(slot * 64, data)
        for i, x in enumerate(data):
            flat[slot * 64 + i] = x
    for a, b in img.covered():
        assert img.read(a, b - a) == bytes(flat[i] for i in range(a, b))
        assert all(i in flat for i in range(a, b))
    assert sum(b - a for a, b in img.covered()) == len(flat)
