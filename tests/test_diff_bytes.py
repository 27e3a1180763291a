"""``kho diff`` compares preserved memory as bytes, and folios only when the page sizes agree
(``kho-formats/diff/2``): one 4 MiB region is an order-10 folio at 4 KiB pages and an order-8 one
at 16 KiB pages, the same memory either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import kho_formats
from kho_formats.cli import main
from kho_formats.memory.intervals import range_bytes, range_difference, range_list
from kho_formats.memory.pageset import END_OF_SPACE, PageSet, merge_sorted_intervals
from kho_formats.ops.report import diff_report, render_diff

FIX = Path(__file__).resolve().parent.parent / "fixtures"
TRACE_BUF = 0x7C000000  # memblock's reserve_mem region in v4-4k and v4-16k: 4 MiB


def _diff(a: str, b: str) -> dict:
    return kho_formats.open(FIX / a).diff(kho_formats.open(FIX / b)).to_json()


def test_same_memory_at_two_page_sizes_is_not_a_difference(capsys) -> None:
    d = _diff("v4-4k", "v4-16k")
    assert d["schema"] == "kho-formats/diff/2"
    assert d["folios_compared"] is False and d["identical"] is False
    for side in ("only_in_a", "only_in_b"):
        x = d[side]
        assert x["folios"] is None and x["list"] is None and x["per_order"] is None
        assert x["bytes"] == sum(r["size"] for r in x["ranges"]) and x["ranges_total"] == len(x["ranges"])
        assert not any(r["start"] < TRACE_BUF + (4 << 20) and r["end"] > TRACE_BUF for r in x["ranges"]), side
    # what is left is what really differs: bytes one side preserves and the other does not
    a = kho_formats.open(FIX / "v4-4k").state.preserved
    b = kho_formats.open(FIX / "v4-16k").state.preserved
    pages = lambda ps: {p for s, e in ps.ranges() for p in range(s, e, 4096)}
    assert d["only_in_a"]["bytes"] == 4096 * len(pages(a) - pages(b)) > 0
    assert d["only_in_b"]["bytes"] == 4096 * len(pages(b) - pages(a)) > 0
    assert main(["diff", str(FIX / "v4-4k"), str(FIX / "v4-16k")]) == 1
    out = capsys.readouterr().out
    assert f"{TRACE_BUF:#x}" not in out
    assert "  only in A: 2 MiB in 2 ranges\n    0x74200000-0x74403000 (2 MiB)\n" in out
    assert "folios only in" not in out
    assert "note: page size differs: A 4 KiB; B 16 KiB (folios not compared" in out


def test_same_page_size_compares_folios_too(capsys) -> None:
    d = _diff("v4-4k", "v3-4k")
    assert d["folios_compared"] is True
    a = d["only_in_a"]
    assert {(f["phys"], f["order"]) for f in a["list"]} == {(0x78010000, 0), (0x78011000, 0), (TRACE_BUF, 10)}
    assert a["folios"] == 3 and a["per_order"] == {"0": 2, "10": 1} and a["folio_bytes"] == (4 << 20) + 8192
    assert a["ranges"] == [
        {"start": 0x78010000, "end": 0x78012000, "size": 8192},
        {"start": TRACE_BUF, "end": TRACE_BUF + (4 << 20), "size": 4 << 20},
    ]
    assert d["only_in_b"]["bytes"] == 0 and d["only_in_b"]["folios"] == 0
    main(["diff", str(FIX / "v4-4k"), str(FIX / "v3-4k")])
    out = capsys.readouterr().out
    assert "  only in A: 4 MiB in 2 ranges\n" in out and "  folios only in A: 3 (4 MiB)\n" in out
    assert "    0x7c000000 order 10\n" in out


def test_same_bytes_split_into_other_folios_differ_as_folios_only() -> None:
    st = kho_formats.open(FIX / "v4-4k").state
    a, b = st.copy(), st.copy()
    a.preserved = PageSet.from_pages(4096, [(0x40000000, 1)])
    b.preserved = PageSet.from_pages(4096, [(0x40000000, 0), (0x40001000, 0)])
    d = diff_report(a, b)
    assert d["preserved_identical"] is False and d["identical"] is False
    assert d["only_in_a"]["bytes"] == d["only_in_b"]["bytes"] == 0
    assert d["only_in_a"]["list"] == [{"phys": 0x40000000, "order": 1}] and d["only_in_b"]["folios"] == 2
    text = render_diff(d)
    assert "\n  only in A:" not in text and "\n  folios only in A: 1 (8 KiB)\n" in text
    # at different page sizes the same bytes are the same preserved memory
    c = st.copy()
    c.page_size = 16384
    c.preserved = PageSet.from_pages(16384, [(0x40000000, 0)])
    a.preserved = PageSet.from_pages(4096, [(0x40000000, 2)])
    d = diff_report(a, c)
    assert d["preserved_identical"] is True and d["identical"] is False  # the page sizes differ


def test_long_differences_list_the_first_items_and_count_the_rest() -> None:
    st = kho_formats.open(FIX / "v4-4k").state
    a, b = st.copy(), st.copy()
    a.preserved = PageSet.from_pages(4096, [(0x40000000 + 0x2000 * i, 0) for i in range(25)])
    b.preserved = PageSet.from_pages(4096, [(0x80000000, 0)])
    text = render_diff(diff_report(a, b))
    lines = text.splitlines()
    i = lines.index("  only in A: 100 KiB in 25 ranges")
    assert lines[i + 1 : i + 3] == ["    0x40000000-0x40001000 (4 KiB)", "    0x40002000-0x40003000 (4 KiB)"]
    assert lines[i + 21] == "    ... 5 more (--json lists up to 1000)"
    j = lines.index("  folios only in A: 25 (100 KiB)")
    assert (
        lines[j + 20] == f"    {0x40000000 + 0x2000 * 19:#x} order 0"
        and lines[j + 21] == "    ... 5 more (--json lists up to 1000)"
    )
    k = lines.index("  only in B: 4 KiB in 1 range")  # one range, said so
    assert lines[k + 1] == "    0x80000000-0x80001000 (4 KiB)" and not lines[k + 2].startswith("    ...")


def _brute(s: np.ndarray, e: np.ndarray) -> set[int]:
    return {x for a, b in zip(s.tolist(), e.tolist()) for x in range(a, b)}


def _random_ranges(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    pts = np.unique(rng.integers(0, 400, int(rng.integers(0, 40)))).astype(np.uint64)
    pts = pts[: pts.size // 2 * 2]
    return merge_sorted_intervals(pts[0::2].copy(), pts[1::2].copy())


def test_range_difference_matches_sets() -> None:
    rng = np.random.default_rng(19)
    for _ in range(400):
        a, b = _random_ranges(rng), _random_ranges(rng)
        s, e = range_difference(*a, *b)
        assert _brute(s, e) == _brute(*a) - _brute(*b)
        assert np.all(s[1:] > e[:-1]) and np.all(s < e)  # coalesced: sorted, disjoint, not touching
        assert range_bytes(s, e) == len(_brute(s, e))


def test_range_difference_at_the_top_of_the_space() -> None:
    u = lambda *v: np.array(v, dtype=np.uint64)
    top = 1 << 64
    s, e = range_difference(u(top - (1 << 20)), u(END_OF_SPACE), u(top - (1 << 19)), u(top - (1 << 18)))
    assert range_list(s, e) == [
        {"start": top - (1 << 20), "end": top - (1 << 19), "size": 1 << 19},
        {"start": top - (1 << 18), "end": top, "size": 1 << 18},
    ]
    assert range_bytes(s, e) == (1 << 19) + (1 << 18)
