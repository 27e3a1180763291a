"""csum_partial() reimplementations against values produced by the kernel's own code.

Expected values were computed by Linux 7.3.4's arm64 ``do_csum`` (arch/arm64/lib/csum.c)
+ generic ``csum_partial`` (lib/checksum.c), cross-compiled and run under qemu-user,
and by the x86_64 ``csum-partial_64.c`` compiled natively; data = ``random.Random(seed)
.randbytes(n)`` placed at ``address % 8 == off`` (see docs/kernel-notes.md).
"""

import random

import pytest

from kho_formats.model.clients.csum import csum_partial_arm64, csum_partial_x86_64, do_csum_arm64

# (seed, length, address offset, initial sum, arm64 result, x86_64 result)
VECTORS = [
    (1, 4096, 0, 0x0, 0x6B39, 0x8F97DBA1),
    (2, 8192, 0, 0x1234, 0xE733, 0x7D2D6A06),
    (3, 65536, 0, 0xFFFFF000, 0x1775, 0x1B8CFBE8),
    (4, 1, 0, 0x0, 0x3C, 0x3C),
    (5, 7, 1, 0x0, 0x80D5, 0x9FB7E11D),
    (6, 77, 3, 0xFFFFFFFF, 0x1D64, 0x9A8E82D5),
    (7, 200, 5, 0x80000000, 0x8000061D, 0xEC0B9A11),
    (8, 4194304, 0, 0x2A0000, 0x2A81CA, 0xE1DFA014),
    (9, 0, 0, 0xDEAD, 0xDEAD, 0xDEAD),
    (10, 81, 2, 0x0, 0xA8C6, 0x41906736),
    (11, 4095, 7, 0x10001, 0x1AC17, 0xF60FB608),
]


def _data(seed, n):
    return random.Random(seed).randbytes(n)


@pytest.mark.parametrize("seed,n,off,init,arm64,x86", VECTORS)
def test_kernel_vectors(seed, n, off, init, arm64, x86):
    d = _data(seed, n)
    assert csum_partial_arm64(d, init, address_offset=off) == arm64
    assert csum_partial_x86_64(d, init) == x86  # x86 does not depend on alignment


def test_special_values():
    assert csum_partial_arm64(b"\xff" * 4096, 0xFFFFFFFF) == 0xFFFF
    assert csum_partial_x86_64(b"\xff" * 4096, 0xFFFFFFFF) == 0xFFFFFFFF
    assert csum_partial_arm64(bytes(4096)) == 0
    assert csum_partial_x86_64(bytes(4096)) == 0
    # non-zero data that sums to 0 mod 0xffff is "negative zero", never 0
    assert do_csum_arm64(b"\xff\xff") == 0xFFFF


def test_chain_is_per_folio_sum():
    # test_kho: csum = csum_partial(folio_i, size_i, csum) in array order
    folios = [_data(100 + i, 4096 << o) for i, o in enumerate((0, 3, 1, 2))]
    c = 0
    for f in folios:
        c = csum_partial_arm64(f, c)
    assert c == sum(do_csum_arm64(f) for f in folios)  # no 32-bit overflow here
    assert c > 0xFFFF or len(folios) == 1 or c == sum(do_csum_arm64(f) for f in folios)
