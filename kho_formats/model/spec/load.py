"""Loading specs: TOML/YAML/JSON -> a validated :class:`~.model.Spec`.

Keys, types and defaults come from the field tables (:mod:`.tables` and
each client's ``spec_table``); what is left here are the rules between keys.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ...abi.layout import KHO_VMALLOC_FLAGS_MASK
from ...errors import KhoFormatError, SpecError
from ...safeio import read_regular
from ..clients import ClientRegistry, registry
from ..clients.vmalloc_area import VmallocSpec
from ..specfields import RANGE, SPEC_FILES, SpecFiles, check_mapping, check_name, validate
from .model import BlobSpec, PreserveSpec, Spec
from .tables import BLOB, PRESERVE, TOP, VMALLOC


def spec_from_dict(
    d: dict,
    *,
    base_dir: Path | None = None,
    name: str | None = None,
    source: str | None = None,
    clients: ClientRegistry | None = None,
) -> Spec:
    """Validate a spec mapping (as loaded from TOML/YAML) into a :class:`Spec`."""
    reg = registry if clients is None else clients
    w = source or "spec"
    v = validate(TOP.fields, d, w)
    sp = Spec(name=v["name"] if v["name"] is not None else (name or "fixture"), source=source)
    check_name(sp.name, f"{w}.name")
    sp.version, sp.page_size, sp.byte_order, sp.arch = v["version"], v["page_size"], v["byte_order"], v["arch"]
    if sp.arch == "x86_64" and sp.byte_order != "little":
        raise SpecError(f"{w}: x86_64 is little-endian only")
    if sp.arch == "x86_64" and sp.page_size != 4096:
        raise SpecError(f"{w}: x86_64 has 4096-byte pages only")
    vb = v["v1_bitmap"]
    if vb not in ("page", "512", str(sp.page_size)):
        raise SpecError(f"{w}.v1_bitmap: {vb!r}", expected="page or 512")
    sp.v1_bitmap = "512" if vb == "512" else "page"
    sp.seed, sp.root_fdt_phys = v["seed"], v["root_fdt_phys"]
    sp.preserve_root, sp.blob_size = v["preserve_root"], v["blob_size"]
    sp.extra_compatible = v["extra_compatible"]
    sp.root_fdt_history = v["root_fdt_history"]
    if v["alloc"] is not None:
        sp.alloc = v["alloc"]
        if not sp.alloc:
            raise SpecError(f"{w}.alloc: empty", expected="at least one free region")
    sp.scratch = v["scratch"]  # None (absent): the arch's default; [] means none
    sp.preserve = [_preserve(p, f"{w}.preserve[{i}]") for i, p in enumerate(v["preserve"])]
    names = set()
    for i, b in enumerate(v["blob"] + v["blobs"]):
        bs = _blob(b, f"{w}.blob[{i}]", base_dir, reg)
        if bs.name in names:
            raise SpecError(f"{w}.blob[{i}]: duplicate sub-blob name {bs.name!r}")
        names.add(bs.name)
        sp.blobs.append(bs)
    for i, raw in enumerate(v["vmalloc"]):
        vw = f"{w}.vmalloc[{i}]"
        x = validate(VMALLOC.fields, raw, vw)
        vs = VmallocSpec(
            name=x["name"] if x["name"] is not None else f"vmalloc{i}",
            pages=x["pages"],
            order=x["order"],
            flags=x["flags"],
            seed=x["seed"],
            phys=x["phys"],
        )
        if vs.pages < 1 or vs.pages % (1 << vs.order):
            raise SpecError(f"{vw}: pages {vs.pages} must be a positive multiple of 1 << order {vs.order}")
        if vs.flags & ~KHO_VMALLOC_FLAGS_MASK:
            raise SpecError(f"{vw}.flags: {vs.flags:#x}", expected=f"bits of {KHO_VMALLOC_FLAGS_MASK:#x}")
        if vs.name in names:
            raise SpecError(f"{vw}: duplicate sub-blob name {vs.name!r}")
        names.add(vs.name)
        sp.vmalloc.append(vs)
    for n in names:
        if not n or "/" in n or "@" in n:
            raise SpecError(f"{w}: bad sub-blob name {n!r}", expected="an FDT node name")
    return sp


def _preserve(p: Any, pw: str) -> PreserveSpec:
    x = validate(PRESERVE.fields, p, pw)
    if "phys" in p:
        if any(k in p for k in ("start", "size", "end", "max_order")):
            raise SpecError(f"{pw}: give phys/order/count or start/size|end, not both")
        return PreserveSpec(x["phys"], x["order"], x["count"])
    if "order" in p or "count" in p:
        raise SpecError(f"{pw}: order/count go with phys, not with a range")
    a, s = RANGE.parse({k: p[k] for k in ("start", "size", "end") if k in p}, pw)
    return PreserveSpec(a, end=a + s, max_order=x["max_order"])


def _blob(b: Any, bw: str, base_dir: Path | None, reg: ClientRegistry) -> BlobSpec:
    typed = [c for c in reg.everyone() if c.spec_type]
    own = {c.spec_type: [f.name for f in c.spec_table.fields] if c.spec_table else [] for c in typed}
    common = [f.name for f in BLOB.fields]
    allowed = list(dict.fromkeys(common + [k for keys in own.values() for k in keys]))
    check_mapping(b, allowed, bw)
    x = validate(BLOB.fields, {k: b[k] for k in common if k in b}, bw)
    types = reg.spec_types()
    typ = x["type"] if x["type"] is not None else (x["name"] if x["name"] in types else "raw")
    client = reg.by_spec_type(typ)
    if client is None:
        raise SpecError(f"{bw}.type: {typ!r}", expected=", ".join(types))
    mine = own[typ]
    for k in b:
        if k not in common and k not in mine:
            raise SpecError(f"{bw}.{k}: not a key of a {typ} blob", expected=", ".join(mine))
    values = validate(client.spec_table.fields, {k: b[k] for k in mine if k in b}, bw) if client.spec_table else {}
    params = client.spec_params(values, bw, base_dir)
    return BlobSpec(name=x["name"], type=typ, phys=x["phys"], preserve=x["preserve"], seed=x["seed"], params=params)


#: largest spec file read (bytes)
SPEC_TEXT_MAX = 16 << 20
#: deepest nesting of lists/tables a spec may have (checked before parsing)
SPEC_MAX_DEPTH = 32
#: YAML aliases a spec may use (``*name``): a few are handy, a bomb is refused
YAML_MAX_ALIASES = 64
#: YAML nodes after expanding the aliases
YAML_MAX_NODES = 1 << 20


def load_spec(path: str | os.PathLike, *, allow_outside_files: bool = False) -> Spec:
    """Load a ``.toml`` / ``.yaml`` / ``.yml`` / ``.json`` spec file.

    Files the spec names (``[[blob]] file = ...``) must be regular files under
    the spec's directory unless ``allow_outside_files`` (the CLI's
    ``kho build --allow-outside-files``)."""
    p = Path(path)
    raw = read_regular(p, "spec", max_size=SPEC_TEXT_MAX, error=SpecError)
    token = SPEC_FILES.set(SpecFiles(base_dir=p.parent, allow_outside=allow_outside_files))
    try:
        return loads_spec(raw, fmt=p.suffix.lstrip(".").lower(), name=p.stem, base_dir=p.parent, source=str(p))
    finally:
        SPEC_FILES.reset(token)


#: longest run of number characters outside strings (digit limit before conversion)
SPEC_MAX_NUMBER_TEXT = 72
_NUMBER_CHARS = frozenset("0123456789abcdefABCDEF_xXoO")


def _scan(text: str, fmt: str) -> tuple[int, int]:
    """Deepest ``[``/``{`` nesting and longest run of number characters, both
    outside strings and comments (a conservative scan: it may over-count,
    never under-count)."""
    depth = best = run = longest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _NUMBER_CHARS:
            run += 1
            longest = max(longest, run)
            i += 1
            continue
        run = 0
        if c in "[{":
            depth += 1
            best = max(best, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
        elif c == "#" and fmt != "json":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c in "\"'":
            if text.startswith(c * 3, i) and fmt == "toml":
                j = text.find(c * 3, i + 3)
                i = n if j < 0 else j + 3
                continue
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" and c == '"' else 1
            i = j + 1
            continue
        i += 1
    return best, longest


def _yaml_load(text: str, where: str) -> Any:
    import yaml
    from yaml.events import AliasEvent, CollectionStartEvent

    class Loader(yaml.SafeLoader):
        aliases = 0
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(AliasEvent):
                self.aliases += 1
                if self.aliases > YAML_MAX_ALIASES:
                    raise SpecError(f"{where}: more than {YAML_MAX_ALIASES} YAML aliases")
            elif self.check_event(CollectionStartEvent):
                if self.depth >= SPEC_MAX_DEPTH:
                    raise SpecError(f"{where}: nested deeper than {SPEC_MAX_DEPTH}")
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    def construct_int(loader: yaml.SafeLoader, node: Any) -> Any:
        if len(str(node.value)) > SPEC_MAX_NUMBER_TEXT:
            raise SpecError(f"{where}: a number of {len(str(node.value))} characters")
        return yaml.SafeLoader.construct_yaml_int(loader, node)

    Loader.add_constructor("tag:yaml.org,2002:int", construct_int)
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > YAML_MAX_NODES:
            raise SpecError(f"{where}: aliases expand to more than {YAML_MAX_NODES} YAML nodes")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: Any) -> int:
    """Nodes of the YAML graph with every alias expanded (memoized per node,
    so a bomb is measured, not expanded)."""
    from yaml.nodes import MappingNode, SequenceNode

    memo: dict[int, int] = {}

    def size(node: Any) -> int:
        k = id(node)
        if k in memo:
            return memo[k]
        memo[k] = YAML_MAX_NODES + 1  # a cycle counts as too big
        if isinstance(node, SequenceNode):
            n = 1 + sum(size(c) for c in node.value)
        elif isinstance(node, MappingNode):
            n = 1 + sum(size(a) + size(b) for a, b in node.value)
        else:
            n = 1
        memo[k] = n = min(n, YAML_MAX_NODES + 1)
        return n

    return size(root)


def _parse_text(text: str, fmt: str, where: str) -> Any:
    if fmt not in ("toml", "yaml", "yml", "json"):
        raise SpecError(f"{where}: unknown spec format {fmt!r}", expected=".toml, .yaml, .yml or .json")
    depth, number = _scan(text, fmt)
    if depth > SPEC_MAX_DEPTH:
        raise SpecError(f"{where}: nested deeper than {SPEC_MAX_DEPTH}")
    if number > SPEC_MAX_NUMBER_TEXT and fmt != "yaml" and fmt != "yml":  # YAML: checked by its int constructor
        raise SpecError(f"{where}: a number of {number} characters", expected=f"at most {SPEC_MAX_NUMBER_TEXT}")
    if fmt == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{where}: bad TOML: {exc}") from None
    if fmt == "json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise SpecError(f"{where}: bad JSON: {exc}") from None
    import yaml

    try:
        return _yaml_load(text, where)
    except yaml.YAMLError as exc:
        raise SpecError(f"{where}: bad YAML: {' '.join(str(exc).split())}") from None


def loads_spec(
    raw: str | bytes,
    *,
    fmt: str = "toml",
    name: str = "fixture",
    base_dir: Path | None = None,
    source: str | None = None,
) -> Spec:
    """A spec from text.  Every failure is a :class:`SpecError`: nesting
    deeper than :data:`SPEC_MAX_DEPTH` and YAML alias bombs are refused before
    anything is built, integers longer than 40 characters before conversion."""
    if not isinstance(raw, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"loads_spec: raw must be str or bytes, not {type(raw).__name__}")
    text = bytes(raw).decode("utf-8", "replace") if not isinstance(raw, str) else raw
    where = source or "spec"
    try:
        d = _parse_text(text, fmt, where)
        if d is None:
            d = {}
        return spec_from_dict(d, base_dir=base_dir, name=name, source=source)
    except SpecError:
        raise
    except KhoFormatError as exc:
        raise SpecError(f"{where}: {exc}") from None
    except (RecursionError, MemoryError, OverflowError, ValueError, TypeError) as exc:
        # a last net: parsers and validators must not leak these for any text
        raise SpecError(f"{where}: unusable spec ({type(exc).__name__}: {str(exc)[:200]})") from None


__all__ = ["spec_from_dict", "load_spec", "loads_spec"]
