"""The memory-map codec protocol (:class:`MapCodec`) and the registry of codecs by kind
(:func:`register`); :mod:`kho_formats.model.memmap` re-exports it and registers the built-in kinds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from ...abi.versions import register_map_kind, unregister_map_kind
from ...errors import VersionError

if TYPE_CHECKING:  # pragma: no cover
    from ...abi.layout import Layout
    from ...abi.versions import AbiVersion
    from ...limits import Budget
    from ...memory.alloc import PageAllocator
    from ...memory.image import PhysImage
    from ...memory.pageset import PageSet


@dataclass(frozen=True)
class MapContext:
    """Everything a codec needs to know about the handover it works on."""

    version: AbiVersion
    page_size: int
    byteorder: str

    @property
    def layout(self) -> Layout:
        from ...abi.layout import layout

        return layout(self.page_size, self.byteorder, self.version.name)


@runtime_checkable
class MemoryMap(Protocol):
    """What a walk saw or a build wrote: the map's own pages and where each sits.

    Handed back to :meth:`MapCodec.build` as ``placement``, it rebuilds a
    parsed map at its own addresses (byte for byte).
    """

    kind: ClassVar[str]

    @property
    def first(self) -> int:
        """Physical address the root FDT's ``preserved-memory-map`` names (0: empty)."""
        ...

    def metadata_ranges(self, page_size: int) -> list[tuple[int, int]]:
        """Merged ``[start, end)`` byte ranges of the map's own pages."""
        ...

    def copy(self) -> MemoryMap: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass
class MapRead:
    """The result of :meth:`MapCodec.read`."""

    pages: PageSet
    map: MemoryMap
    #: format parameters the walk found out (e.g. ``{"v1_bitmap_bytes": 512}``)
    params: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class MapBuilt:
    """The result of :meth:`MapCodec.build`: the map's pages, first page first."""

    first: int
    pages: list[tuple[int, bytes | memoryview]]
    map: MemoryMap


class MapCodec(Protocol):
    """Reads and writes one kind of preserved-memory map."""

    #: the schemas' ``memory_map`` value this codec implements
    kind: ClassVar[str]
    #: format parameters the root FDT does not record: name -> description.
    #: They travel in ``KhoState.map_params``, ``handover.json`` and the
    #: ``kho inspect --json`` top level (``null`` for versions without them).
    params: ClassVar[Mapping[str, str]]
    #: ``kho check`` policy for versions using this map: is a root FDT page
    #: that is not preserved a problem, and how bad is an unpreserved sub-blob
    root_fdt_must_be_preserved: ClassVar[bool]
    unpreserved_blob_severity: ClassVar[str]

    def check_schema(self, version: AbiVersion, where: str) -> None:
        """Refuse a schema that lacks what this kind needs (``VersionError``)."""
        ...

    def read(
        self,
        image: PhysImage,
        first: int,
        ctx: MapContext,
        *,
        budget: Budget,
        params: Mapping[str, int],
        options: Mapping[str, Any],
    ) -> MapRead:
        """Walk the map at ``first``.  ``params`` are known parameters (a
        fixture recorded them), ``options`` the caller's choices (``v1_bitmap``)."""
        ...

    def build(
        self,
        pages: PageSet,
        ctx: MapContext,
        alloc: PageAllocator | None,
        *,
        params: Mapping[str, int],
        placement: MemoryMap | None = None,
        keep_empty: bool = False,
    ) -> MapBuilt:
        """Lay ``pages`` out as the kernel would; new pages from ``alloc``,
        existing ones where ``placement`` had them (``keep_empty``: keep its
        empty nodes too, as a parsed capture had them)."""
        ...

    def check_representable(self, pages: PageSet, ctx: MapContext) -> None:
        """Raise :class:`~kho_formats.errors.UnrepresentableError` for what the map cannot hold."""
        ...

    def params_for(self, ctx: MapContext, source: Mapping[str, int], options: Mapping[str, Any]) -> dict[str, int]:
        """Parameters of a map about to be built (from a source state's and the caller's options)."""
        ...

    def summary(self, ctx: MapContext, m: MemoryMap | None) -> dict[str, Any]:
        """Keys added to ``kho inspect --json``'s ``memory_map`` object."""
        ...

    def describe(self, summary: Mapping[str, Any]) -> str:
        """Text detail for ``kho inspect`` from :meth:`summary`'s keys (``""`` for none)."""
        ...

    def param_lines(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(label, text)`` lines for ``kho inspect`` from this kind's parameters
        (``params`` may hold other kinds' keys too, with ``None``)."""
        ...

    def changes(self, old: MapContext, new: MapContext) -> list[str]:
        """What a conversion between two versions of this kind changes in the map."""
        ...


_CODECS: dict[str, MapCodec] = {}


def register(codec: MapCodec) -> MapCodec:
    """Make ``codec`` the implementation of its ``kind`` (returned, for use as a decorator result),
    and the kind one a schema may name (:func:`kho_formats.abi.register_map_kind`)."""
    _CODECS[codec.kind] = codec
    register_map_kind(codec.kind, codec.check_schema)
    return codec


def unregister(kind: str) -> None:
    """Forget the codec of ``kind`` (for tests that register their own)."""
    if kind not in _CODECS:
        raise VersionError(f"no memory map kind {kind!r} is registered")
    del _CODECS[kind]
    unregister_map_kind(kind)


def kinds() -> list[str]:
    return sorted(_CODECS)


def get(kind: str) -> MapCodec:
    """The codec of a ``memory_map`` kind."""
    try:
        return _CODECS[kind]
    except KeyError:
        raise VersionError(f"unknown memory map kind {kind!r}", expected=" or ".join(sorted(_CODECS))) from None


def codec_for(version: AbiVersion) -> MapCodec:
    """The codec of the map kind a version's schema names."""
    return get(version.memory_map)


def param_names() -> list[str]:
    """Every map parameter of every registered kind, in registration order."""
    out: list[str] = []
    for c in _CODECS.values():
        out += [n for n in c.params if n not in out]
    return out


def params_json(codec: MapCodec, params: Mapping[str, int]) -> dict[str, int | None]:
    """Every known map parameter, with its value where ``codec``'s kind has it, else ``None``."""
    return {n: params.get(n) if n in codec.params else None for n in param_names()}


def merged(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    from ...memory.alloc import merge_ranges

    return merge_ranges(ranges)


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
]
