"""What every guided target shares: the escape rule, the scratch directory, and the
paths a handover goes down once it is open (check, JSON, DTS, LUO decode, extract,
diff, the ``kho boot`` digests)."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kho_formats.errors import KhoFormatError
from kho_formats.limits import Limits

REPO = Path(__file__).resolve().parent.parent.parent
FIX = REPO / "fixtures"
#: the per-input bounds libFuzzer enforces (``-timeout``, ``-rss_limit_mb``); the replay enforces the time
TIMEOUT_S = 5
RSS_LIMIT_MB = 1024
#: small bounds, so a hostile count is refused by a limit and not by the 5 s timeout
LIMITS = Limits(max_pages=4096, max_entries=1 << 18, max_runs=1 << 16)


def strict() -> None:
    """Numpy floating-point trouble and every warning are errors: an escape, not noise."""
    np.seterr(all="raise")
    warnings.simplefilter("error")


def expected(fn: Callable[[], Any]) -> Any:
    """``fn()``; a KhoFormatError is the expected refusal (None), anything else escapes."""
    try:
        return fn()
    except KhoFormatError:
        return None


_SCRATCH: Path | None = None


def scratch() -> Path:
    """An empty directory for this input's outputs (one per process, emptied each call)."""
    global _SCRATCH
    if _SCRATCH is None:
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        _SCRATCH = Path(tempfile.mkdtemp(prefix="khofuzz-", dir=base))
        import atexit

        atexit.register(shutil.rmtree, _SCRATCH, True)
    for p in list(_SCRATCH.iterdir()):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return _SCRATCH


def handover(root_fdt: bytes, image: Any, options: dict[str, Any] | None = None, **params: Any) -> Any:
    """A :class:`kho_formats.api.Handover` over bytes already in memory (what ``open()`` makes of a
    directory), with the fuzz limits.  ``options``: ``open()``'s reading options (``version``,
    ``v1_bitmap``, ``received``, ...); ``params``: the Capture's recorded hints."""
    from kho_formats.api import Handover, _Options
    from kho_formats.ops.capture import Capture

    cap = Capture(root_fdt=root_fdt, image=image, kind="fixture", sources={"root_fdt": "fuzz"}, **params)
    return Handover(cap, source="fuzz", inputs=[], options=_Options(**(options or {}), limits=LIMITS))


def exercise_luo(h: Any, out: Path | None, other: Any = None) -> None:
    """The LUO paths of a handover: decode, JSON, every file's contents and digests, re-encoding,
    ``luo extract`` into ``out``, the ``kho boot`` truth and list, and ``diff`` with ``other``."""
    from kho_formats.model.clients.luo import boot as luo_boot
    from kho_formats.model.clients.luo import content_runs_digest, reencode

    luo = expected(lambda: h.luo)
    if luo is None:
        return
    st = luo.state
    expected(luo.to_json)
    for _s, f in luo.files():
        expected(lambda f=f: luo.size(f))
        expected(lambda f=f: luo.digest(f))
        expected(lambda f=f: content_runs_digest(f, h.image, h.page_size))
        # the first MiB of the stream: a reader asking for all of a 2^63-byte memfd gets what it asked for
        expected(lambda f=f: sum(len(c) for c in itertools.islice(luo.contents(f, chunk=1 << 16), 16)))
    expected(lambda: reencode(st, h.state.layout))
    expected(lambda: luo_boot.luo_truth(st, h.image, h.page_size))
    expected(lambda: luo_boot.initrd_files(st))
    if out is not None:
        expected(lambda: luo.extract(out / "extract", force=False))
    if other is not None:
        expected(lambda: h.diff(other).to_json())


def exercise(h: Any, out: Path | None = None, other: Any = None) -> None:
    """Everything ``kho inspect``, ``check``, ``dts``, ``luo`` and ``diff`` do with an open handover."""
    if expected(lambda: h.state) is None:
        return
    expected(lambda: h.clients)
    expected(lambda: h.check(strict=True).to_json())
    expected(lambda: h.to_json(max_ranges=1000))
    expected(h.to_dts)
    expected(lambda: h.dts_documents(sub=True))
    exercise_luo(h, out, other)


__all__ = ["FIX", "LIMITS", "REPO", "RSS_LIMIT_MB", "TIMEOUT_S", "exercise", "exercise_luo", "expected", "handover"]
