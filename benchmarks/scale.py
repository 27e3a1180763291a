#!/usr/bin/env python3
"""kho-formats at the scale of the hosts LUO runs on (issue 22).

    nice -n 5 python benchmarks/scale.py                 # everything (about 30-40 minutes, ~45 GB of disk)
    python benchmarks/scale.py --quick                   # small sizes (under a minute)
    python benchmarks/scale.py --only luo stress         # some sections
    python benchmarks/scale.py --dump-size 16G --kdump-max-size 4G --runs 5 --plot scale.png --json scale.json

Sections (workloads from ``benchmarks/scalegen.py``, generated into a
temporary directory that is removed afterwards, ``--tmp`` to choose where):

``luo``     a VMM's handover: four sessions, each a 256 GiB guest-memory memfd
            in order-9 folios plus two small files (1 TiB preserved; the image
            holds only the metadata: ``fill = "absent"``): ``kho build``,
            ``inspect``, ``check``, ``capture``, ``diff``.
``stress``  10, 100, 1000 and 10,000 one-page memfds in sessions of five
            (10,000 files: 2000 sessions): LUO decode (``kho_formats.open`` +
            ``.luo``) and check (``Handover.check()``) in this process, and
            ``kho check``; time per file, and the marginal time per file
            between sizes (what must be constant).
``memfd``   peak memory of inspect, check, capture and diff at 1 GiB and 256 GiB
            guest-memory memfds (metadata only), and of ``kho luo extract`` of
            contents the image holds (``--extract-size``, order 9 and order 0)
            against ``cp`` of the same bytes on the same file system.
``dumps``   full dumps whose pages are not holes (every page data, the
            handover at half the size): an ELF vmcore written by kho's own
            writer and kdump files (zlib, snappy, zstd) of the same memory;
            root discovery in the dump alone (``kho inspect DUMP --json``: no
            debugfs, no ``--root-phys``) against ``cat DUMP > /dev/null``,
            round by round, warm and cold, and each kdump's against the ELF's
            in the same rounds; ``check``, ``capture`` and ``luo extract`` of
            the ELF dump and ``check`` and ``capture`` of each kdump for time
            and memory; at ``--rss-dump-size`` and ``--dump-size``.  Warm:
            before each timed file every dump file, this one too, is evicted
            from the page cache (``POSIX_FADV_DONTNEED``) and this one read
            in, so a warm run reads from memory even when the cache cannot
            hold two dumps, and always from pages a read brought in (not the
            ones the writer left); cold: the file itself is evicted first.
            ``mincore`` says how much of the file was resident before and
            after each run.
``radix``   the radix memory map at 1, 4 and 12 TiB preserved (all order 9,
            all order 0, and 1 GiB regions of random orders 0-18): build and
            parse in this process, ``kho check`` of the fixture for memory.

Every figure is min / median / max over ``--runs`` runs (default 5).  CLI
timings are wall time of a subprocess, interpreter start included (the
``startup`` row is that start alone).  Peak memory: the command's own
``ru_maxrss`` as GNU ``/usr/bin/time`` reports it (VmHWM: file pages mapped
from the input count, though the kernel may drop them at any time), and the
largest ``RssAnon`` sampled every 10 ms from ``/proc/PID/status`` (the
process's own memory: what must be held).  The load average is
printed before and after each section: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import scalegen as gen  # noqa: E402
from pagecache import evict, fadvise_works, resident, warm  # noqa: E402

import kho_formats  # noqa: E402
from kho_formats.abi import get_version  # noqa: E402
from kho_formats.abi.layout import layout  # noqa: E402
from kho_formats.memory.alloc import PageAllocator  # noqa: E402
from kho_formats.memory.image import LazyData, PhysImage  # noqa: E402
from kho_formats.model import state as kstate  # noqa: E402
from kho_formats.model.memmap.radix import build_radix, read_radix  # noqa: E402

GiB, TiB = gen.GiB, gen.TiB
KHO = [sys.executable, "-m", "kho_formats.cli"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": GiB, "T": TiB}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def human(n: float) -> str:
    for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{int(n)} B"


def _resident_note(before: list[float], after: list[float]) -> str:
    """How much of the file was in the page cache around the timed runs (percent)."""

    def pc(v: list[float], f: Callable[[list[float]], float]) -> str:
        ok = [x for x in v if x == x]
        return f"{100 * f(ok):.1f}%" if ok else "?"

    text = f"resident before: min {pc(before, min)} max {pc(before, max)}"
    return text + (f", after: min {pc(after, min)}" if after else "")


# -- measuring -----------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    #: ru_maxrss of the child (VmHWM), KiB
    hwm_kib: int
    #: largest RssAnon sampled, KiB
    anon_kib: int
    rc: int
    stderr: str = ""


def _child_of(pid: int) -> int | None:
    """The (first) child of ``pid``: the measured command under ``/usr/bin/time``."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return int(kids[0]) if kids else None
    except (OSError, ValueError):
        return None


def _sample(pid: int, timed: bool, box: dict[str, int], stop: threading.Event) -> None:
    """Largest RssAnon and VmHWM of the measured process, every 10 ms."""
    target: int | None = None if timed else pid
    while not stop.is_set():
        if target is None:
            target = _child_of(pid)
        if target is not None:
            try:
                with open(f"/proc/{target}/status") as fh:
                    for line in fh:
                        if line.startswith(("RssAnon:", "VmHWM:")):
                            key = line.split(":")[0]
                            box[key] = max(box.get(key, 0), int(line.split()[1]))
            except OSError:
                if not timed:
                    return
                target = None
        stop.wait(0.01)


#: GNU time reports the measured command's own ru_maxrss.  The benchmark's own
#: wait4() cannot: a child forked from this (large) process starts with this
#: process's high-water mark, which exec carries over into ru_maxrss.
TIME = shutil.which("time", path="/usr/bin:/bin")


def run_cmd(cmd: Sequence[str], *, stdout: Any = subprocess.DEVNULL, check: bool = True) -> Run:
    """One subprocess: wall time, peak RSS (VmHWM), peak RssAnon and exit status."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as tf:
        full = [TIME, "-f", "%M", "-o", tf.name, *map(str, cmd)] if TIME else list(map(str, cmd))
        t = time.perf_counter()
        p = subprocess.Popen(full, stdout=stdout, stderr=err, cwd=ROOT, env=ENV)
        box: dict[str, int] = {}
        stop = threading.Event()
        th = threading.Thread(target=_sample, args=(p.pid, bool(TIME), box, stop), daemon=True)
        th.start()
        rc = p.wait()
        secs = time.perf_counter() - t
        stop.set()
        th.join()
        err.seek(0)
        text = err.read().decode(errors="replace")
        hwm = box.get("VmHWM", 0)
        if TIME:
            got = tf.read().split()
            if got and got[-1].isdigit():
                hwm = int(got[-1])
    r = Run(secs, hwm, box.get("RssAnon", 0), rc, text)
    if check and r.rc != 0:
        raise SystemExit(f"command failed ({r.rc}): {' '.join(map(str, cmd))}\n{text[-2000:]}")
    return r


#: the ``kho`` arguments of each tool run on a dump (the dump, then ``-o OUT`` where there is one)
TOOL_ARGS: dict[str, tuple[str, ...]] = {
    "check": ("check",),
    "capture": ("capture", "--from-dump"),
    "luo extract": ("luo", "extract"),
}


def tool_cmd(op: str, dump: Path, outs: Sequence[Path]) -> list[str]:
    """The command of tool ``op`` (a key of :data:`TOOL_ARGS`) on ``dump``, ``-o OUTS``
    only where there are outputs."""
    return kho_cmd(*TOOL_ARGS[op], dump, *(["-o", *outs] if outs else []))


#: the workload directory, shown as ``$TMP`` in the commands printed
TMP: list[str] = []


def shell(cmd: Sequence[str]) -> str:
    text = " ".join(str(c) if " " not in str(c) else repr(str(c)) for c in cmd)
    return text.replace(TMP[0], "$TMP") if TMP else text


def kho_cmd(*args: object) -> list[str]:
    return KHO + [str(a) for a in args]


def shown(cmd: Sequence[str]) -> str:
    """A command as a reader would type it (``kho`` for the interpreter running the CLI)."""
    c = [str(x) for x in cmd]
    if c[: len(KHO)] == KHO:
        c = ["kho"] + c[len(KHO) :]
    return shell(c)


@dataclass
class Row:
    section: str
    workload: str
    op: str
    #: the size the figure is plotted against (bytes, files or TiB), and how it reads
    x: float
    size: str
    values: list[float]
    unit: str = "s"
    hwm_kib: int | None = None
    anon_kib: int | None = None
    cmd: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stats(self) -> tuple[float, float, float]:
        v = self.values
        return min(v), statistics.median(v), max(v)

    def to_json(self) -> dict[str, Any]:
        lo, med, hi = self.stats
        return {
            "section": self.section,
            "workload": self.workload,
            "op": self.op,
            "x": self.x,
            "size": self.size,
            "unit": self.unit,
            "runs": len(self.values),
            "min": lo,
            "median": med,
            "max": hi,
            "values": self.values,
            "peak_rss_mib": None if self.hwm_kib is None else self.hwm_kib / 1024,
            "peak_anon_mib": None if self.anon_kib is None else self.anon_kib / 1024,
            "command": self.cmd,
            "note": self.note,
            **self.extra,
        }


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.a = args
        self.runs: int = args.runs
        self.tmp = tmp
        self.rows: list[Row] = []
        self.loads: list[tuple[str, tuple[float, ...], tuple[float, ...]]] = []
        self.notes: list[str] = []
        self.cold = not args.warm_only and fadvise_works()
        #: the big files of the dumps section: all are evicted before a warm run (``_hot``)
        self.big: list[Path] = []

    def row(self, *a: Any, **k: Any) -> Row:
        r = Row(*a, **k)
        self.rows.append(r)
        lo, med, hi = r.stats
        mem = "" if r.hwm_kib is None else f"  rss {r.hwm_kib / 1024:.0f} MiB (anon {(r.anon_kib or 0) / 1024:.0f})"
        print(
            f"  [{r.section}] {r.workload} {r.op} {r.size}: {lo:.4g} / {med:.4g} / {hi:.4g} {r.unit}{mem}",
            file=sys.stderr,
            flush=True,
        )
        return r

    def cli(
        self, section: str, workload: str, op: str, x: float, size: str, cmd: list[str], note: str = "", **kw: Any
    ) -> Row:
        """``cmd`` run ``self.runs`` times."""
        runs = [self._one(cmd, kw.get("before")) for _ in range(self.runs)]
        return self.row(
            section,
            workload,
            op,
            x,
            size,
            [r.seconds for r in runs],
            hwm_kib=max(r.hwm_kib for r in runs),
            anon_kib=max(r.anon_kib for r in runs),
            cmd=shown(cmd),
            note=note,
        )

    def _one(self, cmd: list[str], before: Callable[[], None] | None = None) -> Run:
        if before is not None:
            before()
        return run_cmd(cmd, check=True)

    def timed(
        self,
        section: str,
        workload: str,
        op: str,
        x: float,
        size: str,
        fn: Callable[[], object],
        cmd: str,
        note: str = "",
    ) -> Row:
        """``fn`` in this process, ``self.runs`` times (perf_counter)."""
        vals = []
        for _ in range(self.runs):
            t = time.perf_counter()
            fn()
            vals.append(time.perf_counter() - t)
        return self.row(section, workload, op, x, size, vals, cmd=cmd, note=note)

    def section(self, name: str, fn: Callable[[], None]) -> None:
        before = os.getloadavg()
        print(f"[{name}] load {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        fn()
        after = os.getloadavg()
        print(f"[{name}] done in {time.perf_counter() - t:.0f} s, load {after[0]:.2f}", file=sys.stderr, flush=True)
        self.loads.append((name, before, after))

    # -- sections ------------------------------------------------------------------------------

    def startup(self) -> None:
        self.cli("base", "-", "startup", 0, "-", kho_cmd("--version"), "interpreter start + CLI import")

    def luo(self) -> None:
        mb = self.a.memfd_size
        d = self.tmp / "luo"
        d.mkdir()
        spec = d / "vmm.json"
        spec.write_text(json.dumps(gen.vmm_spec(4, mb)))
        fx, cap = d / "fx", d / "cap"
        label = f"4 x {human(mb)} memfds (order 9, absent) + 8 small files"
        total = 4 * mb

        def clean(*paths: Path) -> Callable[[], None]:
            return lambda: [shutil.rmtree(p, ignore_errors=True) for p in paths] and None

        self.cli("luo", label, "build", total, human(total), kho_cmd("build", spec, "-o", fx), before=clean(fx))
        img = (fx / "image.elf").stat().st_size
        self.notes.append(f"luo: the {human(total)} handover's image.elf is {human(img)} (metadata only)")
        self.cli("luo", label, "inspect --json", total, human(total), kho_cmd("inspect", fx, "--json"))
        self.cli("luo", label, "inspect", total, human(total), kho_cmd("inspect", fx))
        self.cli("luo", label, "check", total, human(total), kho_cmd("check", fx))
        self.cli(
            "luo",
            label,
            "capture",
            total,
            human(total),
            kho_cmd("capture", "--from-dump", fx / "image.elf", "-o", cap),
            "root found by scanning the image",
            before=clean(cap),
        )
        r = run_cmd(kho_cmd("diff", fx, cap), check=False)
        if r.rc != 0:
            raise SystemExit(f"kho diff of the fixture and its capture: exit {r.rc}\n{r.stderr}")
        self.cli("luo", label, "diff", total, human(total), kho_cmd("diff", fx, cap), "fixture vs its capture")
        self.timed(
            "luo",
            label,
            "open + decode (api)",
            total,
            human(total),
            lambda: kho_formats.open(fx).luo,
            shell([f"kho_formats.open('{fx}').luo"]),
        )
        shutil.rmtree(d)

    def stress(self) -> None:
        d = self.tmp / "stress"
        d.mkdir()
        prev: tuple[int, float, float] | None = None
        for n in self.a.files:
            fx = d / f"fx{n}"
            t = time.perf_counter()
            kho_formats.build(gen.stress_spec(n)).write(fx)
            built = time.perf_counter() - t
            label = f"{n} files / {-(-n // 5)} sessions"
            dec = self.timed(
                "stress",
                label,
                "open + decode (api)",
                n,
                str(n),
                lambda fx=fx: kho_formats.open(fx).luo,
                shell([f"kho_formats.open('{fx}').luo"]),
                f"built in {built:.1f} s",
            )
            chk = self.timed(
                "stress",
                label,
                "open + check (api)",
                n,
                str(n),
                lambda fx=fx: kho_formats.open(fx).check(),
                shell([f"kho_formats.open('{fx}').check()"]),
            )
            cli = self.cli("stress", label, "kho check", n, str(n), kho_cmd("check", fx))
            for r in (dec, chk, cli):
                med = r.stats[1]
                r.extra["per_file_us"] = med / n * 1e6
            if prev is not None:
                pn, pdec, pchk = prev
                dec.extra["marginal_us"] = (dec.stats[1] - pdec) / (n - pn) * 1e6
                chk.extra["marginal_us"] = (chk.stats[1] - pchk) / (n - pn) * 1e6
            prev = (n, dec.stats[1], chk.stats[1])
            shutil.rmtree(fx)
        shutil.rmtree(d)

    def memfd(self) -> None:
        d = self.tmp / "memfd"
        d.mkdir()
        for mb in self.a.rss_memfd_sizes:
            spec = d / f"one-{mb}.json"
            spec.write_text(json.dumps(gen.vmm_spec(1, mb)))
            fx, cap = d / f"fx{mb}", d / f"cap{mb}"
            run_cmd(kho_cmd("build", spec, "-o", fx))
            label = f"1 x {human(mb)} memfd (order 9, absent)"
            for op, cmd in (
                ("inspect --json", kho_cmd("inspect", fx, "--json")),
                ("check", kho_cmd("check", fx)),
                ("capture", kho_cmd("capture", "--from-dump", fx / "image.elf", "-o", cap)),
                ("diff", kho_cmd("diff", fx, fx)),
            ):
                self.cli("memfd", label, op, mb, human(mb), cmd, before=lambda cap=cap: shutil.rmtree(cap, True))
            shutil.rmtree(fx)
            shutil.rmtree(cap, True)
        for order in (9, 0):
            for mb in self.a.extract_sizes:
                if order == 0 and mb // 4096 > 1 << 21:
                    self.notes.append(
                        f"memfd: no order-0 extract at {human(mb)}: a spec memfd lists at most 2 Mi folios"
                    )
                    continue
                self._extract(d, mb, order)
        shutil.rmtree(d)

    def _extract(self, d: Path, mb: int, order: int) -> None:
        spec = d / f"ex-{mb}-{order}.json"
        s = gen.vmm_spec(1, mb, folio_order=order)
        s["blob"][0]["sessions"][0]["files"] = s["blob"][0]["sessions"][0]["files"][:1]
        spec.write_text(json.dumps(s))
        fx = d / f"ex{mb}-{order}"
        run_cmd(kho_cmd("build", spec, "-o", fx))
        contents = d / f"contents-{mb}-{order}.elf"
        file_bytes = write_folio_contents(fx, contents)
        out, copy = d / f"out{mb}-{order}", d / f"copy-{mb}-{order}.elf"
        label = f"1 x {human(mb)} memfd, order {order}, contents in the image"
        cmd = kho_cmd("luo", "extract", fx, "--mem", fx / "image.elf", "--mem", contents, "-o", out)
        cp = ["cp", str(contents), str(copy)]
        ext_runs, cp_runs = [], []
        for _ in range(self.runs):
            shutil.rmtree(out, True)
            ext_runs.append(run_cmd(cmd))
            got = out / "vm-0" / f"{0x1000:016x}.bin"
            if got.stat().st_size != mb:
                raise SystemExit(f"{got}: {got.stat().st_size} bytes, expected {mb}")
            shutil.rmtree(out, True)
            gen.remove(copy)
            cp_runs.append(run_cmd(cp))
            gen.remove(copy)
        er = self.row(
            "memfd",
            label,
            "luo extract",
            mb,
            human(mb),
            [r.seconds for r in ext_runs],
            hwm_kib=max(r.hwm_kib for r in ext_runs),
            anon_kib=max(r.anon_kib for r in ext_runs),
            cmd=shown(cmd),
            note=f"{file_bytes} bytes of folio contents from a second --mem image",
        )
        cr = self.row(
            "memfd",
            label,
            "cp (same bytes)",
            mb,
            human(mb),
            [r.seconds for r in cp_runs],
            hwm_kib=max(r.hwm_kib for r in cp_runs),
            anon_kib=max(r.anon_kib for r in cp_runs),
            cmd=shell(cp),
        )
        ratios = [c.seconds / e.seconds for e, c in zip(ext_runs, cp_runs)]
        self.row(
            "memfd",
            label,
            "throughput / cp",
            mb,
            human(mb),
            ratios,
            unit="x",
            note="cp time / extract time per round (target >= 0.8)",
        )
        er.extra["cp_median"] = cr.stats[1]
        shutil.rmtree(fx)
        gen.remove(contents)

    def dumps(self) -> None:
        from kho_formats.memory import zhead

        # the C zlib head decoder is built on first use (into the user's cache): built here, before
        # any timed run, so that the runs measure the scan and not the compiler
        native = zhead.available()
        self.notes.append(
            "dumps: zlib kdump heads and zstd first bytes read by the C decoder (memory/_zhead.c), "
            f"each call split over {zhead.threads()} threads ({os.cpu_count()} CPUs; {zhead.THREADS_ENV} sets it)"
            if native
            else "dumps: no C decoder (no compiler, or KHO_FORMATS_NATIVE=0): zlib kdump heads inflated in Python"
        )
        sizes = sorted(set(self.a.rss_dump_sizes + [self.a.dump_size]))
        for size in sizes:
            self._dump(size)

    def _dump(self, size: int) -> None:
        d = self.tmp / f"dump{size}"
        d.mkdir()
        t = time.perf_counter()
        _h, mem = gen.dump_memory(size)
        elf = d / "vmcore"
        gen.write_elf_dump(elf, mem)
        self.big.append(elf)
        self.notes.append(f"dumps: ELF vmcore of {human(size)} written in {time.perf_counter() - t:.0f} s")
        hs = human(size)
        self._discovery("ELF vmcore", elf, size, cold=False)
        if self.cold:
            self._discovery("ELF vmcore", elf, size, cold=True)
        cap, out = d / "cap", d / "luo"
        self._tools("ELF vmcore", elf, size, [("check", []), ("capture", [cap]), ("luo extract", [out])])
        if size <= self.a.kdump_max_size:
            for comp in self.a.kdump:
                kd = d / f"kdump.{comp}"
                t = time.perf_counter()
                n = gen.write_kdump_dump(kd, mem, comp)
                self.big.append(kd)
                self.notes.append(f"dumps: kdump {comp} of {hs}: {human(n)} written in {time.perf_counter() - t:.0f} s")
                self._discovery(f"kdump {comp}", kd, size, cold=False, elf=elf)
                if self.cold:
                    self._discovery(f"kdump {comp}", kd, size, cold=True, elf=elf)
                self._tools(f"kdump {comp}", kd, size, [("check", []), ("capture", [cap])])
                self.big.remove(kd)
                gen.remove(kd)
        else:
            self.notes.append(f"dumps: kdump not measured at {hs} (--kdump-max-size {human(self.a.kdump_max_size)})")
        self.big.remove(elf)
        shutil.rmtree(d)

    def _tools(self, what: str, path: Path, size: int, ops: list[tuple[str, list[Path]]]) -> None:
        """``kho check``, ``capture`` and ``luo extract`` of a dump (root found in it), warm:
        every big file evicted and this one read in before each run (``_hot``)."""
        for op, outs in ops:
            cmd = tool_cmd(op, path, outs)
            got: list[float] = []

            def before(outs: list[Path] = outs, got: list[float] = got) -> None:
                for p in outs:
                    shutil.rmtree(p, True)
                got.append(self._hot(path))

            r = self.cli("dumps", what, op, size, human(size), cmd, "root found in the dump; warm", before=before)
            r.note += f"; {_resident_note(got, [])}"
            r.extra["resident_before"] = got
            for p in outs:
                shutil.rmtree(p, True)

    def _hot(self, path: Path) -> float:
        """Every big file of the section evicted from the page cache, ``path`` too, then
        ``path`` read into it (once more if it did not all stay): the fraction of ``path``
        resident after (NaN where ``mincore`` cannot be asked).

        ``path`` itself is evicted first so that every warm run finds the same cache: pages
        read in by a read (readahead puts them in large folios on ext4), not the pages its
        writer left (small folios here): a mapped scan of a 4 GiB ELF vmcore took 0.34-0.43 s
        on the writer's pages and 0.24-0.28 s on pages read in, both 100% resident."""
        for f in {*self.big, path}:  # each once: path is often one of them
            if f.exists():
                evict(f)
        got = None
        for _ in range(2):
            warm(path)
            got = resident(path)
            if got is None or got >= 0.999:
                break
        return float("nan") if got is None else got

    def _discovery(self, what: str, path: Path, size: int, *, cold: bool, elf: Path | None = None) -> Row:
        """Root discovery (``kho inspect DUMP --json``) against ``cat DUMP``, round by round;
        with ``elf``, that (ELF vmcore) dump's discovery in the same rounds.

        Warm: before each round's ``cat`` (and the ELF's discovery) every big file of the
        section, this one too, is evicted from the page cache and the file read into it (``_hot``), so
        the kdump / ELF ratio of a round compares two runs from memory even when the page
        cache cannot hold both files.  Cold: the file is evicted (``evict``) before each
        timed command.  The fraction of the file in the page cache is taken right before
        and right after each timed command."""
        inspect = kho_cmd("inspect", path, "--json")
        cat = ["cat", str(path)]
        ours, cats, elfs = [], [], []
        before: list[float] = []  # resident fractions right before each timed command
        after: list[float] = []
        elf_before: list[float] = []
        elf_after: list[float] = []

        def one(cmd: list[str], f: Path, fresh: bool, b: list[float], a: list[float]) -> Run:
            if cold:
                evict(f)
            elif fresh:
                self._hot(f)
            r0 = resident(f)
            if not cold and r0 is not None and r0 < 0.999:
                r0 = self._hot(f)
            x = run_cmd(cmd)
            r1 = resident(f)
            b.append(float("nan") if r0 is None else r0)
            a.append(float("nan") if r1 is None else r1)
            return x

        for _ in range(self.runs):
            if elf is not None:
                elfs.append(one(kho_cmd("inspect", elf, "--json"), elf, True, elf_before, elf_after))
            cats.append(one(cat, path, True, before, after))
            ours.append(one(inspect, path, False, before, after))
        tag = "cold" if cold else "warm"
        hs = human(size)

        def discovery_row(
            label: str, runs: list[Run], cmd: list[str], note: str, b: list[float], a: list[float]
        ) -> Row:
            row = self.row(
                "dumps",
                what,
                f"{label} ({tag})",
                size,
                hs,
                [x.seconds for x in runs],
                hwm_kib=max(x.hwm_kib for x in runs),
                anon_kib=max(x.anon_kib for x in runs),
                cmd=shown(cmd) + " > /dev/null",
                note=f"{note}; {_resident_note(b, a)}",
            )
            row.extra.update(resident_before=b, resident_after=a)
            return row

        r = discovery_row("root discovery", ours, inspect, f"{human(path.stat().st_size)} file", before, after)
        self.row("dumps", what, f"cat ({tag})", size, hs, [x.seconds for x in cats], cmd=shell(cat) + " > /dev/null")
        self.row(
            "dumps",
            what,
            f"discovery / cat ({tag})",
            size,
            hs,
            [o.seconds / c.seconds for o, c in zip(ours, cats)],
            unit="x",
            note="per round",
        )
        if elf is not None:
            discovery_row(
                "ELF's discovery, same rounds",
                elfs,
                kho_cmd("inspect", elf, "--json"),
                "the ELF vmcore of the same memory",
                elf_before,
                elf_after,
            )
            self.row(
                "dumps",
                what,
                f"discovery / ELF's ({tag})",
                size,
                hs,
                [o.seconds / x.seconds for o, x in zip(ours, elfs)],
                unit="x",
                note="per round, the ELF vmcore of the same memory (target <= 2)",
            )
        return r

    def radix(self) -> None:
        d = self.tmp / "radix"
        d.mkdir()
        for shape in ("order9", "order0", "mixed"):
            for tib in self.a.radix_tib:
                self._radix_one(shape, tib, d)
        shutil.rmtree(d)

    def _radix_one(self, shape: str, tib: float, d: Path) -> None:
        lay = layout(4096, "little")
        geom = get_version("kho-v4").radix(4096)
        pages = gen.radix_pages(shape, int(tib * TiB))

        def alloc() -> PageAllocator:
            return PageAllocator([(1 << 46, 1 << 40)], 4096)

        root, map_pages, _ = build_radix(pages, geom, lay, alloc())
        img = PhysImage(map_pages)
        meta = len(map_pages) * 4096
        label = f"{shape}, {tib:g} TiB"
        self.timed(
            "radix",
            label,
            "build",
            tib,
            f"{tib:g} TiB",
            lambda: build_radix(pages, geom, lay, alloc()),
            "kho_formats.model.memmap.radix.build_radix",
            f"metadata {human(meta)}",
        )

        def parse() -> None:
            got, _ = read_radix(img, root, geom, lay)
            if got != pages:
                raise SystemExit(f"radix {label}: parse(build(pages)) != pages")

        self.timed(
            "radix",
            label,
            "parse",
            tib,
            f"{tib:g} TiB",
            parse,
            "kho_formats.model.memmap.radix.read_radix",
            f"{pages.num_runs} runs",
        )
        st = kstate.KhoState(version="kho-v4", page_size=4096, preserved=pages, root_fdt_phys=(1 << 46) - (1 << 20))
        built = kstate.build(st, alloc=[(1 << 46, 1 << 40)])
        fx = d / f"{shape}-{tib:g}"
        fx.mkdir()
        (fx / "root.dtb").write_bytes(built.root_fdt)
        with open(fx / "image.elf", "wb") as fh:
            built.image.write_elf(fh)
        self.cli(
            "radix",
            label,
            "kho check",
            tib,
            f"{tib:g} TiB",
            kho_cmd("check", fx / "root.dtb", "--mem", fx / "image.elf"),
            f"metadata {human(meta)}",
        )
        shutil.rmtree(fx)


def write_folio_contents(fx: Path, out: Path) -> int:
    """An ELF core holding the folio contents of the first memfd of fixture ``fx``
    (built with ``fill = "absent"``): page k of the file is pool page
    ``pool_index(k)``; bytes written."""
    h = kho_formats.open(fx)
    luo = h.luo
    assert luo is not None
    m = luo.sessions[0].files[0].decoded
    import numpy as np

    ps = h.page_size
    order = np.argsort(m.phys)
    phys = m.phys[order].astype(np.int64)
    index = m.index[order].astype(np.int64)
    span_lo = int(phys[0])
    npages = 1 << int(m.order[0])
    span_hi = int(phys[-1]) + npages * ps
    pool = gen.pool(ps)

    class Contents(LazyData):
        def fetch(self, off: int, n: int) -> bytes:
            a, b = (span_lo + off) // ps, -(-(span_lo + off + n) // ps)
            pg = np.arange(a, b, dtype=np.int64) * ps
            k = np.searchsorted(phys, pg, side="right") - 1
            file_page = index[k] + (pg - phys[k]) // ps
            data = pool[gen.pool_index(file_page.astype(np.uint64))].reshape(-1)
            s = span_lo + off - a * ps
            return data[s : s + n].tobytes()

    img = PhysImage([(span_lo, Contents(span_hi - span_lo))])
    with open(out, "wb") as fh:
        img.write_elf(fh)
    return span_hi - span_lo


# -- output ----------------------------------------------------------------------------------------


def table(rows: list[Row]) -> list[str]:
    hdr = ["#", "section", "workload", "operation", "size", "runs", "min", "median", "max", "unit", "RSS MiB", "anon"]
    body = []
    for i, r in enumerate(rows, 1):
        lo, med, hi = r.stats
        body.append(
            [
                str(i),
                r.section,
                r.workload,
                r.op,
                r.size,
                str(len(r.values)),
                f"{lo:.4g}",
                f"{med:.4g}",
                f"{hi:.4g}",
                r.unit,
                "-" if r.hwm_kib is None else f"{r.hwm_kib / 1024:.0f}",
                "-" if r.anon_kib is None else f"{r.anon_kib / 1024:.0f}",
            ]
        )
    w = [max(len(x[i]) for x in [hdr] + body) for i in range(len(hdr))]
    num = {0, 5, 6, 7, 8, 10, 11}

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w[i]) if i in num else c.ljust(w[i]) for i, c in enumerate(cells))

    return [fmt(hdr), "  ".join("-" * x for x in w)] + [fmt(b) for b in body]


def per_file_table(rows: list[Row]) -> list[str]:
    got: dict[int, dict[str, Row]] = {}
    for r in rows:
        if r.section == "stress":
            got.setdefault(int(r.x), {})[r.op] = r
    if not got:
        return []
    out = [
        f"{'files':>6}  {'decode s':>9}  {'us/file':>8}  {'marginal':>8}  {'check s':>8}  {'us/file':>8}  "
        f"{'marginal':>8}  {'kho check s':>11}  {'us/file':>8}",
    ]
    for n in sorted(got):
        g = got[n]
        dec, chk, cli = g["open + decode (api)"], g["open + check (api)"], g["kho check"]

        def m(r: Row) -> str:
            v = r.extra.get("marginal_us")
            return "-" if v is None else f"{v:.1f}"

        out.append(
            f"{n:>6}  {dec.stats[1]:>9.4f}  {dec.extra['per_file_us']:>8.1f}  {m(dec):>8}  {chk.stats[1]:>8.4f}  "
            f"{chk.extra['per_file_us']:>8.1f}  {m(chk):>8}  {cli.stats[1]:>11.3f}  {cli.extra['per_file_us']:>8.1f}"
        )
    out.append(
        "(medians; us/file = time / files; marginal = the time added per file since the previous size: "
        "constant when the cost per file is)"
    )
    return out


def plot(rows: list[Row], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install -e '.[bench]'") from None
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))

    def series(ax: Any, pick: Callable[[Row], str | None], ylab: str, xlab: str, y: Callable[[Row], float]) -> None:
        lines: dict[str, list[tuple[float, float]]] = {}
        for r in rows:
            key = pick(r)
            if key is not None:
                lines.setdefault(key, []).append((r.x, y(r)))
        for key, pts in sorted(lines.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
        ax.set_xlabel(xlab)
        ax.set_ylabel(ylab)
        if lines:
            ax.legend(fontsize=7)

    ax = axes[0][0]
    series(
        ax,
        lambda r: r.op if r.section == "stress" and "api" in r.op else None,
        "median us per file",
        "files",
        lambda r: r.stats[1] / r.x * 1e6,
    )
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_title("LUO decode / check in the library: time per file")
    ax = axes[0][1]
    series(
        ax,
        lambda r: (
            f"{r.workload} {r.op}"
            if r.section == "dumps" and (r.op.startswith("root discovery") or r.op.startswith("cat"))
            else None
        ),
        "median seconds",
        "dump size (GiB)",
        lambda r: r.stats[1],
    )
    for line in ax.get_lines():
        line.set_xdata([x / GiB for x in line.get_xdata()])
    ax.relim()
    ax.autoscale_view()
    ax.set_title("root discovery in a full dump vs cat")
    ax = axes[1][0]
    series(
        ax,
        lambda r: f"{r.workload.split(',')[0]} {r.op}" if r.section == "radix" and r.op != "kho check" else None,
        "median seconds",
        "preserved TiB",
        lambda r: r.stats[1],
    )
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title("radix memory map (in the library)")
    ax = axes[1][1]

    def mem_series(r: Row) -> str | None:
        if r.anon_kib is None or r.section not in ("memfd", "dumps") or r.op.startswith("cp"):
            return None
        if r.section == "dumps":
            return f"{r.workload} {r.op}"
        return f"{r.op} (order {r.workload.split('order ')[1][0]})" if "contents" in r.workload else f"{r.op} (absent)"

    series(
        ax,
        mem_series,
        "peak RssAnon MiB",
        "dump / memfd size (GiB)",
        lambda r: (r.anon_kib or 0) / 1024,
    )
    for line in ax.get_lines():
        line.set_xdata([x / GiB for x in line.get_xdata()])
    ax.set_xscale("log")
    ax.relim()
    ax.autoscale_view()
    ax.set_ylim(bottom=0)
    ax.set_title("peak RssAnon against input size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


SECTIONS = ("luo", "stress", "memfd", "dumps", "radix")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run: figures are not meaningful)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each figure (min/median/max; default 5)")
    ap.add_argument("--only", nargs="*", choices=SECTIONS, help="sections to run (default: all)")
    ap.add_argument("--dump-size", type=parse_size, help="size of the full dumps (default 16G)")
    ap.add_argument("--rss-dump-size", type=parse_size, action="append", help="more dump sizes (default 4G)")
    ap.add_argument("--kdump-max-size", type=parse_size, help="largest dump also written as kdump (default: all)")
    ap.add_argument("--kdump", nargs="*", default=["zlib", "snappy", "zstd"], help="kdump compressions")
    ap.add_argument("--memfd-size", type=parse_size, help="guest memory per VM in the luo section (default 256G)")
    ap.add_argument("--extract-size", type=parse_size, action="append", help="memfd sizes extracted (default 1G, 8G)")
    ap.add_argument("--warm-only", action="store_true", help="no cold runs (no file evicted before a run)")
    ap.add_argument("--tmp", help="where the workloads are generated (default: the system temp dir)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--plot", help="write a PNG of cost against size here (needs matplotlib: the bench extra)")
    a = ap.parse_args(argv)
    q = a.quick
    a.dump_size = a.dump_size or (64 << 20 if q else 16 * GiB)
    a.rss_dump_sizes = a.rss_dump_size or ([32 << 20] if q else [4 * GiB])
    a.kdump_max_size = a.kdump_max_size if a.kdump_max_size is not None else a.dump_size
    a.memfd_size = a.memfd_size or (1 * GiB if q else 256 * GiB)
    a.rss_memfd_sizes = [64 << 20, 1 * GiB] if q else [1 * GiB, 256 * GiB]
    a.extract_sizes = a.extract_size or ([16 << 20] if q else [1 * GiB, 8 * GiB])
    a.files = [10, 100] if q else [10, 100, 1000, 10000]
    a.radix_tib = [1] if q else [1, 4, 12]
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    cmdline = shell(["python", "benchmarks/scale.py"] + list(sys.argv[1:] if argv is None else argv))
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load0 = os.getloadavg()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the workloads are removed on kill too
    with tempfile.TemporaryDirectory(prefix="kho-scale-", dir=a.tmp) as tmp:
        TMP[:] = [tmp]
        b = Bench(a, Path(tmp))
        b.section("startup", b.startup)
        for name in SECTIONS:
            if a.only and name not in a.only:
                continue
            b.section(name, getattr(b, name))
    load1 = os.getloadavg()
    lines = [
        f"command: {cmdline}",
        f"started {started}; {platform.node()}: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, kho-formats {kho_formats.__version__}",
        f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, after {load1[0]:.2f} {load1[1]:.2f} "
        f"{load1[2]:.2f}; per section: " + ", ".join(f"{n} {x[0]:.2f}->{y[0]:.2f}" for n, x, y in b.loads),
        f"page cache: {'cold runs evicted the file (POSIX_FADV_DONTNEED) first' if b.cold else 'warm only'}; "
        "warm runs evicted every dump file, this one too, and read this one in first",
        "",
    ]
    lines += table(b.rows)
    pf = per_file_table(b.rows)
    if pf:
        lines += ["", "LUO decode and check per file:"] + pf
    lines += ["", "commands:"] + [
        f"  #{i}: {r.cmd}" + (f"  ({r.note})" if r.note else "") for i, r in enumerate(b.rows, 1)
    ]
    if b.notes:
        lines += ["", "notes:"] + [f"  {n}" for n in b.notes]
    print("\n".join(lines))
    if a.json:
        doc = {"command": cmdline, "started": started, "load": [load0, load1], "rows": [r.to_json() for r in b.rows]}
        Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")
    if a.plot:
        plot(b.rows, a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
