"""benchmarks/extract.py runs (tiny sizes, one round: no timing is asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import extract as bench  # noqa: E402


def test_extract_benchmark_checks_the_bytes_of_both_layouts(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    args = ["--sizes", "2M", "--orders", "0", "9", "--layouts", "contiguous", "scattered", "--repeat", "1"]
    assert bench.main([*args, "--dir", str(tmp_path / "cases"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert sorted((r["order"], r["layout"], r["cache"]) for r in rows) == [
        (o, layout, c) for o in (0, 9) for layout in ("contiguous", "scattered") for c in ("cold", "warm")
    ]
    assert all(r["ratio"] > 0 and len(r["extract_seconds"]) == 1 for r in rows)
    assert all(r["extract_maxrss_kib"][0] > 1024 for r in rows)  # the extract process's own peak, in KiB
    cases = tmp_path / "cases"
    assert not cases.exists() or not any(cases.iterdir())  # generated captures removed
