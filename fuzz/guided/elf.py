"""Target ``elf``: the input is an ELF core (a ``vmcore``, ``/proc/kcore``, a fixture's
``image.elf``).  ``PhysImage.from_elf`` over the bytes and reads across its segments, the file as
``/proc/kcore`` (``KcoreFile``: VMCOREINFO, the direct map, ``image()``), then the file through
``kho_formats.open`` (the root-FDT search, parse, check, the LUO paths)."""

from __future__ import annotations

import random

from fuzz.dumps import _read_some
from fuzz.guided.common import LIMITS, exercise, expected, scratch
from kho_formats.api import open as kho_open
from kho_formats.memory.image import PhysImage
from kho_formats.memory.kcore import KcoreFile


def _kcore(path: object) -> None:
    with KcoreFile(path, cache_pages=4) as kf:  # type: ignore[arg-type]
        kf.describe()
        _ = kf.page_size
        _read_some(kf.image(), random.Random(0))


def TestOneInput(data: bytes) -> None:
    img = expected(lambda: PhysImage.from_elf(data, name="fuzz ELF"))
    if img is not None:
        expected(lambda: _read_some(img, random.Random(len(data))))
    out = scratch()
    path = out / "input.elf"
    path.write_bytes(data)
    expected(lambda: _kcore(path))
    h = expected(lambda: kho_open(path, limits=LIMITS))
    if h is not None:
        exercise(h, out)
