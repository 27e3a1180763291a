"""The C zstd first-byte decoder (kho_formats.memory.zhead.zstd_first_bytes) gives
zstandard's own first byte for every frame it decides, and leaves alone the frames
it does not handle; a zstd kdump's root-FDT scan with it finds what the scan without
it finds."""

from __future__ import annotations

import ctypes
import io
import mmap

import numpy as np
import pytest

from kho_formats.abi.fdt_header import FDT_MAGIC
from kho_formats.memory import zhead
from kho_formats.memory.image import PhysImage
from kho_formats.memory.kdump import KdumpFile, write_kdump
from kho_formats.ops import locate

zstandard = pytest.importorskip("zstandard")
needs_native = pytest.mark.skipif(not zhead.available(), reason="no C compiler: the C head decoder is not built")


def _pages(seed: int, n: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    kernel = np.uint64(0xFFFF888000000000)
    shapes = [
        lambda: rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),  # random: a raw block
        lambda: bytes(rng.integers(32, 127, 4096, dtype=np.uint8)),  # text-like bytes
        lambda: (b"the quick brown fox %d jumps over " % int(rng.integers(0, 1000))) * 130,  # text
        lambda: rng.integers(0, 256, 2048, dtype=np.uint8).tobytes() + bytes(2048),  # half zero
        lambda: (kernel + rng.integers(0, 1 << 20, 512, dtype=np.uint64) * np.uint64(64)).astype("<u8").tobytes(),
        lambda: bytes.fromhex("d00dfeed") + rng.integers(0, 3, 4092, dtype=np.uint8).tobytes(),  # the FDT magic
        lambda: b"\xd0" + rng.integers(0, 8, 4095, dtype=np.uint8).tobytes(),  # 0xd0, then not the magic
        lambda: rng.integers(0, 4, 4096, dtype=np.uint8).tobytes(),  # few symbols
        lambda: bytes(rng.integers(0, 2, 4096, dtype=np.uint8) * rng.integers(0, 256, 4096, dtype=np.uint8)),
        lambda: bytes([int(rng.integers(0, 256))]) * 4096,  # one byte repeated: RLE
        lambda: bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8)) * 4096,  # a match early
    ]
    return [(shapes[i % len(shapes)]() + bytes(4096))[:4096] for i in range(n)]


def _first(frame: bytes) -> int | None:
    """zstandard's answer: the first byte, or nothing (an error, or no output)."""
    try:
        got = zstandard.ZstdDecompressor().stream_reader(frame).read(1)
    except zstandard.ZstdError:
        return None
    return got[0] if got else None


def _block_type(frame: bytes) -> int:
    """The first block's type (0 raw, 1 RLE, 2 compressed) of a frame without a dictionary id."""
    fhd = frame[4]
    single, fcs = (fhd >> 5) & 1, fhd >> 6
    at = 5 + (1 - single) + ((1, 2, 4, 8)[fcs] if fcs or single else 0)
    return (frame[at] >> 1) & 3


def _decide(frames: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.array([len(c) for c in frames], dtype=np.int64)
    offs = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    got = zhead.zstd_first_bytes(np.frombuffer(b"".join(frames), dtype=np.uint8), offs, sizes)
    assert got is not None
    return got


@needs_native
def test_decided_frames_give_zstandards_first_byte() -> None:
    pages = _pages(22, 1320)
    frames = [
        zstandard.ZstdCompressor(level=(1, 3, 19)[i % 3], write_checksum=bool(i & 4)).compress(p)
        for i, p in enumerate(pages)
    ]
    first, decided = _decide(frames)
    wrong = [i for i, c in enumerate(frames) if decided[i] and int(first[i]) != pages[i][0]]
    assert wrong == []
    # raw, RLE and compressed first blocks (Huffman, raw or RLE literals) are decided
    kinds = [_block_type(c) for c in frames]
    assert {0, 2} <= {k for k, d in zip(kinds, decided) if d}
    assert np.mean([d for k, d in zip(kinds, decided) if k == 2]) > 0.95
    assert all(d for k, d in zip(kinds, decided) if k < 2)
    # an RLE first block (zstandard writes none for these pages): its byte
    rle = b"\x28\xb5\x2f\xfd\x00\x20" + (1 | 1 << 1 | 4096 << 3).to_bytes(3, "little") + b"\x5a"
    empty = rle[:6] + (1 | 1 << 1).to_bytes(3, "little") + b"\x5a"  # RLE of 0 bytes: nothing to say
    assert _first(rle) == 0x5A and _first(empty) is None
    first, decided = _decide([rle, empty])
    assert decided.tolist() == [True, False] and int(first[0]) == 0x5A


@needs_native
def test_damaged_and_cut_frames_are_left_alone_or_agree() -> None:
    rng = np.random.default_rng(7)
    pages = _pages(8, 440)
    frames = [zstandard.ZstdCompressor(level=(1, 3, 19)[i % 3]).compress(p) for i, p in enumerate(pages)]
    damaged: list[bytes] = []
    for c in frames:
        damaged.append(c[: int(rng.integers(1, min(len(c), 40)))])  # cut short
        for _ in range(4):  # bits flipped in the headers, the tree description and the streams' ends
            a = bytearray(c)
            for _ in range(int(rng.integers(1, 4))):
                j = (
                    int(rng.integers(0, min(len(a), 80)))
                    if rng.random() < 0.7
                    else len(a) - 1 - int(rng.integers(0, 8))
                )
                a[j] ^= 1 << int(rng.integers(0, 8))
            damaged.append(bytes(a))
    first, decided = _decide(damaged)
    refs = [_first(c) for c in damaged]
    # where zstandard decodes a first byte, a decided frame has that byte
    wrong = [i for i, r in enumerate(refs) if decided[i] and r is not None and int(first[i]) != r]
    assert wrong == []
    # frames cut inside the literals are left alone
    cut = [i for i in range(0, len(damaged), 5) if len(damaged[i]) < 12]
    assert not decided[cut].any()
    assert 0 < decided.sum() < len(damaged)


@needs_native
def test_frames_it_does_not_handle_are_left_alone() -> None:
    page = (b"some text, " * 400)[:4096]
    plain = zstandard.ZstdCompressor(level=3).compress(page)
    d = zstandard.ZstdCompressionDict(page * 4)
    frames = [
        plain,
        zstandard.ZstdCompressor(level=3, dict_data=d).compress(page),  # a dictionary id
        b"\x50\x2a\x4d\x18\x04\x00\x00\x00abcd" + plain,  # a skippable frame first
        plain[:4] + bytes([plain[4] | 0x08]) + plain[5:],  # the reserved bit
    ]
    first, decided = _decide(frames)
    assert decided.tolist() == [True, False, False, False]
    assert int(first[0]) == page[0]
    buf = np.frombuffer(plain, dtype=np.uint8)
    _, inside = zhead.zstd_first_bytes(
        buf,
        np.array([0, 0, -1, 1], dtype=np.int64),
        np.array([len(plain), len(plain) + 1, 4, len(plain)], dtype=np.int64),
    )  # type: ignore[misc]
    assert inside.tolist() == [True, False, False, False]


def _scan(blob: bytes, native: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list, list, tuple]:
    with monkeypatch.context() as m:
        if not native:
            m.setattr(zhead, "available", lambda: False)
        img = KdumpFile(blob).image()
        addrs, heads = locate._page_heads(img, 4096)
        magic = addrs[heads == FDT_MAGIC].tolist()
        return addrs.tolist(), (heads >> 24).tolist(), magic, locate.scan_problems(img)


@needs_native
def test_zstd_kdump_scans_the_same_with_and_without_the_c_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    img = PhysImage()
    pages = _pages(5, 330)
    img.add(1 << 20, b"".join(pages))
    buf = io.BytesIO()
    write_kdump(img, buf, compression="zstd")
    blob = bytearray(buf.getvalue())
    f = KdumpFile(bytes(blob))
    for k in (2, 13, 22, 33):  # damage the frame headers of some pages: left to the plain path, unreadable
        o = int(f.descs[k]["offset"])
        blob[o] ^= 0xFF
    fast = _scan(bytes(blob), True, monkeypatch)
    plain = _scan(bytes(blob), False, monkeypatch)
    assert fast == plain
    assert len(fast[2]) >= 20  # the FDT-magic pages are found
    assert fast[3]  # and the damaged pages are reported by both


def _guarded(size: int) -> tuple[mmap.mmap, np.ndarray]:
    """``size`` bytes of anonymous memory (a multiple of the page size) followed by a page that
    cannot be read: a read past the end of the first part kills the process (SIGSEGV)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    ps = mmap.PAGESIZE
    mm = mmap.mmap(-1, size + ps)
    arr = np.frombuffer(mm, dtype=np.uint8)
    if libc.mprotect(arr.ctypes.data + size, ps, 0) != 0:  # PROT_NONE
        pytest.skip(f"mprotect failed (errno {ctypes.get_errno()})")
    return mm, arr[:size]


@needs_native
def test_damaged_frames_are_read_within_their_bounds() -> None:
    """Each damaged or cut frame is placed so that it ends where readable memory ends (a guard
    page follows): neither the decoder nor its look-ahead over the next frames reads past a
    frame's end."""
    rng = np.random.default_rng(99)
    pages = _pages(3, 110)
    frames = [zstandard.ZstdCompressor(level=(1, 3, 19)[i % 3]).compress(p) for i, p in enumerate(pages)]
    damaged: list[bytes] = []
    for c in frames:
        damaged.append(c[: int(rng.integers(1, min(len(c), 200)))])
        a = bytearray(c)
        for _ in range(int(rng.integers(1, 6))):
            a[int(rng.integers(0, min(len(a), 60)))] = int(rng.integers(0, 256))
        damaged.append(bytes(a[: int(rng.integers(8, len(a) + 1))]))
    mm, mem = _guarded(mmap.PAGESIZE)
    try:
        for frame in damaged:
            # the frame ends at the guard page; given 12 times, so that the look-ahead over the
            # frames further on reads it too
            start = mem.size - len(frame)
            mem[start:] = np.frombuffer(frame, dtype=np.uint8)
            got = zhead.zstd_first_bytes(mem, np.full(12, start, np.int64), np.full(12, len(frame), np.int64))
            assert got is not None
            first, decided = got
            ref = _first(frame)
            assert not decided.any() or ref is None or set(first[decided].tolist()) == {ref}
    finally:
        del mem
        mm.close()


@needs_native
def test_a_call_split_over_threads_gives_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    pages = _pages(12, 220)
    frames = [zstandard.ZstdCompressor(level=3).compress(p) for p in pages]
    frames += [c[: len(c) // 3] for c in frames[:50]]  # some cut short: left alone
    sizes = np.array([len(c) for c in frames], dtype=np.int64)
    offs = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    buf = np.frombuffer(b"".join(frames), dtype=np.uint8)
    many = np.random.default_rng(1).integers(0, len(frames), 4 * zhead.SPLIT_MIN + 17)
    answers = []
    for n in ("1", "3"):
        monkeypatch.setenv(zhead.THREADS_ENV, n)
        assert zhead.threads() == int(n)
        for fn in (zhead.zstd_first_bytes, zhead.heads):
            got = fn(buf, offs[many], sizes[many])
            assert got is not None
            answers.append(got)
    (z1, h1, z3, h3) = answers
    for a, b in ((z1, z3), (h1, h3)):
        assert np.array_equal(a[1], b[1]) and np.array_equal(a[0][a[1]], b[0][b[1]])
    assert z1[1].any() and not z1[1].all()
