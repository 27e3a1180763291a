"""ABI versions, loaded from the declarative descriptions in ``schemas/``.

Nothing in the code paths names ``kho-v2`` or ``kho-v3``: what a version
requires (compatible string, sub-node properties, memory-map kind, radix
depth formula, v1 bitmap sizes, FDT style) is read from
``schemas/kho-vN.toml``.  A version that changes only those is a new file
there (``tests/test_extending.py`` proves it with imaginary versions loaded
by :func:`extra_schemas`); one that changes a struct also needs a layout
declaration registered in :mod:`kho_formats.abi.layout` and named in the
schema's ``[layout]`` table.  A new memory-map *kind* or a new property
type is code.

Radix constants are derived from ``PAGE_SHIFT`` the way the kernel's
``enum kho_radix_consts`` derives them, never repeated as literals.
"""

from __future__ import annotations

import ast
import math
import operator
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, cast

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import UnrepresentableError, VersionError

PAGE_SIZES = (4096, 16384, 65536)
BYTE_ORDERS = ("little", "big")


def _schema_dir() -> Path:
    package = Path(__file__).resolve().parent.parent  # kho_formats/
    for cand in (package / "_schemas", package.parent / "schemas"):
        if cand.is_dir():
            return cand
    raise VersionError("cannot find the schemas/ directory of ABI descriptions")


def page_shift(page_size: int) -> int:
    if page_size not in PAGE_SIZES:
        raise VersionError(f"unsupported page size {page_size}", expected="4096, 16384 or 65536")
    return page_size.bit_length() - 1


# -- a tiny, safe evaluator for the depth formulas in schemas/ -------------

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
}
_FUNCS = {"ceil": math.ceil, "floor": math.floor}


def eval_formula(expr: str, names: dict[str, int]) -> int:
    """Evaluate an arithmetic formula over named constants (no Python eval)."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise VersionError(f"unknown name {node.id!r} in formula {expr!r}")
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return cast(float, _BINOPS[type(node.op)](ev(node.left), ev(node.right)))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and len(node.args) == 1
        ):
            return _FUNCS[node.func.id](ev(node.args[0]))
        raise VersionError(f"unsupported construct in formula {expr!r}")

    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise VersionError(f"bad formula {expr!r}: {exc.msg}") from None
    value = ev(tree)
    if value != int(value):
        raise VersionError(f"formula {expr!r} is not an integer: {value}")
    return int(value)


@dataclass(frozen=True)
class RadixGeometry:
    """The kernel's ``kho_radix_consts`` for one page size and depth formula."""

    page_size: int
    depth_formula: str

    @property
    def page_shift(self) -> int:
        return page_shift(self.page_size)

    @property
    def order_0_log2(self) -> int:
        return 64 - self.page_shift

    @property
    def table_size_log2(self) -> int:
        return (self.page_size // 8).bit_length() - 1

    @property
    def bitmap_size_log2(self) -> int:
        return self.page_shift + 3

    def constants(self) -> dict[str, int]:
        return {
            "PAGE_SHIFT": self.page_shift,
            "PAGE_SIZE": self.page_size,
            "ORDER_0_LOG2": self.order_0_log2,
            "TABLE_SIZE_LOG2": self.table_size_log2,
            "BITMAP_SIZE_LOG2": self.bitmap_size_log2,
        }

    @property
    def depth(self) -> int:
        return eval_formula(self.depth_formula, self.constants())

    @property
    def max_order(self) -> int:
        """Highest order a key can encode (the order bit must stay >= bit 0)."""
        return self.order_0_log2 - 1

    @property
    def key_bits_covered(self) -> int:
        """Number of low key bits that the table indexes plus leaf bit cover."""
        return (self.depth - 1) * self.table_size_log2 + self.bitmap_size_log2

    def level_shift(self, level: int) -> int:
        """Right shift of the key that gives the table index at ``level`` (>= 1)."""
        return (level - 1) * self.table_size_log2 + self.bitmap_size_log2

    # -- keys ------------------------------------------------------------------

    def check_order(self, order: int) -> None:
        if not 0 <= order <= self.max_order:
            raise UnrepresentableError(
                f"order {order} is outside the radix key range",
                expected=f"0..{self.max_order} for {self.page_size // 1024} KiB pages",
            )

    def encode(self, phys: int, order: int) -> int:
        """``key(phys, order)`` exactly as the kernel computes it (64-bit)."""
        self.check_order(order)
        shift = self.page_shift + order
        if phys & ((1 << shift) - 1):
            raise UnrepresentableError(
                f"phys {phys:#x} is not aligned to its order-{order} page size",
                phys=phys,
                expected=f"alignment {1 << shift:#x}",
            )
        key = (1 << (self.order_0_log2 - order)) | (phys >> shift)
        return key & ((1 << 64) - 1)

    def decode(self, key: int) -> tuple[int, int]:
        if key <= 0:
            raise UnrepresentableError(f"radix key {key:#x} has no order bit")
        hb = key.bit_length() - 1
        order = self.order_0_log2 - hb
        if order < 0:
            raise UnrepresentableError(f"radix key {key:#x} has its order bit too high")
        phys = ((key & ~(1 << hb)) << (self.page_shift + order)) & ((1 << 64) - 1)
        return phys, order

    def indexes(self, key: int) -> tuple[list[int], int]:
        """Table indexes from the root (level DEPTH-1) down to level 1, and the leaf bit."""
        mask = (1 << self.table_size_log2) - 1
        idx = [(key >> self.level_shift(level)) & mask for level in range(self.depth - 1, 0, -1)]
        return idx, key & ((1 << self.bitmap_size_log2) - 1)

    def representable(self, key: int) -> bool:
        """True when every set bit of ``key`` is inside some table index or the leaf bit."""
        return key >> self.key_bits_covered == 0

    def check_representable(self, phys: int, order: int) -> int:
        key = self.encode(phys, order)
        if not self.representable(key):
            raise UnrepresentableError(
                f"page phys {phys:#x} order {order} has key {key:#x} with bits above "
                f"bit {self.key_bits_covered - 1}, which no table index of a "
                f"depth-{self.depth} tree covers",
                phys=phys,
                expected=f"keys below 1 << {self.key_bits_covered}",
            )
        return key


# -- memory-map kinds: what each needs of a schema ------------------------------------------
#
# A schema names its memory map's kind (``memory_map = "radix"``); the kind's codec lives in
# kho_formats.model.memmap, which registers the kind here (abi never imports it).  The two kinds
# the kernel has used are known from the start, with the schema tables they need.

SchemaCheck = Callable[["AbiVersion", str], None]


def check_radix_schema(version: AbiVersion, where: str) -> None:
    if not version.depth_formula:
        raise VersionError(f"schema {where}: a radix memory map needs [radix] depth")


def check_chunk_list_schema(version: AbiVersion, where: str) -> None:
    if not version.bitmap_variants:
        raise VersionError(f"schema {where}: a chunk-list memory map needs [chunk_list] bitmap_variants")
    for b in version.bitmap_variants:
        if b != "page" and not (b.isdigit() and int(b) % 8 == 0 and int(b) > 0):
            raise VersionError(f"schema {where}: bad bitmap variant {b!r}", expected='"page" or a byte count')


_BUILTIN_MAP_KINDS: dict[str, SchemaCheck] = {"radix": check_radix_schema, "chunk-list": check_chunk_list_schema}
_MAP_KINDS: dict[str, SchemaCheck] = dict(_BUILTIN_MAP_KINDS)


def register_map_kind(kind: str, check: SchemaCheck) -> None:
    """Make ``memory_map = "<kind>"`` valid in a schema; ``check(version, where)`` raises
    :class:`~kho_formats.errors.VersionError` for a schema that lacks what the kind needs."""
    _MAP_KINDS[kind] = check


def unregister_map_kind(kind: str) -> None:
    """Forget a kind registered with :func:`register_map_kind` (a built-in one reverts to its own check)."""
    if kind in _BUILTIN_MAP_KINDS:
        _MAP_KINDS[kind] = _BUILTIN_MAP_KINDS[kind]
    else:
        _MAP_KINDS.pop(kind, None)


def map_kinds() -> list[str]:
    """The memory-map kinds a schema may name."""
    return sorted(_MAP_KINDS)


PROPERTY_TYPES = ("u64",)
_SCHEMA_TABLES = {"version", "compatible", "memory_map", "root", "subnode", "fdt", "radix", "chunk_list", "layout"}


@dataclass(frozen=True)
class SubnodeProperty:
    """One property of a root sub-node, as the schema declares it.

    ``role``: ``"address"`` (the blob's phys), ``"size"`` (its size) or
    ``"value"`` (any other declared property, kept in ``SubBlob.values``)."""

    name: str
    role: str
    type: str = "u64"
    required: bool = False
    default: int | None = None
    doc: str = ""


@dataclass(frozen=True)
class AbiVersion:
    """One ``schemas/kho-vN.toml`` description."""

    name: str
    compatible: str
    memory_map: str  # "chunk-list" or "radix"
    root_required: tuple[str, ...]
    root_optional: tuple[str, ...]
    address_property: str
    size_property: str
    size_required: bool
    blob_is_fdt: bool
    property_order: tuple[str, ...]
    fdt_style: str
    strings_order: tuple[str, ...]
    depth_formula: str | None = None
    #: kho-v1 bitmap sizes under this compatible (``"page"`` or a byte count)
    bitmap_variants: tuple[str, ...] = ()
    #: sub-node properties besides the address and size ones (``[[subnode.property]]``)
    value_properties: tuple[SubnodeProperty, ...] = ()
    #: struct name -> layout declaration variant (``[layout]``); others are "default"
    layout: tuple[tuple[str, str], ...] = ()
    #: the schema file it was loaded from
    source: str = field(default="", compare=False)

    @property
    def number(self) -> int:
        m = re.search(r"v(\d+)", self.name)
        return int(m.group(1)) if m else 0

    @property
    def subnode_properties(self) -> tuple[SubnodeProperty, ...]:
        """Every declared sub-node property: address, size (if any), values."""
        out = [SubnodeProperty(self.address_property, "address", required=True)]
        if self.size_property:
            out.append(SubnodeProperty(self.size_property, "size", required=self.size_required))
        return (*out, *self.value_properties)

    def radix(self, page_size: int) -> RadixGeometry:
        if self.memory_map != "radix" or not self.depth_formula:
            raise VersionError(f"{self.name} has no radix tree memory map")
        return RadixGeometry(page_size, self.depth_formula)

    def bitmap_sizes(self, page_size: int) -> tuple[int, ...]:
        """The v1 bitmap sizes in bytes this version allows (``bitmap_variants``)."""
        return tuple(page_size if v == "page" else int(v) for v in self.bitmap_variants)

    @classmethod
    def from_toml(cls, data: dict[str, Any], source: str = "") -> AbiVersion:
        where = source or data.get("version", "?")
        unknown = set(data) - _SCHEMA_TABLES
        if unknown:
            raise VersionError(
                f"schema {where}: unknown keys {', '.join(sorted(unknown))}", expected=", ".join(sorted(_SCHEMA_TABLES))
            )
        try:
            sub = data["subnode"]
            fdt = data.get("fdt", {})
            values = tuple(
                SubnodeProperty(
                    name=str(p["name"]),
                    role="value",
                    type=str(p.get("type", "u64")),
                    required=bool(p.get("required", False)),
                    default=None if p.get("default") is None else int(p["default"]),
                    doc=str(p.get("doc", "")),
                )
                for p in sub.get("property", [])
            )
            v = cls(
                name=data["version"],
                compatible=data["compatible"],
                memory_map=data["memory_map"],
                root_required=tuple(data["root"]["required"]),
                root_optional=tuple(data["root"].get("optional", [])),
                address_property=sub["address_property"],
                size_property=sub.get("size_property", ""),
                size_required=bool(sub.get("size_required", False)),
                blob_is_fdt=bool(sub.get("blob_is_fdt", False)),
                property_order=tuple(sub.get("property_order", [sub["address_property"]])),
                fdt_style=fdt.get("style", "read-write"),
                strings_order=tuple(fdt.get("strings_order", [])),
                depth_formula=data.get("radix", {}).get("depth"),
                bitmap_variants=tuple(str(b) for b in data.get("chunk_list", {}).get("bitmap_variants", [])),
                value_properties=values,
                layout=tuple(sorted((str(k), str(x)) for k, x in data.get("layout", {}).items())),
                source=source,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise VersionError(f"schema {where}: missing or bad key {exc}") from None
        v._check(where)
        return v

    def _check(self, where: str) -> None:
        try:
            check = _MAP_KINDS[self.memory_map]
        except KeyError:
            raise VersionError(
                f"schema {where}: unknown memory_map {self.memory_map!r}", expected=" or ".join(sorted(_MAP_KINDS))
            ) from None
        check(self, where)
        names = [p.name for p in self.subnode_properties]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise VersionError(f"schema {where}: sub-node property declared twice: {', '.join(twice)}")
        for p in self.value_properties:
            if p.type not in PROPERTY_TYPES:
                raise VersionError(
                    f"schema {where}: property {p.name!r} has type {p.type!r}", expected=" or ".join(PROPERTY_TYPES)
                )


def load_schema_file(path: str | os.PathLike[str]) -> AbiVersion:
    """Read one ABI description (``kho-vN.toml``)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise VersionError(f"cannot read schema {os.fspath(path)}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise VersionError(f"schema {os.fspath(path)} is not TOML: {exc}") from None
    return AbiVersion.from_toml(data, source=os.fspath(path))


@cache
def _load_all() -> dict[str, AbiVersion]:
    """The shipped versions (``schemas/``)."""
    versions: dict[str, AbiVersion] = {}
    for path in sorted(_schema_dir().glob("kho-v*.toml")):
        v = load_schema_file(path)
        versions[v.name] = v
    return versions


_EXTRA: dict[str, AbiVersion] = {}
_LISTENERS: list[Callable[[], None]] = []


def on_registry_change(fn: Callable[[], None]) -> None:
    """Call ``fn`` whenever a version is registered or unregistered (caches keyed by version)."""
    _LISTENERS.append(fn)


def _registry() -> dict[str, AbiVersion]:
    return {**_load_all(), **_EXTRA} if _EXTRA else _load_all()


def register(v: AbiVersion) -> None:
    """Make a version known (for schemas outside ``schemas/``, e.g. tests)."""
    known = _registry()
    if v.name in known:
        raise VersionError(f"version {v.name} is already known (from {known[v.name].source or 'schemas/'})")
    for other in known.values():
        if other.compatible == v.compatible:
            raise VersionError(f"{v.name}: compatible {v.compatible!r} is already {other.name}'s")
    _EXTRA[v.name] = v
    for fn in _LISTENERS:
        fn()


def unregister(name: str) -> None:
    if name not in _EXTRA:
        raise VersionError(f"{name} was not registered with abi.register")
    del _EXTRA[name]
    for fn in _LISTENERS:
        fn()


@contextmanager
def extra_schemas(*paths: str | os.PathLike[str]) -> Iterator[list[AbiVersion]]:
    """Register the schemas in ``paths`` (files, or directories of
    ``kho-v*.toml``) for the duration of the ``with`` block."""
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("kho-v*.toml")) if p.is_dir() else [p])
    added: list[AbiVersion] = []
    try:
        for f in files:
            v = load_schema_file(f)
            register(v)
            added.append(v)
        yield added
    finally:
        for v in added:
            unregister(v.name)


def versions() -> list[AbiVersion]:
    return sorted(_registry().values(), key=lambda v: (v.number, v.name))


def version_names() -> list[str]:
    return [v.name for v in versions()]


def get_version(name: str) -> AbiVersion:
    try:
        return _registry()[name]
    except KeyError:
        raise VersionError(f"unknown KHO ABI version {name!r}", expected=" or ".join(version_names())) from None


def by_compatible(compatible: list[str]) -> tuple[AbiVersion, list[str]]:
    """Pick the version from a ``compatible`` string list.

    The first entry that names a known version decides, and the other
    entries are returned for reporting.  Usually it is the first entry
    (composite compatibles such as ``"kho-v4", "radix-v1"`` were proposed in
    2026); Linux 7.3 checks with ``fdt_node_check_compatible``, which accepts
    its version anywhere in the list, and so do we (``state.parse`` notes it).
    """
    if not compatible:
        raise VersionError("root node has no compatible string", path="/compatible")
    table = {v.compatible: v for v in _registry().values()}
    for i, entry in enumerate(compatible):
        if entry in table:
            return table[entry], list(compatible[:i]) + list(compatible[i + 1 :])
    raise VersionError(
        f"unknown compatible {compatible[0]!r}"
        if len(compatible) == 1
        else "unknown compatible " + ", ".join(f'"{c}"' for c in compatible),
        path="/compatible",
        expected=" or ".join(sorted(table)),
    )
