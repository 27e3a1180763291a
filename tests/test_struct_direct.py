"""The direct reader of fixed-size declarations (kho_formats.abi.struct._compile)
gives what construct's parse gives, for every declared struct of every layout."""

from __future__ import annotations

import dataclasses

import construct as cs
import numpy as np
import pytest

from kho_formats.abi import version_names
from kho_formats.abi.layout import layout
from kho_formats.abi.struct import _DECLARATIONS, _reader, parse_struct
from kho_formats.errors import KhoFormatError, VersionError


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b)
        )
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return type(a) is type(b) and a == b


def _layouts():
    for ps in (4096, 16384):
        for bo in ("little", "big"):
            for v in (None, *version_names()):
                yield layout(ps, bo, v)


def test_direct_reads_match_construct():
    rng = np.random.default_rng(9)
    direct = 0
    for lay in _layouts():
        for name in sorted({n for n, _ in _DECLARATIONS}):
            try:
                con = lay.struct(name)
            except (VersionError, KhoFormatError):
                continue
            got = _reader(con)
            if got is None:
                continue
            direct += 1
            size = got[0]
            assert size == con.sizeof(), name
            for trial in range(3):
                raw = rng.integers(0, 256, size=size + trial, dtype=np.uint8).tobytes()
                if trial == 2:  # strings with a NUL inside, zeros elsewhere
                    raw = b"ab\0cd" + bytes(size - 5 + trial) if size >= 5 else raw
                want = con.parse(raw)
                for data in (raw, memoryview(raw), bytearray(raw)):
                    assert _same(got[1](data, 0), want), (lay.page_size, lay.byteorder, lay.version, name)
    assert direct >= 10  # the LUO, memfd, vmalloc and memory-map headers at least


def test_short_data_still_raises_the_parse_error():
    lay = layout(4096, "little")
    con = lay.struct("memfd_luo_ser")
    assert _reader(con) is not None
    with pytest.raises(KhoFormatError, match="cannot parse struct memfd_luo_ser") as exc:
        parse_struct(con, b"\0" * 10, what="struct memfd_luo_ser", phys=0x1000)
    assert exc.value.phys == 0x1000


def test_declarations_outside_the_subset_are_left_to_construct():
    assert _reader(cs.Struct("a" / cs.Int32ul, "b" / cs.Int8ul)) is None  # untyped: construct's Container
    assert _reader(cs.Prefixed(cs.Int8ul, cs.GreedyBytes)) is None  # variable size
