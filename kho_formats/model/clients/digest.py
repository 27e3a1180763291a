"""Digests of LUO file contents that cost what the folios cost.

A memfd's ``size`` is a field of the input: a 4 EiB file whose folios are a
few pages is mostly hole.  Hashing the hole byte by byte runs for hours, so
every digest here takes holes as *lengths*:

* :class:`Fnv1a64` (the digest ``luo_check`` prints in the booted kernel):
  FNV-1a over ``n`` zero bytes multiplies by ``prime ** n`` (xor with 0 is a
  no-op), one modular power whatever ``n`` is (:meth:`Fnv1a64.update_zeros`);
* SHA-256 has no closed form: :func:`hole_bounded_sha256` hashes the exact
  contents only while the holes add up to at most :data:`EXACT_HOLE_MAX`
  bytes and returns ``None`` beyond;
* :func:`runs_digest` is what ``kho diff`` compares when the exact SHA-256
  would cost too much: SHA-256 over the file's size and each non-zero
  4 KiB block with its offset (all-zero blocks, holes or zero-filled
  folios, are left out), so two files have the same runs digest exactly when
  their bytes are equal (up to SHA-256 collisions), in time linear in the
  folio bytes.

The pieces come from :func:`pieces`: a handler's ``contents`` with what a
hostile folio list repeats dropped (a piece at or before what was already
covered).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_M64 = (1 << 64) - 1
_BLOCK = 4096
_ZERO_BLOCK = bytes(_BLOCK)
_ZERO_MUL = pow(_FNV_PRIME, _BLOCK, 1 << 64)

#: the most hole bytes an exact SHA-256 of a file's contents pads (beyond: :func:`runs_digest`)
EXACT_HOLE_MAX = 64 << 20


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


class Fnv1a64:
    """FNV-1a 64 as ``luo_check.c`` computes it; zeros (holes, zero-filled
    blocks) cost one multiplication per block or one power per hole."""

    def __init__(self) -> None:
        self.value = _FNV_OFFSET

    def update(self, data: bytes | memoryview, /) -> None:
        mv = memoryview(data).cast("B")
        h = self.value
        for a in range(0, len(mv), _BLOCK):
            blk = mv[a : a + _BLOCK]
            if len(blk) == _BLOCK and blk == _ZERO_BLOCK:
                h = (h * _ZERO_MUL) & _M64
                continue
            for b in blk.tobytes():
                h = ((h ^ b) * _FNV_PRIME) & _M64
        self.value = h

    def update_zeros(self, n: int) -> None:
        """``n`` zero bytes, in closed form."""
        if n > 0:
            self.value = (self.value * pow(_FNV_PRIME, n, 1 << 64)) & _M64

    def hexdigest(self) -> str:
        return f"{self.value:016x}"


def pieces(parts: Iterable[tuple[int, memoryview]]) -> Iterator[tuple[int, memoryview]]:
    """``(offset, bytes)`` in increasing, non-overlapping order: a piece at or
    before what was covered is dropped, one reaching past it is cut."""
    at = 0
    for off, piece in parts:
        if off + len(piece) <= at:
            continue
        if off < at:
            piece, off = piece[at - off :], at
        yield off, piece
        at = off + len(piece)


def digest_with_holes(parts: Iterable[tuple[int, memoryview]], size: int, h: Hasher) -> str | None:
    """``h`` over ``size`` bytes: ``parts`` where they are, zeros elsewhere.
    A hasher with ``update_zeros`` takes holes in closed form; any other pads
    at most :data:`EXACT_HOLE_MAX` bytes of zeros and gives ``None`` past that."""
    zfn = getattr(h, "update_zeros", None)
    budget = [EXACT_HOLE_MAX]
    zeros = bytes(1 << 20)

    def pad(n: int) -> bool:
        if n <= 0:
            return True
        if zfn is not None:
            zfn(n)
            return True
        if n > budget[0]:
            return False
        budget[0] -= n
        while n > 0:
            k = min(n, len(zeros))
            h.update(zeros[:k])
            n -= k
        return True

    at = 0
    for off, piece in pieces(parts):
        if off >= size:
            break
        piece = piece[: size - off]
        if not pad(off - at):
            return None
        h.update(piece)  # type: ignore[arg-type]
        at = off + len(piece)
    if not pad(size - at):
        return None
    return h.hexdigest()


def hole_bounded_sha256(parts: Iterable[tuple[int, memoryview]], size: int) -> str | None:
    """The exact SHA-256 of the contents, or ``None`` when the holes exceed :data:`EXACT_HOLE_MAX`."""
    return digest_with_holes(parts, size, hashlib.sha256())


def runs_digest(parts: Iterable[tuple[int, memoryview]], size: int) -> str:
    """SHA-256 of ``size`` and every non-zero 4 KiB block (at 4 KiB-aligned
    file offsets) with its offset; costs what the pieces cost."""
    h = hashlib.sha256(b"kho-formats runs digest 1\0" + size.to_bytes(16, "little"))
    for off, piece in pieces(parts):
        if off >= size:
            break
        piece = piece[: size - off]
        # the head up to the next 4 KiB boundary, then whole blocks, then the tail
        head = min(len(piece), (-off) % _BLOCK)
        spans = [(0, head)] if head else []
        body = (len(piece) - head) // _BLOCK * _BLOCK
        if body:
            arr = np.frombuffer(piece, dtype=np.uint8, count=body, offset=head).reshape(-1, _BLOCK)
            nz = np.flatnonzero(arr.any(axis=1))
            spans += [(head + int(k) * _BLOCK, head + (int(k) + 1) * _BLOCK) for k in nz.tolist()]
        if head + body < len(piece):
            spans.append((head + body, len(piece)))
        for a, b in spans:
            blk = piece[a:b]
            if a < head or b > head + body:  # a partial block: skip it only if all zero
                if not any(bytes(blk)):
                    continue
            h.update((off + a).to_bytes(8, "little") + (b - a).to_bytes(4, "little"))
            h.update(blk)
    return h.hexdigest()


__all__ = [
    "EXACT_HOLE_MAX",
    "Fnv1a64",
    "Hasher",
    "digest_with_holes",
    "hole_bounded_sha256",
    "pieces",
    "runs_digest",
]
