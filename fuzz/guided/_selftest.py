"""Not a target: what the harness tests feed to libFuzzer to see that an escape, a hang and a
KhoFormatError are told apart (``tests/test_fuzz_guided.py``)."""

from __future__ import annotations

import time

from fuzz.guided.common import expected
from kho_formats.errors import KhoFormatError


def _refuse() -> None:
    raise KhoFormatError("refused, as a malformed input is")


def TestOneInput(data: bytes) -> None:
    expected(_refuse)
    if data.startswith(b"boom"):
        raise IndexError("an escape")
    if data.startswith(b"hang"):
        time.sleep(30)
