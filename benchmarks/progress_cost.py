#!/usr/bin/env python3
"""What the progress bar costs a long command (issue 22, item 4: under 1%).

    python benchmarks/progress_cost.py -- inspect DUMP             # any kho command line
    python benchmarks/progress_cost.py --repeat 7 -- luo extract CAPTURE -o OUT --force

Runs the command (``kho ARGS...``) ``--repeat`` times with the bar forced on
and as many times with it off, alternating (off, on, off, on, ...), each a
new interpreter.  "On" is what a terminal gets: the command's own rule
(:func:`kho_formats.progress.wanted`) is replaced by one that says yes, and
tqdm writes its bar to standard error, here a pipe that is read and thrown
away (tqdm draws the same bar into a pipe as into a terminal).  "Off" is the
command as a script runs it (``wanted`` says no).  The time is the wall time
of each process; printed: min/median/max of each, the overhead of the median
(on / off - 1) and of the per-round ratios, the load average before and after,
and how many bytes of bar were drawn.  Wall times of whole processes vary by
a few percent on a shared machine, more than the 1% to be shown, so ``--repeat``
more runs ("timed") count every call into the bar and time it inside the
process: their sum over the command's own time is the bar's share, an upper
bound (the timing adds its own cost).  Give the command no ``--json`` or
``--quiet``: both turn the bar off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

DRIVER = """
import atexit, sys, time
from kho_formats import cli, progress
mode = sys.argv.pop(1)
progress.wanted = lambda **kw: mode != "off"
if mode == "timed":  # every call into the bar counted and timed (the sum bounds what the bar costs)
    spent = [0, 0.0]
    real_update = progress._Bar.update

    def update(self, n=1):
        t = time.perf_counter()
        real_update(self, n)
        spent[0] += 1
        spent[1] += time.perf_counter() - t

    progress._Bar.update = update
    t0 = time.perf_counter()
    atexit.register(lambda: print(f"PROGRESS-COST {spent[0]} {spent[1]:.6f} {time.perf_counter() - t0:.6f}", file=sys.stderr))
sys.exit(cli.main(sys.argv[1:]))
"""


def env() -> dict[str, str]:
    """This checkout first on the path; bytecode cached, as an installed package has it."""
    out = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=str(HERE / "out" / "pycache"))
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


def once(mode: str, args: list[str]) -> tuple[float, bytes]:
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", DRIVER, mode, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env(),
        cwd=ROOT,
    )
    secs = time.perf_counter() - t
    if p.returncode not in (0, 1):
        raise SystemExit(f"kho {' '.join(args)}: exit {p.returncode}: {p.stderr.decode()[-500:]}")
    return secs, p.stderr


def stats(xs: list[float]) -> str:
    return f"{min(xs):.3f} / {statistics.median(xs):.3f} / {max(xs):.3f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("args", nargs=argparse.REMAINDER, help="the kho command line (after --)")
    a = ap.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    if not args:
        ap.error("give the kho command line after --")
    once("off", args)  # warm the page cache and the bytecode cache
    load0 = os.getloadavg()
    off: list[float] = []
    on: list[float] = []
    drawn = 0
    for _ in range(a.repeat):
        off.append(once("off", args)[0])
        secs, err = once("on", args)
        on.append(secs)
        drawn = max(drawn, len(err))
    inside: list[tuple[int, float, float]] = []
    for _ in range(a.repeat):
        err = once("timed", args)[1].decode(errors="replace")
        line = [x for x in err.splitlines() if x.startswith("PROGRESS-COST ")][-1].split()
        inside.append((int(line[1]), float(line[2]), float(line[3])))
    load1 = os.getloadavg()
    rounds = [b / c - 1 for b, c in zip(on, off)]
    over = statistics.median(on) / statistics.median(off) - 1
    print(f"kho {' '.join(args)}")
    print(f"  bar off  min/median/max {stats(off)}")
    print(f"  bar on   min/median/max {stats(on)}   ({drawn} bytes of bar on stderr)")
    print(
        f"  overhead of the median {over * 100:+.1f}%; per round min/median/max "
        f"{min(rounds) * 100:+.1f}% / {statistics.median(rounds) * 100:+.1f}% / {max(rounds) * 100:+.1f}%"
    )
    share = [spent / total for _, spent, total in inside]
    print(
        f"  inside the process: {inside[0][0]} bar updates taking {statistics.median(x[1] for x in inside) * 1e3:.1f} ms"
        f" (median) of the command's {statistics.median(x[2] for x in inside):.3f} s: min/median/max"
        f" {min(share) * 100:.2f}% / {statistics.median(share) * 100:.2f}% / {max(share) * 100:.2f}%"
    )
    print(f"  load {load0[0]:.2f} {load0[1]:.2f} -> {load1[0]:.2f} {load1[1]:.2f}; {a.repeat} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
