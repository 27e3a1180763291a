"""The benchmark's verdict lines (its targets) from measured rows: the
logic only, on made-up figures; the timings themselves are never asserted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run_module():
    spec = importlib.util.spec_from_file_location("kho_bench_run", ROOT / "benchmarks" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def row(w, op, secs, ratio=None, peak=None, count_ratio=None):
    r = {"workload": w, "op": op, "seconds": secs, "ratio": ratio, "count_ratio": count_ratio}
    if peak is not None:
        r["peak_bound_ratio"] = peak
    return r


def test_targets_met_and_missed():
    run = _run_module()
    rows = [
        row("a", "parse", 0.1, 0.6, 0.5),
        row("a", "build", 0.1, 0.5),
        row("b", "parse", 0.0, 0.1, 0.2),
        row("c", "build", 0.05, 2.4),
        row("c", "parse", 0.07, 2.5, 1.3),
        row("a", "inspect", 1.0),
    ]
    lines = run.target_lines(rows)
    parse, build, peak, total = lines[1:5]
    assert parse.endswith("a 0.60, b 0.10: met")  # (c) parse is not a target
    assert "c 2.40" in build and build.endswith("NOT MET")
    assert "c 1.30" in peak and peak.endswith("NOT MET")
    assert total.endswith("total 1.3 s: met")


def test_targets_without_the_c_baseline_are_not_measured():
    run = _run_module()
    lines = run.target_lines([row("a", "parse", 0.1, None, 0.5), row("a", "build", 0.1, None)])
    assert lines[1].endswith("not measured") and lines[2].endswith("not measured")
    assert lines[3].endswith("a 0.50: met")
    lines = run.target_lines([row("a", "build", 70.0, 1.0)])
    assert lines[4].endswith("NOT MET")


def test_target_against_the_counting_walk():
    run = _run_module()
    rows = [
        row("a", "parse", 0.1, 0.5, 0.6, count_ratio=2.4),
        row("b", "parse", 0.0, 0.1, 0.2, count_ratio=9.0),  # not a target of the counting walk
        row("f", "parse", 0.1, 1.5, 0.9, count_ratio=2.9),
    ]
    lines = run.target_lines(rows)
    assert lines[5].startswith("target (ratio = ours / C walk")
    assert lines[6].endswith("a 2.40, f 2.90: met")
    rows[2]["count_ratio"] = 3.2
    assert run.target_lines(rows)[6].endswith("a 2.40, f 3.20: NOT MET")
    assert run.target_lines([row("a", "parse", 0.1, None, 0.5)])[6].endswith("not measured")


def test_target_against_the_preallocated_walk():
    run = _run_module()
    rows = [
        row("a", "parse", 0.1, 0.5, 0.6),
        row("a", "state", 0.1, 1.2),
        row("s", "parse", 0.02, 1.4),
        row("f", "parse", 0.1, 3.0),  # not a target of the preallocated walk
    ]
    for r, pre in zip(rows, (0.9, 1.2, 1.4, 3.0)):
        r["pre_ratio"] = pre
    lines = run.target_lines(rows)
    assert lines[7].startswith("target (ratio = ours / C walk storing")
    assert lines[8].endswith("a parse 0.90, a state 1.20, s parse 1.40: met")
    assert lines[9].endswith("NOT MET")  # the moonshot: 1.0x
    rows[2]["pre_ratio"] = 1.6
    assert run.target_lines(rows)[8].endswith("s parse 1.60: NOT MET")
