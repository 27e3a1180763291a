"""Issue 12, memory: a valid but maximally fragmented map stays far below
1 GiB within the default limits.

Every other page preserved makes each 4 KiB radix leaf 16,384 runs (16
bytes each: 256 KiB).  Before, the leaf reader held the runs twice at its
peak (per-block pieces plus their concatenation), ``check`` and ``inspect``
computed every run's end (8 more bytes per run) and, with several orders,
merged all runs at once (about 60 more bytes per run): 562 KiB per leaf for
one order, over 1.3 MiB for two.  The limit ``max_runs`` bounds the runs a
parse materializes.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from kho_formats.errors import LimitExceeded
from kho_formats.limits import DEFAULT_LIMITS, Limits
from kho_formats.memory.pageset import PageSet
from kho_formats.model.clients import decode_clients
from kho_formats.model.fixture import make_fixture, write_fixture
from kho_formats.model.state import KhoState, build, parse
from kho_formats.ops.check import check
from kho_formats.ops.report import inspect_report, render_inspect

ROOT = Path(__file__).resolve().parent.parent
PS = 4096
BITS = PS * 8


def fragmented(leaves: int, orders: tuple[int, ...] = (0,), version: str = "kho-v4") -> PageSet:
    """Every other page of ``leaves`` radix leaves (split over ``orders``)."""
    runs = {}
    per = leaves // len(orders)
    for k, order in enumerate(orders):
        unit = PS << order
        base = (1 << 40) + k * (1 << 39)
        phys = np.concatenate(
            [np.arange(0, BITS, 2, dtype=np.uint64) * unit + np.uint64(base + i * BITS * unit * 4) for i in range(per)]
        )
        runs[order] = (phys, np.ones(phys.size, dtype=np.uint64))
    return PageSet.from_runs(PS, runs)


def built(leaves: int, orders: tuple[int, ...] = (0,), version: str = "kho-v4"):
    st = KhoState(version=version, page_size=PS, byteorder="little", preserved=fragmented(leaves, orders))
    return build(st, alloc=[(1 << 30, 1 << 30)])


def _peak(leaves: int, orders: tuple[int, ...]) -> int:
    """Peak traced bytes of parse + decode_clients + check + inspect (text,
    and the JSON listing of 100,000 ranges) over ``leaves`` fragmented leaves."""
    b = built(leaves, orders)
    gc.collect()  # the same collector state whatever ran before: cyclic garbage made inside counts the same
    tracemalloc.start()
    try:
        st = parse(b.root_fdt, b.image, root_fdt_phys=b.state.root_fdt_phys)
        cl = decode_clients(st, b.image)
        findings = check(st, b.image, clients=cl)
        render_inspect(inspect_report(st, b.image, cl, max_ranges=32))
        rep = inspect_report(st, b.image, cl, max_ranges=100_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert st.preserved == b.state.preserved
    assert rep["preserved"]["ranges_total"] == leaves * BITS // 2
    assert not [f for f in findings if f.severity == "error" and f.code != "root-fdt-address"]
    return peak


@pytest.mark.parametrize("orders", [(0,), (0, 1)], ids=["one-order", "two-orders"])
def test_fragmented_map_peak_per_leaf(orders: tuple[int, ...]) -> None:
    """Peak traced memory grows by under 300 KiB per fragmented leaf page
    (256 KiB of them the runs themselves; before: about 550 KiB for one
    order, more for two), plus under 64 MiB whatever the map (one slice of
    conversion, the 100,000 listed ranges)."""
    small, big = _peak(128, orders), _peak(512, orders)
    per_leaf = (big - small) / (512 - 128)
    # two orders: the parse-speed leaf reader (bits.bitmaps_to_runs on rows
    # read in place) holds about 90 KiB per leaf of per-order temporaries on
    # top of the runs while parsing (measured 347 KiB; check and inspect stay
    # at 256); still far under the 1 GiB RSS bound tested below
    bound = 300 << 10 if len(orders) == 1 else 380 << 10
    assert per_leaf < bound, f"{per_leaf / 1024:.0f} KiB per metadata page"
    fixed = big - 512 * per_leaf
    assert fixed < 64 << 20, f"{fixed / 2**20:.0f} MiB besides the runs"


def test_runs_join_across_slices() -> None:
    """Leaves converted a slice at a time: a run crossing slices is one run."""
    dense = PageSet.from_runs(PS, {0: ([1 << 40], [BITS * 300])})
    b = build(KhoState(version="kho-v4", page_size=PS, byteorder="little", preserved=dense), alloc=[(1 << 30, 1 << 30)])
    st = parse(b.root_fdt, b.image, root_fdt_phys=b.state.root_fdt_phys)
    assert st.preserved == dense and st.preserved.num_runs == 1
    frag = fragmented(300)
    b = build(KhoState(version="kho-v4", page_size=PS, byteorder="little", preserved=frag), alloc=[(1 << 30, 1 << 30)])
    assert parse(b.root_fdt, b.image, root_fdt_phys=b.state.root_fdt_phys).preserved == frag


@pytest.mark.parametrize("version", ["kho-v4", "kho-v1"])
def test_max_runs_is_a_clear_limit(version: str) -> None:
    b = built(8, version=version)
    with pytest.raises(LimitExceeded) as info:
        parse(b.root_fdt, b.image, root_fdt_phys=b.state.root_fdt_phys, limits=Limits(max_runs=5 * BITS // 2))
    assert "max_runs" in str(info.value) and "--max-runs" in str(info.value)
    st = parse(b.root_fdt, b.image, root_fdt_phys=b.state.root_fdt_phys, limits=Limits(max_runs=8 * BITS // 2))
    assert st.preserved.num_runs == 8 * BITS // 2


def test_default_max_runs_bounds_the_worst_map() -> None:
    """The default admits the 8 MiB image of 2,040 fragmented leaves (33.4 M
    runs); at about 16 bytes of peak per run (plus a fixed 30-60 MiB) that
    is far under 1 GiB."""
    assert 2040 * BITS // 2 <= DEFAULT_LIMITS.max_runs <= 40 << 20


# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec (the parent's
# peak would count), the high-water mark belongs to the new address space
_CHILD = """
import sys
from kho_formats import cli
rc = cli.main(sys.argv[1:])
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0]
print(hwm.split()[1])
"""


def _child_rss_kib(*argv: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    return int(out.stdout.strip().splitlines()[-1])  # KiB


def test_fragmented_fixture_rss_of_inspect_and_check(tmp_path: Path) -> None:
    """Peak RSS (VmHWM) of ``kho inspect --json`` and ``kho check`` in a
    subprocess over a fixture of 512 fragmented leaves, less the same
    commands on a shipped fixture: under 480 KiB per leaf page (measured
    about 410, of which about 140 the fixed cost of one conversion slice;
    before: about 605)."""
    leaves = 512
    b = built(leaves)
    write_fixture(make_fixture(b, alloc=[(1 << 30, 1 << 30)]), tmp_path / "frag")
    del b
    small = ROOT / "fixtures" / "v4-4k"
    for cmd in (["inspect", "--json"], ["check"]):
        base = _child_rss_kib(*cmd, str(small))
        rss = _child_rss_kib(*cmd, str(tmp_path / "frag"))
        per_leaf = (rss - base) / leaves
        assert per_leaf < 480, f"{cmd}: {per_leaf:.0f} KiB per leaf page ({rss} KiB, base {base} KiB)"


def _reference_overlap(ps: PageSet) -> tuple[int, int, int, int] | None:
    """``find_overlap`` as it was: every run at once."""
    if sum(1 for r in ps.iter_runs() if r.starts.size) < 2:
        return None
    s, e, o = ps.byte_intervals()
    run_end = np.maximum.accumulate(e)
    bad = np.flatnonzero(s[1:] < run_end[:-1])
    if bad.size == 0:
        return None
    j = int(bad[0]) + 1
    i = int(np.flatnonzero(e[:j] > s[j])[0])
    return int(s[i]), int(o[i]), int(s[j]), int(o[j])


@pytest.mark.parametrize("slice_runs", [2, 3, 7, 1 << 18])
def test_sliced_merges_match_the_all_at_once_ones(monkeypatch: pytest.MonkeyPatch, slice_runs: int) -> None:
    """Merged ranges, the ranges listed, the first overlap, the first run in
    a range and check's coverage: the same as computed over every run at
    once, whatever the slice size (overlapping orders included)."""
    import random

    from kho_formats.memory import pageset as pm
    from kho_formats.ops.check import _Coverage

    monkeypatch.setattr(pm, "_SLICE_RUNS", slice_runs)
    rng = random.Random(slice_runs)
    for _ in range(150):
        runs = {}
        for o in rng.sample([0, 1, 2, 5, 9], rng.randint(1, 4)):
            idx = sorted(rng.sample(range(600), rng.randint(1, 25)))
            runs[o] = ([i * (PS << o) for i in idx], [1] * len(idx))
        ps = PageSet.from_runs(PS, runs)
        s0, e0, _ = ps.byte_intervals()
        rs, re_ = pm.merge_sorted_intervals(s0, e0)
        s, e = ps.range_arrays()
        assert s.tolist() == rs.tolist() and e.tolist() == re_.tolist()
        total, hs, he = ps.range_head(5)
        assert total == rs.size and hs.tolist() == rs[:5].tolist() and he.tolist() == re_[:5].tolist()
        assert ps.find_overlap() == _reference_overlap(ps)
        pages = {q for a, b in zip(rs.tolist(), re_.tolist()) for q in range(a // PS, b // PS)}
        cov = _Coverage(KhoState(version="kho-v4", page_size=PS, byteorder="little", preserved=ps))
        spans = []
        for _ in range(20):
            a = rng.randrange(700) * PS
            b = a + rng.randint(1, 40) * PS
            spans.append((a, b))
            assert cov.covers(a, b) == all(q in pages for q in range(a // PS, b // PS))
            first = next(
                (
                    (int(x), o)
                    for o, (xs, cs) in ps._runs.items()
                    for x, c in zip(xs, cs)
                    if x < b and x + c * (PS << o) > a
                ),
                None,
            )
            assert ps.overlaps_range(a, b) == first
        want = [k for k, (a, b) in enumerate(spans) if any(q in pages for q in range(a // PS, b // PS))]
        assert cov.intersecting(spans) == want
