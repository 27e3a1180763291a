"""The kdump page-head scan from the page descriptors (issue 22) gives the
same heads as decompressing every page, for every codec and for the page
shapes its shortcuts read in place (raw, stored zlib, snappy literals, zstd
raw and RLE blocks, shared zero pages)."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest

from kho_formats.memory import zhead
from kho_formats.memory.image import PhysImage
from kho_formats.memory.kdump import KdumpFile, KdumpPages, write_kdump

PS = 4096


def _image() -> PhysImage:
    rng = np.random.default_rng(7)
    pages = [
        bytes(PS),  # zero
        bytes.fromhex("d00dfeed") + bytes(PS - 4),  # FDT magic, compressible
        bytes.fromhex("d00dfeed") + rng.integers(0, 256, PS - 4, dtype=np.uint8).tobytes(),  # incompressible
        rng.integers(0, 256, PS, dtype=np.uint8).tobytes(),  # incompressible, stored raw
        b"\x01\x02" + bytes(PS - 2),  # a short literal first
        b"abcd" * (PS // 4),  # repeats
        b"\x55" * PS,  # one byte
        (b"hello world " * 400)[:PS],
        bytes(PS),
    ]
    img = PhysImage()
    img.add(1 << 20, b"".join(pages))
    img.add(3 << 20, b"".join(reversed(pages)))
    return img


def _heads_both_ways(blob: bytes) -> tuple[list[int], list[int]]:
    f = KdumpFile(blob, name="t")
    fast, slow = [], []
    for pfn, n, first in f.runs:
        seg = KdumpPages(f, pfn, n, first)
        _, h = seg.page_heads(0, PS)
        fast += h.tolist()
        slow += [int.from_bytes(f.page(first + k, pfn + k)[:4], "big") for k in range(n)]
    return fast, slow


@pytest.mark.parametrize("compression", ["none", "zlib", "snappy", "zstd"])
def test_descriptor_scan_matches_decompressing_every_page(compression: str, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    write_kdump(_image(), buf, compression=compression)
    with monkeypatch.context() as m:
        m.setattr(zhead, "available", lambda: False)  # the C decoder's zstd rejections: below
        fast, slow = _heads_both_ways(buf.getvalue())
    assert fast == slow
    assert fast.count(0xD00DFEED) == 4


@pytest.mark.skipif(not zhead.available(), reason="no C compiler: the C head decoder is not built")
def test_zstd_pages_rejected_by_the_c_decoder_keep_their_first_byte() -> None:
    """With the C decoder a zstd page that does not start with the FDT magic's first
    byte may be rejected with that byte and zeros as its head; the others are exact."""
    buf = io.BytesIO()
    write_kdump(_image(), buf, compression="zstd")
    fast, slow = _heads_both_ways(buf.getvalue())
    assert [h >> 24 for h in fast] == [h >> 24 for h in slow]
    assert [h for h in fast if h >> 24 == 0xD0] == [h for h in slow if h >> 24 == 0xD0]
    assert fast != slow  # some were rejected (the text page: Huffman-coded literals)
    assert fast.count(0xD00DFEED) == 4


def _patch_page(blob: bytes, pfn_index: int, data: bytes, flags: int) -> bytes:
    """Point descriptor ``pfn_index`` at ``data`` appended to the file."""
    f = KdumpFile(blob, name="t")
    pd_off = (1 + int(f.header.sub_hdr_size) + int(f.header.bitmap_blocks)) * PS
    out = bytearray(blob)
    rec = np.array([(len(out), len(data), flags, 0)], dtype=f.structs.page_desc).tobytes()
    out[pd_off + 24 * pfn_index : pd_off + 24 * pfn_index + 24] = rec
    return bytes(out + data)


def test_stored_zlib_and_zstd_raw_and_rle_blocks_read_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    import cramjam

    buf = io.BytesIO()
    write_kdump(_image(), buf, compression="none")
    blob = buf.getvalue()
    page = bytes.fromhex("d00dfeed") + bytes(range(256)) * 15 + bytes(PS - 4 - 3840)
    stored = zlib.compress(page, 0)
    assert (stored[2] >> 1) & 3 == 0
    blob = _patch_page(blob, 3, stored, 0x1)
    # a zstd frame with one raw block: magic, FHD (single segment, 2-byte FCS), block header
    frame = (0xFD2FB528).to_bytes(4, "little") + bytes([0x60]) + (PS - 256).to_bytes(2, "little")
    rawz = frame + ((PS << 3) | 1).to_bytes(3, "little") + page
    assert bytes(cramjam.zstd.decompress(rawz)) == page
    blob = _patch_page(blob, 4, rawz, 0x20)
    rle = frame + ((PS << 3) | (1 << 1) | 1).to_bytes(3, "little") + b"\x77"
    assert bytes(cramjam.zstd.decompress(rle)) == b"\x77" * PS
    blob = _patch_page(blob, 5, rle, 0x20)
    with monkeypatch.context() as m:
        m.setattr(zhead, "available", lambda: False)
        fast, slow = _heads_both_ways(blob)
    assert fast == slow
    assert fast[3] == fast[4] == 0xD00DFEED and fast[5] == 0x77777777
    if zhead.available():  # the C decoder rejects the RLE page on its first byte (that byte, then zeros)
        fast, _ = _heads_both_ways(blob)
        assert fast[3] == fast[4] == 0xD00DFEED and fast[5] == 0x77000000
        assert [h >> 24 for h in fast] == [h >> 24 for h in slow]


def test_bad_descriptor_on_the_fast_path_is_skipped_and_counted() -> None:
    buf = io.BytesIO()
    write_kdump(_image(), buf, compression="zlib")
    blob = _patch_page(buf.getvalue(), 2, b"not zlib at all", 0x1)
    f = KdumpFile(blob, name="t")
    pfn, n, first = f.runs[0]
    _, h = KdumpPages(f, pfn, n, first).page_heads(0, PS)
    assert h[2] == 0 and f.unreadable == 1 and "does not decompress" in (f.first_unreadable or "")
    assert h[1] == 0xD00DFEED
