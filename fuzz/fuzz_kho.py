#!/usr/bin/env python3
"""Fuzz the kho-formats readers with mutated handovers of every ABI version.

Every input runs ``state.parse`` + ``decode_clients`` + ``check`` + ``to_dts``
of the root and sub-FDTs (and the ``LUO`` serialization-block chain when the
seed has one).  A
:class:`~kho_formats.errors.KhoFormatError` is the expected outcome for a
malformed input; anything else that escapes (``IndexError``,
``struct.error``, ``OverflowError``, a numpy warning, a hang past
``--timeout``) is a failure: it is recorded, minimized (delta debugging over
the mutation list) and written to ``--crash-dir`` for a regression test.

Seeds: the real Linux 7.3 capture plus handovers built in-process
(``fuzz/seeds.py``) for kho-v1 (512-byte and page bitmaps), v2, v3 and v4 at
4/16/64 KiB pages in both byte orders, and anything in ``--corpus``.

Mutations are structure-aware and replayable: each is a small JSON-able op
applied to the seed (set a root-FDT byte/word/u64, truncate/insert/delete
FDT bytes, overwrite a u64/u32 in a map page with a pointer to another page,
to itself, unaligned, outside the image or a huge count, copy one page over
another, zero or drop a page, change parse parameters or limits, serve the
image as a mutated ELF core).

Plain random mutation loop (atheris 3.0 works on this Python too, but a
coverage-guided byte mutator spends most of its time failing the FDT magic;
here inputs that reach a *new* error kind are kept and mutated further).

Short run (CI): ``pytest tests/test_fuzz_short.py`` (~2000 inputs, plus 150
per file-level target).
Long run:       ``python fuzz/fuzz_kho.py --runs 100000`` (both cores).
File-level targets (spec text, bundle manifests, boot fixture directories,
convert; ``fuzz/targets.py``; kdump, ELF core and kcore dump files, ``fuzz/dumps.py``):
``python fuzz/fuzz_kho.py --target all --runs 20000``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import signal
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from fuzz.seeds import LUO_ENTRY_SIZE, LUO_NAME, FuzzInput, all_seeds  # noqa: E402
from fuzz.targets import TARGETS, TargetStats, fuzz_target  # noqa: E402
from kho_formats.errors import KhoFormatError  # noqa: E402
from kho_formats.limits import Budget, Limits  # noqa: E402
from kho_formats.memory.image import PhysImage  # noqa: E402
from kho_formats.model import state as kstate  # noqa: E402
from kho_formats.model.clients import decode_clients  # noqa: E402
from kho_formats.model.clients.blocks import read_block_chain  # noqa: E402
from kho_formats.model.fdt import to_dts  # noqa: E402
from kho_formats.ops import check as kcheck  # noqa: E402

Op = list  # [kind, *args]; JSON-able


class Hang(BaseException):
    """Raised by the watchdog alarm: one input ran past ``--timeout``."""


# -- materializing seed + ops -----------------------------------------------------------


@dataclass
class Work:
    """A mutable copy of a seed that ops are applied to."""

    params: dict
    root: bytearray
    segs: list[tuple[int, bytearray]]
    hot: list[int]
    limits: tuple[int, int] | None = None
    elf_ops: list[Op] = field(default_factory=list)

    @classmethod
    def of(cls, seed: FuzzInput) -> Work:
        return cls(
            dict(seed.params), bytearray(seed.root), [(p, bytearray(d)) for p, d in seed.segments], list(seed.hot)
        )

    def find(self, phys: int, n: int) -> tuple[bytearray, int] | None:
        for p, d in self.segs:
            if p <= phys and phys + n <= p + len(d):
                return d, phys - p
        return None

    def write(self, phys: int, data: bytes) -> None:
        hit = self.find(phys, len(data))
        if hit:
            d, off = hit
            d[off : off + len(data)] = data

    def read(self, phys: int, n: int) -> bytes | None:
        hit = self.find(phys, n)
        return bytes(hit[0][hit[1] : hit[1] + n]) if hit else None

    def drop(self, phys: int, n: int) -> None:
        out = []
        for p, d in self.segs:
            e = p + len(d)
            if e <= phys or phys + n <= p:
                out.append((p, d))
                continue
            if p < phys:
                out.append((p, d[: phys - p]))
            if phys + n < e:
                out.append((phys + n, d[phys + n - p :]))
        self.segs = out

    def to_input(self, name: str) -> FuzzInput:
        segs = [(p, bytes(d)) for p, d in self.segs if len(d)]
        elf = None
        if self.elf_ops:
            bo = self.params.get("byteorder", "little")
            elf = bytearray(PhysImage(segs).to_elf(byteorder=bo if bo in ("little", "big") else "little"))
            for op in self.elf_ops:
                if op[0] == "et":
                    del elf[op[1] :]
                    continue
                _, off, val, size = op
                if off + size <= len(elf):
                    elf[off : off + size] = (int(val) % (1 << (8 * size))).to_bytes(
                        size, "big" if elf[5] == 2 else "little"
                    )
            elf = bytes(elf)
        p = dict(self.params)
        p["_limits"] = self.limits
        return FuzzInput(name, p, bytes(self.root), segs if elf is None else [], elf, self.hot)


def apply(work: Work, op: Op) -> None:
    k = op[0]
    r = work.root
    if k == "fb":  # root FDT byte
        if op[1] < len(r):
            r[op[1]] = op[2] & 0xFF
    elif k == "fw":  # root FDT big-endian u32
        if op[1] + 4 <= len(r):
            r[op[1] : op[1] + 4] = (op[2] & 0xFFFFFFFF).to_bytes(4, "big")
    elif k == "fq":  # root FDT native u64 (a KHO property value)
        if op[1] + 8 <= len(r):
            r[op[1] : op[1] + 8] = (op[2] % (1 << 64)).to_bytes(8, op[3])
    elif k == "ft":
        del r[op[1] :]
    elif k == "fi":
        r[op[1] : op[1]] = bytes.fromhex(op[2])
    elif k == "fd":
        del r[op[1] : op[1] + op[2]]
    elif k == "iq":  # image u64
        work.write(op[1], (op[2] % (1 << 64)).to_bytes(8, op[3]))
    elif k == "i4":
        work.write(op[1], (op[2] % (1 << 32)).to_bytes(4, op[3]))
    elif k == "ib":
        work.write(op[1], bytes([op[2] & 0xFF]))
    elif k == "ic":  # copy a page over another
        src = work.read(op[2], op[3])
        if src is not None:
            work.write(op[1], src)
    elif k == "iz":
        work.write(op[1], bytes(op[2]))
    elif k == "id":
        work.drop(op[1], op[2])
    elif k == "ia":  # add a page that was not in the image (a copy of another)
        src = work.read(op[2], op[3])
        if src is not None and all(p + len(d) <= op[1] or op[1] + op[3] <= p for p, d in work.segs):
            work.segs.append((op[1], bytearray(src)))
            work.segs.sort(key=lambda s: s[0])
    elif k == "p":  # parse parameter
        if op[1] == "scratch":
            work.params["scratch"] = [tuple(x) for x in op[2]]
        else:
            work.params[op[1]] = op[2]
    elif k == "lim":
        work.limits = (op[1], op[2])
    elif k in ("ew", "et"):
        work.elf_ops.append(op)


def materialize(seed: FuzzInput, ops: list[Op], name: str = "") -> FuzzInput:
    w = Work.of(seed)
    for op in ops:
        apply(w, op)
    return w.to_input(name or seed.name)


# -- generating ops ---------------------------------------------------------------------

U64_SPECIAL = [
    0,
    1,
    8,
    0x1000,
    0xFFF,
    (1 << 32) - 1,
    1 << 32,
    (1 << 52),
    (1 << 63),
    (1 << 64) - 1,
    (1 << 64) - 0x1000,
    (1 << 64) - 0x10000,
    0x7FFFFFFFFFFFFFFF,
]
U32_SPECIAL = [
    0,
    1,
    2,
    3,
    4,
    9,
    0x10,
    0x28,
    0xFF,
    0x100,
    0xFFFF,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    0xFFFFFFF0,
    0xD00DFEED,
    17,
    16,
    255,
    511,
    512,
    4095,
    4096,
]


def _ptr_value(rng: random.Random, w: Work, page: int) -> int:
    ps = w.params.get("page_size", 4096)
    hot = w.hot or [page]
    c = rng.random()
    if c < 0.35:
        return rng.choice(hot)  # another metadata page: shared node / cross-link
    if c < 0.45:
        return page  # self pointer
    if c < 0.55:
        return rng.choice(hot) + rng.choice([8, 512, 1, ps // 2, ps - 8])  # unaligned / inside a page
    if c < 0.65:
        return rng.choice(hot) + rng.choice([-1, 1, 2, 64, 1 << 20]) * ps  # just outside
    if c < 0.8:
        return rng.choice(U64_SPECIAL)
    if c < 0.9:
        return rng.getrandbits(64)
    return rng.getrandbits(rng.randint(1, 40))


def _nonzero_words(data: bytes, step: int) -> list[int]:
    a = np.frombuffer(data[: len(data) // step * step], dtype=np.uint64 if step == 8 else np.uint32)
    return (np.flatnonzero(a) * step).tolist()


def gen_op(rng: random.Random, w: Work) -> Op:
    bo = w.params.get("byteorder", "little")
    ps = w.params.get("page_size", 4096)
    r = w.root
    c = rng.random()
    if c < 0.30 and len(r):
        kind = rng.random()
        if kind < 0.3:  # header or token word
            off = rng.choice(
                [0, 4, 8, 12, 16, 20, 24, 32, 36] if rng.random() < 0.5 else [rng.randrange(0, max(len(r) - 3, 1)) & ~3]
            )
            vals = U32_SPECIAL + [
                len(r),
                len(r) + 1,
                len(r) - 4,
                rng.getrandbits(32),
                int.from_bytes(r[off : off + 4] or b"\0", "big") + rng.choice([-8, -4, -1, 1, 4, 8]),
            ]
            return ["fw", off, rng.choice(vals) % (1 << 32)]
        if kind < 0.5:  # a u64 property value (the 8 bytes after a PROP header are often one)
            offs = [m.start() + 12 for m in re.finditer(b"\x00\x00\x00\x03\x00\x00\x00\x08", bytes(r))]
            if offs:
                return ["fq", rng.choice(offs), _ptr_value(rng, w, rng.choice(w.hot or [0])), bo]
        if kind < 0.75:
            return ["fb", rng.randrange(len(r)), rng.getrandbits(8)]
        if kind < 0.83:
            return ["ft", rng.randrange(len(r))]
        if kind < 0.92:
            return [
                "fi",
                rng.randrange(len(r) + 1),
                rng.randbytes(rng.choice([1, 4, 8, 12])).hex()
                if rng.random() < 0.5
                else bytes(r[rng.randrange(len(r)) :][: rng.choice([4, 8, 12, 16])]).hex(),
            ]
        return ["fd", rng.randrange(len(r)), rng.choice([1, 4, 8, 16])]
    if c < 0.88 and w.hot:
        page = rng.choice(w.hot)
        data = w.read(page, ps) or w.read(page, 4096) or b""
        kind = rng.random()
        if kind < 0.5 and data:
            nz = _nonzero_words(data, 8)
            off = rng.choice(nz) if nz and rng.random() < 0.7 else rng.randrange(len(data) // 8) * 8
            if rng.random() < 0.25:  # a count or an order
                off4 = off + rng.choice([0, 4, 8, 12])
                return ["i4", page + off4, rng.choice(U32_SPECIAL + [rng.getrandbits(32)]), bo]
            return ["iq", page + off, _ptr_value(rng, w, page), bo]
        if kind < 0.62 and data:
            nz = _nonzero_words(data, 8)
            off = (rng.choice(nz) if nz else 0) + rng.randrange(8)
            return [
                "ib",
                page + off,
                rng.getrandbits(8) if rng.random() < 0.5 else data[min(off, len(data) - 1)] ^ (1 << rng.randrange(8)),
            ]
        if kind < 0.72:
            return ["ic", page, rng.choice(w.hot), ps]
        if kind < 0.78:
            return ["iz", page, ps]
        if kind < 0.86:
            return ["id", page, rng.choice([ps, ps // 2, 8, 4096])]
        if kind < 0.92:
            return ["ia", rng.choice(w.hot) + rng.choice([1, 2, 3, -1, 1 << 10]) * ps, page, ps]
        return ["i4", page + rng.randrange(ps // 4) * 4, rng.getrandbits(32), bo]
    if c < 0.93:
        k = rng.random()
        if k < 0.25:
            return ["p", "version", rng.choice([None, "kho-v1", "kho-v2", "kho-v3", "kho-v4"])]
        if k < 0.4:
            return ["p", "page_size", rng.choice([4096, 16384, 65536])]
        if k < 0.5:
            return ["p", "byteorder", rng.choice(["little", "big"])]
        if k < 0.6:
            return ["p", "v1_bitmap", rng.choice([None, "512", "page", "auto"])]
        if k < 0.85:
            vals = [rng.getrandbits(64), (1 << 64) - ps, ps, 0] + list(w.hot[:4])
            return [
                "p",
                "scratch",
                [[rng.choice(vals), rng.choice(vals + [1 << 63, ps * 16])] for _ in range(rng.randint(0, 3))],
            ]
        return ["p", "root_fdt_phys", rng.choice([None, 0, 1, rng.getrandbits(64)] + w.hot[:2])]
    if c < 0.96:
        return ["lim", rng.choice([1, 2, 3, 8, 64]), rng.choice([1, 10, 100, 1000, 1 << 20])]
    # serve the image as an ELF core with a lying header
    field_ = rng.choice(
        [(32, 8), (54, 2), (56, 2), (16, 2), (4, 1), (5, 1)]
        + [(64 + 56 * rng.randrange(4) + o, 8) for o in (8, 16, 24, 32, 40)]
    )
    if rng.random() < 0.2:
        return ["et", rng.randrange(64, 4096)]
    return [
        "ew",
        field_[0],
        rng.choice([0, 1, 2, 0xFFFF, (1 << (8 * field_[1])) - 1, rng.getrandbits(8 * field_[1])]),
        field_[1],
    ]


# -- running one input ----------------------------------------------------------------


def run_target(inp: FuzzInput) -> str | None:
    """Run every reader on one input.  Returns the outcome kind
    (KhoFormatError subclass name + message shape, or "ok"); raises whatever
    else escaped."""
    params = dict(inp.params)
    lim = params.pop("_limits", None)
    limits = Limits(*lim) if lim else None
    try:
        img = inp.image()
        st = kstate.parse(inp.root, img, limits=limits, **params)
        reps = decode_clients(st, img, budget=Budget(limits))
        findings = kcheck.check(st, img, limits=limits, clients=reps)
        luo = st.subblob(LUO_NAME)
        if luo is not None and luo.data is not None and len(luo.data) >= 8:
            first = int.from_bytes(luo.data[:8], st.byteorder)
            read_block_chain(img, first, st.layout, entry_size=LUO_ENTRY_SIZE, budget=Budget(limits))
        # the DTS renderer (kho dts) on the root FDT and every sub-FDT
        to_dts(inp.root, byteorder=st.byteorder, where="root FDT")
        for sb in st.subblobs:
            if sb.data is not None and sb.data[:4] == b"\xd0\x0d\xfe\xed":
                to_dts(sb.data, byteorder=st.byteorder, where=sb.name)
        kinds = sorted({f.code for f in findings if f.severity != "info"})
        cerr = sorted({type(r.error).__name__ + ":" + _shape(r.error.message) for r in reps.values() if r.error})
        return "ok " + ",".join(kinds + cerr)
    except KhoFormatError as exc:
        return f"{type(exc).__name__}:{_shape(exc.message)}"


def _shape(msg: str) -> str:
    return re.sub(r"0x[0-9a-f]+|\d+", "N", msg)[:60]


def signature(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in tb if "kho_formats" in f.filename] or tb[-1:]
    f = frames[-1] if frames else None
    loc = f"{Path(f.filename).name}:{f.lineno}" if f else "?"
    return f"{type(exc).__name__}@{loc}"


def guarded(inp: FuzzInput, timeout: float) -> tuple[str | None, BaseException | None, float]:
    """(outcome, escaped exception or None, seconds)."""

    def on_alarm(signum, frame):
        raise Hang(f"input ran longer than {timeout}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), np.errstate(all="raise"):
            warnings.simplefilter("error")
            out = run_target(inp)
        return out, None, time.perf_counter() - t0
    except (Exception, Hang) as exc:
        return None, exc, time.perf_counter() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def minimize(seed: FuzzInput, ops: list[Op], sig: str, timeout: float) -> list[Op]:
    """Delta debugging: drop ops while the same signature still escapes."""
    cur = list(ops)
    changed = True
    while changed:
        changed = False
        for i in range(len(cur)):
            trial = cur[:i] + cur[i + 1 :]
            _, exc, _ = guarded(materialize(seed, trial), timeout)
            if exc is not None and signature(exc) == sig:
                cur = trial
                changed = True
                break
    return cur


# -- the loop ---------------------------------------------------------------------------


@dataclass
class Stats:
    runs: int = 0
    escaped: int = 0
    slowest: float = 0.0
    slowest_name: str = ""
    outcomes: dict[str, int] = field(default_factory=dict)
    crashes: dict[str, dict] = field(default_factory=dict)  # signature -> record

    def merge(self, o: Stats) -> None:
        self.runs += o.runs
        self.escaped += o.escaped
        if o.slowest > self.slowest:
            self.slowest, self.slowest_name = o.slowest, o.slowest_name
        for k, v in o.outcomes.items():
            self.outcomes[k] = self.outcomes.get(k, 0) + v
        for k, v in o.crashes.items():
            self.crashes.setdefault(k, v)


def load_corpus(directory: Path | None) -> list[tuple[FuzzInput, list[Op]]]:
    out = []
    if directory and directory.is_dir():
        for f in sorted(directory.glob("*.khofuzz")):
            try:
                out.append((FuzzInput.loads(f.read_bytes()), []))
            except Exception as exc:
                print(f"skipping corpus file {f}: {exc}", file=sys.stderr)
    return out


def fuzz(
    runs: int,
    seed: int,
    *,
    corpus_dir: Path | None = None,
    crash_dir: Path | None = None,
    timeout: float = 10.0,
    max_ops: int = 6,
    verbose: bool = False,
    do_minimize: bool = True,
    seeds: list[FuzzInput] | None = None,
    slow_log: float = 0.25,
) -> Stats:
    rng = random.Random(seed)
    base = [(s, []) for s in (seeds if seeds is not None else all_seeds())] + load_corpus(corpus_dir)
    pool: list[tuple[FuzzInput, list[Op]]] = list(base)  # (seed, ops) pairs worth mutating further
    seen_outcomes: set = set()
    stats = Stats()
    for n in range(runs):
        sd, parent = rng.choice(pool) if rng.random() < 0.5 else rng.choice(base)
        ops = list(parent)
        w = Work.of(sd)
        for op in ops:
            apply(w, op)
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3, max_ops])):
            op = gen_op(rng, w)
            apply(w, op)
            ops.append(op)
        inp = w.to_input(sd.name)
        out, exc, dt = guarded(inp, timeout)
        stats.runs += 1
        if dt > stats.slowest:
            stats.slowest, stats.slowest_name = dt, f"{sd.name} ops={json.dumps(ops)}"
            if crash_dir and dt > slow_log:
                crash_dir.mkdir(parents=True, exist_ok=True)
                (crash_dir / f"slow-{seed}.json").write_text(
                    json.dumps({"seconds": dt, "seed": sd.name, "ops": ops}) + "\n"
                )
        if exc is not None:
            stats.escaped += 1
            sig = signature(exc)
            if sig not in stats.crashes:
                small = minimize(sd, ops, sig, timeout) if do_minimize else ops
                rec = {
                    "signature": sig,
                    "seed": sd.name,
                    "ops": small,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:],
                }
                stats.crashes[sig] = rec
                print(
                    f"[{n}] ESCAPED {sig}: {type(exc).__name__}: {exc}\n    seed {sd.name} ops {json.dumps(small)}",
                    file=sys.stderr,
                    flush=True,
                )
                if crash_dir:
                    crash_dir.mkdir(parents=True, exist_ok=True)
                    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", sig)
                    (crash_dir / f"{safe}.json").write_text(json.dumps(rec, indent=1) + "\n")
                    (crash_dir / f"{safe}.khofuzz").write_bytes(materialize(sd, small).dumps())
            continue
        stats.outcomes[out.split(":")[0]] = stats.outcomes.get(out.split(":")[0], 0) + 1
        if out not in seen_outcomes and len(pool) < 4000:
            seen_outcomes.add(out)
            pool.append((sd, ops))
        if verbose and n % 1000 == 0:
            print(f"[{n}] pool {len(pool)} slowest {stats.slowest:.3f}s", file=sys.stderr, flush=True)
    return stats


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker(args) -> tuple[Stats, float]:
    runs, seed, corpus, crash_dir, timeout = args
    st = fuzz(runs, seed, corpus_dir=corpus, crash_dir=crash_dir, timeout=timeout)
    return st, peak_rss_mib()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10000, help="inputs to run (split across --jobs)")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed (job k uses seed + k)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    ap.add_argument("--corpus", type=Path, default=HERE / "corpus", help="extra *.khofuzz seeds")
    ap.add_argument("--crash-dir", type=Path, default=HERE / "crashes", help="where escaped inputs are written")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before an input counts as a hang")
    ap.add_argument("--write-seeds", action="store_true", help="write the in-process seeds to --corpus and exit")
    ap.add_argument(
        "--target",
        choices=("handover", "spec", "bundle", "boot", "convert", "kdump", "elf", "kcore", "all"),
        default="handover",
        help="what to fuzz: handover bytes (default), spec text, bundle manifests, boot fixture "
        "directories, convert (fuzz/targets.py), kdump / ELF core / kcore dump files (fuzz/dumps.py); "
        "all = every file-level target, --runs inputs each",
    )
    a = ap.parse_args(argv)
    if a.target != "handover":
        return _main_targets(a)
    if a.write_seeds:
        a.corpus.mkdir(parents=True, exist_ok=True)
        for s in all_seeds():
            (a.corpus / f"{s.name}.khofuzz").write_bytes(s.dumps())
        print(f"wrote {len(all_seeds())} seeds to {a.corpus}")
        return 0
    t0 = time.time()
    jobs = max(1, a.jobs)
    shares = [a.runs // jobs + (1 if k < a.runs % jobs else 0) for k in range(jobs)]
    work = [(shares[k], a.seed + k, a.corpus, a.crash_dir, a.timeout) for k in range(jobs)]
    total = Stats()
    rss = []
    if jobs == 1:
        st, r = _worker(work[0])
        total.merge(st)
        rss.append(r)
    else:
        # Not multiprocessing.Pool: a worker that dies (OOM killer, a signal)
        # loses its task and Pool.imap waits for it forever (the earlier hang);
        # ProcessPoolExecutor notices the death and raises BrokenProcessPool.
        # forkserver: workers start from a clean single-threaded server, not
        # forked from this process's pool threads (a lock held there at the
        # fork would stay held in the child).
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        try:
            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("forkserver")) as ex:
                for fut in as_completed([ex.submit(_worker, w) for w in work]):
                    st, r = fut.result()
                    total.merge(st)
                    rss.append(r)
        except BrokenProcessPool as exc:
            print(f"fuzz: a worker process died ({exc}); its inputs are lost", file=sys.stderr)
            return 2
    print(f"inputs run: {total.runs}")
    print(f"escaped exceptions: {total.escaped} ({len(total.crashes)} distinct)")
    for sig, rec in total.crashes.items():
        print(f"  {sig}: {rec['error'][:160]}  seed={rec['seed']} ops={json.dumps(rec['ops'])}")
    print(f"slowest input: {total.slowest:.3f} s  ({total.slowest_name[:200]})")
    print(f"peak RSS: {max(rss):.1f} MiB (per process: {', '.join(f'{x:.1f}' for x in rss)})")
    print(f"wall time: {time.time() - t0:.1f} s")
    top = sorted(total.outcomes.items(), key=lambda kv: -kv[1])[:12]
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in top))
    return 1 if total.escaped else 0


def _target_worker(args: tuple[str, int, int, float]) -> TargetStats:
    name, runs, seed, timeout = args
    return fuzz_target(name, runs, seed=seed, timeout=timeout)


def _main_targets(a: argparse.Namespace) -> int:
    """The file-level targets of fuzz/targets.py, one after the other in this
    process (peak RSS is the process's, so it covers every target run)."""
    names = list(TARGETS) if a.target == "all" else [a.target]
    t0 = time.time()
    results = [_target_worker((n, a.runs, a.seed, a.timeout)) for n in names]
    escaped = 0
    for st in results:
        print(st.line())
        print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(st.outcomes.items(), key=lambda kv: -kv[1])))
        print(f"  slowest: {st.worst_input[:160]}")
        for ex in st.examples:
            print("  ESCAPE: " + ex.replace("\n", "\n    "))
        escaped += st.escapes
    print(f"wall time: {time.time() - t0:.1f} s")
    return 1 if escaped else 0


if __name__ == "__main__":
    sys.exit(main())
