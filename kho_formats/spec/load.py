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

from ..clients import ClientRegistry, registry
from ..clients.vmalloc_area import VmallocSpec
from ..errors import SpecError
from ..layout import KHO_VMALLOC_FLAGS_MASK
from ..specfields import RANGE, check_mapping, check_name, validate
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
    if v["alloc"] is not None:
        sp.alloc = v["alloc"]
        if not sp.alloc:
            raise SpecError(f"{w}.alloc: empty", expected="at least one free region")
    sp.scratch = v["scratch"]
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


def load_spec(path: str | os.PathLike) -> Spec:
    """Load a ``.toml`` / ``.yaml`` / ``.yml`` / ``.json`` spec file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read spec {p}: {exc.strerror}") from None
    return loads_spec(raw, fmt=p.suffix.lstrip(".").lower(), name=p.stem, base_dir=p.parent, source=str(p))


def loads_spec(
    raw: str | bytes,
    *,
    fmt: str = "toml",
    name: str = "fixture",
    base_dir: Path | None = None,
    source: str | None = None,
) -> Spec:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    where = source or "spec"
    if fmt == "toml":
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{where}: bad TOML: {exc}") from None
    elif fmt in ("yaml", "yml"):
        import yaml

        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(f"{where}: bad YAML: {' '.join(str(exc).split())}") from None
    elif fmt == "json":
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise SpecError(f"{where}: bad JSON: {exc}") from None
    else:
        raise SpecError(f"{where}: unknown spec format {fmt!r}", expected=".toml, .yaml, .yml or .json")
    if d is None:
        d = {}
    return spec_from_dict(d, base_dir=base_dir, name=name, source=source)


__all__ = ["spec_from_dict", "load_spec", "loads_spec"]
