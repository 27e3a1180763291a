#!/usr/bin/env python3
"""How long the hostile-input and decode tests take, against the budgets they
used to assert (issue 19: speed belongs in the benchmark, not in a timed test).

    python benchmarks/hostile.py            # table on stdout; exit 1 if a budget is exceeded
    python benchmarks/hostile.py --json out.json

Each row runs one test (or all parametrizations of one test function) under
pytest and reads its call time from ``--durations``; the tests themselves
assert only what the code does (errors, bytes, memory peaks, structure).  The
figures depend on the machine's load: run it on a quiet machine and compare
runs, do not gate CI on it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: test (a pytest node id without parameters) -> budget in seconds for its slowest
#: parametrization, and what was slow before the fix the test guards
BUDGETS: dict[str, tuple[float, str]] = {
    "tests/test_luo_inspect.py::test_decode_of_the_capture": (1.0, "load + parse + decode of the LUO capture"),
    "tests/test_hostile_dumps.py::test_flattened_many_records_under_a_long_one_read_fast": (
        3.0,
        "indexing 50,001 overlapping flattened records + 2000 reads (the reads alone had a 1.0 s budget)",
    ),
    "tests/test_hostile_dumps.py::test_scan_does_not_read_every_magic_page_whole": (
        0.5,
        "root-FDT scan of 16 MiB of FDT-magic pages (1.1 s before)",
    ),
    "tests/test_hostile_files.py::test_bundle_naming_one_file_3000_times": (
        1.5,
        "bundle with 3000 segments of one file (2.6 s before)",
    ),
    "tests/test_hostile_inputs.py::test_scratch_areas_are_bounded": (10.0, "check of 60,000 scratch areas"),
    "tests/test_hostile_inputs.py::test_disjoint_regions_of_20k_regions": (
        2.0,
        "disjoint_regions of 20,000 regions (10-20 s quadratic)",
    ),
    "tests/test_hostile_inputs.py::test_hostile_specs_are_spec_errors": (5.0, "each hostile spec refused"),
    "tests/test_malformed_image.py::test_65535_program_headers_are_read": (5.0, "ELF with 65,535 program headers"),
    "tests/test_malformed_limits.py": (5.0, "each bounded parse: full leaves, 2000-chunk chains, huge FDT sizes"),
    "tests/test_malformed_vmalloc.py::test_total_pages_huge_costs_nothing_before_validation": (
        5.0,
        "vmalloc total_pages 2**32 - 1",
    ),
    "tests/test_luo_check.py::test_bounded": (2.0, "each cyclic or huge LUO structure refused"),
    "tests/test_real_dumps.py::test_inspect_full_dump_rss_and_time": (20.0, "kho inspect of a 1 GiB dump alone"),
    "tests/test_real_dumps.py::test_huge_sparse_files_are_not_read": (10.0, "8 GiB sparse files, never read"),
    "tests/test_malformed_radix.py": (5.0, "each malformed radix tree refused (shared/cyclic nodes)"),
    "tests/test_malformed_fdt.py": (3.0, "each malformed FDT refused"),
    "tests/test_fuzz_short.py::test_committed_corpus_replays_without_escapes": (2.0, "each fuzz-corpus input"),
}

_DURATION = re.compile(r"^\s*([0-9.]+)s\s+call\s+(\S+)", re.M)


def measure(nodes: list[str]) -> dict[str, float]:
    """The slowest call time of each node (over its parametrizations)."""
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0", "--durations-min=0", *nodes],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if r.returncode not in (0, 1):
        raise SystemExit(f"pytest exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    worst: dict[str, float] = {}
    for secs, nodeid in _DURATION.findall(r.stdout):
        base = nodeid.split("[", 1)[0]
        for node in nodes:
            if base == node or (node.endswith(".py") and base.startswith(node + "::")):
                worst[node] = max(worst.get(node, 0.0), float(secs))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    worst = measure(list(BUDGETS))
    rows = []
    for node, (budget, what) in BUDGETS.items():
        secs = worst.get(node)
        rows.append(
            {"test": node, "what": what, "seconds": secs, "budget": budget, "ok": secs is not None and secs <= budget}
        )
    width = max(len(r["test"]) for r in rows)
    print(f"{'test'.ljust(width)}  seconds  budget  verdict")
    for r in rows:
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.3f}"
        verdict = "ok" if r["ok"] else ("NOT RUN" if r["seconds"] is None else "OVER")
        print(f"{r['test'].ljust(width)}  {secs:>7}  {r['budget']:>6.1f}  {verdict}  ({r['what']})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
