"""A standalone vmalloc area: a raw sub-blob that is only a 16-byte
``struct kho_vmalloc`` (spec ``[[vmalloc]]``), with generated page data.

Build-only: such a blob has a user-chosen name, so reports show it as an
unknown (raw) blob; :meth:`VmallocAreaClient.decode` reads it when asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...abi.layout import KHO_VMALLOC_FLAGS_MASK
from ...errors import ClientError
from ..specfields import INT, STR, SpecField, SpecRow, SpecTable
from .base import BuildContext, BuiltBlob, Client, DecodeContext, gen_bytes
from .vmalloc import VmallocArea, build_vmalloc, read_vmalloc


@dataclass(frozen=True)
class VmallocSpec:
    name: str
    pages: int
    order: int = 0
    flags: int = 0x0001
    seed: int | None = None
    phys: int | None = None


SPEC = SpecTable(
    "vmalloc",
    (
        SpecField("name", STR, doc="sub-blob name", default_doc="`vmalloc<i>`"),
        SpecField("pages", INT, 1, doc="area size in pages (a multiple of 1 << order)"),
        SpecField("order", INT, 0, doc="order of every page group"),
        SpecField("flags", INT, 0x0001, doc=f"struct kho_vmalloc flags (bits of {KHO_VMALLOC_FLAGS_MASK:#x})"),
        SpecField("seed", INT, doc="page data seed", default_doc="the spec's seed"),
        SpecField("phys", INT, doc="descriptor page placement", default_doc="allocated"),
    ),
    title="`[[vmalloc]]`",
    rows=(
        SpecRow(
            ("name", "pages", "order", "flags", "seed", "phys"),
            "`[[vmalloc]]` `name`, `pages`, `order`, `flags`, `seed`, `phys`",
            "`order = 0`, `flags = 1`",
            "a vmalloc area with generated data; its 16-byte `struct kho_vmalloc` is raw sub-blob `name`",
        ),
    ),
)


class VmallocAreaClient(Client):
    kind = "vmalloc"

    def decode(self, blob: bytes, ctx: DecodeContext) -> VmallocArea:
        size = ctx.layout.kho_vmalloc.sizeof()
        if len(blob) < size:
            raise ClientError(f"{ctx.where}: {len(blob)} bytes", path=ctx.where, expected=f"{size} bytes")
        if ctx.image is None:
            raise ClientError(f"{ctx.where}: a vmalloc area needs the memory image", path=ctx.where)
        desc = ctx.layout.kho_vmalloc.parse(bytes(blob[:size]))
        return read_vmalloc(ctx.image, desc, ctx.layout, budget=ctx.budget, where=ctx.where)

    def areas(self, result: VmallocArea) -> list[VmallocArea]:
        return [result]

    def build(self, entry: Any, ctx: BuildContext) -> BuiltBlob:
        v: VmallocSpec = entry
        seed = ctx.seed_for(v.seed)
        grp = ctx.page_size << v.order
        groups = [ctx.alloc.alloc(grp, align=grp, what=f"vmalloc {v.name} group") for _ in range(v.pages >> v.order)]
        segs = [
            (g, gen_bytes(seed, f"{v.name}/group{k}", grp), f"vmalloc {v.name} group") for k, g in enumerate(groups)
        ]
        desc, chunks, pres = build_vmalloc(groups, v.order, ctx.layout, ctx.alloc, flags=v.flags)
        segs += [(cp, cdata, f"vmalloc {v.name} chunk") for cp, cdata in chunks]
        data = ctx.layout.kho_vmalloc.build(desc)
        phys, seg = ctx.place(data, v.phys, f"vmalloc {v.name} descriptor")
        segs.append(seg)
        pres.add(phys, 0)
        return BuiltBlob(data, phys, segs, pres)


CLIENT = VmallocAreaClient()
