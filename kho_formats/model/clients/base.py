"""The client protocol and the registries.

A KHO client is whatever one sub-node of the root FDT points at.  One
:class:`Client` subclass per client owns everything about it:

* ``decode(blob, ctx)`` -> its own typed result (a dataclass, never a bare
  dict or list); ``ctx`` is a :class:`DecodeContext` (layout, image, budget,
  ``where``, the registry for nested decoding);
* ``to_json(result)`` (the ``decoded`` value of ``kho inspect --json``),
  ``summary(decoded_json)`` and ``details(name, decoded_json)`` (the text of
  ``kho inspect``, rendered from the JSON form so a saved report renders the
  same);
* ``areas(result)``: the vmalloc areas it references (inspect lists them and
  check verifies their chunks and groups are preserved, whatever the client);
* ``referenced(result, page_size)``: the byte ranges of memory it references
  (what a compact capture of a full dump must keep: by default the chunks and
  pages of its vmalloc areas; a client adds its own structures);
* ``findings(result, ctx)``: its own ``kho check`` findings;
* ``spec_type``, ``spec_table`` and ``spec_params(values, where, base_dir)``:
  the ``[[blob]]`` keys it adds and their typed form;
  ``fixed_ranges(entry, page_size)`` and ``build(entry, ctx)``: what it
  places at fixed addresses, and how it allocates and encodes itself into
  segments and pages to preserve; ``reencode(result, layout)``: the pages a
  decoded result references, encoded again at their own addresses (the
  byte-exact rebuild of a capture);
* ``boot_rule``: how a booted kernel's log says it restored its data (an
  optional hook for ``kho boot``);
* ``report_key``, ``report(result)`` and ``report_text(value)``: an optional
  top-level key of ``kho inspect --json`` the client owns (``luo``: ``null``
  when the sub-node is absent or did not decode) and its section of the text
  report.

A :class:`Registry` maps keys to handlers; :data:`kho_formats.model.clients.registry`
is the registry of clients keyed by sub-node name, with a fallback (raw
bytes) for unknown names.  A client that owns other data (LUO sessions
holding memfd files, say) keeps a second registry keyed by its own key (a
``compatible`` string) of handlers with the same decode/JSON/area methods.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ...abi.layout import Layout
from ...errors import KhoFormatError
from ...findings import Finding
from ...limits import Budget
from ...memory.image import LazyData, PhysImage
from ...memory.pageset import PageSet
from ..specfields import SpecTable
from .vmalloc import VmallocArea

if TYPE_CHECKING:  # pragma: no cover
    from ...memory.alloc import PageAllocator
    from ..state import KhoState

#: a segment of the fixture image: (phys, bytes or bytes made when read, what it is)
Segment = tuple[int, bytes | LazyData, str]


def gen_bytes(seed: int, label: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes (SHAKE-256 of seed and label): never all zero."""
    return hashlib.shake_256(f"kho-formats:{seed}:{label}".encode()).digest(size)


def page_round(n: int, page_size: int) -> int:
    return -(-n // page_size) * page_size


# -- contexts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeContext:
    """What a decoder may use besides its blob."""

    layout: Layout
    image: PhysImage | None = None
    budget: Budget | None = None
    #: prefix for error paths ("memblock", "LUO:/session/0", ...)
    where: str = ""
    #: the client registry, for clients that decode other clients' data
    registry: Registry[Client] | None = None
    state: KhoState | None = None

    @property
    def byteorder(self) -> str:
        return self.layout.byteorder

    def at(self, where: str) -> DecodeContext:
        """The same context for a nested object."""
        return replace(self, where=where)


@dataclass(frozen=True)
class CheckContext:
    """What a client's ``findings`` may ask about the handover."""

    state: KhoState
    #: the path findings carry ("/kho_test")
    path: str
    #: is every page of ``[phys, phys + size)`` inside a preserved range?
    covered: Callable[[int, int], bool]

    @property
    def page_size(self) -> int:
        return self.state.page_size

    def preserved_as(self, phys: int, order: int) -> bool:
        """Is ``phys`` preserved as one page of exactly ``order``?"""
        return self.state.preserved.contains(phys, order)


@dataclass
class BuildContext:
    """What a client's ``build`` gets from the spec builder."""

    layout: Layout
    alloc: PageAllocator
    #: the spec's seed and arch (a blob's own ``seed`` overrides the seed)
    seed: int
    arch: str
    #: spec name for error messages
    where: str

    @property
    def page_size(self) -> int:
        return self.layout.page_size

    def seed_for(self, own: int | None) -> int:
        return self.seed if own is None else own

    def place(self, data: bytes, phys: int | None, what: str) -> tuple[int, Segment]:
        """Allocate (or claim, when ``phys`` is given) whole pages for ``data``."""
        size = page_round(len(data), self.page_size)
        if phys is None:
            phys = self.alloc.alloc(size, what=what)
        else:
            self.alloc.avoid(phys, phys + size)
        return phys, (phys, data.ljust(size, b"\0"), what)


@dataclass
class BuiltBlob:
    """A client's blob as built: the bytes the sub-node points at, where they
    are, every segment to put in the image (the blob's own included) and the
    pages the client preserves."""

    data: bytes
    phys: int
    segments: list[Segment]
    preserve: PageSet


@dataclass(frozen=True)
class BootLog:
    """What a client's boot judge sees of a booted kernel."""

    #: serial log lines, printk timestamps stripped
    lines: Sequence[str]
    #: the kernel printed ``KHO: found kexec handover data.``
    found: bool
    #: what this client's command-line contribution asked the kernel for
    #: (e.g. memblock region names); empty when it contributed nothing
    expected: Sequence[str] = ()
    #: what the kernel must give back, computed from the fixture before the
    #: boot by :attr:`BootRule.truth` (None: the rule has none)
    truth: Any = None


@dataclass(frozen=True)
class BootRule:
    """How ``kho boot`` exercises and judges a client.

    ``judge(log)`` -> ``(status, problem or None)``, status ``ok``, ``failed``,
    ``not-reported`` or ``not-exercised`` (a problem makes the boot
    ``rejected``); ``cmdline(result)`` -> ``[(expected name, kernel
    command-line argument), ...]`` from the client's decoded blob.

    A client checked from userspace (LUO) also has ``initrd(result)`` ->
    ``{path: bytes}``, the files the boot initramfs's ``/init``
    (``kho_formats/boot/luo_check.c``) reads, or None when this blob needs no
    userspace check; and ``truth(result, image, page_size)`` -> what the
    booted kernel must give back (:attr:`BootLog.truth` of ``judge``),
    computed from the fixture's bytes before the boot."""

    judge: Callable[[BootLog], tuple[str, str | None]]
    cmdline: Callable[[Any], list[tuple[str, str]]] | None = None
    initrd: Callable[[Any], dict[str, bytes] | None] | None = None
    truth: Callable[[Any, PhysImage, int], Any] | None = None


# -- the client protocol -----------------------------------------------------------------------


class Client:
    """Base class of a KHO client (subclass it; override what applies)."""

    #: the sub-node name in the root FDT (the registry key); None: matched by no name
    name: ClassVar[str | None] = None
    #: ``kind`` in inspect JSON (defaults to ``name``)
    kind: ClassVar[str] = ""
    #: ``type = ...`` of a ``[[blob]]`` that builds this client (None: not buildable)
    spec_type: ClassVar[str | None] = None
    #: the keys it adds to ``[[blob]]`` (and their README rows)
    spec_table: ClassVar[SpecTable | None] = None
    boot_rule: ClassVar[BootRule | None] = None
    #: a top-level key of inspect JSON this client fills (None: none)
    report_key: ClassVar[str | None] = None
    #: a top-level key of diff JSON this client fills (None: none); see :meth:`diff`
    diff_key: ClassVar[str | None] = None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "kind" not in cls.__dict__ and cls.name:
            cls.kind = cls.name

    # decoding
    def decode(self, blob: bytes, ctx: DecodeContext) -> Any:
        raise NotImplementedError

    def to_json(self, result: Any) -> Any:
        tj = getattr(result, "to_json", None)
        if tj is None:
            raise TypeError(f"{type(self).__name__}: no JSON form for {type(result).__name__}")
        return tj()

    def areas(self, result: Any) -> list[VmallocArea]:
        return []

    def referenced(self, result: Any, page_size: int) -> list[tuple[int, int]]:
        """Byte ranges ``[start, end)`` this client's data lives in, besides its
        sub-blob (kept by ``kho capture --from-dump`` and ``convert``)."""
        out: list[tuple[int, int]] = []
        for area in self.areas(result):
            out += [(int(c), int(c) + page_size) for c in area.chunks]
            out += area.group_ranges(page_size)
        return out

    # text (from the JSON form)
    def summary(self, decoded: Any) -> str:
        return ""

    def details(self, name: str, decoded: Any) -> list[str]:
        return []

    # a top-level inspect key (when ``report_key`` is set)
    def report(self, result: Any) -> Any:
        """The value of ``report_key`` in inspect JSON for a decoded blob."""
        return None

    def report_text(self, value: Any) -> list[str]:
        """Lines of the text report for a non-null ``report_key`` value."""
        return []

    # a top-level diff key (when ``diff_key`` is set)
    def diff(
        self,
        a: Any,
        b: Any,
        images: tuple[PhysImage | None, PhysImage | None],
        page_sizes: tuple[int, int],
        errors: tuple[str | None, str | None],
    ) -> dict[str, Any]:
        """The value of ``diff_key`` in diff JSON when either side has this client's sub-node: ``a`` / ``b``
        the decoded results (None: absent, or it did not decode and ``errors`` says why).  It must have
        an ``identical`` key, which the diff's own ``identical`` follows."""
        raise NotImplementedError

    def diff_text(self, value: Any) -> list[str]:
        """Lines of the text diff for a non-null ``diff_key`` value."""
        return []

    # checking
    def findings(self, result: Any, ctx: CheckContext) -> list[Finding]:
        return []

    # building
    def spec_params(self, values: dict[str, Any], where: str, base_dir: Path | None) -> Any:
        """The validated ``[[blob]]`` keys of :attr:`spec_table` -> the client's params."""
        return values

    def fixed_ranges(self, entry: Any, page_size: int) -> list[tuple[int, int]]:
        """Byte ranges the entry places at fixed addresses (the allocator avoids them)."""
        return []

    def build(self, entry: Any, ctx: BuildContext) -> BuiltBlob:
        raise KhoFormatError(f"client {self.kind!r} cannot be built from a spec")

    def reencode(self, result: Any, lay: Layout) -> list[tuple[int, bytes]]:
        """The pages the client's decoded result occupies besides its blob,
        encoded again at the addresses the decode recorded (``[]``: none, or
        not supported); a capture the kernel laid out gives them back byte for byte."""
        return []


# -- registries --------------------------------------------------------------------------------

T = TypeVar("T")


class Registry(Generic[T]):
    """Handlers keyed by a string (``key(handler)``), in registration order,
    with an optional ``fallback`` for keys nobody registered."""

    def __init__(self, what: str, key: Callable[[T], str | None], fallback: T | None = None) -> None:
        self.what = what
        self._key = key
        self._items: dict[str, T] = {}
        self.fallback = fallback

    def register(self, item: T, *, replace: bool = False) -> T:
        k = self._key(item)
        if not k:
            raise ValueError(f"{self.what}: {item!r} has no key")
        if k in self._items and not replace:
            raise ValueError(f"{self.what}: {k!r} is already registered")
        self._items[k] = item
        return item

    def unregister(self, key: str) -> T:
        return self._items.pop(key)

    def get(self, key: str) -> T | None:
        return self._items.get(key)

    def lookup(self, key: str) -> T:
        """The handler for ``key``, else the fallback."""
        item = self._items.get(key, self.fallback)
        if item is None:
            raise KeyError(f"{self.what}: nothing registered for {key!r}")
        return item

    def keys(self) -> list[str]:
        return list(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)


class ClientRegistry(Registry[Client]):
    """Clients keyed by sub-node name; the fallback decodes unknown blobs."""

    def __init__(self, fallback: Client) -> None:
        super().__init__("client registry", lambda c: c.name, fallback)

    def everyone(self) -> list[Client]:
        """Registered clients, then the fallback."""
        return list(self) + ([self.fallback] if self.fallback is not None else [])

    def by_kind(self, kind: str) -> Client | None:
        return next((c for c in self.everyone() if c.kind == kind), None)

    def by_spec_type(self, spec_type: str) -> Client | None:
        return next((c for c in self.everyone() if c.spec_type == spec_type), None)

    def spec_types(self) -> list[str]:
        return [c.spec_type for c in self.everyone() if c.spec_type]


__all__ = [
    "Client",
    "ClientRegistry",
    "Registry",
    "DecodeContext",
    "CheckContext",
    "BuildContext",
    "BuiltBlob",
    "BootLog",
    "BootRule",
    "Segment",
    "gen_bytes",
    "page_round",
]
