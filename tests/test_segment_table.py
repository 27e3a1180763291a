"""PhysImage over a SegmentTable (a kdump file's runs of dumped pages held as arrays): the
same segments, reads, covered ranges and writes as the list of segments it stands for, and
memory per run far below one object per run."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest

from kho_formats.errors import ImageError
from kho_formats.memory.image import LazyData, PhysImage, SegmentTable
from kho_formats.memory.kdump import KdumpFile, write_kdump
from kho_formats.ops import locate
from kho_formats.ops.extract import intersect


class Filled(LazyData):
    """``size`` bytes of ``value``."""

    __slots__ = ("value",)

    def __init__(self, size: int, value: int) -> None:
        super().__init__(size)
        self.value = value

    def fetch(self, off: int, n: int) -> bytes:
        return bytes([self.value]) * n


PHYS = np.array([0x1000, 0x2000, 0x5000, 0x9000], dtype=np.uint64)
SIZE = np.array([0x1000, 0x2000, 0x1000, 0x3000], dtype=np.uint64)


def _table() -> SegmentTable:
    return SegmentTable(PHYS, SIZE, lambda i: Filled(int(SIZE[i]), i + 1), None)


def _listed() -> PhysImage:
    img = PhysImage()
    for i in range(PHYS.size):
        img.add(int(PHYS[i]), Filled(int(SIZE[i]), i + 1))
    return img


def test_an_image_over_a_table_reads_as_the_list_of_its_segments() -> None:
    img, ref = PhysImage(), _listed()
    img.add_table(_table())
    assert [(s.phys, s.end) for s in img] == [(s.phys, s.end) for s in ref]
    assert len(img) == 4 and img.total_bytes == ref.total_bytes == 0x7000
    assert img.covered() == ref.covered() == [(0x1000, 0x4000), (0x5000, 0x6000), (0x9000, 0xC000)]
    assert img.read(0x1FFE, 4) == b"\x01\x01\x02\x02"  # across two adjacent segments
    assert img.read(0xB000, 2) == b"\x04\x04"
    assert img.has(0x5000, 0x1000) and not img.has(0x4000, 1)
    with pytest.raises(ImageError, match="missing from 0x4000"):
        img.read(0x3FFF, 2)
    assert img.gather(np.array([0x1000, 0x5000, 0xA000], np.uint64), 2).tolist() == [[1, 1], [3, 3], [4, 4]]
    assert img == ref
    assert isinstance(img.copy()._segs, SegmentTable)  # shared, not made segment by segment
    assert img.copy() == ref


def test_a_change_turns_the_table_into_segments() -> None:
    img = PhysImage()
    img.add_table(_table())
    img.write(0x2001, b"xy")
    img.add(0x7000, b"zz")
    assert not isinstance(img._segs, SegmentTable)
    assert img.read(0x2000, 4) == b"\x02xy\x02"
    assert img.read(0x7000, 2) == b"zz"
    assert img.covered() == [(0x1000, 0x4000), (0x5000, 0x6000), (0x7000, 0x7002), (0x9000, 0xC000)]
    merged = PhysImage()
    merged.add(0x100, b"a")
    merged.add_table(_table())  # onto an image with segments: added one by one
    assert merged.covered()[0] == (0x100, 0x101) and merged.total_bytes == 0x7001


def test_a_table_whose_segments_overlap_is_refused() -> None:
    img = PhysImage()
    bad = SegmentTable(
        np.array([0x1000, 0x1800], np.uint64), np.array([0x1000, 0x1000], np.uint64), lambda i: Filled(0x1000, 0), None
    )
    with pytest.raises(ImageError, match="overlap"):
        img.add_table(bad)
    empty = SegmentTable(np.array([0x1000], np.uint64), np.array([0], np.uint64), lambda i: Filled(0, 0), None)
    with pytest.raises(ImageError, match="empty"):
        img.add_table(empty)


def _kdump_of_runs(runs: int) -> bytes:
    """A kdump file of ``runs`` one-page runs (every other page dumped), raw pages, the
    FDT magic at the start of one of them."""
    img = PhysImage()
    page = bytearray(b"\x11" * 4096)
    for r in range(runs):
        img.add((2 * r + 1) * 4096, bytes(page) if r != runs // 2 else bytes.fromhex("d00dfeed") + bytes(page[4:]))
    out = io.BytesIO()
    write_kdump(img, out, compression="none")
    return out.getvalue()


def test_kdump_image_memory_per_run_is_a_few_bytes() -> None:
    runs = 2000
    blob = _kdump_of_runs(runs)
    f = KdumpFile(blob)
    assert f._run_pfn.size == runs
    tracemalloc.start()
    try:
        img = f.image()
        held, _ = tracemalloc.get_traced_memory()
        addrs, heads = locate._page_heads(img, 4096)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(img._segs, SegmentTable) and len(img) == runs
    assert held < 40 * runs  # one Segment and one LazyData per run held were ~260 bytes
    # what the scan keeps: its answer (12 bytes a page) and the window it last computed
    # (4 bytes a page), nothing per run
    assert after - held - addrs.nbytes - heads.nbytes < 8 * runs
    assert addrs[heads == 0xD00DFEED].tolist() == [(2 * (runs // 2) + 1) * 4096]
    assert img.read((2 * 7 + 1) * 4096, 4) == b"\x11" * 4


def test_covered_within_is_the_intersection_with_covered() -> None:
    img, ref = PhysImage(), _listed()
    img.add_table(_table())
    rng = np.random.default_rng(4)
    for _ in range(300):
        cuts = sorted(set(int(x) for x in rng.integers(0, 0xD000, int(rng.integers(2, 9)))))
        ranges = [(cuts[k], cuts[k + 1]) for k in range(0, len(cuts) - 1, 2)]
        want = intersect(ranges, ref.covered())
        assert img.covered_within(ranges) == want == ref.covered_within(ranges)
    # a range over the whole table, and one segment meeting two ranges
    assert img.covered_within([(0, 1 << 64)]) == ref.covered()
    assert img.covered_within([(0x9100, 0x9200), (0x9300, 0xD000)]) == [(0x9100, 0x9200), (0x9300, 0xC000)]
