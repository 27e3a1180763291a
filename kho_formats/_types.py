"""Small shared types."""

from __future__ import annotations

from typing import Literal

from .errors import KhoFormatError

ByteOrder = Literal["little", "big"]


def as_byteorder(value: str) -> ByteOrder:
    """``value`` checked to be ``"little"`` or ``"big"`` (typed for ``int.from_bytes``)."""
    if value == "little":
        return "little"
    if value == "big":
        return "big"
    raise KhoFormatError(f"unknown byte order {value!r}", expected="little or big")
