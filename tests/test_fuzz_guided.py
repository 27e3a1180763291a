"""The coverage-guided fuzz targets (``fuzz/guided``, atheris; issue 21 item 6): the committed seed
corpus is what its generator writes, every committed input replays without an escape or an input
over 5 s, the harness tells an escape and a hang from a refusal, and a short libFuzzer run of each
target from the committed corpus (a fixed number of runs, ``-timeout=5 -rss_limit_mb=1024``) ends
without a crash, a timeout or an out-of-memory.  The long runs are in docs/fuzzing.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fuzz.guided import TARGETS  # noqa: E402
from fuzz.guided.corpus import CORPUS, generate  # noqa: E402

#: mutations after the committed corpus, per target (each run about 5-10 s on this machine)
RUNS = {"fdt": 200, "memmap": 60, "kdump": 60, "elf": 60, "spec": 10, "luo": 100}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _libfuzzer(target: str, tmp: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    (tmp / "new").mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "fuzz.guided", target, str(tmp / "new"), *args]
    cmd += ["-rss_limit_mb=1024", f"-artifact_prefix={tmp}/", "-print_final_stats=1"]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


def test_every_target_has_a_generator_and_a_corpus():
    for t in TARGETS:
        seeds = sorted((CORPUS / t).glob("seed-*"))
        assert len(seeds) >= 3, t
        # small files: the whole committed corpus stays a few MB
        assert sum(p.stat().st_size for p in (CORPUS / t).iterdir()) < 2 << 20, t


def test_committed_seeds_are_what_the_generator_writes(tmp_path):
    written = generate(tmp_path)
    for t, files in written.items():
        names = {p.name for p in files}
        committed = {p.name for p in (CORPUS / t).glob("seed-*")}
        assert names == committed, (t, sorted(names ^ committed))
        for p in files:
            assert (CORPUS / t / p.name).read_bytes() == p.read_bytes(), (
                f"{t}/{p.name} is stale: run fuzz.guided.corpus"
            )


def _check_run(target: str, r: subprocess.CompletedProcess[str], n: int, tmp: Path) -> None:
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{target}: exit {r.returncode}\n" + out[-6000:]
    assert f"Done {n} runs" in out, f"{target}:\n" + out[-3000:]
    assert not [p for p in tmp.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "slow-unit-"))]
    # the run was guided: atheris saw kho_formats' coverage
    cov = [int(x.split()[0]) for x in out.split("cov: ")[1:]]
    assert cov and max(cov) > 100, f"{target}:\n" + out[-2000:]


def test_short_guided_runs(tmp_path):
    """Each target under libFuzzer from the committed corpus (seeds, the minimized corpus of the
    long runs, ``regress-*``: every input once, then ``RUNS`` mutations), two at a time: exit 0 (a
    crash, an input over 5 s or an RSS over 1 GiB exits non-zero and leaves an artifact)."""
    todo = list(TARGETS)
    running: list[tuple[str, subprocess.Popen[str], int, Path]] = []
    failures = []
    while todo or running:
        while todo and len(running) < 2:
            t = todo.pop(0)
            d = tmp_path / t
            (d / "new").mkdir(parents=True)
            n = len(list((CORPUS / t).iterdir())) + RUNS[t]
            cmd = [sys.executable, "-m", "fuzz.guided", t, str(d / "new"), str(CORPUS / t), f"-runs={n}"]
            cmd += ["-timeout=5", "-rss_limit_mb=1024", f"-artifact_prefix={d}/"]
            p = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            running.append((t, p, n, d))
        t, p, n, d = running.pop(0)
        out, _ = p.communicate(timeout=600)
        try:
            _check_run(t, subprocess.CompletedProcess(p.args, p.returncode, out, ""), n, d)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n\n".join(failures)


def test_harness_fails_on_an_escape(tmp_path):
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "a").write_bytes(b"fine")
    (tmp_path / "seeds" / "b").write_bytes(b"boom")
    r = _libfuzzer("_selftest", tmp_path, str(tmp_path / "seeds"), "-runs=10", "-timeout=5")
    assert r.returncode != 0 and "IndexError: an escape" in r.stdout + r.stderr, r.stderr[-3000:]
    assert [p for p in tmp_path.iterdir() if p.name.startswith("crash-")]
    rp = subprocess.run(
        [sys.executable, "-m", "fuzz.guided", "_selftest", "--replay", str(tmp_path / "seeds")],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert rp.returncode == 1 and "1 escapes" in rp.stdout, rp.stdout + rp.stderr


def test_harness_fails_on_a_hang(tmp_path):
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "h").write_bytes(b"hang")
    r = _libfuzzer("_selftest", tmp_path, str(tmp_path / "seeds"), "-runs=10", "-timeout=1")
    assert r.returncode != 0 and "timeout" in (r.stdout + r.stderr).lower(), r.stderr[-3000:]


def test_a_refusal_is_not_an_escape(tmp_path):
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "a").write_bytes(b"fine")
    r = _libfuzzer("_selftest", tmp_path, str(tmp_path / "seeds"), "-runs=50", "-timeout=5")
    assert r.returncode == 0, r.stderr[-3000:]
