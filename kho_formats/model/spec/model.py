"""The spec model: what :func:`~kho_formats.model.spec.load.spec_from_dict` gives and
:func:`~kho_formats.model.spec.build.build_spec` takes.  Client-specific keys of a
``[[blob]]`` live in ``BlobSpec.params``, a dataclass of the client's module."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..clients.kho_test import FolioSpec, KhoTestParams
from ..clients.memblock import MemblockParams, RegionSpec
from ..clients.raw import RawParams
from ..clients.vmalloc_area import VmallocSpec

#: Default placement per arch, used when a spec gives no ``[[alloc]]`` /
#: no ``[[scratch]]``: ``(start, size)`` regions a ``kho boot`` of the fixture
#: accepts as they are.
#:
#: arm64 (QEMU ``virt -m 1G``, RAM ``0x40000000..0x80000000``): clear of QEMU's
#: boot stub (``0x40000000``), the kernel Image (``0x40200000`` + image size,
#: up to ~``0x41850000`` for the 64 KiB build), the boot DTB / initramfs at
#: ``0x48000000``, and ``kho boot``'s own scratch array slot (``0x7ff00000``):
#: alloc 32 MiB at ``0x70000000``, scratch 256 MiB at ``0x50000000`` (the
#: kernel needs >= 64 MiB of scratch; 48 MiB panics allocating the memmap).
#:
#: x86_64 (QEMU ``pc -m 1G``, RAM from 0; the kernel decompresses at 16 MiB
#: and needs ~12 MiB ``init_size``): alloc 32 MiB at ``0x20000000`` (the root
#: FDT page lands on ``0x20000000``), scratch 128 MiB at ``0x28000000``.
DEFAULT_ALLOC: dict[str, tuple[tuple[int, int], ...]] = {
    "arm64": ((0x7000_0000, 32 << 20),),
    "x86_64": ((0x2000_0000, 32 << 20),),
}
DEFAULT_SCRATCH: dict[str, tuple[tuple[int, int], ...]] = {
    "arm64": ((0x5000_0000, 256 << 20),),
    "x86_64": ((0x2800_0000, 128 << 20),),
}


def default_alloc(arch: str) -> list[tuple[int, int]]:
    """The free regions a spec of ``arch`` without ``[[alloc]]`` gets."""
    return list(DEFAULT_ALLOC.get(arch, DEFAULT_ALLOC["arm64"]))


def default_scratch(arch: str) -> list[tuple[int, int]]:
    """The scratch areas a spec of ``arch`` without ``scratch`` gets
    (``scratch = []`` in a spec means none)."""
    return list(DEFAULT_SCRATCH.get(arch, DEFAULT_SCRATCH["arm64"]))


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
    #: None: :func:`default_alloc` of ``arch`` (resolved when the spec is built)
    alloc: list[tuple[int, int]] | None = None
    #: None: :func:`default_scratch` of ``arch``; ``[]``: no scratch area
    scratch: list[tuple[int, int]] | None = None
    preserve: list[PreserveSpec] = field(default_factory=list)
    blobs: list[BlobSpec] = field(default_factory=list)
    vmalloc: list[VmallocSpec] = field(default_factory=list)
    source: str | None = None

    def alloc_regions(self) -> list[tuple[int, int]]:
        """``alloc``, or the arch's default when the spec gives none."""
        return list(self.alloc) if self.alloc is not None else default_alloc(self.arch)

    def scratch_areas(self) -> list[tuple[int, int]]:
        """``scratch``, or the arch's default when the spec gives none."""
        return list(self.scratch) if self.scratch is not None else default_scratch(self.arch)


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
    "DEFAULT_SCRATCH",
    "default_alloc",
    "default_scratch",
]
