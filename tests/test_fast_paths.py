"""The fast paths of issue 22 give what the slow paths give, on tiny inputs.

* ``MemfdHandler.contents`` joins folios adjacent in the file and in memory
  into runs (:func:`~kho_formats.model.clients.memfd.folio_runs`): the bytes,
  the runs digest and the error for missing memory are those of the folio
  by folio walk it replaced (kept here as :func:`folio_by_folio`).
* :class:`kho_formats.filecopy.Copier` copies a mapped file's bytes with
  ``copy_file_range`` and everything else with ``pwrite``: the same bytes.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kho_formats import filecopy
from kho_formats.errors import ImageError
from kho_formats.memory.image import PhysImage
from kho_formats.model.clients import memfd
from kho_formats.model.clients.digest import pieces, runs_digest
from kho_formats.model.clients.memfd import MemfdFile, MemfdHandler, restored_once
from kho_formats.safeio import map_regular

PS = 4096


def folio_by_folio(m: MemfdFile, image: PhysImage, page_size: int) -> Iterator[tuple[int, memoryview]]:
    """The contents walk before runs: one folio at a time, CHUNK bytes a piece."""
    for k in restored_once(m).tolist():
        off = int(m.index[k]) * page_size
        if off >= m.size:
            continue
        n = min(page_size << max(int(m.order[k]), 0), m.size - off)
        phys = int(m.phys[k])
        for a in range(0, n, memfd.CHUNK):
            b = min(n, a + memfd.CHUNK)
            yield off + a, image.view(phys + a, b - a, f"memfd folio {k} at index {int(m.index[k])}")


def materialize(parts: Iterator[tuple[int, memoryview]], size: int) -> tuple[bytes, str | None]:
    """The file as extract writes it (up to the first error) and the error's text."""
    out = bytearray(size)
    try:
        for off, piece in pieces(parts):
            if off >= size:
                break
            piece = piece[: size - off]
            out[off : off + len(piece)] = piece
    except ImageError as exc:
        return bytes(out), str(exc)
    return bytes(out), None


def memfd_file(size: int, index: list[int], order: list[int], phys: list[int]) -> MemfdFile:
    return MemfdFile(
        ser_phys=0,
        ser=SimpleNamespace(size=size),  # type: ignore[arg-type]  # contents reads only .size
        page_size=PS,
        phys=np.array(phys, dtype=np.uint64),
        index=np.array(index, dtype=np.uint64),
        flags=np.zeros(len(index), dtype=np.uint64),
        order=np.array(order, dtype=np.int64),
    )


def image_of(rng: np.random.Generator, base: int, pages: int, hole: int | None) -> PhysImage:
    """``pages`` pages of random bytes at ``base`` in two adjacent segments, minus page ``hole``."""
    data = rng.integers(0, 256, size=pages * PS, dtype=np.uint8).tobytes()
    cut = pages // 2
    segs = [(base, data[: cut * PS]), (base + cut * PS, data[cut * PS :])]
    if hole is not None:
        segs = [
            (base, data[: hole * PS]),
            (base + (hole + 1) * PS, data[(hole + 1) * PS :]),
        ]
    return PhysImage([(p, d) for p, d in segs if d])


def case(seed: int) -> tuple[MemfdFile, PhysImage]:
    rng = np.random.default_rng(seed)
    base = 0x100000
    pages = 64
    hole = int(rng.integers(0, pages)) if seed % 3 == 0 else None
    image = image_of(rng, base, pages, hole)
    n = int(rng.integers(1, 24))
    index, order, phys = [], [], []
    at_index, at_page = int(rng.integers(0, 3)), int(rng.integers(0, 4))
    for _ in range(n):
        o = int(rng.choice([-1, 0, 0, 0, 1, 2]))
        step = 1 << max(o, 0)
        kind = rng.integers(0, 10)
        if kind < 6:  # adjacent in the file and in memory: joins the run
            pass
        elif kind == 6:  # a gap in the file
            at_index += int(rng.integers(1, 3))
        elif kind == 7:  # elsewhere in memory
            at_page = int(rng.integers(0, pages - 4))
        elif kind == 8:  # the same folio again, or pfn 0
            if phys and rng.integers(0, 2):
                index.append(int(rng.integers(0, at_index + 1)))
                order.append(order[-1])
                phys.append(phys[-1])
                continue
            index.append(at_index)
            order.append(0)
            phys.append(0)
            continue
        else:  # an index already covered (a hostile list)
            at_index = max(0, at_index - int(rng.integers(1, 3)))
        index.append(at_index)
        order.append(o)
        phys.append(base + at_page * PS)
        at_index += step
        at_page = min(at_page + step, pages - 4)
    if rng.integers(0, 3) == 0:  # listed out of index order
        perm = rng.permutation(len(index))
        index, order, phys = ([x[i] for i in perm] for x in (index, order, phys))
    top = max(index) + 2
    size = int(rng.integers(0, top * PS + 1))
    if rng.integers(0, 2):
        size = size // PS * PS
    return memfd_file(size, index, order, phys), image


@pytest.mark.parametrize("chunk", [PS, 2 * PS, 4 << 20])
def test_contents_in_runs_are_the_folio_by_folio_contents(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(memfd, "CHUNK", chunk)
    h = MemfdHandler()
    errors = joined = 0
    for seed in range(300):
        m, image = case(seed)
        want = materialize(folio_by_folio(m, image, PS), m.size)
        got = materialize(h.contents(m, image, PS), m.size)
        assert got == want, seed
        if want[1] is None:
            assert runs_digest(h.contents(m, image, PS), m.size) == runs_digest(folio_by_folio(m, image, PS), m.size)
        else:
            errors += 1
        runs = memfd.folio_runs(m, PS)
        joined += int((runs.stops - runs.starts > 1).sum())
        pieces_new = list(h.contents(m, image, PS)) if want[1] is None else []
        assert all(len(p) <= chunk for _, p in pieces_new)
    assert errors > 10 and joined > 100  # the cases do reach both paths


@pytest.mark.parametrize("seed", range(12))
def test_scattered_small_folios_are_gathered_with_the_same_bytes(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    monkeypatch.setattr(memfd, "CHUNK", 4 * PS)
    rng = np.random.default_rng(seed)
    pages = 48
    base = 0x400000
    image = image_of(rng, base, pages, hole=int(rng.integers(0, pages)) if seed % 3 == 0 else None)
    order = int(rng.choice([0, 0, 1]))
    n = pages >> order
    phys = (base + rng.permutation(n) * (PS << order)).tolist()  # file order, memory shuffled
    size = n * (PS << order) - int(rng.integers(0, 2)) * 100
    m = memfd_file(size, [k << order for k in range(n)], [order] * n, phys)
    h = MemfdHandler()
    want = materialize(folio_by_folio(m, image, PS), size)
    assert materialize(h.contents(m, image, PS), size) == want
    if want[1] is None:
        got = list(h.contents(m, image, PS))
        assert runs_digest(iter(got), size) == runs_digest(folio_by_folio(m, image, PS), size)
        assert all(len(p) <= 4 * PS for _, p in got)
        if seed % 3 != 0 and order == 0:  # one segment: pieces of 4 pages, not 48 pieces of one
            assert len(got) < n


def test_adjacent_folios_come_as_few_pieces() -> None:
    pages = 256
    image = PhysImage([(0x200000, bytes(range(256)) * (pages * PS // 256))])
    m = memfd_file(pages * PS, list(range(pages)), [0] * pages, [0x200000 + k * PS for k in range(pages)])
    got = list(MemfdHandler().contents(m, image, PS))
    assert [off for off, _ in got] == [0]
    assert b"".join(bytes(p) for _, p in got) == image.read(0x200000, pages * PS)


def test_a_hostile_pfn_near_the_top_is_not_joined_across_2_64() -> None:
    top = (1 << 64) - PS
    m = memfd_file(2 * PS, [0, 1], [0, 0], [top, 0x1000])
    runs = memfd.folio_runs(m, PS)
    assert runs.starts.tolist() == [0, 1]
    with pytest.raises(ImageError, match="memfd folio 0 at index 0"):
        list(MemfdHandler().contents(m, PhysImage([(0x1000, bytes(PS))]), PS))


def test_huge_order_and_index_are_clipped_without_overflow() -> None:
    image = PhysImage([(0x1000, b"\x01" * PS)])
    m = memfd_file(PS, [0, (1 << 64) - 1], [70, 0], [0x1000, 0x1000 + PS])
    assert materialize(MemfdHandler().contents(m, image, PS), PS) == (b"\x01" * PS, None)


# -- filecopy ---------------------------------------------------------------------------------------


def test_copier_copies_a_mapped_file_in_the_kernel_and_bytes_by_pwrite(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = np.random.default_rng(1).integers(0, 256, size=5 * PS + 123, dtype=np.uint8).tobytes()
    src.write_bytes(data)
    m = map_regular(src, "test input")
    assert isinstance(m, mmap.mmap)
    view = memoryview(m)[PS + 7 : 4 * PS].cast("B")
    where = filecopy.file_range(view)
    assert where is not None and where[1] == PS + 7 and where[0].path == str(src)
    out = tmp_path / "out.bin"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    try:
        with filecopy.Copier() as c:
            c.write(fd, 10, view)
            c.write(fd, 10 + len(view), memoryview(b"tail"))
            assert c.written == 4
            if hasattr(os, "copy_file_range"):
                assert c.copied == len(view)
    finally:
        os.close(fd)
    assert out.read_bytes() == bytes(10) + data[PS + 7 : 4 * PS] + b"tail"


def test_copier_does_not_copy_from_a_file_put_in_the_mapped_ones_place(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"A" * 3 * PS)
    m = map_regular(src, "test input")
    os.rename(src, tmp_path / "old.bin")
    src.write_bytes(b"B" * 3 * PS)  # another inode at the path
    out = tmp_path / "out.bin"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    try:
        with filecopy.Copier() as c:
            c.write(fd, 0, memoryview(m)[PS:])
            assert c.copied == 0 and c.written == 2 * PS
    finally:
        os.close(fd)
    assert out.read_bytes() == b"A" * 2 * PS


def test_views_that_are_not_of_a_remembered_mapping_have_no_file_range(tmp_path: Path) -> None:
    assert filecopy.file_range(memoryview(b"abc")) is None
    p = tmp_path / "f"
    p.write_bytes(b"x" * PS)
    with open(p, "rb") as fh:
        m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # not through safeio: unknown
    assert filecopy.file_range(memoryview(m)) is None
    m.close()


def _rows_of(m: mmap.mmap, size: int, skip: int = 0) -> np.ndarray:
    """Rows as :meth:`PhysImage.rows` makes them: frombuffer of a memoryview of the mapping, reshaped."""
    count = (len(m) - skip) // size
    return np.frombuffer(memoryview(m), dtype=np.uint8, count=count * size, offset=skip).reshape(count, size)


def test_row_reader_gathers_a_mapped_files_rows_by_pread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src.bin"
    data = np.random.default_rng(2).integers(0, 256, size=40 * PS + 100, dtype=np.uint8).tobytes()
    src.write_bytes(data)
    m = map_regular(src, "test input")
    assert isinstance(m, mmap.mmap)
    rows = _rows_of(m, PS, skip=100)
    where = filecopy.array_file_range(rows[3:])
    assert where is not None and where[1] == 100 + 3 * PS
    index = np.array([7, 2, 3, 4, 30, 0, 39, 38], dtype=np.int64)  # runs: 7 | 2 3 4 | 30 | 0 | 39 | 38
    reads: list[int] = []
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, bufs, off: reads.append(off) or real(fd, bufs, off))
    with filecopy.RowReader() as r:
        got = r.take(rows, index)
    assert got.tobytes() == rows[index].tobytes()
    assert got.base is None  # a buffer of its own, not a view of the mapping
    assert reads == [100 + k * PS for k in (7, 2, 30, 0, 39, 38)]


def test_row_reader_reads_through_the_mapping_when_the_file_is_not_the_mapped_one(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"A" * 4 * PS)
    m = map_regular(src, "test input")
    assert isinstance(m, mmap.mmap)
    os.rename(src, tmp_path / "old.bin")
    src.write_bytes(b"B" * 4 * PS)  # another inode at the path: not read
    with filecopy.RowReader() as r:
        assert r.take(_rows_of(m, PS), np.array([3, 1])).tobytes() == b"A" * 2 * PS
        plain = np.arange(4 * PS, dtype=np.uint32).view(np.uint8).reshape(-1, PS)  # not a mapping at all
        assert r.take(plain, np.array([5, 0])).tobytes() == plain[[5, 0]].tobytes()


def test_scattered_memfd_pages_are_read_from_the_image_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An order-0 memfd whose pages lie shuffled in a mapped image: gathered by
    ``pread`` (none mapped), the bytes those of the folio by folio walk."""
    n = 64
    raw = tmp_path / "mem.raw"
    blob = np.random.default_rng(3).integers(0, 256, size=n * PS, dtype=np.uint8).tobytes()
    raw.write_bytes(blob)
    base = 0x100000
    image = PhysImage()
    image.add(base, memoryview(map_regular(raw, "test image")))
    perm = np.random.default_rng(4).permutation(n)
    m = memfd_file(n * PS, list(range(n)), [0] * n, [base + int(p) * PS for p in perm])
    reads: list[int] = []
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, bufs, off: reads.append(off) or real(fd, bufs, off))
    got = materialize(MemfdHandler().contents(m, image, PS), n * PS)
    assert got == materialize(folio_by_folio(m, image, PS), n * PS)
    assert got[0] == b"".join(blob[int(p) * PS : (int(p) + 1) * PS] for p in perm)
    assert len(reads) >= n - 8  # page by page (adjacent ones joined), not through the mapping
