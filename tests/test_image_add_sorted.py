"""PhysImage.add_sorted (a kdump file's many runs): in-order segments appended at
once, anything else through add() with its overlap errors."""

from __future__ import annotations

import pytest

from kho_formats.errors import ImageError
from kho_formats.memory.image import LazyData, PhysImage


class Zeros(LazyData):
    def fetch(self, off: int, n: int) -> bytes:
        return bytes(n)


def test_in_order_segments_are_appended() -> None:
    img = PhysImage()
    img.add_sorted([(0x1000, Zeros(0x1000)), (0x3000, Zeros(0x2000)), (0x5000, Zeros(0x1000))])
    assert [(s.phys, s.end) for s in img] == [(0x1000, 0x2000), (0x3000, 0x5000), (0x5000, 0x6000)]
    img.add_sorted([(0x8000, Zeros(0x1000))])
    assert img.has(0x8000, 0x1000) and not img.has(0x2000, 1)


def test_out_of_order_segments_go_through_add() -> None:
    img = PhysImage()
    img.add_sorted([(0x5000, Zeros(0x1000)), (0x1000, Zeros(0x1000))])
    assert [s.phys for s in img] == [0x1000, 0x5000]


def test_overlaps_are_refused_with_the_address() -> None:
    img = PhysImage()
    with pytest.raises(ImageError, match="overlaps segment 0x1000-0x3000"):
        img.add_sorted([(0x1000, Zeros(0x2000)), (0x2000, Zeros(0x1000))], what="run")
    img = PhysImage()
    img.add(0x4000, bytes(0x1000))
    with pytest.raises(ImageError, match="overlaps"):
        img.add_sorted([(0x4800, Zeros(0x1000))])


def test_bytes_of_a_lazy_segment_are_its_fetched_bytes() -> None:
    class Counting(LazyData):
        def fetch(self, off: int, n: int) -> bytes:
            return bytes((off + i) & 0xFF for i in range(n))

    img = PhysImage([(0x1000, Counting(300))])
    (seg,) = list(img)
    assert bytes(seg.data) == bytes(i & 0xFF for i in range(300)) == img.read(0x1000, 300)
    assert bytes(seg.data.sub(10, 5)) == bytes(range(10, 15))
