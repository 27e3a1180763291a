#!/usr/bin/env python3
"""Replay a recorded fuzz case (``crashes/*.json`` with ``seed`` and ``ops``, or
a ``*.khofuzz`` input) and show what escapes, with a traceback and timing.

    python fuzz/replay.py fuzz/crashes/slow-1.json [--profile]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.fuzz_kho import materialize, run_target
from fuzz.seeds import FuzzInput, all_seeds


def load(path: Path) -> FuzzInput:
    if path.suffix == ".khofuzz":
        return FuzzInput.loads(path.read_bytes())
    rec = json.loads(path.read_text())
    seeds = {s.name: s for s in all_seeds()}
    return materialize(seeds[rec["seed"]], rec["ops"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("case", type=Path)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    inp = load(a.case)
    t0 = time.perf_counter()
    try:
        if a.profile:
            import cProfile
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            out = run_target(inp)
            pr.disable()
            pstats.Stats(pr).sort_stats("cumulative").print_stats(25)
        else:
            out = run_target(inp)
        print(f"outcome: {out}  ({time.perf_counter() - t0:.3f} s)")
        return 0
    except Exception:
        traceback.print_exc()
        print(f"ESCAPED after {time.perf_counter() - t0:.3f} s")
        return 1


if __name__ == "__main__":
    sys.exit(main())
