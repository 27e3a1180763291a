"""Line coverage of kho_formats reached by a corpus: every target's inputs replayed under coverage.py
(uninstrumented by atheris), combined, and summed per layer of the package.

    python -m fuzz.guided.covreport [--corpus DIR] [--json OUT] [TARGET ...]

``--corpus DIR`` (default ``fuzz/corpus``) holds ``<target>/`` directories; every file below each
is one input.  Needs the ``fuzz`` extra (coverage.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fuzz.guided import TARGETS  # noqa: E402

#: the package's layers (README, "Package layout"), by path prefix under kho_formats/
LAYERS = ("abi/", "memory/", "model/", "ops/", "boot/", "api.py", "cli.py")


def layer_of(rel: str) -> str:
    for lay in LAYERS:
        if rel.startswith(lay):
            return lay.rstrip("/")
    return "base"


def measure(corpus: Path, targets: list[str], work: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rcfile = work / "coveragerc"
    rcfile.write_text(f"[run]\nsource = kho_formats\nparallel = true\ndata_file = {work}/.coverage\n")
    for t in targets:
        cmd = [sys.executable, "-m", "coverage", "run", f"--rcfile={rcfile}", "-m", "fuzz.guided", t, "--replay"]
        r = subprocess.run([*cmd, str(corpus / t)], cwd=REPO, env=env, capture_output=True, text=True)
        print(r.stdout.strip() or r.stderr[-2000:], flush=True)
    subprocess.run([sys.executable, "-m", "coverage", "combine", f"--rcfile={rcfile}"], cwd=REPO, env=env, check=True)
    out = work / "cov.json"
    subprocess.run(
        [sys.executable, "-m", "coverage", "json", f"--rcfile={rcfile}", "-o", str(out)],
        cwd=REPO, env=env, check=True, capture_output=True,
    )  # fmt: skip
    return json.loads(out.read_text())


def summarize(doc: dict) -> dict[str, tuple[int, int]]:
    """{layer: (covered lines, statements)} plus ``total``."""
    per: dict[str, list[int]] = {}
    for name, f in doc["files"].items():
        rel = name.split("kho_formats/", 1)[1]
        s = f["summary"]
        acc = per.setdefault(layer_of(rel), [0, 0])
        acc[0] += s["covered_lines"]
        acc[1] += s["num_statements"]
    tot = [sum(v[0] for v in per.values()), sum(v[1] for v in per.values())]
    return {**{k: (v[0], v[1]) for k, v in sorted(per.items())}, "total": (tot[0], tot[1])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=REPO / "fuzz" / "corpus")
    ap.add_argument("--json", type=Path, help="write coverage.py's JSON report here")
    ap.add_argument("targets", nargs="*", default=list(TARGETS))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="khofuzz-cov-") as tmp:
        doc = measure(a.corpus.resolve(), a.targets, Path(tmp))
    if a.json:
        a.json.write_text(json.dumps(doc))
    for k, (c, n) in summarize(doc).items():
        print(f"{k:8s} {c:6d} / {n:6d} lines  {100 * c / max(n, 1):5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
