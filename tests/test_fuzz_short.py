"""The short CI fuzz run: ~2000 mutated handovers of every version, page
size and byte order (plus the real capture and the committed corpus) through
parse + decode_clients + check; nothing but KhoFormatError may escape.
Plus 150 inputs of each file-level target and 300 of each dump-file target
(kdump, ELF core, kcore: fuzz/dumps.py).

The long run is ``python fuzz/fuzz_kho.py --runs 100000`` (see the Fuzzing section of README.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fuzz.fuzz_kho import fuzz, guarded, load_corpus  # noqa: E402
from fuzz.seeds import SEED_CONFIGS, FuzzInput, all_seeds, build_seed  # noqa: E402

CORPUS = REPO / "fuzz" / "corpus"


def test_seeds_cover_every_version_page_size_and_byte_order():
    seeds = all_seeds()
    names = {s.name for s in seeds}
    for version in ("kho-v1", "kho-v2", "kho-v3", "kho-v4"):
        for kib in (4, 16, 64):
            for bo in ("little", "big"):
                assert any(n.startswith(f"{version}-{kib}k-{bo}") for n in names), (version, kib, bo)
    assert {c[3] for c in SEED_CONFIGS if c[0] == "kho-v1"} == {"512", "page"}
    for s in seeds:  # every seed is a valid handover
        out, exc, _ = guarded(s, 10.0)
        assert exc is None and out.startswith("ok"), (s.name, out, exc)


def test_seed_container_round_trips():
    s = build_seed("kho-v4", 16384, "big")
    t = FuzzInput.loads(s.dumps())
    assert (t.root, t.segments, t.params, t.hot) == (s.root, s.segments, s.params, s.hot)


def test_committed_corpus_replays_without_escapes():
    files = sorted(CORPUS.glob("*.khofuzz"))
    assert len(files) >= 30
    regressions = [f for f in files if f.name.startswith("regress-")]
    assert regressions, "the corpus keeps the minimized inputs of past escapes"
    for inp, _ in load_corpus(CORPUS):
        out, exc, dt = guarded(inp, 10.0)
        assert exc is None, f"{inp.name}: {type(exc).__name__}: {exc}"


def test_short_fuzz_run():
    stats = fuzz(2000, seed=20260101, corpus_dir=CORPUS, crash_dir=None, timeout=10.0)
    assert stats.runs == 2000
    detail = json.dumps(
        {k: {"error": v["error"], "seed": v["seed"], "ops": v["ops"]} for k, v in stats.crashes.items()}, indent=1
    )
    assert stats.escaped == 0, f"escaped exceptions (add each as a regression test):\n{detail}"
    # every layer was reached, not just the FDT header checks
    kinds = set(stats.outcomes)
    for k in ("FdtError", "MemoryMapError", "PropertyError", "ok"):
        assert any(x.startswith(k) for x in kinds), (k, kinds)
    # hang guards only (the 1 s per-input target is measured by the long run, not asserted here)
    assert stats.slowest < 10.0, stats.slowest_name


def test_harness_catches_escapes_and_hangs(monkeypatch):
    import fuzz.fuzz_kho as fk

    s = build_seed("kho-v4")

    def broken(*a, **k):
        raise IndexError("boom")

    monkeypatch.setattr(fk.kstate, "parse", broken)
    out, exc, _ = guarded(s, 10.0)
    assert out is None and isinstance(exc, IndexError)
    assert fk.signature(exc).startswith("IndexError@")

    def slow(*a, **k):
        while True:
            pass

    monkeypatch.setattr(fk.kstate, "parse", slow)
    out, exc, dt = guarded(s, 0.2)
    assert isinstance(exc, fk.Hang), (exc, dt)


@pytest.mark.parametrize("target", ["spec", "bundle", "boot", "convert"])
def test_short_fuzz_of_the_file_level_targets(target):
    """Issue 12: specs, bundle manifests, boot fixture directories and convert
    get only KhoFormatErrors out of mutated inputs (the long run is
    ``python fuzz/fuzz_kho.py --target all --runs 2000``)."""
    from fuzz.targets import fuzz_target

    st = fuzz_target(target, 150, seed=20260101, timeout=10.0)
    assert st.runs == 150
    assert st.escapes == 0, "\n\n".join(st.examples)
    assert "ok" in st.outcomes and len(st.outcomes) > 1, st.outcomes  # both valid and refused inputs were reached
    assert st.worst_seconds < 10.0, st.worst_input


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: its children, theirs...)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_multi_process_run_ends_when_a_worker_dies(tmp_path):
    """``--jobs 2``: a worker killed mid-run (as the OOM killer would) ends
    the run with an error at once; multiprocessing.Pool lost the task and
    waited for it forever."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "fuzz" / "fuzz_kho.py"), "--jobs", "2", "--runs", "1000000"]
        + ["--crash-dir", str(tmp_path / "crashes")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_descendants(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # the workers are running their inputs
        for pid in _descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the fuzzer kept waiting for a killed worker")
        assert proc.returncode != 0 and "worker process died" in err, err[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("target", ["kdump", "elf", "kcore"])
def test_short_fuzz_of_the_dump_readers(target):
    """Mutated kdump files (plain and flattened, every compression, both byte
    orders, the real QEMU one), ELF cores and kcore files through
    ``load_capture`` + ``parse_capture`` and the readers' page reads get only
    KhoFormatErrors out, quickly and without growing memory (the long run is
    ``python fuzz/fuzz_kho.py --target kdump --runs 20000``; fuzz/dumps.py).
    300 inputs each: about 3, 5 and 1 s."""
    from fuzz.targets import fuzz_target

    st = fuzz_target(target, 300, seed=20260101, timeout=10.0)
    assert st.runs == 300
    assert st.escapes == 0, "\n\n".join(st.examples)
    assert "ok" in st.outcomes and len(st.outcomes) > 2, st.outcomes
    assert st.worst_seconds < 5.0, st.worst_input
