#!/usr/bin/env python3
"""kho-formats benchmark suite.

    python benchmarks/run.py              # every workload, table on stdout
    python benchmarks/run.py --only a b   # some workloads
    python benchmarks/run.py --only a f --parse-only --repeat 9   # parse against the C walks only
    python benchmarks/run.py --json out.json

Generates the workloads (benchmarks/workloads.py), compiles the C baseline
(benchmarks/c/kho_baseline.c, ``cc -O2``), runs every operation several
times and prints: workload, operation, median seconds, peak memory, and the
ratio to the C baseline (ours / C; below 1.0 means faster than C).

The radix walk is timed three times in C: with the callback that collects
``(phys, order)`` records in an array grown by realloc (the "ratio"
column), with one that only counts the pages (the "C cnt" and "/cnt"
columns), and with one that writes every decoded page into an array
allocated and touched before the walk, as the kernel's callback stores into
memory it already has ("C pre" and "/pre": the yardstick of the parse
targets).  A "state" row times the whole ``state.parse`` of the same tree
(root FDT, sub-nodes and the map, from the image ``state.build`` made)
against the preallocated walk.  The C runs and ours alternate, one C run
of each kind before each of our runs, so that both sides see the same load
on a shared machine.

Timing is inside each process, from bytes in memory to the finished result:
for us ``time.perf_counter`` around the library call, for C
``clock_gettime`` around the walk/build (the C program reports it).
Peak memory: for us the tracemalloc peak of the operation (Python and numpy
allocations made by it; the input image is excluded), for C the process
peak RSS (its input included).  "metadata" is the size of the map's own
pages (radix nodes and leaves, or v1 chunks and bitmaps); "ranges" the
number of coalesced runs in the result.  The parse memory bound printed is
2 x metadata + 48 bytes per range + 2 MiB: the constant is the scratch of
the block-at-a-time bitmap scans (``kho_formats.memory.bits``), which does not
grow with the map.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

#: fixed working memory of the block-at-a-time scans, whatever the map's size
SCRATCH = 2 << 20

from workloads import ALLOC_BASE, WORKLOADS, Workload  # noqa: E402

from kho_formats.abi import get_version  # noqa: E402
from kho_formats.abi.layout import layout  # noqa: E402
from kho_formats.memory import leafscan  # noqa: E402
from kho_formats.memory.alloc import PageAllocator  # noqa: E402
from kho_formats.memory.image import PhysImage  # noqa: E402
from kho_formats.memory.pageset import PageSet  # noqa: E402
from kho_formats.model import state as kstate  # noqa: E402
from kho_formats.model.memmap.chunklist import build_chunklist, read_chunklist  # noqa: E402
from kho_formats.model.memmap.radix import build_radix, read_radix  # noqa: E402

OUT = HERE / "out"
C_SRC = HERE / "c" / "kho_baseline.c"
C_BIN = OUT / "kho_baseline"
ALLOC = [(ALLOC_BASE, 1 << 40)]
ROOT_FDT_PHYS = ALLOC_BASE - (1 << 20)


def median_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def peak_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def compile_baseline() -> Path | None:
    if not C_SRC.exists():
        return None
    OUT.mkdir(parents=True, exist_ok=True)
    if not C_BIN.exists() or C_BIN.stat().st_mtime < C_SRC.stat().st_mtime:
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(C_BIN), str(C_SRC)], check=True)
    return C_BIN


def c_run(args: list[str], repeat: int) -> dict | None:
    runs = []
    for _ in range(repeat):
        p = subprocess.run([str(C_BIN)] + args, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"  C baseline failed: {' '.join(args[:2])}: {p.stderr.strip()[:200]}", file=sys.stderr)
            return None
        line = [l for l in p.stdout.splitlines() if l.startswith("{")][-1]
        runs.append(json.loads(line))
    out = dict(runs[0])
    out["seconds"] = statistics.median(r["seconds"] for r in runs)
    out["all_seconds"] = [r["seconds"] for r in runs]
    return out


def interleaved(
    fn: Callable[[], object], c_args: list[list[str]], repeat: int
) -> tuple[float, object, list[dict | None], list[float]]:
    """Ours and the C runs alternating (each C command once, then ours,
    ``repeat`` times): medians of each, and the per-round ratios' inputs.
    On a loaded machine the two sides then see the same load."""
    times: list[float] = []
    result: object = None
    cs: list[list[dict]] = [[] for _ in c_args]
    failed = [False] * len(c_args)
    for _ in range(repeat):
        for k, args in enumerate(c_args):
            if not failed[k]:
                got = c_run(args, 1)
                if got is None:
                    failed[k] = True
                else:
                    cs[k].append(got)
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    outs: list[dict | None] = []
    for k, runs in enumerate(cs):
        if failed[k] or not runs:
            outs.append(None)
            continue
        out = dict(runs[0])
        out["all_seconds"] = [r["seconds"] for r in runs]
        out["seconds"] = statistics.median(out["all_seconds"])
        out["peak_rss_kb"] = max(r["peak_rss_kb"] for r in runs)
        outs.append(out)
    return statistics.median(times), result, outs, times


def write_pages_bin(pages: PageSet, path: Path) -> None:
    """(u64 phys, u64 order) records, ascending order then phys."""
    with open(path, "wb") as fh:
        for o in pages.orders:
            phys = pages.pages_of_order(o)
            rec = np.empty((phys.size, 2), dtype="<u8")
            rec[:, 0] = phys
            rec[:, 1] = o
            fh.write(rec.tobytes())


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f}"


def bench(w: Workload, repeat: int, c_ok: bool, rows: list[dict], parse_only: bool = False) -> None:
    t0 = time.perf_counter()
    pages = w.make()
    gen = time.perf_counter() - t0
    ver = get_version(w.version)
    lay = layout(w.page_size, "little")
    shift = lay.page_shift
    print(
        f"[{w.name}] {w.title}: {pages.num_pages} pages, {pages.num_runs} runs (generated in {gen:.2f}s)",
        file=sys.stderr,
    )

    def row(op: str, secs: float, peak: int | None, c: dict | None, extra: str = "") -> None:
        r = {
            "workload": w.name,
            "title": w.title,
            "op": op,
            "seconds": secs,
            "peak_bytes": peak,
            "c_seconds": c["seconds"] if c else None,
            "c_peak_bytes": c["peak_rss_kb"] * 1024 if c else None,
            "ratio": (secs / c["seconds"]) if c and c["seconds"] > 0 else None,
            "c_count_seconds": None,
            "count_ratio": None,
            "note": extra,
        }
        rows.append(r)
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(
            f"  {op:<8} {secs:8.3f}s peak {mib(peak or 0):>7} MiB   C {r['c_seconds'] if c else float('nan'):8.3f}s"
            f"  ratio {ratio}  {extra}",
            file=sys.stderr,
        )

    # build
    if ver.memory_map == "radix":
        geom = ver.radix(w.page_size)
        build_fn = lambda: build_radix(pages, geom, lay, PageAllocator(ALLOC, w.page_size))
    else:
        build_fn = lambda: build_chunklist(pages, lay, PageAllocator(ALLOC, w.page_size), bitmap_bytes=w.v1_bitmap)
    secs, (root, map_pages, _info) = median_time(build_fn, 1 if parse_only else repeat)
    metadata = len(map_pages) * w.page_size
    # parse input: the map pages as a loaded ELF core holds them (merged segments), like the C baseline's
    image = PhysImage.from_elf(PhysImage(map_pages).to_elf())
    pages_bin = OUT / f"{w.name}.pages.bin"
    elf = OUT / f"{w.name}.elf"
    c_build = None
    walk_args: list[list[str]] = []
    if c_ok:
        write_pages_bin(pages, pages_bin)
        elf.write_bytes(image.to_elf())
        if ver.memory_map == "radix":
            depth = str(geom.depth)
            if not parse_only:
                c_build = c_run(["radix-build", str(pages_bin), str(shift), depth], repeat)
            walk = ["radix-walk", str(elf), hex(root), str(shift), depth]
            walk_args = [walk, walk + ["--count"], walk + ["--prealloc"]]
        else:
            if not parse_only:
                c_build = c_run(["chunklist-build", str(pages_bin), str(shift), str(w.v1_bitmap)], repeat)
            walk_args = [["chunklist-walk", str(elf), hex(root), str(shift), str(w.v1_bitmap)]]
    if not parse_only:
        row("build", secs, peak_bytes(build_fn), c_build, f"metadata {mib(metadata)} MiB")
    # parse, alternating with the C walks
    if ver.memory_map == "radix":
        parse_fn = lambda: read_radix(image, root, geom, lay)
    else:
        parse_fn = lambda: read_chunklist(image, root, lay, bitmap_bytes=w.v1_bitmap)
    secs, (got, _), walks, ours = interleaved(parse_fn, walk_args, repeat)
    c_walk = walks[0] if walks else None
    c_count = walks[1] if len(walks) > 1 else None
    c_pre = walks[2] if len(walks) > 2 else None
    if got != pages:
        raise SystemExit(f"[{w.name}] parse(build(pages)) != pages")
    peak = peak_bytes(parse_fn)
    bound = 2 * metadata + 48 * got.num_runs + SCRATCH
    row("parse", secs, peak, c_walk, f"ranges {got.num_runs}; peak/(2*metadata+48B*ranges+2MiB) = {peak / bound:.2f}")
    rows[-1]["peak_bound_ratio"] = peak / bound
    rows[-1]["all_seconds"] = ours
    if c_walk:
        rows[-1]["c_all_seconds"] = c_walk["all_seconds"]
    if c_count and c_count["seconds"] > 0:
        rows[-1]["c_count_seconds"] = c_count["seconds"]
        rows[-1]["c_count_all_seconds"] = c_count["all_seconds"]
        rows[-1]["count_ratio"] = secs / c_count["seconds"]
        print(
            f"  parse vs counting walk: C {c_count['seconds']:.3f}s  ratio {rows[-1]['count_ratio']:.2f}"
            f"  (per round: {', '.join(f'{o / c:.2f}' for o, c in zip(ours, c_count['all_seconds']))})",
            file=sys.stderr,
        )
    if c_pre and c_pre["seconds"] > 0:
        rows[-1]["c_pre_seconds"] = c_pre["seconds"]
        rows[-1]["c_pre_all_seconds"] = c_pre["all_seconds"]
        rows[-1]["pre_ratio"] = secs / c_pre["seconds"]
        print(
            f"  parse vs preallocated walk: C {c_pre['seconds']:.3f}s  ratio {rows[-1]['pre_ratio']:.2f}",
            file=sys.stderr,
        )
    # the whole state.parse (root FDT, sub-nodes, the map) of the same tree, against the preallocated walk
    st = kstate.KhoState(
        version=w.version,
        page_size=w.page_size,
        preserved=pages,
        map_params={"v1_bitmap_bytes": w.v1_bitmap} if w.v1_bitmap else {},
        root_fdt_phys=ROOT_FDT_PHYS,
    )
    built = kstate.build(st, alloc=ALLOC)
    v1 = {"v1_bitmap": "512" if w.v1_bitmap == 512 else "page"} if w.v1_bitmap else {}
    state_fn = lambda: kstate.parse(built.root_fdt, built.image, page_size=w.page_size, **v1)
    pre_args = [walk_args[2]] if len(walk_args) > 2 else []
    secs, parsed, walks, ours = interleaved(state_fn, pre_args, repeat)
    if parsed.preserved != pages:  # type: ignore[attr-defined]
        raise SystemExit(f"[{w.name}] state.parse(build(state)) != pages")
    c_state = walks[0] if walks else None
    row("state", secs, peak_bytes(state_fn), c_state, "state.parse of the handover; C: preallocated walk")
    rows[-1]["all_seconds"] = ours
    if c_state:
        rows[-1]["c_all_seconds"] = c_state["all_seconds"]
        rows[-1]["c_pre_seconds"] = c_state["seconds"]
        rows[-1]["pre_ratio"] = rows[-1]["ratio"]
    if parse_only:
        return
    # convert v1 -> v4 (whole state: parse v1, convert, build v4)
    if ver.memory_map == "chunk-list":  # the v1 handover built above (st, built) is the input

        def convert_fn():
            s = kstate.parse(
                built.root_fdt, built.image, page_size=w.page_size, v1_bitmap="512" if w.v1_bitmap == 512 else "page"
            )
            return kstate.build(kstate.convert(s, "kho-v4"), alloc=[(ALLOC_BASE + (1 << 41), 1 << 40)])

        secs, conv = median_time(convert_fn, repeat)
        c_conv = None
        if c_walk and c_ok:
            c4 = c_run(
                ["radix-build", str(pages_bin), str(shift), str(get_version("kho-v4").radix(w.page_size).depth)], repeat
            )
            if c4:
                c_conv = {
                    "seconds": c_walk["seconds"] + c4["seconds"],
                    "peak_rss_kb": max(c_walk["peak_rss_kb"], c4["peak_rss_kb"]),
                }
        row("convert", secs, peak_bytes(convert_fn), c_conv, "v1 -> v4 (C: chunklist-walk + radix-build)")
    # kho inspect --json end to end
    d = OUT / f"{w.name}-fixture"
    d.mkdir(parents=True, exist_ok=True)
    (d / "root.dtb").write_bytes(built.root_fdt)
    (d / "image.elf").write_bytes(built.image.to_elf())
    cmd = [
        sys.executable,
        "-m",
        "kho_formats.cli",
        "inspect",
        str(d / "root.dtb"),
        "--mem",
        str(d / "image.elf"),
        "--page-size",
        str(w.page_size),
        "--json",
    ]
    if w.v1_bitmap:
        cmd += ["--v1-bitmap", "512" if w.v1_bitmap == 512 else "page"]
    times = []
    for _ in range(max(1, repeat - 1)):
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, cwd=HERE.parent)
        times.append(time.perf_counter() - t)
        if p.returncode != 0:
            print(f"  inspect failed: {p.stderr.decode()[:300]}", file=sys.stderr)
            break
    row("inspect", statistics.median(times), None, None, "subprocess, wall time incl. interpreter start")


def target_lines(rows: list[dict]) -> list[str]:
    """Issue 5's targets against the measured rows: one verdict line each."""

    def verdict(vals: list[tuple[str, float | None]], limit: float, fmt: str = "{:.2f}") -> str:
        got = [(w, v) for w, v in vals if v is not None]
        if not got:
            return "not measured"
        shown = ", ".join(f"{w} {fmt.format(v)}" for w, v in got)
        return f"{shown}: {'met' if all(v <= limit for _, v in got) else 'NOT MET'}"

    def ratios(op: str, names: list[str] | None = None) -> list[tuple[str, float | None]]:
        return [
            (r["workload"], r["ratio"]) for r in rows if r["op"] == op and (names is None or r["workload"] in names)
        ]

    peaks = [(r["workload"], r.get("peak_bound_ratio")) for r in rows if r["op"] == "parse"]
    counted = [
        (r["workload"], r.get("count_ratio")) for r in rows if r["op"] == "parse" and r["workload"] in ("a", "f")
    ]
    pre = [(f"{r['workload']} {r['op']}", r.get("pre_ratio")) for r in rows if r["workload"] in ("a", "s")]
    ops = sum(r["seconds"] for r in rows)
    return [
        "targets (ratio = ours / C):",
        f"  parse <= 1.0x C on (a) and (b):          {verdict(ratios('parse', ['a', 'b']), 1.0)}",
        f"  build <= 2.0x C:                         {verdict(ratios('build'), 2.0)}",
        f"  parse peak <= 2 x map + O(ranges) bound: {verdict(peaks, 1.0)}",
        f"  all operations under a minute:           {verdict([('total', ops)], 60.0, '{:.1f} s')}",
        "target (ratio = ours / C walk with a counting callback):",
        f"  parse <= 3.0x counting walk on (a), (f): {verdict(counted, 3.0)}",
        "target (ratio = ours / C walk storing every page into a preallocated array):",
        f"  parse, state.parse <= 1.5x on (a), (s):  {verdict(pre, 1.5)}",
        f"  moonshot <= 1.0x on (a), (s):            {verdict(pre, 1.0)}",
    ]


def round_lines(rows: list[dict]) -> list[str]:
    """min / median / max of ours, of the preallocated C walk and of their
    per-round ratio (the two alternate, so a round's pair saw the same load)."""

    def mmm(v: list[float], f: str) -> str:
        v = sorted(v)
        return " / ".join(f.format(x) for x in (v[0], statistics.median(v), v[-1]))

    out = []
    for r in rows:
        ours, c = (
            r.get("all_seconds"),
            r.get("c_pre_all_seconds") or (r.get("c_all_seconds") if r["op"] == "state" else None),
        )
        if not ours or not c:
            continue
        ms = lambda v: [x * 1e3 for x in v]
        out.append(
            f"  {r['workload']:<3}{r['op']:<6} ours ms {mmm(ms(ours), '{:.1f}'):>22}   C pre ms {mmm(ms(c), '{:.1f}'):>22}"
            f"   per round {mmm([o / k for o, k in zip(ours, c)], '{:.2f}')}"
        )
    return ["against the preallocated C walk (min / median / max):", *out] if out else []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="workload names (a b c d16 d64 e512 epage f s)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per operation (median reported)")
    ap.add_argument("--no-c", action="store_true", help="skip the C baseline")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--parse-only", action="store_true", help="time parse and the C walks only (no build, inspect)")
    a = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    c_ok = not a.no_c and compile_baseline() is not None
    rows: list[dict] = []
    t0 = time.perf_counter()
    for w in WORKLOADS:
        if a.only and w.name not in a.only:
            continue
        bench(w, a.repeat, c_ok, rows, a.parse_only)
    total = time.perf_counter() - t0
    ours = sum(r["seconds"] for r in rows)
    hdr = (
        f"{'workload':<9}{'operation':<10}{'seconds':>9}{'peak MiB':>10}{'C sec':>9}{'C MiB':>8}{'ratio':>7}"
        f"{'C cnt':>8}{'/cnt':>6}{'C pre':>8}{'/pre':>6}  note"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['workload']:<9}{r['op']:<10}{r['seconds']:>9.3f}{mib(r['peak_bytes'] or 0):>10}"
            f"{(r['c_seconds'] if r['c_seconds'] is not None else float('nan')):>9.3f}"
            f"{mib(r['c_peak_bytes'] or 0):>8}"
            f"{(format(r['ratio'], '.2f') if r['ratio'] is not None else '-'):>7}"
            f"{(format(r['c_count_seconds'], '.3f') if r.get('c_count_seconds') is not None else '-'):>8}"
            f"{(format(r['count_ratio'], '.2f') if r.get('count_ratio') is not None else '-'):>6}"
            f"{(format(r['c_pre_seconds'], '.3f') if r.get('c_pre_seconds') is not None else '-'):>8}"
            f"{(format(r['pre_ratio'], '.2f') if r.get('pre_ratio') is not None else '-'):>6}  {r['note']}"
        )
    print(f"\nsum of median operation times: {ours:.1f} s; whole run incl. generation, C and repeats: {total:.1f} s")
    print()
    print("\n".join(round_lines(rows)))
    print(f"radix leaf scan: {'C (kho_formats/memory/_leafscan.c)' if leafscan.available() else 'numpy (no C scan)'}")
    print()
    print("\n".join(target_lines(rows)))
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "total_seconds": total}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
