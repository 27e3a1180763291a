"""Issue 14 (parse speed at scale): the radix leaves are read where they lie
in the image (PhysImage.rows) rather than gathered, and empty leaves are
counted from the runs found.  Each fast path against the slow one and a
model, including the inputs that make it take the other path."""

from __future__ import annotations

import numpy as np
import pytest

from kho_formats.abi import get_version
from kho_formats.abi.layout import layout
from kho_formats.memory.alloc import PageAllocator
from kho_formats.memory.image import LazyData, PhysImage
from kho_formats.memory.pageset import PageSet
from kho_formats.model.memmap.radix import build_radix, read_radix

PS = 4096
ALLOC = [(1 << 40, 1 << 36)]


class _Lazy(LazyData):
    def __init__(self, data: bytes) -> None:
        super().__init__(len(data))
        self.data = data

    def fetch(self, off: int, n: int) -> bytes:
        return self.data[off : off + n]


def test_rows_views_one_segment_at_block_offsets():
    base = 0x10_0000 + 0x800  # the segment starts half-way into a page
    data = bytes(range(256)) * 64  # 16 KiB
    img = PhysImage([(base, data)])
    addrs = np.array([0x10_1000, 0x10_3000, 0x10_2000], dtype=np.uint64)
    got = img.rows(addrs, 0x1000)
    assert got is not None
    rows, idx = got
    assert not rows.flags.writeable
    for a, r in zip(addrs.tolist(), idx.tolist()):
        assert rows[r].tobytes() == img.read(a, 0x1000)
    assert np.array_equal(img.gather(addrs, 0x1000), rows[idx])


@pytest.mark.parametrize(
    "case",
    ["misaligned", "past the end", "before the start", "two segments", "lazy", "empty"],
)
def test_rows_declines_what_gather_must_do(case):
    data = bytes(4 * PS)
    img = PhysImage([(0x10_0000, data), (0x20_0000, data)])
    addrs = {
        "misaligned": [0x10_0000, 0x10_1800],
        "past the end": [0x10_3000 + 0x800],
        "before the start": [0xF_F000],
        "two segments": [0x10_0000, 0x20_0000],
        "lazy": [0x30_0000],
        "empty": [],
    }[case]
    if case == "lazy":
        img = PhysImage([(0x30_0000, _Lazy(data))])
    assert img.rows(np.array(addrs, dtype=np.uint64), 0x1000) is None


def _tree(pages: PageSet, version: str = "kho-v4", bo: str = "little"):
    ver = get_version(version)
    lay = layout(PS, bo)
    geom = ver.radix(PS)
    root, mp, _ = build_radix(pages, geom, lay, PageAllocator(ALLOC, PS))
    return root, mp, geom, lay


def _random_pages(n_pages: int, span_pages: int, seed: int, orders=(0,)) -> PageSet:
    rng = np.random.default_rng(seed)
    by_order = {}
    for o in orders:
        idx = np.unique(rng.integers(0, span_pages >> o, size=n_pages, dtype=np.uint64))
        by_order[o] = (idx << np.uint64(12 + o)) + np.uint64(1 << 32)
    return PageSet.from_arrays(PS, by_order)


@pytest.mark.parametrize("bo", ["little", "big"])
@pytest.mark.parametrize(
    "kind",
    [
        "sparse",  # ~8 bits in each of ~4k leaves: read by nonzero words
        "dense",  # half of every leaf set: the masks, on two threads
        "orders",  # several orders, each its own stack
    ],
)
def test_in_place_and_gathered_leaves_agree(kind, bo):
    """The same tree read from one merged segment (leaves read in place)
    and from one segment per page (leaves gathered): same pages, same tree
    counts, and the pages are the ones built."""
    if kind == "sparse":
        pages = _random_pages(1 << 15, 1 << 27, 1)
    elif kind == "dense":
        rng = np.random.default_rng(2)
        idx = np.flatnonzero(rng.random(1 << 22, dtype=np.float32) < 0.5).astype(np.uint64)
        pages = PageSet.from_arrays(PS, {0: (idx << np.uint64(12)) + np.uint64(1 << 32)})
    else:
        pages = _random_pages(3000, 1 << 28, 3, orders=(0, 1, 5, 9))
    root, mp, geom, lay = _tree(pages, bo=bo)
    merged = PhysImage.from_elf(PhysImage(mp).to_elf())
    assert len(merged) == 1
    leaves = merged.rows(np.array([p for p, _ in mp], dtype=np.uint64), PS)
    assert leaves is not None
    # one segment per page, a gap after each: rows() declines, the leaves are gathered
    apart = PhysImage((p, bytes(d)[: PS - 8]) for p, d in mp)
    apart_full = PhysImage((p, bytes(d)) for p, d in mp)
    for p, d in mp:
        apart.add(p + PS - 8, bytes(d)[PS - 8 :])
    assert apart.rows(np.array([p for p, _ in mp], dtype=np.uint64), PS) is None
    a, ta = read_radix(merged, root, geom, lay)
    b, tb = read_radix(apart, root, geom, lay)
    c, tc = read_radix(apart_full, root, geom, lay)
    assert c == pages and (tc.leaves, tc.empty_leaves) == (ta.leaves, ta.empty_leaves)
    assert a == pages and b == pages
    assert (ta.leaves, ta.empty_leaves, ta.tables) == (tb.leaves, tb.empty_leaves, tb.tables)
    assert ta.empty_leaves == 0


def _leaf_pages(mp, tree):
    return {phys: key for (lv, key), phys in tree.placement.items() if lv == 0}


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_empty_leaves_counted_from_the_runs(kind):
    """Leaves emptied in the image (as the kernel leaves them when pages go)
    are counted as empty, whichever reading found the runs: a run from the
    leaf before that ends exactly at an emptied leaf does not make it
    nonempty, one that continues into the next leaf makes that one so."""
    if kind == "sparse":
        pages = _random_pages(1 << 14, 1 << 27, 4)
    else:
        pages = PageSet.from_runs(PS, {0: ([1 << 32], [1 << 21])})  # 64 full leaves, one run
    root, mp, geom, lay = _tree(pages)
    _, tree0 = read_radix(PhysImage(mp), root, geom, lay)
    leaf_phys = sorted(_leaf_pages(mp, tree0), key=lambda p: _leaf_pages(mp, tree0)[p])
    rng = np.random.default_rng(6)
    emptied = set(rng.choice(len(leaf_phys), size=len(leaf_phys) // 5, replace=False).tolist())
    emptied |= {0, len(leaf_phys) - 1}
    img = PhysImage.from_elf(PhysImage(mp).to_elf())
    for k in sorted(emptied):
        img.write(leaf_phys[k], bytes(PS))
    # what should remain: the pages whose leaf was not emptied
    nbits = 8 * PS
    o0 = geom.order_0_log2
    runs = pages.runs(0)
    starts = runs.starts >> np.uint64(12)
    counts = runs.counts
    model = np.concatenate(
        [np.arange(int(s), int(s) + int(c), dtype=np.uint64) for s, c in zip(starts.tolist(), counts.tolist())]
    )
    keys = model | np.uint64(1 << o0)
    leaf_id = keys >> np.uint64(nbits.bit_length() - 1)
    gone = np.array(sorted(_leaf_pages(mp, tree0)[leaf_phys[k]] for k in emptied), dtype=np.uint64)
    left = model[~np.isin(leaf_id, gone)]
    keep = PageSet.from_arrays(PS, {0: (left << np.uint64(12))})
    got, tree = read_radix(img, root, geom, lay)
    assert got == keep
    assert tree.leaves == len(leaf_phys) and tree.empty_leaves == len(emptied)
