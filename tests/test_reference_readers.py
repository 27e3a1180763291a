"""The fast memory-map readers against the slow pure-Construct reference
readers of ``reference_readers.py``: for random preserved sets in every
shipped version, page size, byte order and v1 bitmap size, ``state.parse``
(numpy: ``read_radix`` / ``read_chunklist``) finds exactly the pages the
reference finds by parsing each node, chunk and bitmap with the
``Layout`` declarations, and both find the set that was built."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_readers import reference_read_chunklist, reference_read_radix

from kho_formats import abi
from kho_formats.memory.pageset import PageSet
from kho_formats.model.state import KhoState, build, parse

PAGE_SIZES = (4096, 16384, 65536)
BYTE_ORDERS = ("little", "big")
REGION_LOG2 = 34  # each run of pages lives in its own 16 GiB region
ALLOC = [(1 << 51, 1 << 36)]


def variants() -> list[tuple[str, str | None]]:
    """(version, v1 bitmap variant or None) for every shipped version."""
    out: list[tuple[str, str | None]] = []
    for v in abi.versions():
        if v.memory_map == "chunk-list":
            out += [(v.name, b) for b in v.bitmap_variants]
        else:
            out.append((v.name, None))
    return out


def min_order(version: str, page_size: int) -> int:
    v = abi.get_version(version)
    if v.memory_map != "radix":
        return 0
    g = v.radix(page_size)
    return max(0, g.order_0_log2 - g.key_bits_covered + 1)


@st.composite
def preserved_sets(draw: st.DrawFn, page_size: int, lowest: int) -> PageSet:
    shift = page_size.bit_length() - 1
    regions = draw(st.lists(st.integers(0, (1 << (50 - REGION_LOG2)) - 1), max_size=6, unique=True))
    by_order: dict[int, list[np.ndarray]] = {}
    for r in regions:
        order = draw(st.one_of(st.integers(lowest, lowest + 2), st.integers(lowest, REGION_LOG2 - shift - 1)))
        slots = 1 << (REGION_LOG2 - shift - order)
        base = (r << REGION_LOG2) >> (shift + order)
        if draw(st.booleans()):  # a contiguous run (full bitmap words / leaves)
            count = draw(st.integers(1, min(slots, 5000)))
            first = draw(st.integers(0, slots - count))
            idx = np.arange(first, first + count, dtype=np.uint64)
        else:  # scattered pages
            idx = np.array(draw(st.lists(st.integers(0, slots - 1), min_size=1, max_size=40)), dtype=np.uint64)
        by_order.setdefault(order, []).append((idx + np.uint64(base)) << np.uint64(shift + order))
    return PageSet.from_arrays(page_size, {o: np.concatenate(v) for o, v in by_order.items()})


SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("page_size", PAGE_SIZES)
@pytest.mark.parametrize("byteorder", BYTE_ORDERS)
@pytest.mark.parametrize("version,bitmap", variants())
@SETTINGS
@given(data=st.data())
def test_fast_readers_match_reference(version: str, bitmap: str | None, page_size: int, byteorder: str, data) -> None:
    bitmap_bytes = None if bitmap is None else (page_size if bitmap == "page" else int(bitmap))
    pages = data.draw(preserved_sets(page_size, min_order(version, page_size)))
    state = KhoState(
        version,
        page_size,
        byteorder,
        preserved=pages,
        map_params={"v1_bitmap_bytes": bitmap_bytes} if bitmap_bytes else {},
    )
    built = build(state, alloc=ALLOC)
    fast = parse(built.root_fdt, built.image, page_size=page_size, byteorder=byteorder, v1_bitmap=bitmap)
    lay = fast.layout
    ver = abi.get_version(version)
    if ver.memory_map == "radix":
        ref = reference_read_radix(built.image, built.memmap_phys, ver.radix(page_size), lay)
    else:
        assert bitmap_bytes is not None
        ref = reference_read_chunklist(built.image, built.memmap_phys, lay, bitmap_bytes)
    assert set(fast.preserved.iter_pages()) == ref
    assert ref == set(pages.iter_pages())
