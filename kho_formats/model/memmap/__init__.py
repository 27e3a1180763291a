"""Preserved-memory maps: one codec per ``memory_map`` kind of the schemas.

A version's schema (``schemas/kho-vN.toml``) names its map kind
(``memory_map = "radix"`` or ``"chunk-list"``); :func:`codec_for` hands out
the :class:`MapCodec` registered under that name.  Everything that differs
between map kinds lives in the codec: reading the map into a
:class:`~kho_formats.memory.pageset.PageSet`, building it, refusing what it cannot
hold, its JSON and text summary, what ``kho check`` requires of a version
using it, and the parameters the root FDT does not record (kho-v1's bitmap
size).  ``state``, ``report``, ``check``, ``migrate`` and ``spec`` only ever
talk to a codec; none of them names a map kind.

A new map kind is one module that defines a codec and calls
:func:`register` (see ``docs/extending.md``).
"""

from __future__ import annotations

# the built-in kinds: each module registers its codec
from . import chunklist, radix  # noqa: F401
from .codec import (
    MapBuilt,
    MapCodec,
    MapContext,
    MapRead,
    MemoryMap,
    codec_for,
    get,
    kinds,
    merged,
    param_names,
    params_json,
    register,
    unregister,
)

__all__ = [
    "MapBuilt",
    "MapCodec",
    "MapContext",
    "MapRead",
    "MemoryMap",
    "codec_for",
    "get",
    "kinds",
    "param_names",
    "params_json",
    "register",
    "unregister",
    "merged",
]
