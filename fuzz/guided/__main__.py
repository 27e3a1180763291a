#!/usr/bin/env python3
"""``python -m fuzz.guided TARGET [libFuzzer flags] [CORPUS_DIR ...]``: fuzz one target with atheris
(kho_formats instrumented for coverage); ``python -m fuzz.guided TARGET --replay PATH ...``: run every
file (or every file in every directory) once through the target without atheris's instrumentation
(for coverage.py, the regression inputs and the slowest-input check), and exit 1 on an escape or an
input over the 5 s bound."""

from __future__ import annotations

import importlib
import os
import pkgutil
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent.parent))

from fuzz.guided import TARGETS  # noqa: E402


def _import_package() -> None:
    """Every kho_formats module, so atheris instruments them all at once (the lazy imports of the
    face would otherwise bring in modules without coverage feedback)."""
    import kho_formats

    for m in pkgutil.walk_packages(kho_formats.__path__, "kho_formats."):
        importlib.import_module(m.name)


class InputTimeout(BaseException):
    pass


def _files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    return out


def replay(target: str, paths: list[str], timeout: float) -> int:
    from fuzz.guided.common import strict

    mod = importlib.import_module(f"fuzz.guided.{target}")
    strict()
    files = _files(paths)
    escapes, slowest, slowest_name = 0, 0.0, ""

    def on_alarm(signum: int, frame: object) -> None:
        raise InputTimeout(f"over {timeout} s")

    signal.signal(signal.SIGALRM, on_alarm)
    for f in files:
        data = f.read_bytes()
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            mod.TestOneInput(data)
        except BaseException as exc:  # every escape is reported
            escapes += 1
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-4:])
            print(f"ESCAPE {f}: {type(exc).__name__}: {exc}\n{tb}", file=sys.stderr)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        dt = time.perf_counter() - t0
        if dt > slowest:
            slowest, slowest_name = dt, f.name
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{target}: {len(files)} inputs, {escapes} escapes, slowest {slowest:.2f} s ({slowest_name}), "
        f"peak RSS {rss:.0f} MiB"
    )
    return 1 if escapes or slowest > timeout else 0


def main(argv: list[str]) -> int:
    # libFuzzer's -merge=1 (and -fork) run argv[0] again with the other arguments: the target
    # travels in the environment, and this file is executable
    env_target = os.environ.get("KHO_FUZZ_TARGET")
    if env_target and (len(argv) < 2 or argv[1] not in (*TARGETS, "_selftest")):
        argv = [argv[0], env_target, *argv[1:]]
    if len(argv) < 2 or argv[1] not in (*TARGETS, "_selftest"):
        print(f"usage: python -m fuzz.guided {{{','.join(TARGETS)}}} [libFuzzer args | --replay PATH ...]")
        return 2
    target, rest = argv[1], argv[2:]
    if "--replay" in rest:
        from fuzz.guided.common import TIMEOUT_S

        return replay(target, [a for a in rest if a != "--replay"], float(TIMEOUT_S))
    import atheris

    if target != "_selftest":  # the harness's own test needs libFuzzer, not kho_formats' coverage
        with atheris.instrument_imports(include=["kho_formats"]):
            _import_package()
    from fuzz.guided.common import strict

    mod = importlib.import_module(f"fuzz.guided.{target}")
    strict()
    os.environ["KHO_FUZZ_TARGET"] = target
    atheris.Setup([str(Path(__file__).resolve()), *rest], mod.TestOneInput)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
