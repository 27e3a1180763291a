"""``kho_test``: the kernel's KHO self-test client (``lib/test_kho.c``).

An FDT: root ``compatible = "kho-test-v1"`` (with its NUL), ``magic`` (u32
``0x4b484f21``); child ``data`` with ``nr_folios`` (u32), ``folios_info`` (a
16-byte ``struct kho_vmalloc`` whose area is an array of u64 ``phys | order``,
one per folio) and ``csum`` (u32: ``csum_partial()`` over every folio's bytes
in array order; the value is architecture-specific).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...abi.layout import KHO_VMALLOC_ALLOC, KhoVmalloc, Layout
from ...errors import ClientError, ImageError, KhoFormatError, SpecError
from ...findings import ERROR, INFO, WARNING, Finding
from ...limits import DEFAULT_LIMITS, Budget
from ...memory.alloc import PageAllocator
from ...memory.image import PhysImage
from ...memory.pageset import PageSet
from ...text import fmt_strings
from ..fdt import FdtNode, build_fdt, get_strings, get_u32, parse_fdt, str_bytes, u32_bytes
from ..specfields import INT, STR, ListOf, SpecField, SpecRow, SpecTable, Table
from .base import BootLog, BootRule, BuildContext, BuiltBlob, CheckContext, Client, DecodeContext, gen_bytes
from .vmalloc import VmallocArea, build_vmalloc, read_vmalloc

NAME = "kho_test"
COMPATIBLE = "kho-test-v1"
MAGIC = 0x4B484F21
#: why the csum was not verified, when the folios are not in the memory image (a capture of only the
#: handover's own pages, as the shipped kho-v4 one is) or there is no image
FOLIOS_ABSENT = "folio data absent from the image"
NO_IMAGE = "no memory image"
#: findings (and decode problems) of one kind listed one by one before the rest are counted
MAX_DETAILED = 64
U64 = np.uint64


def csum_function(arch: str) -> Callable[[bytes, int], int]:
    from . import csum

    table = {"arm64": csum.csum_partial_arm64, "aarch64": csum.csum_partial_arm64, "x86_64": csum.csum_partial_x86_64}
    if arch not in table:
        raise KhoFormatError(f"no csum_partial for architecture {arch!r}", expected=", ".join(table))
    return table[arch]


def folio_csum(image: PhysImage, folios: Sequence[tuple[int, int]], page_size: int, arch: str) -> int:
    fn = csum_function(arch)
    total = 0
    for phys, order in folios:
        total = fn(image.read(phys, page_size << order, "kho_test folio"), total)
    return total


@dataclass
class KhoTest:
    nr_folios: int
    folios_info: KhoVmalloc
    csum: int
    folios: list[tuple[int, int]] = field(default_factory=list)
    #: the folios as arrays (the same order as ``folios``)
    phys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    area: VmallocArea | None = None
    #: arch -> csum over the folio bytes in the image (when present)
    csum_check: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: why ``csum`` was not verified against the folio data (None: it was, see ``csum_check``)
    csum_not_verified: str | None = None

    @property
    def csum_verified(self) -> bool:
        return bool(self.csum_check)

    def to_json(self) -> dict:
        return {
            "nr_folios": self.nr_folios,
            "folios_info": {
                "first": self.folios_info.first,
                "total_pages": self.folios_info.total_pages,
                "flags": self.folios_info.flags,
                "order": self.folios_info.order,
            },
            "csum": self.csum,
            "folios": [{"phys": p, "order": o} for p, o in self.folios],
            "vmalloc": self.area.to_json() if self.area else None,
            "csum_check": self.csum_check,
            "csum_verified": self.csum_verified,
            "csum_not_verified": self.csum_not_verified,
            "problems": self.problems,
        }


def decode(
    blob: bytes,
    lay: Layout,
    image: PhysImage | None = None,
    *,
    budget: Budget | None = None,
    where: str = NAME,
    archs: Sequence[str] = ("x86_64", "arm64"),
) -> KhoTest:
    bo = lay.byteorder
    fdt = parse_fdt(blob, where=where)
    compat = get_strings(fdt.root, "compatible", where=where)
    if COMPATIBLE not in compat:
        raise ClientError(f"compatible {fmt_strings(compat)}", path=f"{where}:/compatible", expected=COMPATIBLE)
    magic = get_u32(fdt.root, "magic", bo, where=where)
    if magic != MAGIC:
        raise ClientError(f"magic {magic:#x}", path=f"{where}:/magic", expected=f"{MAGIC:#x}")
    data = fdt.root.child("data")
    if data is None:
        raise ClientError("no /data node", path=f"{where}:/data")
    nr = get_u32(data, "nr_folios", bo, where=where)
    csum = get_u32(data, "csum", bo, where=where)
    raw = data.get("folios_info")
    if raw is None or len(raw) != lay.kho_vmalloc.sizeof():
        raise ClientError(
            "no folios_info property" if raw is None else f"folios_info is {len(raw)} bytes",
            path=f"{where}:/data/folios_info",
            expected=f"{lay.kho_vmalloc.sizeof()} bytes (struct kho_vmalloc)",
        )
    desc = lay.kho_vmalloc.parse(raw)
    kt = KhoTest(nr_folios=nr, folios_info=desc, csum=csum)
    if image is None:
        kt.csum_not_verified = NO_IMAGE
        return kt
    kt.area = read_vmalloc(image, desc, lay, budget=budget, where=f"{where}:/data/folios_info")
    need = nr * 8
    if need > kt.area.restored_nr_pages * lay.page_size:
        held = (
            f"folios_info area has {kt.area.nr_pages} pages"
            if kt.area.alias_reason is None
            else f"folios_info area restores {kt.area.restored_nr_pages} pages ({kt.area.alias_reason})"
        )
        raise ClientError(f"nr_folios {nr} needs {need} bytes, {held}", path=f"{where}:/data/nr_folios")
    if budget:
        budget.entries_add(nr, f"{where} folios")
    # read only the pages the nr_folios entries occupy (not the whole area)
    npages = -(-need // lay.page_size)
    addrs = (int(g) + k * lay.page_size for g in kt.area.restored_groups().tolist() for k in range(1 << desc.order))
    content = b"".join(image.read(a, lay.page_size, "kho_test folios_info page") for a, _ in zip(addrs, range(npages)))[
        :need
    ]
    vals = np.frombuffer(content, dtype=lay.dtype).astype(np.uint64)
    mask = U64(lay.page_size - 1)
    kt.phys = vals & ~mask
    kt.order = (vals & mask).astype(np.int64)
    kt.folios = list(zip(kt.phys.tolist(), kt.order.tolist()))
    # alignment and overlap in numpy, the first few named (a hostile list of
    # millions of folios must not make millions of messages)
    ok_order = kt.order + lay.page_shift < 64
    size = np.where(ok_order, U64(lay.page_size) << np.where(ok_order, kt.order, 0).astype(np.uint64), U64(1))
    badmask = ~ok_order | (kt.phys % size != 0) | (kt.phys > U64((1 << 64) - 1) - size + U64(1))
    bad_idx = np.flatnonzero(badmask)
    for k in bad_idx[:MAX_DETAILED].tolist():
        kt.problems.append(f"folio {int(kt.phys[k]):#x} order {int(kt.order[k])} is not aligned to its size")
    if bad_idx.size > MAX_DETAILED:
        kt.problems.append(f"... and {bad_idx.size - MAX_DETAILED} more folios not aligned to their size")
    bad = bool(bad_idx.size)
    total = 0  # bytes of the (distinct, non-overlapping) folios
    if not bad and kt.phys.size:
        srt = np.argsort(kt.phys, kind="stable")
        st, en = kt.phys[srt], kt.phys[srt] + size[srt]  # no wrap: checked above (ends at most 2**64 - 1 + 1)
        reach = np.maximum.accumulate(en)
        ov = np.flatnonzero(st[1:] < reach[:-1])
        if ov.size:
            k = int(ov[0]) + 1
            prev = int(np.flatnonzero(en[:k] > st[k])[0])
            kt.problems.append(f"folio {int(st[k]):#x} overlaps folio {int(st[prev]):#x} (a folio is preserved once)")
            bad = True
        else:
            total = int(np.sum(size, dtype=np.uint64)) or 1 << 64  # 0: they fill the 64-bit space
    # csum only over folios that can all be in the image: distinct folios
    # whose bytes add up to no more than the image holds (so hostile lists
    # that repeat one big folio cannot make us checksum it thousands of times)
    if bad:
        kt.csum_not_verified = "the folio list is invalid"
        return kt
    if total > image.total_bytes:
        kt.csum_not_verified = _absent(kt, image, lay.page_size)
        return kt
    # and no more than Limits.max_csum_bytes in all (PT_LOADs aliasing one
    # block inflate total_bytes; the checksum is Python/numpy work per byte)
    cap = (budget.limits if budget else DEFAULT_LIMITS).max_csum_bytes
    work = total * len(archs)
    if work > cap:
        kt.csum_not_verified = f"{work} bytes to checksum, more than Limits.max_csum_bytes = {cap}"
        kt.problems.append(f"csum not checked: {kt.csum_not_verified}")
        return kt
    if not all(image.has(p, lay.page_size << o) for p, o in kt.folios):  # bounded by the cap above
        kt.csum_not_verified = _absent(kt, image, lay.page_size)
        return kt
    try:
        for arch in archs:
            kt.csum_check[arch] = folio_csum(image, kt.folios, lay.page_size, arch)
    except ImageError as exc:
        kt.csum_check = {}
        kt.csum_not_verified = f"{FOLIOS_ABSENT} ({exc})"
    except ImportError as exc:
        kt.csum_check = {}
        kt.csum_not_verified = f"no csum_partial implementation ({exc})"
    return kt


def _absent(kt: KhoTest, image: PhysImage, page_size: int) -> str:
    """:data:`FOLIOS_ABSENT`, naming the first folio the image lacks among the first few thousand."""
    for p, o in kt.folios[:4096]:
        if not image.has(p, page_size << o):
            return f"{FOLIOS_ABSENT} (folio {p:#x} order {o} is not in it)"
    return FOLIOS_ABSENT


@dataclass
class KhoTestBuild:
    fdt: bytes
    fdt_phys: int
    fdt_order: int
    segments: list[tuple[int, bytes]]
    preserve: PageSet
    csum: int
    desc: KhoVmalloc


def encode(
    folios: Sequence[tuple[int, int, bytes]],
    lay: Layout,
    alloc: PageAllocator,
    *,
    arch: str = "arm64",
    csum: int | None = None,
    fdt_phys: int | None = None,
) -> KhoTestBuild:
    """Folios ``(phys, order, data)`` -> the FDT, its folio, the folios_info
    vmalloc area and chunk, and the pages to preserve (as the kernel does)."""
    bo = lay.byteorder
    nr = len(folios)
    segments: list[tuple[int, bytes]] = []
    preserve = PageSet(lay.page_size)
    for phys, order, data in folios:
        size = lay.page_size << order
        if phys % size:
            raise KhoFormatError(f"folio {phys:#x} not aligned to order {order}", phys=phys)
        if len(data) != size:
            raise KhoFormatError(f"folio {phys:#x} data is {len(data)} bytes", phys=phys, expected=f"{size}")
        segments.append((phys, bytes(data)))
        preserve.add(phys, order)
    if csum is None:
        fn = csum_function(arch)
        csum = 0
        for _, _, data in folios:
            csum = fn(data, csum)
    # folios_info: vmalloc_array(nr, 8) -> order-0 pages
    info = np.array([p | o for p, o, _ in folios], dtype=lay.dtype).tobytes()
    npages = max(1, -(-len(info) // lay.page_size))
    info = info.ljust(npages * lay.page_size, b"\0")
    groups = [alloc.alloc(what="kho_test folios_info page") for _ in range(npages)]
    for i, g in enumerate(groups):
        segments.append((g, info[i * lay.page_size : (i + 1) * lay.page_size]))
    desc, chunks, vpres = build_vmalloc(groups, 0, lay, alloc, flags=KHO_VMALLOC_ALLOC)
    segments.extend(chunks)
    preserve.update(vpres)
    # the FDT lives in a folio of get_order(nr * 8 + PAGE_SIZE)
    need = nr * 8 + lay.page_size
    fdt_order = max(0, (-(-need // lay.page_size) - 1).bit_length())
    if fdt_phys is None:
        fdt_phys = alloc.alloc(lay.page_size << fdt_order, align=lay.page_size << fdt_order, what="kho_test FDT folio")
    root = FdtNode("")
    root.set("compatible", str_bytes(COMPATIBLE))
    root.set("magic", u32_bytes(MAGIC, bo))
    d = root.add_child("data")
    d.set("nr_folios", u32_bytes(nr, bo))
    d.set("folios_info", lay.kho_vmalloc.build(desc))
    d.set("csum", u32_bytes(csum, bo))
    fdt = build_fdt(root, style="sequential-write")
    segments.append((fdt_phys, fdt.ljust(lay.page_size << fdt_order, b"\0")))
    preserve.add(fdt_phys, fdt_order)
    return KhoTestBuild(
        fdt=fdt, fdt_phys=fdt_phys, fdt_order=fdt_order, segments=segments, preserve=preserve, csum=csum, desc=desc
    )


# -- the client ------------------------------------------------------------------------------

#: architectures with a csum_partial (the spec's ``csum_arch``)
CSUM_ARCHS = ("arm64", "x86_64")


@dataclass(frozen=True)
class FolioSpec:
    order: int
    phys: int | None = None


@dataclass(frozen=True)
class KhoTestParams:
    folios: tuple[FolioSpec, ...] = (FolioSpec(0), FolioSpec(1), FolioSpec(2))
    csum_arch: str | None = None
    csum: int | None = None


def _arm64(arch: str) -> str:
    return "arm64" if arch == "aarch64" else arch


FOLIO_FIELDS = (
    SpecField("order", INT, 0, doc="folio order"),
    SpecField("phys", INT, doc="folio address", default_doc="allocated"),
)

SPEC = SpecTable(
    NAME,
    (
        SpecField("orders", ListOf(INT, "a list of orders"), doc="folio orders, allocated", default_doc="`[0, 1, 2]`"),
        SpecField(
            "folios",
            ListOf(Table(FOLIO_FIELDS), "a list (TOML [[folios]] / YAML sequence)"),
            doc="folios with optional fixed addresses",
        ),
        SpecField(
            "csum_arch",
            STR,
            doc="csum_partial flavour",
            default_doc="arch",
            convert=_arm64,
            choices=CSUM_ARCHS,
        ),
        SpecField("csum", INT, doc="force a csum value", default_doc="computed"),
    ),
    title=f'`type = "{NAME}"`:',
    rows=(
        SpecRow(
            ("orders", "folios", "csum_arch", "csum"),
            f'`type = "{NAME}"`: `orders` or `folios = [{{order, phys}}]`, `csum_arch`, `csum`',
            "`orders = [0, 1, 2]`, `csum_arch = arch`",
            "folio data is SHAKE-256 of the seed (never zeros); `csum` = that arch's `csum_partial` over the "
            "folios unless forced; the FDT folio, `folios_info` page and vmalloc chunk are placed and preserved "
            "as `lib/test_kho.c` does",
        ),
    ),
)


def _short_reason(reason: str) -> str:
    """The reason without its parenthesized detail (the table cell stays one short phrase)."""
    return reason.split(" (", 1)[0]


def _judge_boot(log: BootLog) -> tuple[str, str | None]:
    """lib/test_kho.c says so when it found and checked its folios."""
    if any("test_kho: KHO restore succeeded" in line for line in log.lines):
        return "ok", None
    said = [line for line in log.lines if line.startswith("test_kho: ")]
    if said:
        return "failed", said[0]
    return "not-reported", "test_kho reported nothing"


class KhoTestClient(Client):
    name = NAME
    spec_type = NAME
    spec_table = SPEC
    boot_rule = BootRule(judge=_judge_boot)

    def referenced(self, result: Any, page_size: int) -> list[tuple[int, int]]:
        """The folio list's vmalloc chunks and pages, and every folio."""
        out = super().referenced(result, page_size)
        return out + [(int(p), int(p) + (page_size << int(o))) for p, o in result.folios]

    def decode(self, blob: bytes, ctx: DecodeContext) -> KhoTest:
        return decode(blob, ctx.layout, ctx.image, budget=ctx.budget, where=ctx.where or NAME)

    def areas(self, result: KhoTest) -> list[VmallocArea]:
        return [result.area] if result.area is not None else []

    def summary(self, decoded: Any) -> str:
        d = decoded
        cs = d.get("csum_check") or {}
        match = [a for a, v in cs.items() if v == d["csum"]]
        ctext = f"csum {d['csum']:#010x}"
        if cs:
            ctext += f" (matches {'/'.join(match)})" if match else " (matches no arch)"
        elif d.get("csum_not_verified"):
            ctext += f" (not verified: {_short_reason(d['csum_not_verified'])})"
        return f"{d['nr_folios']} folios, {ctext}"

    def details(self, name: str, decoded: Any) -> list[str]:
        fol = decoded.get("folios") if decoded else None
        if not fol:
            return []
        shown = ", ".join(f"{f['phys']:#x}/{f['order']}" for f in fol[:8])
        return [f"  {name} folios (phys/order): {shown}{' ...' if len(fol) > 8 else ''}"]

    def findings(self, result: KhoTest, ctx: CheckContext) -> list[Finding]:
        kt, path = result, ctx.path
        out = [Finding(ERROR, "kho_test", p, path=path) for p in kt.problems]
        # one vectorized membership test; the first few named, the rest counted
        miss = np.flatnonzero(~ctx.state.preserved.contains_many(kt.phys, kt.order))
        for k in miss[:MAX_DETAILED].tolist():
            out.append(
                Finding(
                    ERROR,
                    "folio-not-preserved",
                    f"kho_test folio (order {int(kt.order[k])}) is not preserved as one page of its order",
                    phys=int(kt.phys[k]),
                    path=path,
                )
            )
        if miss.size > MAX_DETAILED:
            out.append(
                Finding(
                    ERROR,
                    "folio-not-preserved",
                    f"... and {miss.size - MAX_DETAILED} more kho_test folios not preserved as one page of their order",
                    phys=int(kt.phys[miss[MAX_DETAILED]]),
                    path=path,
                )
            )
        if kt.csum_not_verified is not None and kt.csum_not_verified != NO_IMAGE:  # no image: check says so
            out.append(
                Finding(
                    INFO,
                    "csum-not-verified",
                    f"kho_test csum {kt.csum:#x} not verified: {kt.csum_not_verified}",
                    path=path,
                )
            )
        if kt.csum_check:
            match = [a for a, v in kt.csum_check.items() if v == kt.csum]
            if match:
                out.append(
                    Finding(
                        INFO,
                        "csum",
                        f"kho_test csum {kt.csum:#x} matches the {'/'.join(match)} csum_partial of the folio data",
                        path=path,
                    )
                )
            else:
                got = ", ".join(f"{a} {v:#x}" for a, v in kt.csum_check.items())
                out.append(
                    Finding(
                        WARNING,
                        "csum",
                        f"kho_test csum {kt.csum:#x} matches no architecture's csum_partial of the folio data ({got})",
                        path=path,
                    )
                )
        return out

    def spec_params(self, values: dict[str, Any], where: str, base_dir: Path | None) -> KhoTestParams:
        if values["orders"] is not None and values["folios"] is not None:
            raise SpecError(f"{where}: give orders or folios, not both")
        if values["orders"] is not None:
            folios = tuple(FolioSpec(o) for o in values["orders"])
        else:
            folios = tuple(FolioSpec(f["order"], f["phys"]) for f in values["folios"] or [])
        return KhoTestParams(
            folios=folios or KhoTestParams.folios,
            csum_arch=values["csum_arch"],
            csum=None if values["csum"] is None else values["csum"] & 0xFFFFFFFF,
        )

    def fixed_ranges(self, entry: Any, page_size: int) -> list[tuple[int, int]]:
        return [(f.phys, f.phys + (page_size << f.order)) for f in entry.params.folios if f.phys is not None]

    def build(self, entry: Any, ctx: BuildContext) -> BuiltBlob:
        p: KhoTestParams = entry.params
        ps = ctx.page_size
        seed = ctx.seed_for(entry.seed)
        # place big folios first (fewer alignment holes), keep the array in spec order
        phys_of: dict[int, int] = {}
        for k in sorted(range(len(p.folios)), key=lambda k: -p.folios[k].order):
            f = p.folios[k]
            size = ps << f.order
            if f.phys is None:
                phys_of[k] = ctx.alloc.alloc(size, align=size, what=f"kho_test folio {k}")
            else:
                if f.phys % size:
                    raise SpecError(
                        f"{ctx.where}: kho_test folio {k} phys {f.phys:#x} is not aligned to order {f.order}"
                    )
                phys_of[k] = f.phys
        folios = [
            (phys_of[k], f.order, gen_bytes(seed, f"{entry.name}/folio{k}", ps << f.order))
            for k, f in enumerate(p.folios)
        ]
        kt = encode(folios, ctx.layout, ctx.alloc, arch=p.csum_arch or ctx.arch, csum=p.csum, fdt_phys=entry.phys)
        segs = [(phys, data, f"{entry.name} page") for phys, data in kt.segments]
        return BuiltBlob(kt.fdt, kt.fdt_phys, segs, kt.preserve)


CLIENT = KhoTestClient()
