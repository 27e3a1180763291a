"""Property tests: every version x page size x byte order round trips.

For random preserved sets (many orders, runs across bitmap boundaries,
non-overlapping across orders) plus random sub-blobs:

* ``parse(build(s)) == s`` (preserved set, sub-blobs, scratch);
* a walker written here from KHO-ABI.md alone (not the library's reader)
  finds exactly the preserved pages in the built memory map;
* ``build(parse(...), reuse_placement=True)`` gives the same root FDT bytes
  and every memory-map page byte for byte.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kho_formats.errors import UnrepresentableError
from kho_formats.memory.pageset import PageSet
from kho_formats.model.fdt import FdtNode, build_fdt, parse_fdt, str_bytes
from kho_formats.model.state import KhoState, SubBlob, build, parse

PAGE_SIZES = (4096, 16384, 65536)
BYTE_ORDERS = ("little", "big")
# (version, v1 bitmap variant)
VARIANTS = [("kho-v1", "512"), ("kho-v1", "page"), ("kho-v2", None), ("kho-v3", None), ("kho-v4", None)]

LIMIT_LOG2 = 42  # random pages live below 4 TiB
SUB_BASE = 1 << 43  # root FDT page and sub-blobs
SCRATCH = ((1 << 43) + (1 << 40), 1 << 30)
ALLOC = [(1 << 44, 1 << 36)]

EXAMPLES = 25
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def shift_of(page_size: int) -> int:
    return page_size.bit_length() - 1


def min_order_for(version: str, page_size: int) -> int:
    return 1 if (version == "kho-v2" and page_size == 16384) else 0


# -- strategies -------------------------------------------------------------------------------


@st.composite
def random_runs(draw, page_size: int, min_order: int):
    """Non-overlapping (phys, order, count) runs below 1 << LIMIT_LOG2."""
    shift = shift_of(page_size)
    max_order = min(26, LIMIT_LOG2 - shift - 2)
    n = draw(st.integers(0, 10))
    accepted = []  # (start, end, order, count)
    for _ in range(n):
        order = draw(st.one_of(st.integers(min_order, min_order + 3), st.integers(min_order, max_order)))
        unit_shift = shift + order
        nslots = 1 << (LIMIT_LOG2 - unit_shift)
        count = draw(st.one_of(st.integers(1, 8), st.integers(1, 3000)))
        count = min(count, nslots // 2)
        kind = draw(st.sampled_from(["random", "boundary", "low"]))
        idx = None
        if kind == "boundary":  # a run that crosses a 512-byte or page bitmap / leaf boundary
            bsize = draw(st.sampled_from([4096, page_size * 8]))
            mmax = (nslots - count) // bsize
            if mmax >= 1:
                idx = draw(st.integers(1, mmax)) * bsize - draw(st.integers(0, count - 1))
        elif kind == "low":
            idx = draw(st.integers(0, min(5000, nslots - count)))
        if idx is None:
            idx = draw(st.integers(0, nslots - count))
        start = idx << unit_shift
        end = start + (count << unit_shift)
        if any(start < e and s < end for s, e, _, _ in accepted):
            continue
        accepted.append((start, end, order, count))
    return [(s, o, c) for s, _, o, c in accepted]


def fdt_blob(tag: str, payload: bytes) -> bytes:
    root = FdtNode("")
    root.set("compatible", str_bytes(f"{tag}-v1"))
    root.set("payload", payload)
    c = root.add_child("child")
    c.set("n", struct.pack(">I", len(payload)))
    return build_fdt(root, style="sequential-write")


NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)


@st.composite
def subblobs(draw, version: str, page_size: int):
    names = draw(st.lists(NAMES, max_size=3, unique=True))
    slot = page_size << 2
    out = []
    for i, name in enumerate(names):
        phys = SUB_BASE + (i + 1) * slot
        payload = draw(st.binary(min_size=0, max_size=200))
        if version == "kho-v1":
            data = fdt_blob(name, payload)
            out.append(SubBlob(name, phys, len(data), data, "fdt-header"))
            continue
        kind = draw(st.sampled_from(["raw", "fdt", "big"]))
        if kind == "fdt":
            data = fdt_blob(name, payload)
            # kho-v2 may leave blob-size out; the size then comes from the FDT header
            src = "fdt-header" if (version == "kho-v2" and draw(st.booleans())) else "blob-size"
            out.append(SubBlob(name, phys, len(data), data, src))
        else:
            data = payload or b"\x5a"
            if kind == "big":  # spans pages
                data = (data * (2 * page_size // len(data) + 1))[: 2 * page_size - 3]
            out.append(SubBlob(name, phys, len(data), data, "blob-size"))
    return out


@st.composite
def states(draw, version: str, v1_variant, page_size: int, byteorder: str):
    mo = min_order_for(version, page_size)
    runs = draw(random_runs(page_size, mo))
    subs = draw(subblobs(version, page_size))
    shift = shift_of(page_size)
    by_order = {}
    for s, o, c in runs:
        by_order.setdefault(o, ([], []))
        by_order[o][0].append(s)
        by_order[o][1].append(c)
    ps = PageSet.from_runs(page_size, by_order)
    # the root FDT page and every client blob are preserved, as the kernel does
    grain = page_size << mo
    keep = [(SUB_BASE, SUB_BASE + grain)]
    for sb in subs:
        keep.append((sb.phys, sb.phys + -(-sb.size // grain) * grain))
    extra = PageSet.from_ranges(page_size, keep, max_order=63 - shift)
    if mo and extra.orders and min(extra.orders) < mo:  # pragma: no cover - grain keeps orders >= mo
        raise AssertionError("sub-blob pages below the minimum order")
    ps.update(extra)
    st_ = KhoState(
        version=version,
        page_size=page_size,
        byteorder=byteorder,
        preserved=ps,
        subblobs=subs,
        root_fdt_phys=SUB_BASE,
        scratch=[SCRATCH] if draw(st.booleans()) else [],
        extra_compatible=["radix-v1"] if draw(st.integers(0, 4)) == 0 else [],
        map_params={"v1_bitmap_bytes": 512 if v1_variant == "512" else page_size} if version == "kho-v1" else {},
    )
    return st_


# -- an independent walker, written from KHO-ABI.md ----------------------------------------------


def _words(raw: bytes, bo: str) -> np.ndarray:
    return np.frombuffer(raw, dtype="<u8" if bo == "little" else ">u8")


def _bits(val: int):
    b = 0
    while val:
        if val & 1:
            yield b
        val >>= 1
        b += 1


def hand_walk_radix(image, root, page_size, bo, depth):
    shift = shift_of(page_size)
    o0 = 64 - shift
    tlog = (page_size // 8).bit_length() - 1
    blog = shift + 3
    pages = set()
    stack = [(root, depth - 1, 0)]
    while stack:
        node, level, prefix = stack.pop()
        w = _words(image.read(node, page_size), bo)
        for i in np.flatnonzero(w).tolist():
            val = int(w[i])
            if level:
                stack.append((val, level - 1, prefix | (i << ((level - 1) * tlog + blog))))
                continue
            for b in _bits(val):
                key = prefix | (i * 64 + b)
                hb = key.bit_length() - 1
                order = o0 - hb
                pages.add(((key ^ (1 << hb)) << (shift + order), order))
    return pages


def hand_walk_v1(image, first, page_size, bo, bitmap_bytes):
    fmt = "<" if bo == "little" else ">"
    shift = shift_of(page_size)
    pages = set()
    phys = first
    while phys:
        raw = image.read(phys, page_size)
        nxt, order, n = struct.unpack(fmt + "QII", raw[:16])
        for k in range(n):
            start, bm = struct.unpack(fmt + "QQ", raw[16 + 16 * k : 32 + 16 * k])
            w = _words(image.read(bm, bitmap_bytes), bo)
            for i in np.flatnonzero(w).tolist():
                for b in _bits(int(w[i])):
                    pages.add((start + ((i * 64 + b) << (order + shift)), order))
        phys = nxt
    return pages


# -- the round trip ---------------------------------------------------------------------------------


def _params():
    for version, var in VARIANTS:
        for ps in PAGE_SIZES:
            for bo in BYTE_ORDERS:
                yield pytest.param(version, var, ps, bo, id=f"{version}{'-' + var if var else ''}-{ps // 1024}k-{bo}")


@pytest.mark.parametrize("version,variant,page_size,bo", list(_params()))
def test_round_trip(version, variant, page_size, bo):
    @SETTINGS
    @given(states(version, variant, page_size, bo))
    def check(s):
        b = build(s, alloc=ALLOC)
        # one-page root FDT, written at its address
        fdt = parse_fdt(b.root_fdt)
        assert fdt.size == len(b.root_fdt) <= page_size
        assert b.image.read(SUB_BASE, len(b.root_fdt)) == b.root_fdt
        assert fdt.root.get("preserved-memory-map") == b.memmap_phys.to_bytes(8, bo)
        # metadata pages: page-aligned (v1 512-byte bitmaps share pages), in the alloc region,
        # never over preserved memory, scratch or blobs
        lo, size = ALLOC[0]
        for p, d in b.metadata:
            assert p % page_size == 0 and len(d) == page_size
            assert lo <= p < lo + size
            assert s.preserved.overlaps_range(p, p + page_size) is None
        # parse gives back the same state
        got = parse(
            b.root_fdt,
            b.image,
            page_size=page_size,
            byteorder=bo,
            v1_bitmap=variant,
            root_fdt_phys=SUB_BASE,
            scratch=s.scratch,
        )
        assert got == s
        assert got.version == version
        assert got.extra_compatible == s.extra_compatible
        for a, c in zip(got.subblobs, s.subblobs):
            assert (a.name, a.phys, a.size, a.data) == (c.name, c.phys, c.size, c.data)
        # an independent walk of the built bytes finds exactly the preserved pages
        if version == "kho-v1":
            hand = hand_walk_v1(b.image, b.memmap_phys, page_size, bo, s.map_params["v1_bitmap_bytes"])
        else:
            hand = hand_walk_radix(b.image, b.memmap_phys, page_size, bo, b.memmap.depth)
        assert hand == set(s.preserved.iter_pages())
        # rebuild at the parsed placement: same root FDT, same memory-map pages
        b2 = build(got, reuse_placement=True)
        assert b2.root_fdt == b.root_fdt
        assert b2.memmap_phys == b.memmap_phys
        assert dict(b2.metadata) == dict(b.metadata)
        assert len(b2.metadata) == len(b.metadata)
        for p, d in b.metadata:
            assert b2.image.read(p, page_size) == d

    check()


@pytest.mark.parametrize("bo", BYTE_ORDERS)
def test_v2_16k_refuses_order0(bo):
    @SETTINGS
    @given(states("kho-v2", None, 16384, bo), st.integers(0, (1 << 20) - 1))
    def check(s, pfn):
        # an order-0 page anywhere makes the v2 16 KiB tree impossible
        phys = (1 << 41) + pfn * 16384
        bad = s.preserved.copy()
        bad.add(phys, 0)
        s0 = s.copy()
        s0.preserved = bad
        with pytest.raises(UnrepresentableError):
            build(s0, alloc=ALLOC)
        # without it (orders >= 1 only) the same state builds and round trips
        b = build(s, alloc=ALLOC)
        assert parse(b.root_fdt, b.image, page_size=16384, byteorder=bo, scratch=s.scratch) == s

    check()


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_v2_order0_fine_except_16k(page_size):
    s = KhoState("kho-v2", page_size, "little", PageSet.from_pages(page_size, [(page_size * 3, 0)]))
    if page_size == 16384:
        with pytest.raises(UnrepresentableError):
            build(s, alloc=ALLOC)
    else:
        b = build(s, alloc=ALLOC)
        assert parse(b.root_fdt, b.image, page_size=page_size) == s
