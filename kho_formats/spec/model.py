"""The spec model: what :func:`~kho_formats.spec.load.spec_from_dict` gives and
:func:`~kho_formats.spec.build.build_spec` takes.  Client-specific keys of a
``[[blob]]`` live in ``BlobSpec.params``, a dataclass of the client's module."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..clients.kho_test import FolioSpec, KhoTestParams
from ..clients.memblock import MemblockParams, RegionSpec
from ..clients.raw import RawParams
from ..clients.vmalloc_area import VmallocSpec

DEFAULT_ALLOC = ((16 << 20, 16 << 20),)


@dataclass
class PreserveSpec:
    phys: int
    order: int = 0
    count: int = 1
    #: a byte range instead (phys = start); split into the largest aligned orders
    end: int | None = None
    max_order: int = 63


@dataclass
class BlobSpec:
    name: str
    type: str
    phys: int | None = None
    preserve: bool = True
    seed: int | None = None
    #: the client's own keys, as its ``spec_params`` returned them
    params: Any = None


@dataclass
class Spec:
    name: str = "fixture"
    version: str = "kho-v4"
    page_size: int = 4096
    byte_order: str = "little"
    arch: str = "arm64"
    v1_bitmap: str = "page"
    seed: int = 1
    root_fdt_phys: int | None = None
    preserve_root: bool = True
    blob_size: bool = True
    extra_compatible: list[str] = field(default_factory=list)
    #: ``KhoState.fdt_history``: "auto", "sequential" or "packed"
    root_fdt_history: str = "auto"
    alloc: list[tuple[int, int]] = field(default_factory=lambda: list(DEFAULT_ALLOC))
    scratch: list[tuple[int, int]] = field(default_factory=list)
    preserve: list[PreserveSpec] = field(default_factory=list)
    blobs: list[BlobSpec] = field(default_factory=list)
    vmalloc: list[VmallocSpec] = field(default_factory=list)
    source: str | None = None


__all__ = [
    "Spec",
    "BlobSpec",
    "PreserveSpec",
    "VmallocSpec",
    "FolioSpec",
    "RegionSpec",
    "KhoTestParams",
    "MemblockParams",
    "RawParams",
    "DEFAULT_ALLOC",
]
