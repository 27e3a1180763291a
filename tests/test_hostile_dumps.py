"""Hostile memory-dump files (kdump, ELF cores, kcore): what the ``kdump`` /
``elf`` / ``kcore`` fuzz targets (``fuzz/dumps.py``) found, each as a typed
error with bounded time and memory.

Memory is measured with :mod:`tracemalloc` (numpy and bytes allocations are
traced), so a reader that allocates what a header field claims shows up even
when the allocation is never touched.
"""

from __future__ import annotations

import io
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fuzz.dumps import flatten
from kho_formats.errors import ImageError, KhoFormatError
from kho_formats.memory.image import PhysImage
from kho_formats.memory.kdump import KdumpFile, kdump_structs, load_kdump, write_kdump
from kho_formats.ops.capture import load_capture

ROOT = Path(__file__).resolve().parent.parent
QEMU_KDUMP = ROOT / "tests" / "data" / "qemu-7.2-x86_64-firmware-16m.kdump"
MiB = 1 << 20


def peak_alloc(fn: Callable[[], object]) -> tuple[int, BaseException | None]:
    """(peak bytes traced while ``fn`` ran, the exception it raised)."""
    tracemalloc.start()
    try:
        fn()
        exc = None
    except BaseException as e:
        exc = e
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, exc


def plain_kdump(pages: int = 4, *, compression: str = "zlib", fill: bytes = b"") -> bytearray:
    img = PhysImage([(0x100000, (fill or bytes(range(256)) * 16) * pages)])
    buf = io.BytesIO()
    write_kdump(img, buf, compression=compression)
    return bytearray(buf.getvalue())


class Layout:
    """Offsets in a plain kdump written by write_kdump (block 4096, sub header 1 block)."""

    def __init__(self, b: bytes) -> None:
        h = kdump_structs("little").header.parse(bytes(b[:464]))
        self.bs = h.block_size
        self.bitmap_blocks = h.bitmap_blocks
        self.bm2 = (1 + h.sub_hdr_size) * self.bs + h.bitmap_blocks * self.bs // 2
        self.pd = (1 + h.sub_hdr_size + h.bitmap_blocks) * self.bs

    def desc(self, k: int) -> int:
        return self.pd + 24 * k


def put(b: bytearray, off: int, width: int, value: int) -> None:
    b[off : off + width] = value.to_bytes(width, "little", signed=value < 0)


def redirect_page(b: bytearray, lay: Layout, k: int, data: bytes, flags: int) -> None:
    """Append ``data`` to the kdump ``b`` and point page descriptor ``k`` at it
    (offset, size, compression ``flags``)."""
    off = len(b)
    b += data
    put(b, lay.desc(k), 8, off)
    put(b, lay.desc(k) + 8, 4, len(data))
    put(b, lay.desc(k) + 12, 4, flags)


def damaged_v4_kdump() -> bytearray:
    """A zlib kdump of fixtures/v4-4k (root FDT at 0x78000000, its first page)
    whose page descriptor #5 says 0xffffffff bytes."""
    buf = io.BytesIO()
    write_kdump(PhysImage.from_bundle(ROOT / "fixtures" / "v4-4k"), buf, compression="zlib")
    b = bytearray(buf.getvalue())
    put(b, Layout(b).desc(5) + 8, 4, 0xFFFFFFFF)
    return b


def write(tmp_path: Path, data: bytes, name: str = "d.kdump") -> Path:
    p = tmp_path / name
    p.write_bytes(bytes(data))
    return p


# -- kdump: sizes a header or descriptor claims ----------------------------------------------------


def test_flattened_bitmap_claim_is_refused_before_allocating(tmp_path: Path) -> None:
    """Found by the fuzzer: a flattened file's reads allocated the bytes asked
    for (and a coverage mask as large) before looking at the records, so a
    header saying ``bitmap_blocks`` 2^20 with ``max_mapnr_64`` 2^34 made a
    600 KiB file allocate 4 GiB."""
    b = plain_kdump()
    put(b, 436, 4, 1 << 20)  # bitmap_blocks: two 2 GiB bitmaps
    put(b, 4096 + 96, 8, 1 << 34)  # max_mapnr_64
    p = write(tmp_path, flatten(bytes(b)))
    peak, exc = peak_alloc(lambda: load_kdump(p))
    assert isinstance(exc, ImageError), exc
    assert "dumped-page bitmap" in str(exc) and "past the end of the flattened records" in str(exc)
    assert peak < 16 * MiB


def test_page_descriptor_size_is_checked_on_the_scan_path(tmp_path: Path) -> None:
    """Found by the fuzzer: the root-FDT scan reads four bytes per page through
    ``head_of``, which took a zlib page descriptor's size as it was: 0xffffffff
    read (and, flattened, allocated) 4 GiB for one page head."""
    b = plain_kdump()
    lay = Layout(b)
    put(b, lay.desc(1) + 8, 4, 0xFFFFFFFF)
    for data in (bytes(b), flatten(bytes(b))):
        p = write(tmp_path, data)
        t0 = time.perf_counter()
        peak, exc = peak_alloc(lambda p=p: load_capture(p))
        # the scan skips the damaged page (and says so); no root FDT in this dump at all
        assert isinstance(exc, KhoFormatError) and "no KHO root FDT found" in str(exc), exc
        msg = str(exc)
        assert "the scan skipped 1 page" in msg, msg
        assert "page descriptor #1" in msg and "pfn 0x101" in msg and "size 4294967295" in msg, msg
        assert "1..8192 bytes" in msg
        assert peak < 16 * MiB and time.perf_counter() - t0 < 2
        with pytest.raises(ImageError) as ei:  # read directly, the page is an error naming its address
            load_kdump(p).read(0x101000, 4)
        assert ei.value.phys == 0x101000  # the page's address, not -1


def test_one_damaged_page_does_not_hide_the_handover(tmp_path: Path) -> None:
    """A kdump of fixtures/v4-4k with one page descriptor past the root FDT
    damaged: the scan skips that page, finds the root FDT and says what it skipped."""
    b = damaged_v4_kdump()
    for data in (bytes(b), flatten(bytes(b))):
        cap = load_capture(write(tmp_path, data))
        assert cap.root_fdt_phys == 0x7800_0000
        assert any("the scan skipped 1 page" in n and "page descriptor #5" in n for n in cap.notes), cap.notes


@pytest.mark.parametrize("size", [0, 8193, 0x80000000])
def test_bad_descriptor_sizes_read_by_page(tmp_path: Path, size: int) -> None:
    b = plain_kdump()
    put(b, Layout(b).desc(2) + 8, 4, size)
    img = load_kdump(write(tmp_path, b))
    with pytest.raises(ImageError, match=rf"page descriptor #2 \(pfn 0x102; .*size {size}.*bad size"):
        img.read(0x102000, 16)


def test_zlib_bomb_page_is_cut_at_a_page(tmp_path: Path) -> None:
    """A descriptor's zlib stream (within the 2-page size limit) that inflates
    to 8 MiB: inflated to one page + 1 byte and refused, not 8 MiB."""
    b = plain_kdump()
    lay = Layout(b)
    bomb = zlib.compress(bytes(8 * MiB), 9)
    assert len(bomb) <= 2 * lay.bs
    redirect_page(b, lay, 0, bomb, 1)
    img = load_kdump(write(tmp_path, b))
    peak, exc = peak_alloc(lambda: img.read(0x100000, 4096))
    assert isinstance(exc, ImageError) and "holds more than 4096 bytes" in str(exc), exc
    assert peak < 2 * MiB


def test_zstd_bomb_page_is_cut_at_a_page(tmp_path: Path) -> None:
    """cramjam's zstd ``output_len`` is a hint, not a limit: a frame saying
    8 MiB was inflated whole. Now decompressed into a page + 1 byte."""
    cramjam = pytest.importorskip("cramjam")
    b = plain_kdump(compression="zstd")
    lay = Layout(b)
    bomb = bytes(cramjam.zstd.compress(bytes(8 * MiB)))
    assert len(bomb) <= 2 * lay.bs
    redirect_page(b, lay, 0, bomb, 0x20)
    img = load_kdump(write(tmp_path, b))
    peak, exc = peak_alloc(lambda: img.read(0x100000, 4096))
    assert isinstance(exc, ImageError) and "does not decompress" in str(exc) and "pfn 0x100" in str(exc), exc
    assert peak < 2 * MiB


def test_snappy_length_header_is_checked_first(tmp_path: Path) -> None:
    """A snappy stream whose length header says 4 GiB: refused from the header."""
    pytest.importorskip("cramjam")
    b = plain_kdump(compression="snappy")
    lay = Layout(b)
    redirect_page(b, lay, 0, bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + bytes(16), 0x4)  # 21 bytes
    img = load_kdump(write(tmp_path, b))
    peak, exc = peak_alloc(lambda: img.read(0x100000, 4096))
    assert isinstance(exc, ImageError) and "snappy stream says 4294967295 bytes" in str(exc), exc
    assert peak < 2 * MiB


def test_bitmap_of_ones_needs_its_descriptors(tmp_path: Path) -> None:
    """A dumped-page bitmap saying every page exists: the descriptors it implies
    are looked for before any per-page structure is built."""
    b = plain_kdump()
    lay = Layout(b)
    b[lay.bm2 : lay.bm2 + lay.bitmap_blocks * lay.bs // 2] = b"\xff" * (lay.bitmap_blocks * lay.bs // 2)
    put(b, 440, 4, 0xFFFFFFFF)  # max_mapnr (32-bit; header_version 6 uses max_mapnr_64)
    put(b, 4096 + 96, 8, lay.bitmap_blocks * lay.bs // 2 * 8)
    p = write(tmp_path, b)
    peak, exc = peak_alloc(lambda: KdumpFile(p.read_bytes(), "d"))
    assert isinstance(exc, ImageError), exc
    assert "page descriptors (one per page the dumped-page bitmap sets: 32768" in str(exc)
    assert peak < 4 * MiB + len(b)


def test_runs_of_a_large_bitmap_match_a_naive_walk() -> None:
    from kho_formats.memory.kdump import _bit_count, _bit_runs

    rng = np.random.default_rng(1)
    bm = (rng.random(5000) < 0.3).astype(np.uint8) * 255 | rng.integers(0, 256, 5000, dtype=np.uint8) * (
        rng.random(5000) < 0.3
    )
    bm = bm.astype(np.uint8)
    for nbits in (0, 1, 7, 8, 39999, 40000):
        bits = np.unpackbits(bm, bitorder="little")[:nbits]
        runs, cur = [], None
        for i, v in enumerate(bits.tolist()):
            if v and cur is None:
                cur = i
            if not v and cur is not None:
                runs.append((cur, i - cur))
                cur = None
        if cur is not None:
            runs.append((cur, nbits - cur))
        for chunk in (1, 3, 1 << 20):
            s, c = _bit_runs(bm, nbits, chunk=chunk)
            assert list(zip(s.tolist(), c.tolist())) == runs
            assert _bit_count(bm, nbits, chunk=chunk) == int(bits.sum())


# -- flattened records -------------------------------------------------------------------------------


def _records(recs: list[tuple[int, bytes]]) -> bytes:
    out = b"makedumpfile".ljust(4096, b"\0")
    for vo, data in recs:
        out += vo.to_bytes(8, "big") + len(data).to_bytes(8, "big") + data
    return out + (-1).to_bytes(8, "big", signed=True) + bytes(8)


def test_flattened_overlapping_records_later_wins() -> None:
    from kho_formats.memory.kdump import _Flattened

    f = _Flattened(_records([(0, b"a" * 10), (5, b"b" * 10), (2, b"c" * 2), (30, b"z"), (0, b"")]), "f")
    assert f.pread(0, 15, "x") == b"aacca" + b"b" * 10
    assert f.pread(30, 1, "x") == b"z"
    with pytest.raises(ImageError, match="missing from offset 0xf"):
        f.pread(10, 6, "x")
    with pytest.raises(ImageError, match="past the end of the flattened records"):
        f.pread(0, 1 << 40, "x")


def test_flattened_many_records_under_a_long_one_read_fast() -> None:
    """One long record and 50,000 one-byte records over it: every read used to
    walk all records starting within the longest record's length."""
    from kho_formats.memory.kdump import _Flattened

    recs = [(0, bytes(1 << 20))] + [(k * 16, b"x") for k in range(50000)]
    f = _Flattened(_records(recs), "f")
    t0 = time.perf_counter()
    for k in range(2000):
        assert f.pread(k * 16, 2, "x") == b"x\0"
    assert time.perf_counter() - t0 < 1.0


def test_bad_flattened_record_names_its_file_offset(tmp_path: Path) -> None:
    data = bytearray(_records([(0, b"KDUMP   ")]))
    data[4096 + 8 : 4096 + 16] = (1 << 40).to_bytes(8, "big")
    with pytest.raises(ImageError, match=r"bad flattened record at file offset 0x1000 .*size 1099511627776"):
        load_kdump(write(tmp_path, data))


def test_qemu_kdump_reads_as_before() -> None:
    img = load_kdump(QEMU_KDUMP)
    assert img.covered() == [(0, 16 << 20), (0xFFFC0000, 1 << 32)]
    assert img.read(0xFFFFFFF0, 1) == b"\xea"
    with pytest.raises(KhoFormatError, match="no KHO root FDT"):
        load_capture(QEMU_KDUMP)


# -- the root-FDT scan of a dump alone ------------------------------------------------------------


def test_scan_does_not_read_every_magic_page_whole(tmp_path: Path) -> None:
    """16 MiB of pages that start with the FDT magic and a 1 MiB totalsize: each
    was read whole (a MiB copied per page: 1.1 s here, a minute per GiB) before
    the parse refused it. The 40-byte header is checked first now."""
    page = (0xD00DFEED).to_bytes(4, "big") + (1 << 20).to_bytes(4, "big") + bytes(4088)
    p = tmp_path / "magic.elf"
    p.write_bytes(PhysImage([(0, page * 4096)]).to_elf())
    t0 = time.perf_counter()
    with pytest.raises(KhoFormatError, match="no KHO root FDT found"):
        load_capture(p)
    assert time.perf_counter() - t0 < 0.5


def test_plausible_fdt_header_matches_what_parse_accepts() -> None:
    from kho_formats.ops.locate import plausible_fdt_header

    blob = (ROOT / "fixtures" / "v4-4k" / "root.dtb").read_bytes()
    assert plausible_fdt_header(blob[:40])
    for off, value in ((4, 39), (4, 2 << 20), (20, 15), (24, 18), (8, 8), (8, len(blob) + 4), (32, 1 << 30)):
        bad = bytearray(blob[:40])
        bad[off : off + 4] = value.to_bytes(4, "big")
        assert not plausible_fdt_header(bytes(bad)), (off, value)
    assert not plausible_fdt_header(blob[:39])


def test_empty_file_is_a_typed_error(tmp_path: Path) -> None:
    """Found by the fuzzer (a dump truncated to 0 bytes): an empty file is not an
    image by its first bytes, so it was taken as an empty root FDT with no image,
    and ``resolve_root_fdt`` asserted."""
    p = tmp_path / "dump.kdump"
    p.write_bytes(b"")
    with pytest.raises(KhoFormatError, match="dump.kdump: empty: no root FDT and no memory image") as e:
        load_capture(p)
    assert type(e.value) is KhoFormatError


def test_damaged_page_on_the_debugfs_prefix_path_is_reported_once_per_scan(tmp_path: Path) -> None:
    """The debugfs-prefix search scans pages too: a damaged page is named in its
    note; a second scan of the same image reports it again, not twice over."""
    from kho_formats.ops import locate

    b = damaged_v4_kdump()
    dump = write(tmp_path, b)
    prefix = (ROOT / "fixtures" / "v4-4k" / "root.dtb").read_bytes()[:64]
    dbg = tmp_path / "kho" / "out"
    dbg.mkdir(parents=True)
    (dbg / "fdt").write_bytes(prefix)
    cap = load_capture(dbg, [str(dump)])
    assert cap.root_fdt_phys == 0x7800_0000
    assert [n for n in cap.notes if "the scan skipped 1 page of the image" in n], cap.notes
    kimg = load_kdump(dump)
    for _ in range(2):
        assert locate.find_prefix(kimg, prefix) == [0x7800_0000]
        assert locate.scan_problems(kimg)[0] == 1  # counted afresh by each scan, per kdump file


def test_scan_read_straddling_a_damaged_page_is_skipped_too(tmp_path: Path) -> None:
    """A scan step off the block size reads across two pages: a damaged second page
    is skipped and counted like any other, not raised out of the scan."""
    b = plain_kdump()
    put(b, Layout(b).desc(1) + 8, 4, 0xFFFFFFFF)
    (seg,) = list(load_kdump(write(tmp_path, b)))
    seg.data.reset_scan_problems()
    offs, heads = seg.data.page_heads(4094, 4096)  # 2 bytes of page 0 and 2 of page 1
    assert offs[0] == 4094 and heads[0] == 0
    n, first = seg.data.scan_problems()
    assert n >= 1 and "page descriptor #1" in first
