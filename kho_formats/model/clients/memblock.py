"""``memblock``: an FDT with one ``reserve-mem-v1`` child per ``reserve_mem=`` region.

Root ``compatible = "memblock-v1"``; each child is named by the user and has
``compatible = "reserve-mem-v1"``, ``start`` (u64) and ``size`` (u64), native order
(the names in :mod:`kho_formats.abi.memblock`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...abi.memblock import (
    MEMBLOCK_KHO_FDT,
    MEMBLOCK_KHO_NODE_COMPATIBLE,
    RESERVE_MEM_KHO_NODE_COMPATIBLE,
    RESERVE_MEM_SIZE,
    RESERVE_MEM_START,
)
from ...errors import ClientError, KhoFormatError, SpecError
from ...findings import WARNING, Finding
from ...memory.pageset import PageSet
from ...text import fmt_strings, human_size
from ..fdt import FdtNode, build_fdt, get_strings, get_u64, parse_fdt, str_bytes, u64_bytes
from ..specfields import BOOL, INT, RANGE, STR, ListOf, SpecField, SpecRow, SpecTable, Table
from .base import BootLog, BootRule, BuildContext, BuiltBlob, CheckContext, Client, DecodeContext, page_round

NAME = MEMBLOCK_KHO_FDT
COMPATIBLE = MEMBLOCK_KHO_NODE_COMPATIBLE
REGION_COMPATIBLE = RESERVE_MEM_KHO_NODE_COMPATIBLE


@dataclass(frozen=True)
class ReserveMem:
    name: str
    start: int
    size: int


def decode(blob: bytes, byteorder: str, *, where: str = NAME) -> list[ReserveMem]:
    fdt = parse_fdt(blob, where=where)
    compat = get_strings(fdt.root, "compatible", where=where)
    if COMPATIBLE not in compat:
        raise ClientError(
            f"{where}: compatible {fmt_strings(compat)}", path=f"{where}:/compatible", expected=COMPATIBLE
        )
    out = []
    for child in fdt.root.children:
        ccompat = get_strings(child, "compatible", where=where)
        if REGION_COMPATIBLE not in ccompat:
            raise ClientError(
                f"{where}: region compatible {fmt_strings(ccompat)}",
                path=f"{where}:{child.path}/compatible",
                expected=REGION_COMPATIBLE,
            )
        start = get_u64(child, RESERVE_MEM_START, byteorder, where=where)
        size = get_u64(child, RESERVE_MEM_SIZE, byteorder, where=where)
        if start is None or size is None:  # required=True raises first: for the type checker
            raise ClientError(f"{where}: region {child.name} has no start/size", path=f"{where}:{child.path}")
        if start + size > 1 << 64:
            raise ClientError(
                f"{where}: region {child.name} wraps the address space", path=f"{where}:{child.path}", phys=start
            )
        out.append(ReserveMem(child.name, start, size))
    return out


def encode(regions: Sequence[ReserveMem], byteorder: str) -> bytes:
    root = FdtNode("")
    root.set("compatible", str_bytes(COMPATIBLE))
    for r in regions:
        if not r.name or "/" in r.name or "@" in r.name:
            raise KhoFormatError(f"bad reserve_mem region name {r.name!r}", path=NAME)
        c = root.add_child(r.name)
        c.set("compatible", str_bytes(REGION_COMPATIBLE))
        c.set(RESERVE_MEM_START, u64_bytes(r.start, byteorder))
        c.set(RESERVE_MEM_SIZE, u64_bytes(r.size, byteorder))
    return build_fdt(root, style="sequential-write")


def to_json(regions: list[ReserveMem]) -> list:
    return [{"name": r.name, "start": r.start, "size": r.size} for r in regions]


# -- the client ------------------------------------------------------------------------------


@dataclass
class Memblock:
    """A decoded ``memblock`` blob: its ``reserve_mem`` regions, in FDT order."""

    regions: list[ReserveMem] = field(default_factory=list)

    def to_json(self) -> list:
        return to_json(self.regions)


@dataclass(frozen=True)
class RegionSpec:
    name: str
    start: int
    size: int


@dataclass(frozen=True)
class MemblockParams:
    regions: tuple[RegionSpec, ...] = ()
    preserve_regions: bool = True


REGION_FIELDS = (
    SpecField("name", STR, doc="region name (the reserve_mem= name)", default_doc="`region<k>`"),
    SpecField("start", INT, doc="first byte"),
    SpecField("size", INT, doc="bytes"),
    SpecField("end", INT, doc="first byte after the region (instead of size)"),
)

SPEC = SpecTable(
    NAME,
    (
        SpecField(
            "regions",
            ListOf(Table(REGION_FIELDS), "a list (TOML [[regions]] / YAML sequence)"),
            [],
            doc="reserve_mem regions",
        ),
        SpecField("preserve_regions", BOOL, True, doc="preserve the regions"),
    ),
    title=f'`type = "{NAME}"`:',
    rows=(
        SpecRow(
            ("regions", "preserve_regions"),
            f'`type = "{NAME}"`: `regions = [{{name, start, size}}]`, `preserve_regions`',
            "`true`",
            "`reserve_mem` regions (preserved)",
        ),
    ),
)


def _boot_cmdline(result: Memblock) -> list[tuple[str, str]]:
    """``(name, "reserve_mem=SIZE:4096:NAME")`` per region: the kernel revives
    a region only when the command line asks for it by name."""
    return [
        (r.name, f"reserve_mem={r.size}:4096:{r.name}")
        for r in result.regions
        if r.size and re.fullmatch(r"[A-Za-z0-9_.\-]+", r.name)
    ]


def _judge_boot(log: BootLog) -> tuple[str, str | None]:
    names = list(log.expected)
    if not names:
        return "not-exercised", None
    lines = log.lines
    revived = [n for n in names if any(f"Revived memory reservation '{n}' from KHO" in line for line in lines)]
    if len(revived) == len(names):
        return "ok", None
    bad = [
        line
        for line in lines
        if ("reserve-mem" in line or "FDT 'memblock'" in line or "reserve_mem:" in line) and "command line" not in line
    ]
    return "failed", "memblock: reserve_mem not revived" + (
        f": {bad[0]}" if bad else f" ({fmt_strings(sorted(set(names) - set(revived)))})"
    )


class MemblockClient(Client):
    name = NAME
    spec_type = NAME
    spec_table = SPEC
    boot_rule = BootRule(judge=_judge_boot, cmdline=_boot_cmdline)

    def decode(self, blob: bytes, ctx: DecodeContext) -> Memblock:
        return Memblock(decode(blob, ctx.byteorder, where=ctx.where or NAME))

    def summary(self, decoded: Any) -> str:

        return "; ".join(f"{r['name']}: {r['start']:#x}+{human_size(r['size'])}" for r in decoded) or "no regions"

    def findings(self, result: Memblock, ctx: CheckContext) -> list[Finding]:
        return [
            Finding(
                WARNING,
                "reserve-mem-not-preserved",
                f"reserve_mem region {r.name!r} is not preserved",
                phys=r.start,
                path=ctx.path,
            )
            for r in result.regions
            if r.size and not ctx.covered(r.start, r.size)
        ]

    def spec_params(self, values: dict[str, Any], where: str, base_dir: Path | None) -> MemblockParams:
        regions = []
        for k, r in enumerate(values["regions"]):
            rw = f"{where}.regions[{k}]"
            a, s = RANGE.parse({x: r[x] for x in ("start", "size", "end") if r[x] is not None}, rw)
            regions.append(RegionSpec(r["name"] if r["name"] is not None else f"region{k}", a, s))
        return MemblockParams(tuple(regions), values["preserve_regions"])

    def fixed_ranges(self, entry: Any, page_size: int) -> list[tuple[int, int]]:
        p: MemblockParams = entry.params
        return [(r.start, r.start + r.size) for r in p.regions] if p.preserve_regions else []

    def build(self, entry: Any, ctx: BuildContext) -> BuiltBlob:
        p: MemblockParams = entry.params
        ps = ctx.page_size
        data = encode([ReserveMem(r.name, r.start, r.size) for r in p.regions], ctx.layout.byteorder)
        pres = PageSet(ps)
        if p.preserve_regions:
            for r in p.regions:
                if r.start % ps or r.size % ps:
                    raise SpecError(f"{ctx.where}: reserve_mem region {r.name!r} is not page aligned")
            pres.update(PageSet.from_ranges(ps, [(r.start, r.start + r.size) for r in p.regions if r.size]))
        phys, seg = ctx.place(data, entry.phys, f"sub-blob {entry.name}")
        pres.update(PageSet.from_ranges(ps, [(phys, phys + page_round(len(data), ps))], max_order=0))
        return BuiltBlob(data, phys, [seg], pres)


CLIENT = MemblockClient()
