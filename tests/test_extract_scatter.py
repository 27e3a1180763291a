"""``kho luo extract`` reading the image in address order (memory/scatter.py):
the same bytes as the file-order copy it replaced, with the C loop and with
the Python one, on scattered and contiguous folios of order 0 and 9, holes,
overlapping folios, memory the image lacks and an image file cut short."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from _luo import SynthMemfd, SynthSession, luo_of, synth

from kho_formats import filecopy
from kho_formats.errors import ImageError, KhoFormatError
from kho_formats.memory import native, scatter
from kho_formats.memory.image import PhysImage
from kho_formats.model.clients import decode_clients
from kho_formats.model.clients.luo.model import LuoState, content_digest
from kho_formats.ops import luo_extract

PS = 4096


def _file_backed(sy_image: PhysImage, where: Path) -> PhysImage:
    """The synthetic image written as an ELF file and mapped again (its segments views of the mapping)."""
    path = where / "image.elf"
    path.write_bytes(sy_image.to_elf())
    return PhysImage.from_elf(path)


def _scattered(n: int, seed: int, holes: int = 0) -> list[tuple[int, int]]:
    """``n`` order-0 folios whose array (allocation) order is shuffled: folio
    ``k`` of the file lands anywhere in memory; ``holes`` pages left out."""
    pages = list(range(n + holes))
    rng = random.Random(seed)
    for h in rng.sample(pages[1:-1], holes):
        pages.remove(h)
    rng.shuffle(pages)
    return [(p, 0) for p in pages]


def _luo(files: list[SynthMemfd], tmp: Path) -> tuple[LuoState, PhysImage, dict[int, bytes]]:
    sy = synth([SynthSession(b"s", files)], page_size=PS)
    img = _file_backed(sy.image, tmp)
    return luo_of(decode_clients(sy.state, img)), img, sy.contents


def _extract(lu: LuoState, img: PhysImage, out: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> dict[int, bytes]:
    """Extract with ``mode``: ``old`` (file order, the path before), ``c`` or ``python`` (address order)."""
    with monkeypatch.context() as m:
        m.setattr(luo_extract, "ADDRESS_ORDER", mode != "old")
        if mode == "python":
            m.setattr(scatter, "library", lambda: None)
        luo_extract.extract(lu, img, out, page_size=PS)
    return {int(p.stem, 16): p.read_bytes() for p in (out / "s").iterdir()}


MODES = ["old", "python", "c"]


def _modes() -> list[str]:
    if scatter.available():
        return MODES
    assert not native.enabled() or native._compiler() is None, "a C compiler is here but _scatter.c did not build"
    return MODES[:2]


CASES = {
    # 600 order-0 pages in shuffled order, a size that ends inside the last page
    "order0-scattered": [SynthMemfd(1, 600 * PS - 100, _scattered(600, 1))],
    # the same in file order (one run)
    "order0-contiguous": [SynthMemfd(2, 300 * PS, [(i, 0) for i in range(300)])],
    # order-9 folios (2 MiB: copied by copy_file_range) out of order, and order-0 pages between them
    "order9-scattered": [
        SynthMemfd(3, 5 * 512 * PS, [(1024, 9), (0, 9), (2048, 9)] + [(2560 + i, 0) for i, _ in _scattered(40, 2)])
    ],
    "order9-contiguous": [SynthMemfd(4, 2 * 512 * PS + 7, [(0, 9), (512, 9)])],
    # holes: pages without a folio, a hole at the end, an empty file
    "holes": [SynthMemfd(5, 900 * PS, _scattered(500, 3, holes=120)), SynthMemfd(6, 0, [])],
    # hostile: folios whose file ranges overlap (an order-2 folio at page 4 and order-0 pages inside it:
    # the first in file order is kept, as the kernel's restore keeps the first), a folio past the end
    "overlaps": [SynthMemfd(7, 40 * PS, [(9, 0), (4, 2), (5, 0), (12, 1), (0, 0), (13, 0), (80, 0), (7, 0)])],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_bytes_as_the_file_order_copy(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lu, img, truth = _luo(CASES[case], tmp_path)
    outs = {mode: _extract(lu, img, tmp_path / mode, mode, monkeypatch) for mode in _modes()}
    for mode, got in outs.items():
        assert got == (outs["old"] if case == "overlaps" else truth), mode
    for s in lu.sessions:
        for f in s.files:
            want = content_digest(f, img, PS)  # what Luo.digest / kho diff give
            for got in outs.values():
                assert hashlib.sha256(got[f.token]).hexdigest() == want


def test_scattered_pages_are_read_in_address_order(tmp_path: Path) -> None:
    """The plan sorts the pieces by where they lie in the image file; each
    piece keeps its file offset."""
    lu, img, _ = _luo(CASES["order0-scattered"], tmp_path)
    f = lu.sessions[0].files[0]
    off, phys, length = f.handler.content_runs(f.decoded, PS)
    assert np.all(np.diff(off.astype(np.int64)) > 0)  # file order
    assert np.any(np.diff(phys.astype(np.int64)) < 0)  # scattered in memory
    want = dict(zip(phys.tolist(), off.tolist()))
    (p,) = scatter.plan(img, off, phys, length)  # reorders the three arrays in place
    assert np.all(np.diff(p.src.astype(np.int64)) > 0)
    assert dict(zip(p.phys.tolist(), p.dst.tolist())) == want
    seg = img.segments[0]
    where = filecopy.file_range(seg.data)
    assert where is not None
    k = int(np.argmin(p.src))
    assert int(p.src[k]) == where[1] + int(p.phys[k]) - seg.phys


@pytest.mark.parametrize("mode", ["python", "c"])
def test_small_windows_and_gaps(mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of a few pages, gaps read around: every piece still lands where it goes."""
    if mode == "c" and not scatter.available():
        pytest.skip("no C compiler: the C loop is not built")
    lu, img, truth = _luo(CASES["holes"] + CASES["order0-scattered"], tmp_path)
    monkeypatch.setattr(scatter, "WINDOW", 3 * PS)
    monkeypatch.setattr(scatter, "MAX_GAP", PS)
    monkeypatch.setattr(scatter, "BATCH", 7)
    monkeypatch.setattr(scatter, "BIG", 2 * PS)
    got = _extract(lu, img, tmp_path / "o", mode, monkeypatch)
    assert got == truth


def test_fallocate_keeps_holes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The covered ranges are allocated up front, the holes between them are not."""
    if not scatter.available():
        pytest.skip("no C compiler: nothing is allocated up front")
    big_hole = SynthMemfd(9, 4096 * PS, [(0, 0), (4095, 0)])
    lu, img, truth = _luo([big_hole], tmp_path)
    got = _extract(lu, img, tmp_path / "o", "c", monkeypatch)
    assert got == truth
    st = os.stat(tmp_path / "o" / "s" / f"{9:016x}.bin")
    assert st.st_size == 4096 * PS and st.st_blocks * 512 < 64 * PS


def _without(img: PhysImage, lo: int, hi: int) -> PhysImage:
    """``img`` lacking ``[lo, hi)`` (the rest still views of the mapped file)."""
    out = PhysImage()
    for s in img.segments:
        for a, b in ((s.phys, min(s.end, lo)), (max(s.phys, hi), s.end)):
            if a < b:
                out.add(a, s.data[a - s.phys : b - s.phys])
    return out


def _same_error(lu, img, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Extract by every path: each raises a KhoFormatError, all with one message (returned per path)."""
    errors = {}
    for mode in _modes():
        with pytest.raises(KhoFormatError) as got:
            _extract(lu, img, tmp_path / mode, mode, monkeypatch)
        errors[mode] = str(got.value)
    assert len(set(errors.values())) == 1, errors
    return errors


def test_missing_memory_raises_the_same_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page of one folio missing from the image: nothing is copied in
    address order, the file-order copy raises the error naming the folio."""
    lu, img, _ = _luo(CASES["order0-scattered"], tmp_path)
    f = lu.sessions[0].files[0]
    off, phys, length = f.handler.content_runs(f.decoded, PS)
    k = int(np.argsort(phys)[len(phys) // 2])
    hole = _without(img, int(phys[k]), int(phys[k]) + PS)
    assert scatter.plan(hole, off, phys, length) is None
    errors = _same_error(lu, hole, tmp_path, monkeypatch)
    assert f"{int(phys[k]):#x}" in errors["old"] and "memfd folio" in errors["old"]


def test_raw_image_cut_short_raises_the_same_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folios given as a raw file (``--mem data.raw@PHYS``) that ends
    inside them: the same KhoFormatError from every path."""
    lu, img, _ = _luo(CASES["order0-scattered"], tmp_path)
    f = lu.sessions[0].files[0]
    _, phys, _ = f.handler.content_runs(f.decoded, PS)
    lo, hi = int(phys.min()), int(phys.max()) + PS
    raw = tmp_path / "data.raw"
    raw.write_bytes(img.read(lo, hi - lo)[: (hi - lo) // 2])
    cut = _without(img, lo, hi).merged(PhysImage.from_raw(raw, lo))
    _same_error(lu, cut, tmp_path, monkeypatch)


@pytest.mark.parametrize("mode", ["python", "c"])
def test_image_file_shrunk_after_mapping_is_an_image_error(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image file cut after it was mapped: the read comes up short, an
    ImageError (the mapping is never touched, so no SIGBUS)."""
    if mode == "c" and not scatter.available():
        pytest.skip("no C compiler: the C loop is not built")
    lu, img, _ = _luo(CASES["order0-scattered"], tmp_path)
    f = lu.sessions[0].files[0]
    runs = f.handler.content_runs(f.decoded, PS)
    (p,) = scatter.plan(img, *runs)
    os.truncate(tmp_path / "image.elf", int(p.src[len(p.src) // 2]))
    fd = os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with filecopy.Copier() as cp, pytest.raises(ImageError, match="file ends before it"):
            scatter.copy_runs(img, fd, f.decoded.size, *runs, cp, use_native=mode == "c")
    finally:
        os.close(fd)


def test_output_errors_are_extract_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The output failing (here: a file size limit) is the ExtractError the file-order copy raised."""
    lu, img, _ = _luo(CASES["order0-scattered"], tmp_path)
    real = os.ftruncate

    def efbig(fd: int, n: int) -> None:
        if n > 0:
            raise OSError(27, "File too large")
        real(fd, n)

    monkeypatch.setattr(os, "ftruncate", efbig)
    for mode in _modes():
        with pytest.raises(luo_extract.ExtractError, match="cannot write .* bytes .File too large"):
            _extract(lu, img, tmp_path / mode, mode, monkeypatch)


def test_memory_per_folio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Extracting 16,384 scattered order-0 folios allocates the window and a
    few dozen bytes per folio (the pieces' arrays and their sort: 34 here),
    not the file's bytes."""
    n = 1 << 14
    lu, img, truth = _luo([SynthMemfd(1, n * PS, _scattered(n, 5))], tmp_path)
    del truth
    shutil.rmtree(tmp_path / "o", ignore_errors=True)
    tracemalloc.start()
    try:
        luo_extract.extract(lu, img, tmp_path / "o", page_size=PS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < scatter.WINDOW + 64 * n, peak
    assert (tmp_path / "o" / "s" / f"{1:016x}.bin").stat().st_size == n * PS


def test_decode_memory_per_folio(tmp_path: Path) -> None:
    """Decoding a memfd of 16,384 folios holds its four per-folio arrays
    (phys, index, flags, order: 32 bytes a folio) and at its peak less than
    twice that (55 here): the records' bytes are read once, each field taken
    out of them in turn, the orders looked up a chunk at a time."""
    n = 1 << 14
    sy = synth([SynthSession(b"s", [SynthMemfd(1, n * PS, _scattered(n, 6))])], page_size=PS)
    img = _file_backed(sy.image, tmp_path)
    del sy.contents
    tracemalloc.start()
    try:
        lu = luo_of(decode_clients(sy.state, img))
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    m = lu.sessions[0].files[0].decoded
    assert m.phys.size == n and m.order.min() == 0
    assert peak < 64 * n, peak


def test_pieces_over_many_segments_and_two_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Folios in many segments of one ELF file (one PT_LOAD per page: the
    per-piece segment lookup), then in two raw files (grouped by file, each
    read in its own order): the same bytes as the file-order copy."""
    sy = synth([SynthSession(b"s", CASES["order0-scattered"] + CASES["order9-scattered"])], page_size=PS)
    path = tmp_path / "pages.elf"
    path.write_bytes(sy.image.to_elf(merge=False))
    img = PhysImage.from_elf(path)
    assert len(img.segments) > 600
    lu = luo_of(decode_clients(sy.state, img))
    for mode in _modes():
        assert _extract(lu, img, tmp_path / f"elf-{mode}", mode, monkeypatch) == sy.contents, mode
    f = lu.sessions[0].files[0]
    _, phys, _ = f.handler.content_runs(f.decoded, PS)
    lo, hi = int(phys.min()), int(phys.max()) + PS
    mid = lo + (hi - lo) // 2 // PS * PS
    (tmp_path / "a.raw").write_bytes(img.read(lo, mid - lo))
    (tmp_path / "b.raw").write_bytes(img.read(mid, hi - mid))
    two = _without(img, lo, hi).merged(PhysImage.from_raw(tmp_path / "a.raw", lo))
    two = two.merged(PhysImage.from_raw(tmp_path / "b.raw", mid))
    runs = f.handler.content_runs(f.decoded, PS)
    plans = scatter.plan(two, *runs)
    assert plans is not None and sorted(Path(p.source.path).name for p in plans) == ["a.raw", "b.raw"]
    for mode in _modes():
        assert _extract(lu, two, tmp_path / f"two-{mode}", mode, monkeypatch) == sy.contents, mode


def test_restored_once_is_the_first_record_of_each_folio_in_index_order() -> None:
    """The sort-free path (distinct addresses, no two folios at one index)
    and the quicksort one give what a stable unique-then-sort gives, on
    random folio lists with repeated addresses, repeated indices and pfn 0."""
    from kho_formats.abi.layout import KhoVmalloc
    from kho_formats.abi.memfd import MemfdLuoSer
    from kho_formats.memory.distinct import first_of_each
    from kho_formats.model.clients.memfd import MemfdFile, _distinct_pages, restored_once

    rng = np.random.default_rng(7)
    ser = MemfdLuoSer(pos=0, size=0, seals=0, flags=0, nr_folios=0, folios=KhoVmalloc(0, 0, 0, 0))
    fast = 0
    for n in (1, 2, 3, 50, 2000):
        for pages, indices in ((4 * n, 1 << 30), (n, 1 << 30), (3 * n, 2), (1 << 40, 1 << 30)):
            phys = (rng.choice(pages, n, replace=pages < n) * PS).astype(np.uint64)
            if n > 3 and indices == 2:
                phys[rng.integers(0, n, 2)] = 0
            index = rng.integers(0, indices, n).astype(np.uint64)
            m = MemfdFile(0, ser, PS, phys=phys, index=index)
            first = first_of_each(phys)
            keep = first[phys[first] != 0]
            want = keep[np.argsort(index[keep], kind="stable")]
            assert restored_once(m).tolist() == want.tolist(), (n, pages, indices)
            fast += _distinct_pages(phys, PS) and len(set(index.tolist())) == n
    assert fast >= 4  # the sort-free path was taken
