"""TEST ONLY: a memory-map kind of its own, "page-list", to show that a new
map kind is one module that registers a codec (``kho_formats.model.memmap``) and a
schema that names it (``tests/schemas/kho-vpagelist.toml``).

The map: a chain of pages, each ``{u64 next; u64 count; u64 entry[count]}``,
``entry = phys | order`` (phys is aligned to its order, so the low bits are
free), entries ascending.  One entry per preserved page: fine for a test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from kho_formats.abi import AbiVersion
from kho_formats.errors import MemoryMapError, UnrepresentableError
from kho_formats.limits import Budget
from kho_formats.memory.alloc import PageAllocator, merge_ranges
from kho_formats.memory.chain import walk_page_chain
from kho_formats.memory.image import PhysImage
from kho_formats.memory.pageset import PageSet
from kho_formats.model import memmap
from kho_formats.model.memmap import MapBuilt, MapContext, MapRead, MemoryMap

HEADER_WORDS = 2


@dataclass
class PageList:
    kind: ClassVar[str] = "page-list"
    first: int
    pages: list[int] = field(default_factory=list)

    def metadata_ranges(self, page_size: int) -> list[tuple[int, int]]:
        return merge_ranges((p, p + page_size) for p in self.pages)

    def copy(self) -> PageList:
        return replace(self, pages=list(self.pages))

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first, "pages": list(self.pages)}


class PageListCodec:
    kind: ClassVar[str] = "page-list"
    params: ClassVar[Mapping[str, str]] = {}
    root_fdt_must_be_preserved: ClassVar[bool] = True
    unpreserved_blob_severity: ClassVar[str] = "error"

    def check_schema(self, version: AbiVersion, where: str) -> None:
        pass

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
        dt = ctx.layout.dtype
        cap = ctx.page_size // 8 - HEADER_WORDS
        got: list[np.ndarray] = []
        m = PageList(first)
        for phys, page in walk_page_chain(
            image, first, ctx.page_size, ctx.byteorder, budget, noun="page-list page", error=MemoryMapError
        ):
            words = np.frombuffer(page, dtype=dt)
            count = int(words[1])
            if count > cap:
                raise MemoryMapError(f"count {count} past the page", phys=phys, expected=f"<= {cap}")
            m.pages.append(phys)
            got.append(words[HEADER_WORDS : HEADER_WORDS + count].astype(np.uint64))
        entries = np.concatenate(got) if got else np.zeros(0, np.uint64)
        mask = np.uint64(ctx.page_size - 1)
        orders = (entries & mask).astype(np.int64)
        by_order = {int(o): entries[orders == o] & ~mask for o in np.unique(orders).tolist()}
        return MapRead(PageSet.from_arrays(ctx.page_size, by_order), m)

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
        self.check_representable(pages, ctx)
        entries = sorted(p | o for p, o in pages.iter_pages())
        if not entries:
            return MapBuilt(0, [], PageList(0))
        if alloc is None:
            raise MemoryMapError("no allocator for page-list pages")
        cap = ctx.page_size // 8 - HEADER_WORDS
        groups = [entries[k : k + cap] for k in range(0, len(entries), cap)]
        where = alloc.alloc_pages(len(groups), what="page-list page")
        out: list[tuple[int, bytes | memoryview]] = []
        for n, (phys, group) in enumerate(zip(where, groups)):
            nxt = where[n + 1] if n + 1 < len(where) else 0
            words = np.zeros(ctx.page_size // 8, dtype=ctx.layout.dtype)
            words[0], words[1] = nxt, len(group)
            words[HEADER_WORDS : HEADER_WORDS + len(group)] = group
            out.append((phys, words.tobytes()))
        return MapBuilt(where[0], out, PageList(where[0], list(where)))

    def check_representable(self, pages: PageSet, ctx: MapContext) -> None:
        for order in pages.orders:
            if (1 << order) >= ctx.page_size:
                raise UnrepresentableError(f"order {order} does not fit the low bits of a page address")

    def params_for(self, ctx: MapContext, source: Mapping[str, int], options: Mapping[str, Any]) -> dict[str, int]:
        return {}

    def summary(self, ctx: MapContext, m: MemoryMap | None) -> dict[str, Any]:
        return {"list_pages": len(m.pages)} if isinstance(m, PageList) else {}

    def describe(self, summary: Mapping[str, Any]) -> str:
        return f", {summary['list_pages']} list pages" if "list_pages" in summary else ""

    def param_lines(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        return []

    def changes(self, old: MapContext, new: MapContext) -> list[str]:
        return []


CODEC = PageListCodec()


def register() -> None:
    memmap.register(CODEC)


def unregister() -> None:
    memmap.unregister(CODEC.kind)
