"""Target ``kdump``: the input is a kdump file (``makedumpfile`` format, plain or flattened, any
compression).  ``load_kdump`` over the bytes and page reads across it, then the file on disk
through ``kho_formats.open`` (detection, the root-FDT search of ``kho inspect DUMP``, parse, check,
the LUO paths)."""

from __future__ import annotations

import random

from fuzz.dumps import _read_some
from fuzz.guided.common import LIMITS, exercise, expected, scratch
from kho_formats.api import open as kho_open
from kho_formats.memory.kdump import load_kdump


def TestOneInput(data: bytes) -> None:
    img = expected(lambda: load_kdump("fuzz.kdump", data=data))
    if img is not None:
        expected(lambda: _read_some(img, random.Random(len(data))))
    out = scratch()
    path = out / "input.kdump"
    path.write_bytes(data)
    h = expected(lambda: kho_open(path, limits=LIMITS))
    if h is not None:
        exercise(h, out)
