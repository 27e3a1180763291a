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


def check_type(value: object, types: type | tuple[type, ...], param: str, func: str, *, optional: bool = False) -> None:
    """Raise :class:`TypeError` naming ``param`` of ``func`` unless ``value``
    is one of ``types`` (``None`` too when ``optional``; never a bool for int)."""
    if value is None and optional:
        return
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in _as_tuple(types))
    if not ok:
        names = " or ".join(t.__name__ for t in _as_tuple(types)) + (" or None" if optional else "")
        raise TypeError(f"{func}: {param} must be {names}, not {type(value).__name__}")


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


#: what library entry points take as bytes
BYTES_LIKE = (bytes, bytearray, memoryview)
