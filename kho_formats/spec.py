"""Fixture specs: a small declarative description of a handover (YAML or TOML)
and the builder that turns it into a :class:`~kho_formats.fixture.Fixture`.

Schema (every address and size is an integer, a ``"0x..."`` string, or a
string with a ``K``/``M``/``G``/``T`` suffix such as ``"16M"``)::

    name = "v4-4k"              # fixture name (default: the spec file's stem)
    version = "kho-v4"          # kho-v1 | kho-v2 | kho-v3 | kho-v4
    page_size = 4096            # 4096 | 16384 | 65536
    byte_order = "little"       # little | big
    arch = "arm64"              # arm64 | x86_64: ELF machine, default csum_partial
    v1_bitmap = "page"          # kho-v1 only: "page" (later kernels) | "512" (6.16)
    seed = 1                    # default seed for generated data
    root_fdt_phys = "0x1000000" # default: first free page of alloc
    preserve_root = true        # preserve the root FDT page (the kernel does)
    blob_size = true            # kho-v2: write blob-size (later v2 kernels do)
    extra_compatible = []       # more compatible entries after the version

    [[alloc]]                   # free memory for everything placed automatically
    start = "16M"               # (root page, client data, memory-map pages,
    size = "16M"                #  the kho_scratch array); default 16M at 16M

    [[scratch]]                 # scratch areas (never hold preserved pages)
    start = "256M"              # ("addr" is accepted for "start")
    size = "64M"

    [[preserve]]                # preserved pages: phys + order (+ count) ...
    phys = "0x4000000"
    order = 2
    count = 3                   # consecutive pages of this order (default 1)

    [[preserve]]                # ... or a byte range split into aligned orders
    start = "0x5000000"
    size = "1M"                 # or: end = ...; optional max_order

    [[blob]]                    # sub-blobs, in root FDT node order
    name = "kho_test"
    type = "kho_test"           # kho_test | memblock | kexec-metadata | raw
    orders = [0, 1, 2]          # folios to allocate (or folios = [{order, phys}])
    seed = 7                    # folio data: deterministic bytes from the seed
    csum_arch = "arm64"         # csum_partial flavour (default: arch)
    # csum = 0x1234             # force a csum value instead
    # phys = ...                # FDT folio placement (default: allocated)
    # preserve = true           # preserve the blob's pages (default true)

    [[blob]]
    name = "memblock"
    type = "memblock"
    regions = [{name = "trace_buf", start = "0x3e800000", size = "4M"}]
    preserve_regions = true     # reserve_mem regions are preserved memory

    [[blob]]
    name = "kexec-metadata"
    type = "kexec-metadata"
    previous_release = "7.3.4"
    kexec_count = 1

    [[blob]]
    name = "mine"
    type = "raw"
    file = "blob.bin"           # relative to the spec; or hex = "..."; or text = "..."

    [[vmalloc]]                 # a vmalloc area whose 16-byte struct kho_vmalloc
    name = "area0"              # is the whole content of raw sub-blob "area0"
    pages = 3
    order = 0
    seed = 5

Everything is deterministic: the same spec gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from . import abi, memmap
from .alloc import PageAllocator, merge_ranges
from .clients import kexec_metadata, kho_test, memblock
from .clients.vmalloc import build_vmalloc
from .errors import KhoFormatError, SpecError
from .fdt import FDT_MAGIC
from .fixture import ARCHS, Fixture, disjoint_regions, make_fixture
from .image import PhysImage
from .layout import KHO_VMALLOC_FLAGS_MASK, layout
from .pageset import PageSet
from .state import KhoState, SubBlob, build

BLOB_TYPES = ("raw", "kho_test", "memblock", "kexec-metadata")
DEFAULT_ALLOC = ((16 << 20, 16 << 20),)
_SUFFIX = {"K": 10, "M": 20, "G": 30, "T": 40}


# -- the model ----------------------------------------------------------------------


@dataclass
class PreserveSpec:
    phys: int
    order: int = 0
    count: int = 1
    #: a byte range instead (phys = start); split into the largest aligned orders
    end: int | None = None
    max_order: int = 63


@dataclass
class FolioSpec:
    order: int
    phys: int | None = None


@dataclass
class RegionSpec:
    name: str
    start: int
    size: int


@dataclass
class BlobSpec:
    name: str
    type: str
    phys: int | None = None
    preserve: bool = True
    seed: int | None = None
    # raw
    data: bytes | None = None
    # kho_test
    folios: list[FolioSpec] = field(default_factory=list)
    csum_arch: str | None = None
    csum: int | None = None
    # memblock
    regions: list[RegionSpec] = field(default_factory=list)
    preserve_regions: bool = True
    # kexec-metadata
    previous_release: str = ""
    kexec_count: int = 0
    metadata_version: int = 1


@dataclass
class VmallocSpec:
    name: str
    pages: int
    order: int = 0
    flags: int = 0x0001
    seed: int | None = None
    phys: int | None = None


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
    alloc: list[tuple[int, int]] = field(default_factory=lambda: list(DEFAULT_ALLOC))
    scratch: list[tuple[int, int]] = field(default_factory=list)
    preserve: list[PreserveSpec] = field(default_factory=list)
    blobs: list[BlobSpec] = field(default_factory=list)
    vmalloc: list[VmallocSpec] = field(default_factory=list)
    source: str | None = None


# -- loading ------------------------------------------------------------------------


def parse_int(value: Any, where: str) -> int:
    """An int, or a string: ``0x1000``, ``4096``, ``16M``, ``1_000``."""
    if isinstance(value, bool):
        raise SpecError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        s = value.strip().replace("_", "")
        m = re.fullmatch(r"(0[xX][0-9a-fA-F]+|\d+)\s*([KMGT])?(?:i?B)?", s)
        if m:
            return int(m.group(1), 0) << _SUFFIX.get(m.group(2) or "", 0)
    raise SpecError(f"{where}: expected an integer, got {value!r}", expected='123, "0x7b" or "16M"')


def _check_keys(d: Any, allowed: Sequence[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise SpecError(f"{where}: expected a table/mapping, got {type(d).__name__}")
    bad = sorted(set(d) - set(allowed))
    if bad:
        raise SpecError(f"{where}: unknown key(s) {', '.join(bad)}", expected=", ".join(allowed))
    return d


def _list(d: dict, key: str, where: str) -> list:
    v = d.get(key, [])
    if not isinstance(v, list):
        raise SpecError(f"{where}.{key}: expected a list (TOML [[{key}]] / YAML sequence)")
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise SpecError(f"{where}: expected true or false, got {v!r}")
    return v


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise SpecError(f"{where}: expected a string, got {v!r}")
    return v


def _range(d: Any, where: str) -> tuple[int, int]:
    """``{start|addr, size|end}``, ``[start, size]`` or ``"START:SIZE"``."""
    if isinstance(d, str) and ":" in d:
        a, s = d.split(":", 1)
        return parse_int(a, where), parse_int(s, where)
    if isinstance(d, list) and len(d) == 2:
        return parse_int(d[0], where), parse_int(d[1], where)
    d = _check_keys(d, ("start", "addr", "size", "end"), where)
    if ("start" in d) == ("addr" in d):
        raise SpecError(f"{where}: give exactly one of start / addr")
    start = parse_int(d.get("start", d.get("addr")), f"{where}.start")
    if ("size" in d) == ("end" in d):
        raise SpecError(f"{where}: give exactly one of size / end")
    size = parse_int(d["size"], f"{where}.size") if "size" in d else parse_int(d["end"], f"{where}.end") - start
    if size < 0:
        raise SpecError(f"{where}: end is below start")
    return start, size


_TOP = (
    "name",
    "version",
    "page_size",
    "byte_order",
    "arch",
    "v1_bitmap",
    "seed",
    "root_fdt_phys",
    "preserve_root",
    "blob_size",
    "extra_compatible",
    "alloc",
    "scratch",
    "preserve",
    "blob",
    "blobs",
    "vmalloc",
)
_BLOB = (
    "name",
    "type",
    "phys",
    "preserve",
    "seed",
    "file",
    "hex",
    "text",
    "orders",
    "folios",
    "csum_arch",
    "csum",
    "regions",
    "preserve_regions",
    "previous_release",
    "kexec_count",
    "metadata_version",
)


def spec_from_dict(
    d: dict, *, base_dir: Path | None = None, name: str | None = None, source: str | None = None
) -> Spec:
    """Validate a spec mapping (as loaded from TOML/YAML) into a :class:`Spec`."""
    w = source or "spec"
    d = _check_keys(d, _TOP, w)
    sp = Spec(name=str(d.get("name", name or "fixture")), source=source)
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", sp.name):
        raise SpecError(f"{w}.name: {sp.name!r} is not a plain file name")
    sp.version = _str(d.get("version", sp.version), f"{w}.version")
    if sp.version not in abi.version_names():
        raise SpecError(f"{w}.version: unknown version {sp.version!r}", expected=" or ".join(abi.version_names()))
    sp.page_size = parse_int(d.get("page_size", sp.page_size), f"{w}.page_size")
    if sp.page_size not in abi.PAGE_SIZES:
        raise SpecError(f"{w}.page_size: {sp.page_size}", expected="4096, 16384 or 65536")
    sp.byte_order = _str(d.get("byte_order", sp.byte_order), f"{w}.byte_order")
    if sp.byte_order not in abi.BYTE_ORDERS:
        raise SpecError(f"{w}.byte_order: {sp.byte_order!r}", expected="little or big")
    sp.arch = _str(d.get("arch", sp.arch), f"{w}.arch")
    if sp.arch == "aarch64":
        sp.arch = "arm64"
    if sp.arch not in ARCHS:
        raise SpecError(f"{w}.arch: {sp.arch!r}", expected=" or ".join(ARCHS))
    if sp.arch == "x86_64" and sp.byte_order != "little":
        raise SpecError(f"{w}: x86_64 is little-endian only")
    if sp.arch == "x86_64" and sp.page_size != 4096:
        raise SpecError(f"{w}: x86_64 has 4096-byte pages only")
    vb = str(d.get("v1_bitmap", sp.v1_bitmap))
    if vb not in ("page", "512", str(sp.page_size)):
        raise SpecError(f"{w}.v1_bitmap: {vb!r}", expected="page or 512")
    sp.v1_bitmap = "512" if vb == "512" else "page"
    sp.seed = parse_int(d.get("seed", sp.seed), f"{w}.seed")
    if "root_fdt_phys" in d:
        sp.root_fdt_phys = parse_int(d["root_fdt_phys"], f"{w}.root_fdt_phys")
    sp.preserve_root = _bool(d.get("preserve_root", True), f"{w}.preserve_root")
    sp.blob_size = _bool(d.get("blob_size", True), f"{w}.blob_size")
    ec = d.get("extra_compatible", [])
    if not isinstance(ec, list) or not all(isinstance(x, str) for x in ec):
        raise SpecError(f"{w}.extra_compatible: expected a list of strings")
    sp.extra_compatible = list(ec)
    if "alloc" in d:
        sp.alloc = [_range(r, f"{w}.alloc[{i}]") for i, r in enumerate(_list(d, "alloc", w))]
        if not sp.alloc:
            raise SpecError(f"{w}.alloc: empty", expected="at least one free region")
    sp.scratch = [_range(r, f"{w}.scratch[{i}]") for i, r in enumerate(_list(d, "scratch", w))]
    for i, p in enumerate(_list(d, "preserve", w)):
        pw = f"{w}.preserve[{i}]"
        p = _check_keys(p, ("phys", "order", "count", "start", "size", "end", "max_order"), pw)
        if "phys" in p:
            if any(k in p for k in ("start", "size", "end", "max_order")):
                raise SpecError(f"{pw}: give phys/order/count or start/size|end, not both")
            sp.preserve.append(
                PreserveSpec(
                    parse_int(p["phys"], f"{pw}.phys"),
                    parse_int(p.get("order", 0), f"{pw}.order"),
                    parse_int(p.get("count", 1), f"{pw}.count"),
                )
            )
        else:
            if "order" in p or "count" in p:
                raise SpecError(f"{pw}: order/count go with phys, not with a range")
            a, s = _range({k: p[k] for k in ("start", "size", "end") if k in p}, pw)
            sp.preserve.append(
                PreserveSpec(a, end=a + s, max_order=parse_int(p.get("max_order", 63), f"{pw}.max_order"))
            )
    blobs = _list(d, "blob", w) + _list(d, "blobs", w)
    names = set()
    for i, b in enumerate(blobs):
        bs = _blob(b, f"{w}.blob[{i}]", base_dir)
        if bs.name in names:
            raise SpecError(f"{w}.blob[{i}]: duplicate sub-blob name {bs.name!r}")
        names.add(bs.name)
        sp.blobs.append(bs)
    for i, v in enumerate(_list(d, "vmalloc", w)):
        vw = f"{w}.vmalloc[{i}]"
        v = _check_keys(v, ("name", "pages", "order", "flags", "seed", "phys"), vw)
        vs = VmallocSpec(
            name=_str(v.get("name", f"vmalloc{i}"), f"{vw}.name"),
            pages=parse_int(v.get("pages", 1), f"{vw}.pages"),
            order=parse_int(v.get("order", 0), f"{vw}.order"),
            flags=parse_int(v.get("flags", 1), f"{vw}.flags"),
            seed=parse_int(v["seed"], f"{vw}.seed") if "seed" in v else None,
            phys=parse_int(v["phys"], f"{vw}.phys") if "phys" in v else None,
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


def _blob(b: Any, bw: str, base_dir: Path | None) -> BlobSpec:
    b = _check_keys(b, _BLOB, bw)
    if "name" not in b:
        raise SpecError(f"{bw}: missing name")
    name = _str(b["name"], f"{bw}.name")
    typ = _str(b.get("type", name if name in BLOB_TYPES else "raw"), f"{bw}.type")
    if typ not in BLOB_TYPES:
        raise SpecError(f"{bw}.type: {typ!r}", expected=", ".join(BLOB_TYPES))
    bs = BlobSpec(name=name, type=typ)
    if "phys" in b:
        bs.phys = parse_int(b["phys"], f"{bw}.phys")
    bs.preserve = _bool(b.get("preserve", True), f"{bw}.preserve")
    if "seed" in b:
        bs.seed = parse_int(b["seed"], f"{bw}.seed")
    own = {
        "raw": ("file", "hex", "text"),
        "kho_test": ("orders", "folios", "csum_arch", "csum"),
        "memblock": ("regions", "preserve_regions"),
        "kexec-metadata": ("previous_release", "kexec_count", "metadata_version"),
    }
    for t, keys in own.items():
        if t != typ:
            for k in keys:
                if k in b:
                    raise SpecError(f"{bw}.{k}: not a key of a {typ} blob", expected=", ".join(own[typ]))
    if typ == "raw":
        srcs = [k for k in ("file", "hex", "text") if k in b]
        if len(srcs) != 1:
            raise SpecError(f"{bw}: a raw blob needs exactly one of file / hex / text")
        if "file" in b:
            fp = Path(_str(b["file"], f"{bw}.file"))
            if not fp.is_absolute() and base_dir is not None:
                fp = base_dir / fp
            try:
                bs.data = fp.read_bytes()
            except OSError as exc:
                raise SpecError(f"{bw}.file: cannot read {fp}: {exc.strerror}") from None
        elif "hex" in b:
            try:
                bs.data = bytes.fromhex(re.sub(r"\s+", "", _str(b["hex"], f"{bw}.hex")))
            except ValueError:
                raise SpecError(f"{bw}.hex: not hex digits") from None
        else:
            bs.data = _str(b["text"], f"{bw}.text").encode()
        if not bs.data:
            raise SpecError(f"{bw}: empty raw blob")
    elif typ == "kho_test":
        if "orders" in b and "folios" in b:
            raise SpecError(f"{bw}: give orders or folios, not both")
        if "orders" in b:
            orders = b["orders"]
            if not isinstance(orders, list):
                raise SpecError(f"{bw}.orders: expected a list of orders")
            bs.folios = [FolioSpec(parse_int(o, f"{bw}.orders[{k}]")) for k, o in enumerate(orders)]
        else:
            for k, f in enumerate(_list(b, "folios", bw)):
                fw = f"{bw}.folios[{k}]"
                f = _check_keys(f, ("order", "phys"), fw)
                bs.folios.append(
                    FolioSpec(
                        parse_int(f.get("order", 0), f"{fw}.order"),
                        parse_int(f["phys"], f"{fw}.phys") if "phys" in f else None,
                    )
                )
        if not bs.folios:
            bs.folios = [FolioSpec(o) for o in (0, 1, 2)]
        if "csum_arch" in b:
            bs.csum_arch = _str(b["csum_arch"], f"{bw}.csum_arch")
            if bs.csum_arch == "aarch64":
                bs.csum_arch = "arm64"
            if bs.csum_arch not in ARCHS:
                raise SpecError(f"{bw}.csum_arch: {bs.csum_arch!r}", expected=" or ".join(ARCHS))
        if "csum" in b:
            bs.csum = parse_int(b["csum"], f"{bw}.csum") & 0xFFFFFFFF
    elif typ == "memblock":
        for k, r in enumerate(_list(b, "regions", bw)):
            rw = f"{bw}.regions[{k}]"
            r = _check_keys(r, ("name", "start", "size", "end"), rw)
            a, s = _range({x: r[x] for x in ("start", "size", "end") if x in r}, rw)
            bs.regions.append(RegionSpec(_str(r.get("name", f"region{k}"), f"{rw}.name"), a, s))
        bs.preserve_regions = _bool(b.get("preserve_regions", True), f"{bw}.preserve_regions")
    else:
        bs.previous_release = _str(b.get("previous_release", ""), f"{bw}.previous_release")
        if len(bs.previous_release.encode()) > 64:
            raise SpecError(f"{bw}.previous_release: longer than 64 bytes")
        bs.kexec_count = parse_int(b.get("kexec_count", 0), f"{bw}.kexec_count")
        bs.metadata_version = parse_int(b.get("metadata_version", 1), f"{bw}.metadata_version")
    return bs


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


# -- building -------------------------------------------------------------------------


def gen_bytes(seed: int, label: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes (SHAKE-256 of seed and label): never all zero."""
    return hashlib.shake_256(f"kho-formats:{seed}:{label}".encode()).digest(size)


def _pages(n: int, ps: int) -> int:
    return -(-n // ps) * ps


def _is_fdt(data: bytes) -> bool:
    return len(data) >= 8 and int.from_bytes(data[:4], "big") == FDT_MAGIC


def build_spec(sp: Spec) -> Fixture:
    """Build the handover a :class:`Spec` describes (deterministic)."""
    ver = abi.get_version(sp.version)
    ps = sp.page_size
    lay = layout(ps, sp.byte_order)
    w = sp.source or sp.name
    map_ctx = memmap.MapContext(ver, ps, sp.byte_order)
    codec = memmap.codec_for(ver)
    # -- what the spec places explicitly: the allocator must avoid it ------------------
    preserved = PageSet(ps)
    for i, p in enumerate(sp.preserve):
        try:
            if p.end is not None:
                preserved.update(PageSet.from_ranges(ps, [(p.phys, p.end)], max_order=p.max_order))
            else:
                if p.count < 1:
                    raise SpecError(f"{w}.preserve[{i}]: count {p.count} < 1")
                unit = ps << p.order
                if p.phys % unit:
                    raise SpecError(
                        f"{w}.preserve[{i}]: phys {p.phys:#x} is not aligned to order {p.order}",
                        expected=f"a multiple of {unit:#x}",
                    )
                preserved.update(PageSet.from_runs(ps, {p.order: ([p.phys], [p.count])}))
        except SpecError:
            raise
        except KhoFormatError as exc:
            raise SpecError(f"{w}.preserve[{i}]: {exc}") from None
    explicit: list[tuple[int, int]] = [(a, a + s) for a, s in sp.scratch]
    explicit += preserved.ranges()
    if sp.root_fdt_phys is not None:
        if sp.root_fdt_phys % ps:
            raise SpecError(f"{w}.root_fdt_phys: {sp.root_fdt_phys:#x} is not page aligned")
        explicit.append((sp.root_fdt_phys, sp.root_fdt_phys + ps))
    for b in sp.blobs:
        if b.phys is not None:
            if b.phys % ps:
                raise SpecError(f"{w}: blob {b.name!r} phys {b.phys:#x} is not page aligned")
            explicit.append((b.phys, b.phys + ps))  # at least its first page
        for f in b.folios:
            if f.phys is not None:
                explicit.append((f.phys, f.phys + (ps << f.order)))
        if b.type == "memblock" and b.preserve_regions:
            explicit += [(r.start, r.start + r.size) for r in b.regions]
    for v in sp.vmalloc:
        if v.phys is not None:
            explicit.append((v.phys, v.phys + ps))
    regions = disjoint_regions(sp.alloc)
    alloc = PageAllocator(regions, ps, avoid=merge_ranges(explicit))
    image = PhysImage()

    def place(data: bytes, phys: int | None, what: str) -> int:
        size = _pages(len(data), ps)
        if phys is None:
            phys = alloc.alloc(size, what=what)
        else:
            alloc.avoid(phys, phys + size)
        image.add(phys, data.ljust(size, b"\0"), what=what)
        return phys

    # -- the root FDT page (filled by state.build) -------------------------------------
    root_phys = sp.root_fdt_phys if sp.root_fdt_phys is not None else alloc.alloc(what="root FDT page")
    image.add(root_phys, bytes(ps), what="root FDT page")
    if sp.preserve_root:
        preserved.add(root_phys, 0)
    # -- sub-blobs ----------------------------------------------------------------------
    subblobs: list[SubBlob] = []
    for b in sp.blobs:
        seed = sp.seed if b.seed is None else b.seed
        pres = PageSet(ps)
        if b.type == "kho_test":
            folios = []
            # place big folios first (fewer alignment holes), keep the array in spec order
            phys_of: dict[int, int] = {}
            for k in sorted(range(len(b.folios)), key=lambda k: -b.folios[k].order):
                f = b.folios[k]
                size = ps << f.order
                if f.phys is None:
                    phys_of[k] = alloc.alloc(size, align=size, what=f"kho_test folio {k}")
                else:
                    if f.phys % size:
                        raise SpecError(f"{w}: kho_test folio {k} phys {f.phys:#x} is not aligned to order {f.order}")
                    phys_of[k] = f.phys
            for k, f in enumerate(b.folios):
                folios.append((phys_of[k], f.order, gen_bytes(seed, f"{b.name}/folio{k}", ps << f.order)))
            arch = b.csum_arch or sp.arch
            kt = kho_test.encode(folios, lay, alloc, arch=arch, csum=b.csum, fdt_phys=b.phys)
            for phys, data in kt.segments:
                image.add(phys, data, what=f"{b.name} page")
            data, phys = kt.fdt, kt.fdt_phys
            pres = kt.preserve
        else:
            if b.type == "raw":
                data = bytes(b.data or b"")
            elif b.type == "memblock":
                data = memblock.encode([memblock.ReserveMem(r.name, r.start, r.size) for r in b.regions], sp.byte_order)
                if b.preserve_regions:
                    for r in b.regions:
                        if r.start % ps or r.size % ps:
                            raise SpecError(f"{w}: reserve_mem region {r.name!r} is not page aligned")
                    pres.update(PageSet.from_ranges(ps, [(r.start, r.start + r.size) for r in b.regions if r.size]))
            else:
                data = kexec_metadata.encode(lay, b.previous_release, b.kexec_count, b.metadata_version)
            phys = place(data, b.phys, f"sub-blob {b.name}")
            pres.update(PageSet.from_ranges(ps, [(phys, phys + _pages(len(data), ps))], max_order=0))
        if b.preserve:
            preserved.update(pres)
        subblobs.append(_subblob(sp, ver, b.name, phys, data, w))
    # -- vmalloc areas --------------------------------------------------------------------
    for v in sp.vmalloc:
        seed = sp.seed if v.seed is None else v.seed
        grp = ps << v.order
        groups = [alloc.alloc(grp, align=grp, what=f"vmalloc {v.name} group") for _ in range(v.pages >> v.order)]
        for k, g in enumerate(groups):
            image.add(g, gen_bytes(seed, f"{v.name}/group{k}", grp), what=f"vmalloc {v.name} group")
        desc, chunks, vpres = build_vmalloc(groups, v.order, lay, alloc, flags=v.flags)
        for cp, cdata in chunks:
            image.add(cp, cdata, what=f"vmalloc {v.name} chunk")
        data = lay.kho_vmalloc.build(desc)
        phys = place(data, v.phys, f"vmalloc {v.name} descriptor")
        preserved.update(vpres)
        preserved.add(phys, 0)
        subblobs.append(_subblob(sp, ver, v.name, phys, data, w))
    # -- the handover -------------------------------------------------------------------------
    codec.check_representable(preserved, map_ctx)
    ov = preserved.find_overlap()
    if ov:
        raise SpecError(f"{w}: order-{ov[1]} page {ov[0]:#x} overlaps order-{ov[3]} page {ov[2]:#x}", phys=ov[2])
    for a, s in sp.scratch:
        hit = preserved.overlaps_range(a, a + s)
        if hit:
            raise SpecError(
                f"{w}: preserved order-{hit[1]} page {hit[0]:#x} lies in scratch area {a:#x}+{s:#x}", phys=hit[0]
            )
    state = KhoState(
        version=ver.name,
        page_size=ps,
        byteorder=sp.byte_order,
        preserved=preserved,
        subblobs=subblobs,
        scratch=list(sp.scratch),
        root_fdt_phys=root_phys,
        extra_compatible=list(sp.extra_compatible),
        map_params=codec.params_for(map_ctx, {}, {"v1_bitmap": sp.v1_bitmap}),
    )
    built = build(state, alloc=regions, image=image, avoid=[(a, b) for a, b in alloc.allocated])
    extra = {"spec": os.path.basename(sp.source) if sp.source else None}
    return make_fixture(built, arch=sp.arch, name=sp.name, alloc=regions, extra=extra)


def _subblob(sp: Spec, ver: abi.AbiVersion, name: str, phys: int, data: bytes, w: str) -> SubBlob:
    is_fdt = _is_fdt(data)
    if ver.blob_is_fdt and not is_fdt:
        raise SpecError(
            f"{w}: sub-blob {name!r} is not an FDT, but {ver.name} sub-nodes point at FDTs",
            expected="an FDT blob, or version kho-v2+",
        )
    if ver.size_property and (ver.size_required or sp.blob_size):
        src = ver.size_property
    elif is_fdt:
        src = "fdt-header"
    else:
        raise SpecError(f"{w}: sub-blob {name!r} is not an FDT and blob_size = false: a reader could not size it")
    return SubBlob(name=name, phys=phys, size=len(data), data=data, size_source=src)


__all__ = [
    "Spec",
    "BlobSpec",
    "PreserveSpec",
    "FolioSpec",
    "RegionSpec",
    "VmallocSpec",
    "load_spec",
    "loads_spec",
    "spec_from_dict",
    "build_spec",
    "parse_int",
    "gen_bytes",
    "BLOB_TYPES",
]
