#!/usr/bin/env python3
"""Compare a handover captured at a liveupdate selftest's kexec with what its stage 1 created.

    scripts/live/stage1_compare.py luo_kexec_simple DIR/capture     # exit 0: exactly what the test created

What the test created is the stage-1 state ``scripts/gen_selftest_specs.py``
describes (the tests' own constants: session names in creation order, empty
ones included; tokens; each memfd one page of ``getpagesize()`` bytes holding
its string, its NUL, then zeros; ``memfd_create(name, 0)``: seals 1; pos 0;
the three ``LIVEUPDATE_TEST`` FLBs with one reference per preserved file).
The capture is read only through the command line a user would type:

* ``kho inspect --json CAPTURE``: the LUO sessions in order, each file's token,
  handler, size, pos and seals, the FLB names, data and counts;
* ``kho check --strict CAPTURE``: exit status 0 (no error, no warning);
* ``kho luo extract CAPTURE -o DIR --json``: every file written, each exactly
  the page the test wrote.

The selftests' stage 2 checks only the string at the start of each memfd; this
comparison covers size, seals and pos too.  Every difference is one line; none
means the capture is exactly what the test created.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1]


def _gen() -> ModuleType:
    name = "gen_selftest_specs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SRC / "scripts" / "gen_selftest_specs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def kho(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(SRC), os.environ.get("PYTHONPATH"))))}
    return subprocess.run(
        [sys.executable, "-m", "kho_formats.cli", *args, "-q"], capture_output=True, text=True, env=env
    )


def expected(test: str) -> Any:
    """The ``SelftestState`` of ``test`` (scripts/gen_selftest_specs.py)."""
    gen = _gen()
    for t in gen.SELFTESTS:
        if t.test == test:
            return t
    raise SystemExit(f"stage1_compare: unknown test {test!r}")


def compare(capture: Path, test: str, page_size: int = 4096) -> tuple[list[str], dict[str, Any]]:
    """Differences between ``capture`` and what ``test``'s stage 1 created, and
    what was compared (counts, for the report)."""
    t = expected(test)
    diffs: list[str] = []
    r = kho("inspect", "--json", str(capture))
    if r.returncode != 0:
        return [f"kho inspect --json: exit {r.returncode}: {r.stderr.strip()}"], {}
    doc = json.loads(r.stdout)
    luo = doc.get("luo")
    if not luo:
        return ["kho inspect --json: no LUO state in the capture"], {}
    if doc.get("page_size") != page_size:
        diffs.append(f"page_size {doc.get('page_size')} != {page_size}")
    if not luo.get("serialized"):
        diffs.append("LUO state not serialized (captured before liveupdate_reboot?)")
    if luo.get("problems"):
        diffs.append(f"LUO problems: {luo['problems']}")
    want_sessions = t.all_sessions()
    got_names = [s["name"] for s in luo["sessions"]]
    want_names = [s.name for s in want_sessions]
    if got_names != want_names:
        missing = [n for n in want_names if n not in got_names]
        extra = [n for n in got_names if n not in want_names]
        order = "" if missing or extra else " (same names, another order)"
        diffs.append(f"sessions differ{order}: missing {missing[:5]}, unexpected {extra[:5]}")
    by_name = {s["name"]: s for s in luo["sessions"]}
    nfiles = 0
    for ws in want_sessions:
        gs = by_name.get(ws.name)
        if gs is None:
            continue
        got_tokens = [f["token"] for f in gs["files"]]
        want_tokens = [tok for tok, _ in ws.files]
        if got_tokens != want_tokens:
            diffs.append(f"session {ws.name!r}: tokens {got_tokens[:8]} != {want_tokens[:8]}")
        for f in gs["files"]:
            nfiles += 1
            m = f.get("memfd") or {}
            where = f"session {ws.name!r} token {f['token']:#x}"
            if f.get("compatible") != "memfd-v2":
                diffs.append(f"{where}: handler {f.get('compatible')!r} != 'memfd-v2'")
            for field, want in (("size", page_size), ("pos", 0), ("seals", t_seals())):
                if m.get(field) != want:
                    diffs.append(f"{where}: {field} {m.get(field)} != {want}")
            if m.get("problems"):
                diffs.append(f"{where}: problems {m['problems']}")
    got_flbs = [(f["name"], f["data"], f["count"]) for f in luo["flbs"]]
    gen = _gen()
    want_flbs = [(f"liveupdate-test-flb-v{i}", gen.TEST_FLB_MAGIC_BASE + i, t.nr_files()) for i in range(gen.TEST_FLBS)]
    if got_flbs != want_flbs:
        diffs.append(f"FLBs {got_flbs} != {want_flbs}")

    r = kho("check", "--strict", str(capture))
    if r.returncode != 0:
        diffs.append(f"kho check --strict: exit {r.returncode}: {(r.stdout + r.stderr).strip()[-500:]}")

    with tempfile.TemporaryDirectory(prefix="kho-stage1-extract-") as tmp:
        out = Path(tmp) / "x"
        r = kho("luo", "extract", str(capture), "-o", str(out), "--json")
        if r.returncode != 0:
            diffs.append(f"kho luo extract: exit {r.returncode}: {r.stderr.strip()}")
        else:
            index = json.loads(r.stdout)
            files = {(s["name"], f["token"]): f for s in index["sessions"] for f in s["files"]}
            if index.get("files_written") != t.nr_files():
                diffs.append(
                    f"kho luo extract wrote {index.get('files_written')} files, the test preserved {t.nr_files()}"
                )
            for ws in want_sessions:
                for tok, text in ws.files:
                    f = files.get((ws.name, tok))
                    if f is None:
                        diffs.append(f"kho luo extract: no file for session {ws.name!r} token {tok:#x}")
                        continue
                    data = (out / f["file"]).read_bytes()
                    want = text.encode() + bytes(page_size - len(text))
                    if data != want:
                        first = next(
                            (i for i, (a, b) in enumerate(zip(data, want)) if a != b), min(len(data), len(want))
                        )
                        diffs.append(
                            f"session {ws.name!r} token {tok:#x}: {len(data)} bytes extracted, first difference"
                            f" at +{first:#x} (want {text!r} then zeros to {page_size})"
                        )
    stats = {"sessions": len(luo["sessions"]), "files": nfiles, "flbs": len(luo["flbs"])}
    return diffs, stats


def t_seals() -> int:
    return int(_gen().MEMFD_SEALS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("test")
    ap.add_argument("capture", type=Path)
    ap.add_argument("--page-size", type=int, default=4096)
    args = ap.parse_args(argv)
    diffs, stats = compare(args.capture, args.test, args.page_size)
    print(json.dumps({"test": args.test, "capture": str(args.capture), **stats, "differences": diffs}, indent=1))
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
