"""Benchmark workloads (issue 5): preserved sets at machine scale.

Each workload is a deterministic (seeded) :class:`~kho_formats.memory.pageset.PageSet`
built with numpy, never page by page:

(a) 16 Mi order-0 pages scattered at ~50% density over 128 GiB (4 KiB pages)
(b) 1 TiB preserved as order-9 pages
(c) orders 0-18 mixed over 4 TiB of address space, 1% random occupancy
(d) (a) at 16 KiB and 64 KiB pages
(e) a kho-v1 capture of (a), with 512-byte and with page-sized bitmaps
(f) 1 Mi order-0 pages at random over 4 TiB: a sparse map, ~32 bits in each
    of ~32k leaves (issue 14)
(s) 32Ki order-0 pages at random over 16 TiB: a very sparse map, about one
    bit in each of ~29k leaves (the walk's cost is all per leaf and per node)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kho_formats.memory.pageset import PageSet, runs_from_sorted_indexes

GiB = 1 << 30
TiB = 1 << 40
U64 = np.uint64
#: where preserved memory starts, and where map pages are allocated (above it)
BASE = 1 << 32
ALLOC_BASE = 1 << 46


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    version: str
    page_size: int
    make: Callable[[], PageSet]
    v1_bitmap: int | None = None


def scattered(page_size: int, span_bytes: int, density: float, seed: int = 1) -> PageSet:
    """Order-0 pages at random, each slot taken with probability ``density``."""
    rng = np.random.default_rng(seed)
    slots = span_bytes // page_size
    out_f, out_l = [], []
    shift = page_size.bit_length() - 1
    step = 1 << 24  # generate in slices to bound memory
    for lo in range(0, slots, step):
        n = min(step, slots - lo)
        taken = np.flatnonzero(rng.random(n, dtype=np.float32) < density).astype(np.uint64) + U64(lo)
        f, l = runs_from_sorted_indexes(taken)
        out_f.append(f)
        out_l.append(l)
    f = np.concatenate(out_f)
    starts = (f << U64(shift)) + U64(BASE)
    return PageSet.from_runs(page_size, {0: (starts, np.concatenate(out_l))}, sort=False)


def sparse_random(page_size: int, span_bytes: int, count: int, seed: int = 5) -> PageSet:
    """``count`` distinct order-0 pages drawn uniformly from ``span_bytes``
    (drawn as indexes, so the cost does not grow with the span)."""
    rng = np.random.default_rng(seed)
    slots = span_bytes // page_size
    taken = np.zeros(0, dtype=np.uint64)
    while taken.size < count:
        more = rng.integers(0, slots, size=count - taken.size + count // 64 + 16, dtype=np.uint64)
        taken = np.union1d(taken, more)
    taken = np.sort(rng.choice(taken, size=count, replace=False))
    f, l = runs_from_sorted_indexes(taken)
    starts = (f << U64(page_size.bit_length() - 1)) + U64(BASE)
    return PageSet.from_runs(page_size, {0: (starts, l)}, sort=False)


def huge_order(page_size: int, total: int, order: int) -> PageSet:
    unit = page_size << order
    return PageSet.from_runs(page_size, {order: ([BASE], [total // unit])})


def mixed_orders(page_size: int, span: int, occupancy: float, max_order: int = 18, seed: int = 3) -> PageSet:
    """Address space cut into regions of the largest order; each region gets
    one random order and pages of that order at ``occupancy``."""
    rng = np.random.default_rng(seed)
    region = page_size << max_order
    nregions = span // region
    orders = rng.integers(0, max_order + 1, size=nregions)
    by_order: dict[int, list[np.ndarray]] = {}
    for o in range(max_order + 1):
        regs = np.flatnonzero(orders == o).astype(np.uint64)
        if regs.size == 0:
            continue
        per = 1 << (max_order - o)
        take = rng.random((regs.size, per), dtype=np.float32) < occupancy
        r, k = np.nonzero(take)
        phys = U64(BASE) + regs[r] * U64(region) + k.astype(np.uint64) * U64(page_size << o)
        by_order[o] = [phys]
    return PageSet.from_arrays(page_size, {o: np.concatenate(v) for o, v in by_order.items()})


WORKLOADS: list[Workload] = [
    Workload("a", "16Mi order-0 pages, 50% of 128 GiB", "kho-v4", 4096, lambda: scattered(4096, 128 * GiB, 0.5)),
    Workload("b", "1 TiB as order-9 pages", "kho-v4", 4096, lambda: huge_order(4096, TiB, 9)),
    Workload("c", "orders 0-18, 1% of 4 TiB", "kho-v4", 4096, lambda: mixed_orders(4096, 4 * TiB, 0.01)),
    Workload("d16", "(a) at 16 KiB pages", "kho-v4", 16384, lambda: scattered(16384, 16384 * (32 << 20), 0.5)),
    Workload("d64", "(a) at 64 KiB pages", "kho-v4", 65536, lambda: scattered(65536, 65536 * (32 << 20), 0.5)),
    Workload("e512", "(a) as kho-v1, 512-byte bitmaps", "kho-v1", 4096, lambda: scattered(4096, 128 * GiB, 0.5), 512),
    Workload("epage", "(a) as kho-v1, page bitmaps", "kho-v1", 4096, lambda: scattered(4096, 128 * GiB, 0.5), 4096),
    Workload(
        "f", "1Mi order-0 pages at random over 4 TiB", "kho-v4", 4096, lambda: sparse_random(4096, 4 * TiB, 1 << 20)
    ),
    Workload(
        "s", "32Ki order-0 pages at random over 16 TiB", "kho-v4", 4096, lambda: sparse_random(4096, 16 * TiB, 1 << 15)
    ),
]


def by_name(name: str) -> Workload:
    for w in WORKLOADS:
        if w.name == name:
            return w
    raise KeyError(name)
