"""The optional C decoder of zlib stream heads (kho_formats.memory.zhead) gives
zlib's own answer for every stream it decides, leaves to zlib every stream zlib
would refuse, and a kdump root-FDT scan with it finds what the scan without it
finds (heads and unreadable pages alike), on the shipped QEMU kdump and on
generated ones."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from kho_formats.memory import kdump, zhead
from kho_formats.memory.image import PhysImage
from kho_formats.memory.kdump import KdumpFile, write_kdump
from kho_formats.ops import locate

ROOT = Path(__file__).resolve().parent.parent
QEMU_KDUMP = ROOT / "tests" / "data" / "qemu-7.2-x86_64-firmware-16m.kdump"

needs_native = pytest.mark.skipif(not zhead.available(), reason="no C compiler: the C zlib head decoder is not built")


def _zlib_head(stream: bytes) -> int | None:
    """What the plain path reads: four bytes or nothing (an error, or fewer bytes)."""
    try:
        got = zlib.decompressobj().decompress(stream, 4)
    except zlib.error:
        return None
    return int.from_bytes(got, "big") if len(got) == 4 else None


def _streams(seed: int = 22) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    shapes = [
        lambda n: rng.integers(0, 256, n, dtype=np.uint8).tobytes(),  # stored
        lambda n: rng.integers(0, 4, n, dtype=np.uint8).tobytes(),  # few symbols
        lambda n: (bytes(rng.integers(0, 256, int(rng.integers(1, 8)), dtype=np.uint8)) * 8192)[:n],  # matches early
        lambda n: bytes.fromhex("d00dfeed") + rng.integers(0, 3, n, dtype=np.uint8).tobytes(),  # the FDT magic
        lambda n: bytes(rng.integers(32, 127, n, dtype=np.uint8)),  # text
        lambda n: bytes(n),  # zeros: fixed Huffman
    ]
    for i in range(1800):
        data = shapes[i % len(shapes)](int(rng.integers(1, 6000)))
        c = zlib.compress(data, int(rng.integers(0, 10)))
        if i % 9 == 0:
            c = c[: int(rng.integers(1, 24))]  # cut short
        out.append(c)
    for c in list(out):  # damaged copies: bits flipped in the header and first symbols
        for _ in range(2):
            a = bytearray(c)
            for _ in range(int(rng.integers(1, 4))):
                j = int(rng.integers(0, min(len(a), 64)))
                a[j] ^= 1 << int(rng.integers(0, 8))
            out.append(bytes(a))
    return out


@needs_native
def test_decided_streams_are_zlibs_heads_and_refused_ones_are_left_to_zlib() -> None:
    streams = _streams()
    sizes = np.array([len(s) for s in streams], dtype=np.int64)
    offs = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    got = zhead.heads(np.frombuffer(b"".join(streams), dtype=np.uint8), offs, sizes)
    assert got is not None
    heads, decided = got
    refs = [_zlib_head(s) for s in streams]
    wrong = [i for i, r in enumerate(refs) if decided[i] and r != int(heads[i])]
    assert wrong == []
    # it decides the common case: whole, undamaged streams of real-looking pages
    whole = [i for i in range(1800) if i % 9]
    assert np.mean(decided[whole]) > 0.9
    assert decided.sum() < len(streams)  # and leaves some (damaged, cut short) to zlib


@needs_native
def test_streams_out_of_the_buffer_are_left_to_zlib() -> None:
    c = zlib.compress(b"hello world" * 100)
    buf = np.frombuffer(c, dtype=np.uint8)
    heads, decided = zhead.heads(
        buf, np.array([0, 0, -1, 5], dtype=np.int64), np.array([len(c), len(c) + 1, 4, len(c)], dtype=np.int64)
    )  # type: ignore[misc]
    assert decided.tolist() == [True, False, False, False]
    assert int(heads[0]) == int.from_bytes(b"hell", "big")


def _scan(blob_or_path: bytes | Path, native: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list, tuple]:
    with monkeypatch.context() as m:
        if not native:
            m.setattr(zhead, "available", lambda: False)
        img = PhysImage.load(str(blob_or_path)) if isinstance(blob_or_path, Path) else KdumpFile(blob_or_path).image()
        addrs, heads = locate._page_heads(img, 4096)
        return addrs.tolist(), heads.tolist(), locate.scan_problems(img)


@needs_native
def test_qemu_kdump_scans_the_same_with_and_without_the_c_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _scan(QEMU_KDUMP, True, monkeypatch)
    plain = _scan(QEMU_KDUMP, False, monkeypatch)
    assert fast == plain
    assert len(fast[0]) > 1000


@needs_native
def test_generated_kdump_with_damaged_pages_scans_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    pages = [
        bytes.fromhex("d00dfeed") + bytes(4092),
        rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        (b"some text, " * 400)[:4096],
        rng.integers(0, 256, 2048, dtype=np.uint8).tobytes() + bytes(2048),
        b"\x55" * 4096,
    ] * 8
    img = PhysImage()
    img.add(1 << 20, b"".join(pages))
    buf = io.BytesIO()
    write_kdump(img, buf, compression="zlib")
    blob = bytearray(buf.getvalue())
    f = KdumpFile(bytes(blob))
    for k in (2, 7, 13, 22, 33):  # damage the first bytes of some pages' streams
        o = int(f.descs[k]["offset"])
        blob[o + 2] ^= 0xFF
        blob[o + 5] ^= 0x0F
    fast = _scan(bytes(blob), True, monkeypatch)
    plain = _scan(bytes(blob), False, monkeypatch)
    assert fast == plain
    assert fast[1].count(0xD00DFEED) >= 1


def test_switched_off_by_the_environment() -> None:
    code = "from kho_formats.memory import zhead; print(zhead.available())"
    env = dict(os.environ, KHO_FORMATS_NATIVE="0", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_scan_without_the_c_decoder_still_finds_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zhead, "available", lambda: False)
    img = PhysImage()
    img.add(1 << 20, bytes.fromhex("d00dfeed") + bytes(4092) + (b"x" * 4096))
    buf = io.BytesIO()
    write_kdump(img, buf, compression="zlib")
    addrs, heads = locate._page_heads(KdumpFile(buf.getvalue()).image(), 4096)
    assert addrs[heads == 0xD00DFEED].tolist() == [1 << 20]
    assert kdump.zhead is zhead
