"""The kernel's ``csum_partial()`` as ``lib/test_kho.c`` uses it, per architecture.

``test_kho`` stores ``csum`` (a native-order u32 in its ``data`` node), computed as::

    csum = 0
    for folio in folios:                       # array order, = folios_info order
        csum = csum_partial(folio_address(folio), PAGE_SIZE << order, csum)

and the next kernel recomputes the same loop over the restored folios and
compares the 32-bit values for equality. ``csum_partial`` returns an
*unfolded* 32-bit ``__wsum`` whose value differs between architectures, so a
fixture must use the target architecture's function. Facts below were read
from Linux 7.3.4 (Debian ``linux-source-7.3``) and checked byte-for-byte
against the kernel's own C code (arm64 ``do_csum`` cross-compiled and run
under qemu-user; x86_64 ``csum-partial_64.c`` compiled natively), see
``docs/kernel-notes.md``.

arm64 (``arch/arm64/lib/csum.c`` ``do_csum`` + generic ``lib/checksum.c``
``csum_partial``, since arm64 selects ``GENERIC_CSUM`` and defines ``do_csum``):

* ``do_csum(buf, len)`` is the 16-bit ones'-complement sum of the buffer taken
  as little-endian 16-bit words aligned to *even memory addresses*: 0 when
  ``len <= 0`` or every byte is zero, otherwise ``1 + (S - 1) % 0xffff`` where
  ``S`` is the plain sum of those words (never 0 for non-zero data; 0xffff
  stands for "negative zero"). When ``buf`` starts at an odd address the result
  is byte-swapped back, so it equals the sum over buffer-relative words.
* ``csum_partial(buf, len, sum) = sum + do_csum(buf, len)`` in 32 bits with
  end-around carry (``if (sum > result) result += 1``).
* So the test's ``csum`` is the end-around 32-bit sum of the per-folio 16-bit
  values -- not itself folded to 16 bits.

x86_64 (``arch/x86/lib/csum-partial_64.c``): the 64-bit accumulator starts as
the 32-bit ``sum`` and adds the buffer's little-endian 64-bit words with
``addq``/``adcq`` chains (two independent accumulators over 80-byte blocks,
then 40/32/16/8-byte steps and a zero-padded tail word), each chain closed
by ``adcq $0``; the result is ``(t + ror64(t, 32)) >> 32`` truncated to 32 bits
(an end-around add of the two 32-bit halves). Alignment does not matter.
"""

from __future__ import annotations

import struct

__all__ = ["csum_partial_arm64", "csum_partial_x86_64", "do_csum_arm64"]

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF


def _add32_eac(a: int, b: int) -> int:
    """``result = a + b; if (a > result) result += 1`` on u32 (lib/checksum.c)."""
    r = (a + b) & _M32
    if a > r:
        r = (r + 1) & _M32
    return r


def do_csum_arm64(data: bytes, address_offset: int = 0) -> int:
    """arm64 ``do_csum()``: 16-bit ones'-complement sum, in ``[0, 0xffff]``.

    ``address_offset`` is the buffer's address modulo 8 (only its parity
    changes the result; the kernel's head masking and final byte swap cancel
    out otherwise). KHO folios are page aligned: leave it at 0.
    """
    if len(data) == 0:
        return 0
    odd = address_offset & 1
    if odd:
        buf = b"\x00" + bytes(data)  # words are aligned to even addresses
    else:
        buf = bytes(data)
    # 2**16 == 1 (mod 0xffff): a little-endian integer of the whole buffer is
    # congruent to the sum of its LE 16-bit words (odd tail = low byte).
    n = int.from_bytes(buf, "little")
    if n == 0:
        return 0
    folded = 1 + (n - 1) % 0xFFFF
    if odd:
        folded = ((folded & 0xFF) << 8) | (folded >> 8)
    return folded


def csum_partial_arm64(data: bytes, initial: int = 0, *, address_offset: int = 0) -> int:
    """arm64 ``csum_partial(data, len(data), initial)`` -> unfolded u32 ``__wsum``."""
    return _add32_eac(initial & _M32, do_csum_arm64(data, address_offset))


def csum_partial_x86_64(data: bytes, initial: int = 0) -> int:
    """x86_64 ``csum_partial(data, len(data), initial)`` -> u32 ``__wsum``.

    Closed form when the data holds no all-ones 64-bit word; otherwise an exact
    emulation of the ``addq``/``adcq`` chains (including the lost carry of a
    closing ``adcq $0`` that overflows, which a pure ones'-complement model
    would not reproduce).
    """
    data = bytes(data)
    t = initial & _M32
    if b"\xff" * 8 not in data:
        # Fast path. Without an all-ones 64-bit word no closing ``adcq $0`` can
        # overflow, and the chains are then exact ones'-complement additions
        # (mod 2**64 - 1, with 0 only for an all-zero input); 2**64 == 1 mod
        # 2**64 - 1, so the little-endian integer of the whole buffer (the
        # zero-padded tail word included) is congruent to the word sum.
        total = t + int.from_bytes(data, "little")
        t = 0 if total == 0 else 1 + (total - 1) % _M64
        return ((t + (((t >> 32) | (t << 32)) & _M64)) & _M64) >> 32
    mv = memoryview(data)
    n = len(mv)
    pos = 0

    def chain(acc: int, words) -> int:
        carry = 0
        for w in words:
            s = acc + w + carry
            acc = s & _M64
            carry = s >> 64
        return (acc + carry) & _M64  # adcq $0: a carry out of it is lost

    full = n - n % 8
    words = struct.unpack(f"<{full // 8}Q", mv[:full])
    wi = 0
    length = n
    if length >= 80:
        t2 = 0
        while length >= 80:
            t = chain(t, words[wi : wi + 5])
            t2 = chain(t2, words[wi + 5 : wi + 10])
            wi += 10
            length -= 80
        t = chain(t, [t2])
    if length >= 40:
        t = chain(t, words[wi : wi + 5])
        wi += 5
        length -= 40
        if not length:
            return ((t + (((t >> 32) | (t << 32)) & _M64)) & _M64) >> 32
    for step in (32, 16, 8):
        if length & step:
            k = step // 8
            t = chain(t, words[wi : wi + k])
            wi += k
    pos = wi * 8
    if length & 7:
        tail = bytes(mv[pos : pos + (length & 7)])
        t = chain(t, [int.from_bytes(tail, "little")])
    return ((t + (((t >> 32) | (t << 32)) & _M64)) & _M64) >> 32
