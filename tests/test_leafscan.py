"""The C leaf scan (kho_formats.memory.leafscan, ``_leafscan.c``) against its
oracle, the numpy path (``bits.bitmaps_to_runs``): the same runs for random
bitmap stacks (both byte orders, rows in any order, contiguous and gapped
bases, outputs that must grow), the same parse of every radix fixture and
capture and of random trees at 4K/16K/64K pages in both byte orders, the
same errors for hostile trees (the malformed-radix tests rerun with
``KHO_FORMATS_NATIVE=0``), and the loader's switch and cache."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kho_formats
from kho_formats.abi import get_version
from kho_formats.abi.layout import layout
from kho_formats.errors import LimitExceeded
from kho_formats.limits import Budget, Limits
from kho_formats.memory import leafscan, native
from kho_formats.memory.alloc import PageAllocator
from kho_formats.memory.bits import bitmaps_to_runs
from kho_formats.memory.image import PhysImage
from kho_formats.memory.pageset import PageSet
from kho_formats.model.memmap import radix, runs
from kho_formats.model.memmap.chunklist import build_chunklist, read_chunklist

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"

needs_native = pytest.mark.skipif(not leafscan.available(), reason="no C compiler: the C leaf scan is not built")


def _stack(rng: np.random.Generator, n: int, w: int, density: float) -> np.ndarray:
    bits = rng.random((n, w * 64)) < density
    return np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64)


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray] | None) -> None:
    assert b is not None
    assert b[0].dtype == np.uint64 and b[1].dtype == np.uint64
    assert a[0].tolist() == b[0].tolist()
    assert a[1].tolist() == b[1].tolist()


@needs_native
@pytest.mark.parametrize("w", [8, 512, 2048, 8192])
@pytest.mark.parametrize("density", [0.0, 0.0002, 0.03, 0.5, 0.97, 1.0])
@pytest.mark.parametrize("dtype", ["<u8", ">u8"])
def test_same_runs_as_numpy(w: int, density: float, dtype: str) -> None:
    rng = np.random.default_rng(w + int(density * 1000))
    n = 24
    words = _stack(rng, n, w, density).astype(dtype)
    # half the bitmaps contiguous with the one before (runs join across them)
    bases = np.cumsum(rng.integers(1, 3, n)).astype(np.uint64) * np.uint64(w * 64)
    rows = rng.permutation(n)
    words[rng.integers(0, n, 3)] = 0  # some empty bitmaps among them
    stats: dict[str, int] = {}
    _same(bitmaps_to_runs(words, bases, rows), leafscan.leaf_runs(words, bases, rows, stats=stats))
    _same(bitmaps_to_runs(words, bases), leafscan.leaf_runs(words, bases))
    assert stats["nonempty"] == int(np.count_nonzero(words.any(axis=1)))


@needs_native
def test_runs_cross_words_and_contiguous_bitmaps() -> None:
    words = np.zeros((3, 4), dtype=np.uint64)
    words[0, 3] = np.uint64(1) << np.uint64(63)  # the last bit of bitmap 0 ...
    words[1, :] = ~np.uint64(0)  # ... a full bitmap ...
    words[2, 0] = np.uint64(0b1011)  # ... and the first two bits of bitmap 2: one run
    bases = np.array([256, 512, 768], dtype=np.uint64)
    f, l = leafscan.leaf_runs(words, bases) or (None, None)
    assert f is not None and l is not None
    assert f.tolist() == [511, 771] and l.tolist() == [1 + 256 + 2, 1]
    gap = np.array([256, 512, 1024], dtype=np.uint64)  # bitmap 2 not contiguous: no join
    f, l = leafscan.leaf_runs(words, gap) or (None, None)
    assert f is not None and l is not None
    assert f.tolist() == [511, 1024, 1027] and l.tolist() == [257, 2, 1]


@needs_native
@pytest.mark.parametrize(("n", "w", "density"), [(2000, 64, 0.5), (150, 2048, 0.02), (100, 8192, 0.003)])
def test_output_grows_past_a_wrong_estimate(n: int, w: int, density: float) -> None:
    """The sampled bitmaps are empty, the others not: the first guess is far
    too small and the output grows (by realloc, the runs found kept); the scan
    resumes inside chunks and blocks of words."""
    rng = np.random.default_rng(7)
    words = _stack(rng, n, w, density)
    pick = np.linspace(0, n - 1, min(n, 64)).astype(np.intp)
    words[pick] = 0
    bases = np.arange(n, dtype=np.uint64) * np.uint64(w * 64)
    charged: list[int] = []
    stats: dict[str, int] = {}
    got = leafscan.leaf_runs(words, bases, charge=charged.append, stats=stats)
    _same(bitmaps_to_runs(words, bases), got)
    assert stats["nonempty"] == int(np.count_nonzero(words.any(axis=1)))  # no bitmap counted twice on resuming
    assert got is not None and len(charged) > 1 and sum(charged) == got[0].size


@needs_native
def test_charge_can_stop_the_scan() -> None:
    rng = np.random.default_rng(8)
    n, w = 500, 512
    words = _stack(rng, n, w, 0.5)
    words[np.linspace(0, n - 1, 64).astype(np.intp)] = 0
    bases = np.arange(n, dtype=np.uint64) * np.uint64(w * 64)
    budget = Budget(Limits(max_runs=10_000))
    with pytest.raises(LimitExceeded):
        leafscan.leaf_runs(words, bases, charge=lambda k: budget.runs_add(k, "radix leaves", 0))
    # stopped at the first growth past the limit, long before the ~2M runs the bitmaps hold
    assert 10_000 < budget.runs < 100_000


@needs_native
def test_bad_arguments_are_refused() -> None:
    words = np.zeros((2, 8), dtype=np.uint64)
    with pytest.raises(ValueError):
        leafscan.leaf_runs(words.view(np.int64), np.zeros(2, np.uint64))
    with pytest.raises(ValueError):
        leafscan.leaf_runs(words, np.zeros(3, np.uint64))
    with pytest.raises(IndexError):
        leafscan.leaf_runs(words, np.zeros(1, np.uint64), np.array([2]))
    empty = leafscan.leaf_runs(words, np.zeros(0, np.uint64), np.zeros(0, np.intp))
    assert empty is not None and empty[0].size == 0 and empty[1].size == 0


def _fixture_dirs() -> list[Path]:
    out = []
    for d in sorted([*FIX.iterdir(), *(FIX / "captures").iterdir()]):
        if (d / "root.dtb").exists() and (d / "image.elf").exists():
            out.append(d)
    return out


@needs_native
@pytest.mark.parametrize("where", _fixture_dirs(), ids=lambda p: p.name)
def test_every_fixture_parses_the_same_without_c(where: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def spy(*a, **k):
        got = leafscan.leaf_runs(*a, **k)
        calls.append(0 if got is None else int(got[0].size))
        return got

    monkeypatch.setattr(radix, "leaf_runs", spy)
    monkeypatch.setattr(runs, "leaf_runs", spy)
    c_state = kho_formats.open(str(where)).state
    monkeypatch.setattr(leafscan, "library", lambda: None)  # as without a compiler
    n_state = kho_formats.open(str(where)).state
    assert c_state.preserved == n_state.preserved
    if isinstance(c_state.memmap, radix.RadixTree):
        assert isinstance(n_state.memmap, radix.RadixTree)
        assert c_state.memmap.to_json() == n_state.memmap.to_json()
        assert c_state.memmap.placement == n_state.memmap.placement
    else:
        assert c_state.memmap == n_state.memmap
    assert calls and sum(calls) > 0  # the C scan read the leaves (or the v1 bitmaps)
    assert c_state.preserved.num_pages > 0


@contextlib.contextmanager
def _numpy_only() -> Iterator[None]:
    """The readers without the C scan, as without a compiler (hypothesis tests take no fixtures)."""
    saved = leafscan.library
    leafscan.library = lambda: None  # type: ignore[assignment]
    try:
        yield
    finally:
        leafscan.library = saved  # type: ignore[assignment]


def _tree(pages: PageSet, version: str, ps: int, bo: str) -> tuple[PhysImage, int, object, object]:
    geom = get_version(version).radix(ps)
    lay = layout(ps, bo)
    root, out, _ = radix.build_radix(pages, geom, lay, PageAllocator([(1 << 44, 1 << 40)], ps))
    return PhysImage(out), root, geom, lay


@st.composite
def _pagesets(draw: st.DrawFn) -> tuple[str, int, str, PageSet]:
    version = draw(st.sampled_from(["kho-v2", "kho-v3", "kho-v4"]))
    ps = draw(st.sampled_from([4096, 16384, 65536]))
    bo = draw(st.sampled_from(["little", "big"]))
    geom = get_version(version).radix(ps)
    low = max(0, geom.order_0_log2 - geom.key_bits_covered + 1)
    orders = draw(st.lists(st.integers(low, min(geom.max_order, low + 10)), min_size=1, max_size=3, unique=True))
    pages: list[tuple[int, int]] = []
    for order in orders:
        span = ps << order
        # clustered (dense leaves) or scattered (sparse leaves) page indexes
        base = draw(st.integers(0, 1 << 20))
        idx = draw(st.lists(st.integers(0, 1 << draw(st.sampled_from([10, 16, 24]))), min_size=1, max_size=300))
        pages += [((base + i) * span, order) for i in set(idx)]
    return version, ps, bo, PageSet.from_pages(ps, pages)


@needs_native
@settings(max_examples=60, deadline=None)
@given(_pagesets())
def test_random_trees_parse_the_same_both_ways(case: tuple[str, int, str, PageSet]) -> None:
    version, ps, bo, pages = case
    image, root, geom, lay = _tree(pages, version, ps, bo)
    got_c, tree_c = radix.read_radix(image, root, geom, lay)  # type: ignore[arg-type]
    with _numpy_only():
        got_n, tree_n = radix.read_radix(image, root, geom, lay)  # type: ignore[arg-type]
    assert got_c == pages == got_n
    assert tree_c.to_json() == tree_n.to_json()
    assert tree_c.placement == tree_n.placement


@needs_native
@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([512, 4096]),
    st.sampled_from(["little", "big"]),
    st.lists(st.tuples(st.integers(0, 1 << 22), st.integers(0, 3)), min_size=1, max_size=400),
    st.integers(0, 1 << 20),
)
def test_random_v1_maps_parse_the_same_both_ways(bitmap_bytes: int, bo: str, picks: list, base: int) -> None:
    """kho-v1 chunk lists: their bitmaps go through the same scan."""
    pages = PageSet.from_pages(
        4096, [((base + (i << 3 if order else i)) * (4096 << order), order) for i, order in picks]
    )
    lay = layout(4096, bo)
    root, out, _ = build_chunklist(pages, lay, PageAllocator([(1 << 44, 1 << 40)], 4096), bitmap_bytes=bitmap_bytes)
    image = PhysImage(out)
    got_c, cl_c = read_chunklist(image, root, lay, bitmap_bytes=bitmap_bytes)
    with _numpy_only():
        got_n, cl_n = read_chunklist(image, root, lay, bitmap_bytes=bitmap_bytes)
    assert got_c == pages == got_n
    assert cl_c == cl_n


@needs_native
def test_deferred_placement_is_the_walked_one() -> None:
    """The fast walk's leaves come into ``placement`` when it is first read,
    and a copy or an assignment sees the same entries."""
    pages = PageSet.from_pages(4096, [(k << 28, 0) for k in range(64)])
    image, root, geom, lay = _tree(pages, "kho-v4", 4096, "little")
    _, tree = radix.read_radix(image, root, geom, lay)  # type: ignore[arg-type]
    slow, _, _ = radix._walk_tables(image, root, geom, lay, Budget(), fast=False)  # type: ignore[arg-type]
    assert "_pending" in tree.__dict__ and tree.__dict__["_pending"]  # not put in yet
    copied = tree.copy()
    assert copied.placement == tree.placement == slow.placement
    assert sum(1 for lvl, _ in tree.placement if lvl == 0) == tree.leaves == 64
    assert tree == copied
    tree.placement = {}
    assert tree.placement == {} and copied.placement != {}


def test_switched_off_by_the_environment() -> None:
    code = (
        "from kho_formats.memory import leafscan, zhead, native; "
        "print(leafscan.available(), zhead.available(), native.enabled())"
    )
    env = dict(os.environ, KHO_FORMATS_NATIVE="0", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


@needs_native
def test_built_once_into_the_cache(tmp_path: Path) -> None:
    """A fresh cache: the library is compiled into it under its hashed name,
    and a second process loads it without compiling (the file is not rewritten)."""
    code = "from kho_formats.memory import leafscan; print(leafscan.available())"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    env.pop("KHO_FORMATS_NATIVE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    built = tmp_path / "kho-formats" / "native" / native.built_path(leafscan.SOURCE).name
    assert built.exists() and built.name.startswith("leafscan-")
    stamp = built.stat().st_mtime_ns
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert built.stat().st_mtime_ns == stamp


def test_hostile_trees_raise_the_same_without_c() -> None:
    """The malformed and hostile radix tests, rerun with the C helpers switched
    off: the numpy path raises what they expect (this run takes the C path)."""
    env = dict(os.environ, KHO_FORMATS_NATIVE="0", PYTHONPATH=str(ROOT))
    tests = [
        "tests/test_malformed_radix.py",
        "tests/test_malformed_chunklist.py",
        "tests/test_core_memmap.py",
        "tests/test_hostile_shared.py",
    ]
    got = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert got.returncode == 0, got.stdout[-3000:]
    assert " passed" in got.stdout and "skipped" not in got.stdout


def test_first_of_each_takes_sorted_input_with_repeats() -> None:
    """PhysImage.gather groups addresses by segment this way (np.unique is slow in numpy 2)."""
    from kho_formats.memory.distinct import first_of_each

    rng = np.random.default_rng(3)
    for a in (np.sort(rng.integers(-3, 40, 500)), rng.integers(0, 40, 500), np.arange(7), np.zeros(5, np.int64)):
        assert first_of_each(a).tolist() == np.unique(a, return_index=True)[1].tolist()
