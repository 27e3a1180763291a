#!/usr/bin/env python3
"""``kho luo extract`` against ``cp`` of the same bytes (issue 22, item 2).

    python benchmarks/extract.py                         # 512M and 8G, order 0 and 9, 5 runs each
    python benchmarks/extract.py --sizes 512M --orders 0 --layouts contiguous scattered --repeat 7

For each memfd size, folio order and layout a capture is generated
under ``--dir`` (default ``benchmarks/out/extract``; removed after its runs
unless ``--keep``, reused when kept): a
handover whose one LUO session holds one memfd of that size in folios of
that order, written as ``image.elf`` (the metadata: FDTs, memory map,
``memfd_luo_ser``, the folio array) plus ``data.raw`` (the folios' pages,
random bytes, given as ``--mem data.raw@PHYS``).  ``kho`` runs with its
bytecode cached (:func:`interpreter_env`).  The layouts:

* ``contiguous``: the folios lie in file order in physical memory, as the
  builder allocates them (adjacent folios are one run: a few large copies);
* ``scattered``: the folio addresses are shuffled among the folios of the
  file (what a host's order-0 page cache looks like: every folio its own
  copy).

Then, alternating, ``repeat`` times: ``cp data.raw OUT`` and ``kho luo
extract`` of the capture into a new directory, both on the file system of
``--dir`` (the same one for input and output), each timed as the wall time
of the whole process (``kho``'s interpreter start and imports included),
for each page-cache state of ``--cache``:

* ``warm``: the inputs (``data.raw``, ``image.elf``) read once just before
  the timed run, so they are in the page cache as far as memory allows;
* ``cold``: the inputs' pages dropped from the page cache just before
  (each written back, ``fdatasync``, then ``posix_fadvise(POSIX_FADV_DONTNEED)``
  of those two files only: other processes' cache is left alone;
  ``benchmarks/pagecache.py``), so both read the disk.

Printed: min/median/max of each, the throughput ratio ``cp time / extract
time`` (the target: >= 0.8), the peak resident size of each extract
(its VmHWM, written by the process itself at exit), the load average before
and after.  The first extract of each capture is compared with the expected
bytes (``data.raw`` itself for the contiguous layout).

The generator builds the handover with :func:`kho_formats.api.build` with
the memfd's contents left out of the image (a benchmark hook, below: the
folios' :class:`~kho_formats.model.clients.memfd.FolioContents` segments
are dropped), and writes ``data.raw`` with fast random bytes instead: the
builder's own generated contents (SHAKE-256) would take minutes at 8 GiB.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from pagecache import evict, warm  # noqa: E402

from kho_formats import api  # noqa: E402
from kho_formats.model.clients import memfd  # noqa: E402
from kho_formats.text import human_size  # noqa: E402

PS = 4096
#: where the folios are allocated (above 4 GiB, room for 16 GiB)
ALLOC = 1 << 32
SIZES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(s: str) -> int:
    return int(s[:-1]) * SIZES[s[-1].upper()] if s[-1].upper() in SIZES else int(s)


@contextlib.contextmanager
def folios_left_out(scatter: bool, seed: int, got: dict[str, Any]) -> Iterator[None]:
    """While building: memfd folios get no segment in the image (their
    addresses go to ``got``) and, with ``scatter``, their addresses are
    shuffled among the file's folios."""
    real_build = memfd.build_memfd

    def build(p: Any, ctx: Any, folio_phys: Sequence[int]) -> Any:
        phys = list(folio_phys)
        if scatter:
            phys = np.random.default_rng(seed).permutation(np.array(phys, dtype=np.uint64)).tolist()
        built = real_build(p, ctx, phys)
        got.setdefault("folios", []).extend(phys)
        built.segments[:] = [s for s in built.segments if not isinstance(s[1], memfd.FolioContents)]
        return built

    memfd.build_memfd = build  # type: ignore[assignment]
    try:
        yield
    finally:
        memfd.build_memfd = real_build  # type: ignore[assignment]


def generate(where: Path, size: int, order: int, layout: str) -> dict[str, Any]:
    """The capture for one case (kept: made again only when missing)."""
    info = where / "case.json"
    if info.exists():
        return json.loads(info.read_text())
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    spec = {
        "name": where.name,
        "version": "kho-v4",
        "page_size": PS,
        "arch": "x86_64",
        "seed": 22,
        "alloc": [{"start": hex(ALLOC), "size": hex(size + (256 << 20))}],
        "scratch": [{"start": "256M", "size": "64M"}],
        "blob": [
            {
                "name": "LUO",
                "type": "LUO",
                "liveupdate_num": 1,
                "sessions": [{"name": "vm-a", "files": [{"token": 1, "size": size, "folio_order": order}]}],
            }
        ],
    }
    got: dict[str, Any] = {}
    t = time.perf_counter()
    with folios_left_out(layout == "scattered", 22, got):
        h = api.build(spec)
        h.write(where / "fixture", c_header=False)
    folios = np.sort(np.array(got["folios"], dtype=np.uint64))
    lo, hi = int(folios[0]), int(folios[-1]) + (PS << order)
    if hi - lo != folios.size * (PS << order):
        raise SystemExit(f"{where}: the folios are not one block ({lo:#x}-{hi:#x}, {folios.size} folios)")
    for seg in (where / "fixture").glob("seg-*.bin"):
        seg.unlink()  # the bundle copy of image.elf's segments: not used
    rng = np.random.default_rng(1)
    with open(where / "data.raw", "wb") as fh:
        for a in range(0, hi - lo, 64 << 20):
            fh.write(rng.bytes(min(64 << 20, hi - lo - a)))
    out = {"size": size, "order": order, "layout": layout, "data_phys": lo, "data_bytes": hi - lo}
    out["generated_seconds"] = time.perf_counter() - t
    info.write_text(json.dumps(out))
    return out


def interpreter_env() -> dict[str, str]:
    """The environment ``kho`` runs in: this checkout first on the path, and
    bytecode cached (under ``benchmarks/out/pycache``) as an installed package
    has it, even where ``PYTHONDONTWRITEBYTECODE`` is set: else every run
    compiles the package again (0.3 s here)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=str(HERE / "out" / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


#: ``python -c`` code that runs ``kho`` and writes its VmHWM (KiB) to ``$KHO_BENCH_HWM`` at exit: the
#: process's own peak, where ``ru_maxrss`` of a child started by ``vfork`` counts this benchmark's size
HWM_MAIN = (
    "import atexit, os, runpy, sys\n"
    "def hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            open(os.environ['KHO_BENCH_HWM'], 'w').write(line.split()[1])\n"
    "atexit.register(hwm)\n"
    "sys.argv = ['kho', *sys.argv[1:]]\n"
    "runpy.run_module('kho_formats.cli', run_name='__main__')\n"
)


def run(cmd: list[str], **kw: Any) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t


def run_kho(args: list[str], env: dict[str, str], hwm: Path) -> tuple[float, int]:
    """Wall seconds of ``kho ARGS`` and its VmHWM in KiB."""
    hwm.unlink(missing_ok=True)
    took = run([sys.executable, "-c", HWM_MAIN, *args], env=dict(env, KHO_BENCH_HWM=str(hwm)), cwd=ROOT)
    return took, int(hwm.read_text())


def cache(paths: Sequence[Path], state: str) -> None:
    """Put ``paths`` in the page cache (``warm``: read through once) or out
    of it (``cold``: written back, then their pages dropped): :mod:`pagecache`."""
    for p in paths:
        (evict if state == "cold" else warm)(p)


def stats(xs: list[float]) -> str:
    return f"{min(xs):7.3f} {statistics.median(xs):7.3f} {max(xs):7.3f}"


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        while chunk := fh.read(16 << 20):
            h.update(chunk)
    return h.hexdigest()


def expected_sha256(where: Path, case: dict[str, Any]) -> str:
    """The memfd's bytes: for the scattered layout ``data.raw``'s folios in the file's order."""
    if case["layout"] == "contiguous":
        return sha256_file(where / "data.raw")
    mem = [str(where / "fixture" / "image.elf"), f"{where / 'data.raw'}@{case['data_phys']:#x}"]
    luo = api.open(where / "fixture", mem=mem).luo
    assert luo is not None
    _, f = next(iter(luo.files()))
    digest = luo.digest(f)  # what kho diff compares: the SHA-256 of the contents kho luo extract writes
    assert digest is not None
    return digest


def bench(
    base: Path,
    size: int,
    order: int,
    layout: str,
    repeat: int,
    rows: list[dict[str, Any]],
    keep: bool = False,
    caches: Sequence[str] = ("warm",),
) -> None:
    name = f"{human_size(size).replace(' ', '')}-o{order}-{layout}"
    where = base / name
    case = generate(where, size, order, layout)
    data = where / "data.raw"
    out = where / "out"
    inputs = [data, where / "fixture" / "image.elf"]
    extract = [
        "luo",
        "extract",
        str(where / "fixture"),
        "--mem",
        str(where / "fixture" / "image.elf"),
        "--mem",
        f"{data}@{case['data_phys']:#x}",
        "-o",
        str(out),
        "--quiet",
    ]
    env = interpreter_env()

    def clean() -> None:
        for p in (out, where / "cp.bin"):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    checked = False
    for state in caches:
        load0 = os.getloadavg()
        cps: list[float] = []
        exs: list[float] = []
        rss: list[int] = []
        for _ in range(repeat):
            clean()
            cache(inputs, state)
            cps.append(run(["cp", str(data), str(where / "cp.bin")]))
            (where / "cp.bin").unlink()  # the disk holds the input and one copy at a time
            cache(inputs, state)
            took, peak = run_kho(extract, env, where / "hwm.txt")
            exs.append(took)
            rss.append(peak)
            if not checked:
                got = sha256_file(out / "vm-a" / "0000000000000001.bin")
                if got != expected_sha256(where, case):
                    raise SystemExit(f"{name}: extracted bytes differ from the memfd's")
                checked = True
        load1 = os.getloadavg()
        ratio = statistics.median(cps) / statistics.median(exs)
        per_round = [c / e for c, e in zip(cps, exs)]
        row = {
            "case": name,
            "size": size,
            "order": order,
            "layout": layout,
            "cache": state,
            "cp_seconds": cps,
            "extract_seconds": exs,
            "extract_vmhwm_kib": rss,
            "ratio": ratio,
            "ratio_per_round": per_round,
            "load_before": load0,
            "load_after": load1,
        }
        rows.append(row)
        print(
            f"{name:<22} {state:<4} cp {stats(cps)}   extract {stats(exs)}   cp/extract {ratio:5.2f}"
            f" (rounds {min(per_round):.2f}-{max(per_round):.2f})   VmHWM {max(rss) >> 10} MiB"
            f"   load {load0[0]:.2f} -> {load1[0]:.2f}",
            flush=True,
        )
    clean()
    if not keep:
        shutil.rmtree(where)  # the disk holds one case at a time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", default=["512M", "8G"])
    ap.add_argument("--orders", nargs="*", type=int, default=[0, 9])
    ap.add_argument("--layouts", nargs="*", default=["contiguous"], choices=["contiguous", "scattered"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--cache", nargs="*", default=["warm", "cold"], choices=["warm", "cold"], help="page-cache states to time"
    )
    ap.add_argument("--dir", default=str(HERE / "out" / "extract"), help="captures and outputs (one file system)")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument(
        "--keep", action="store_true", help="keep the generated captures (default: each removed after its runs)"
    )
    a = ap.parse_args(argv)
    base = Path(a.dir)
    rows: list[dict[str, Any]] = []
    print(f"{os.cpu_count()} CPUs; times: min median max over {a.repeat} runs, seconds, wall clock per process")
    print(f"{'case':<22} {'page':<4} {'cp':>26}   {'extract':>31}")
    for size in map(parse_size, a.sizes):
        for order in a.orders:
            for layout in a.layouts:
                bench(base, size, order, layout, a.repeat, rows, a.keep, a.cache)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    met = all(r["ratio"] >= 0.8 for r in rows)
    shown = ", ".join(f"{r['case']} {r['cache']} {r['ratio']:.2f}" for r in rows)
    print(f"target cp/extract >= 0.8: {'met' if met else 'NOT MET'} ({shown})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
