"""Fuzz targets beyond the handover bytes: spec text, bundle manifests, boot
fixture directories and ``convert`` (issue 12).

Each target mutates a valid seed (the shipped specs and fixtures), runs the
library entry point a user's file reaches, and counts anything but a
:class:`~kho_formats.errors.KhoFormatError` as an escape:

=========  =========================================================================
``spec``   ``loads_spec`` + ``build_spec`` on mutated TOML / YAML / JSON text
``bundle`` ``PhysImage.from_bundle`` on a mutated ``manifest.json``
``boot``   ``boot.load.load_fixture`` on a fixture with mutated ``handover.json`` /
           ``manifest.json``
``convert````convert_capture`` with mutated alloc regions, sub-blob addresses and
           sizes, scratch areas and target versions
``kdump``  ``elf``  ``kcore``: mutated dump files through ``load_capture`` and the
           readers (``fuzz/dumps.py``)
=========  =========================================================================

    python fuzz/fuzz_kho.py --target all --runs 2000   # 2000 inputs per target

prints, per target, inputs tried, escapes, the slowest input and the peak RSS.
An input that grows the process's peak RSS by more than ``MEMORY_GROWTH_MIB``
counts as an escape (``MemoryGrowth``), and so does one past ``timeout``;
inputs slower than ``slow_log`` seconds are printed as they happen.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kho_formats.errors import KhoFormatError  # noqa: E402

FIX = REPO / "fixtures"
#: an input that grows the process's peak RSS by more than this (MiB) counts as an escape
MEMORY_GROWTH_MIB = 256
TARGETS = ("spec", "bundle", "boot", "convert", "kdump", "elf", "kcore")

#: tokens spliced into spec text: structure, aliases, huge and negative numbers, paths, controls
TOKENS = [
    "[[",
    "]]",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a",
    "<<: *a",
    "-1",
    "-4096",
    "9" * 60,
    "9" * 5000,
    "0x" + "f" * 17,
    "0xfffffffffffff000",
    "18446744073709551616",
    "1099511627776",
    "4294967296",
    "63",
    "31",
    '"../../etc/hostname"',
    '"/dev/zero"',
    "\x1b[2J",
    "nan",
    "1e999",
    "true",
    "null",
    '"x"',
    "\n[[preserve]]\nphys = 0\norder = ",
    "\n[[blob]]\nname = ",
    "\n[[vmalloc]]\npages = ",
    "\n[[scratch]]\nstart = ",
    "count = ",
    "order = ",
    "size = ",
    "file = ",
]


@dataclass
class TargetStats:
    target: str
    runs: int = 0
    escapes: int = 0
    worst_seconds: float = 0.0
    worst_input: str = ""
    outcomes: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    #: the process's peak RSS when the target finished (targets run in order)
    peak_rss: float = 0.0

    def line(self) -> str:
        return (
            f"{self.target}: {self.runs} inputs, {self.escapes} escapes, "
            f"slowest {self.worst_seconds:.2f} s, peak RSS {self.peak_rss:.0f} MiB"
        )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Timeout(Exception):
    pass


def _guard(fn: Callable[[], object], timeout: float) -> tuple[str, BaseException | None, float]:
    done = False

    def on_alarm(signum: int, frame: object) -> None:
        if not done:
            raise _Timeout(f"no result after {timeout} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    t0 = time.perf_counter()
    try:
        try:
            fn()
            out, exc = "ok", None
        finally:  # an alarm due just as fn returns lands in here: caught below, not by the caller
            done = True
            signal.setitimer(signal.ITIMER_REAL, 0)
    except KhoFormatError as e:
        out, exc = type(e).__name__, None
    except BaseException as e:
        out, exc = type(e).__name__, e
    finally:
        signal.signal(signal.SIGALRM, old)
    return out, exc, time.perf_counter() - t0


# -- JSON value mutation ----------------------------------------------------------------------------


def _rand_value(rng: random.Random, depth: int = 0) -> Any:
    k = rng.randrange(14)
    if k == 0:
        return -rng.randrange(1, 1 << 20)
    if k == 1:
        return rng.choice([0, 1, 4095, 4096, 1 << 32, (1 << 64) - 4096, 1 << 64, 1 << 70, 10**5000 // 10**4990])
    if k == 2:
        return rng.choice(["x", "", "0x1000", "16M", "../x", "/dev/zero", "\x1b]0;t\x07", "a,b", "seg-0.bin"])
    if k == 3:
        return None
    if k == 4:
        return rng.choice([True, False])
    if k == 5:
        return 1.5e300
    if k == 6 and depth < 3:
        return [_rand_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if k == 7 and depth < 3:
        return {rng.choice(["file", "phys", "size", "x"]): _rand_value(rng, depth + 1) for _ in range(rng.randrange(3))}
    if k == 8:
        # distinct lists: `[[0, 4096]] * n` shares one, and a later round writing
        # into it wrote into all n: documents of billions of nodes whose json.dumps
        # alone took the fuzzer to 23 GiB (the manifest size cap is tested apart)
        return [[0, 4096] for _ in range(rng.randrange(1, 3000))]
    if k == 9:
        v: Any = 0
        for _ in range(rng.randrange(1, 200)):
            v = [v]
        return v
    return rng.randrange(0, 1 << 40)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:50]):
            out += _paths(v, prefix + (i,))
    return out


def mutate_json(rng: random.Random, doc: Any, rounds: int = 3) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randrange(1, rounds + 1)):
        paths = _paths(doc)
        p = rng.choice(paths)
        if not p:
            doc = _rand_value(rng) if rng.random() < 0.1 else doc
            continue
        parent = doc
        for k in p[:-1]:
            parent = parent[k]
        last = p[-1]
        r = rng.random()
        if r < 0.2 and isinstance(parent, dict):
            del parent[last]
        elif r < 0.3 and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        else:
            parent[last] = _rand_value(rng)
    return doc


# -- targets ----------------------------------------------------------------------------------------


class SpecTarget:
    name = "spec"

    def __init__(self, workdir: Path) -> None:
        import tomllib

        self.dir = workdir / "spec"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "blob.bin").write_bytes(b"raw blob bytes")
        self.seeds: list[tuple[str, str]] = []
        for p in sorted((FIX / "specs").glob("*.toml")) + sorted((FIX / "specs").glob("*.yaml")):
            text = p.read_text()
            self.seeds.append((p.suffix.lstrip("."), text))
            if p.suffix == ".toml":
                self.seeds.append(("json", json.dumps(tomllib.loads(text))))
        self.seeds.append(("toml", '[[blob]]\nname = "mine"\ntype = "raw"\nfile = "blob.bin"\n'))
        self.seeds.append(("yaml", "a: &a [1, 2]\nextra_compatible: []\n"))

    def make(self, rng: random.Random) -> tuple[str, Callable[[], object]]:
        from kho_formats.model.spec import build_spec, loads_spec

        fmt, text = rng.choice(self.seeds)
        if fmt == "json" and rng.random() < 0.5:
            text = json.dumps(mutate_json(rng, json.loads(text)))
        else:
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(text) + 1)
                r = rng.random()
                if r < 0.6:
                    text = text[:i] + rng.choice(TOKENS) + text[i:]
                elif r < 0.8:
                    text = text[:i] + text[i + rng.randrange(1, 40) :]
                else:
                    j = rng.randrange(len(text) + 1)
                    text = text[:i] + text[min(i, j) : max(i, j)] * rng.randrange(1, 4) + text[i:]

        def run() -> object:
            return build_spec(loads_spec(text, fmt=fmt, base_dir=self.dir, source="fuzz"))

        return f"{fmt}:{text[:200]!r}", run


class BundleTarget:
    name = "bundle"

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "bundle"
        shutil.copytree(FIX / "v4-4k", self.dir, dirs_exist_ok=True)
        self.manifest = json.loads((self.dir / "manifest.json").read_text())

    def make(self, rng: random.Random) -> tuple[str, Callable[[], object]]:
        from kho_formats.memory.image import PhysImage

        doc = mutate_json(rng, self.manifest)
        text = json.dumps(doc)

        def run() -> object:
            (self.dir / "manifest.json").write_text(text)
            return PhysImage.from_bundle(self.dir)

        return text[:300], run


class BootTarget:
    name = "boot"

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "boot"
        shutil.copytree(FIX / "v4-4k", self.dir, dirs_exist_ok=True)
        self.docs = {n: json.loads((self.dir / n).read_text()) for n in ("handover.json", "manifest.json")}

    def make(self, rng: random.Random) -> tuple[str, Callable[[], object]]:
        from kho_formats.boot.load import load_fixture

        name = rng.choice(sorted(self.docs))
        text = json.dumps(mutate_json(rng, self.docs[name]))

        def run() -> object:
            for n, d in self.docs.items():
                (self.dir / n).write_text(text if n == name else json.dumps(d))
            return load_fixture(self.dir)

        return f"{name}:{text[:300]}", run


class ConvertTarget:
    name = "convert"

    def __init__(self, workdir: Path) -> None:
        from kho_formats.ops.capture import load_capture, parse_capture

        self.seeds = []
        for n in ("v4-4k", "v1-page-4k", "v3-16k"):
            cap = load_capture(FIX / n)
            self.seeds.append((cap, parse_capture(cap)))

    def make(self, rng: random.Random) -> tuple[str, Callable[[], object]]:
        from kho_formats.abi import version_names
        from kho_formats.ops.migrate import convert_capture

        cap, st = rng.choice(self.seeds)
        st = st.copy()
        cap = dataclasses.replace(cap)
        alloc: list[tuple[int, int]] = []
        ops = []
        for _ in range(rng.randrange(1, 4)):
            k = rng.randrange(5)
            big = rng.choice([0, 1 << 12, (1 << 64) - 4096, 1 << 63, 1 << 64, rng.randrange(1 << 40)])
            if k == 0:
                alloc.append((rng.choice([big, rng.randrange(1 << 32)]), rng.choice([4096, 1 << 24, big])))
            elif k == 1 and st.subblobs:
                i = rng.randrange(len(st.subblobs))
                st.subblobs[i] = dataclasses.replace(st.subblobs[i], phys=big)
            elif k == 2 and st.subblobs:
                i = rng.randrange(len(st.subblobs))
                st.subblobs[i] = dataclasses.replace(st.subblobs[i], size=big)
            elif k == 3:
                cap.alloc = [(big, rng.choice([4096, big]))] * rng.randrange(1, 2000)
            else:
                st.scratch = st.scratch + [(big, rng.choice([4096, 1 << 20]))]
            ops.append(k)
        to = rng.choice(version_names())

        def run() -> object:
            return convert_capture(cap, st, to, alloc=alloc)

        return f"to={to} ops={ops} alloc={alloc[:3]}", run


def make_target(name: str, workdir: Path) -> Any:
    from fuzz.dumps import DUMP_TARGETS

    table: dict[str, Any] = {"spec": SpecTarget, "bundle": BundleTarget, "boot": BootTarget, "convert": ConvertTarget}
    return {**table, **DUMP_TARGETS}[name](workdir)


def fuzz_target(name: str, runs: int, *, seed: int = 1, timeout: float = 10.0, slow_log: float = 2.0) -> TargetStats:
    """``runs`` mutated inputs through target ``name``; escapes are counted and
    the first few kept as examples (input + traceback tail)."""
    stats = TargetStats(name)
    rng = random.Random(f"{name}:{seed}")
    with tempfile.TemporaryDirectory(prefix=f"khofuzz-{name}-") as tmp:
        tgt = make_target(name, Path(tmp))
        for _ in range(runs):
            desc, fn = tgt.make(rng)
            before = peak_rss_mib()
            out, exc, dt = _guard(fn, timeout)
            grew = peak_rss_mib() - before
            if exc is None and grew > MEMORY_GROWTH_MIB:
                out, exc = "MemoryGrowth", MemoryError(f"peak RSS grew by {grew:.0f} MiB on one input")
            stats.runs += 1
            stats.outcomes[out] = stats.outcomes.get(out, 0) + 1
            if dt > slow_log:
                print(f"[{name}] slow input ({dt:.2f} s, {out}): {desc[:3000]}", file=sys.stderr, flush=True)
            if dt > stats.worst_seconds:
                stats.worst_seconds, stats.worst_input = dt, desc[:200]
            if exc is not None:
                stats.escapes += 1
                if len(stats.examples) < 5:
                    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
                    stats.examples.append(f"{desc[:3000]}\n{tb}")
    stats.peak_rss = peak_rss_mib()
    return stats


__all__ = ["TARGETS", "TargetStats", "fuzz_target", "mutate_json", "make_target"]
