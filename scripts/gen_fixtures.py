#!/usr/bin/env python3
"""Build the sample fixtures: fixtures/specs/<name>.{toml,yaml,yml} -> fixtures/<name>/.

    python scripts/gen_fixtures.py               # regenerate every fixture in place
    python scripts/gen_fixtures.py -o /tmp/fx    # somewhere else (tests compare the bytes)
    python scripts/gen_fixtures.py v4-4k v1-512-4k

The build is deterministic: the same spec gives the same bytes, so the
fixtures in git must equal what this script writes (tests/test_cli_fixtures.py
checks every file).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "fixtures" / "specs"
SPEC_SUFFIXES = (".toml", ".yaml", ".yml")


def spec_files(names=()):
    files = sorted(p for p in SPECS.iterdir() if p.suffix in SPEC_SUFFIXES)
    if names:
        by = {p.stem: p for p in files}
        missing = [n for n in names if n not in by]
        if missing:
            raise SystemExit(f"gen_fixtures: no spec named {', '.join(missing)} in {SPECS}")
        files = [by[n] for n in names]
    return files


def generate(outdir: Path, names=()) -> list:
    sys.path.insert(0, str(ROOT))
    from kho_formats.model.fixture import write_fixture
    from kho_formats.model.spec import build_spec, load_spec

    done = []
    for path in spec_files(names):
        sp = load_spec(path)
        target = outdir / sp.name
        if target.exists():
            shutil.rmtree(target)
        write_fixture(build_spec(sp), target)
        done.append(target)
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="spec names (default: all in fixtures/specs/)")
    ap.add_argument("-o", "--outdir", type=Path, default=ROOT / "fixtures", help="default: fixtures/")
    args = ap.parse_args(argv)
    for d in generate(args.outdir, args.names):
        size = sum(f.stat().st_size for f in d.iterdir())
        print(f"{d}: {size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
