"""kho-v2+ preserved memory map: the radix tree of page-sized tables with
bitmap leaves (``struct kho_radix_node`` / ``struct kho_radix_leaf``).

Reading walks the tree iteratively in the kernel's order (ascending table
indexes, rebuilding the key), refuses shared or cyclic nodes (so the walk is
linear in the pages read), and turns each leaf into runs with numpy; no
Python object is created per preserved page.

Writing produces the tree the kernel would build by adding the same pages:
the same nodes with the same entries and bits.  Node pages are placed in
depth-first pre-order by a :class:`~kho_formats.memory.alloc.PageAllocator`, or at
the addresses of a previous walk (``placement``), which reproduces a
captured tree byte for byte.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, ClassVar

import numpy as np

from ...abi.layout import Layout
from ...abi.versions import AbiVersion, RadixGeometry, check_radix_schema
from ...errors import ImageError, KhoFormatError, MemoryMapError, UnrepresentableError, VersionError
from ...limits import Budget
from ...memory.alloc import PageAllocator, merge_ranges
from ...memory.bits import bitmaps_to_runs, runs_to_bitmaps
from ...memory.image import PhysImage
from ...memory.leafscan import leaf_runs
from ...memory.pageset import PageSet, coalesce_runs, runs_from_sorted_indexes
from .codec import MapBuilt, MapContext, MapRead, MemoryMap, register

U64 = np.uint64
NodeId = tuple[int, int]  # (level, key >> (shift of the node))
#: leaf pointers, their key prefixes, the level-1 table of each, the entry index in it
LeafBatch = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass
class RadixTree:
    """What a walk saw (or a build wrote): node placement and counts."""

    kind: ClassVar[str] = "radix"

    root: int
    depth: int
    placement: dict[NodeId, int] = field(default_factory=dict)  # pre-order
    tables: int = 0
    leaves: int = 0
    empty_leaves: int = 0

    @property
    def first(self) -> int:
        return self.root

    def metadata_ranges(self, page_size: int) -> list[tuple[int, int]]:
        return merge_ranges((p, p + page_size) for p in self.placement.values())

    def copy(self) -> RadixTree:
        """Independent copy (keys and values are immutable: no deep copy)."""
        return dataclasses.replace(self, placement=dict(self.placement))

    @property
    def pages(self) -> list[int]:
        return list(self.placement.values())

    def to_json(self) -> dict[str, object]:
        return {
            "root": self.root,
            "depth": self.depth,
            "tables": self.tables,
            "leaves": self.leaves,
            "empty_leaves": self.empty_leaves,
            "node_pages": sorted(self.placement.values()),
        }

    def _defer_leaves(self, ids: np.ndarray, ptrs: np.ndarray) -> None:
        """Leaves (node ids, addresses) put into ``placement`` when it is first
        read: a parse that never looks at the placement builds no dict entry per
        leaf (tens of thousands of tuples for a sparse map)."""
        self.__dict__.setdefault("_pending", []).append((ids, ptrs))


def _get_placement(tree: RadixTree) -> dict[NodeId, int]:
    d: dict[NodeId, int] = tree.__dict__["_placement"]
    pending = tree.__dict__.get("_pending")
    if pending:
        tree.__dict__["_pending"] = []
        for ids, ptrs in pending:
            d.update(zip(zip(repeat(0, ids.size), ids.tolist()), ptrs.tolist()))
    return d


def _set_placement(tree: RadixTree, value: dict[NodeId, int]) -> None:
    tree.__dict__["_placement"] = value
    tree.__dict__["_pending"] = []


# ``placement`` stays a dataclass field (init, repr, eq, replace); reading it adds the deferred leaves first
RadixTree.placement = property(_get_placement, _set_placement)  # type: ignore[assignment]


def _check_geometry(geom: RadixGeometry, lay: Layout) -> None:
    """The tree's constants (schema) and its node declarations (layout) agree."""
    if 1 << geom.table_size_log2 != lay.radix_table_entries or 1 << geom.bitmap_size_log2 != 64 * lay.radix_leaf_words:
        raise VersionError(
            f"radix geometry for {geom.page_size}-byte pages does not match the kho_radix_node/kho_radix_leaf "
            f"declarations of {lay.version or 'the kernel layout'}",
            expected=f"{1 << geom.table_size_log2} table entries and {1 << geom.bitmap_size_log2} leaf bits",
        )


def _node_shift(geom: RadixGeometry, level: int) -> int:
    """Right shift of a key that identifies the node at ``level`` holding it."""
    return geom.bitmap_size_log2 + level * geom.table_size_log2


def read_radix(
    image: PhysImage,
    root: int,
    geom: RadixGeometry,
    lay: Layout,
    *,
    budget: Budget | None = None,
) -> tuple[PageSet, RadixTree]:
    budget = budget or Budget()
    _check_geometry(geom, lay)
    ps_size = lay.page_size
    if root == 0:
        return PageSet(ps_size), RadixTree(root=root, depth=geom.depth)
    # Fast walk first: leaf pointers are checked all at once at the end
    # (alignment, every node referenced once).  Any problem, or any error on
    # the way, and the walk is redone entry by entry, which raises what the
    # first bad entry in the kernel's walk order deserves.
    charged = (budget.pages, budget.entries)
    try:
        tree, leaf_batches, tables = _walk_tables(image, root, geom, lay, budget, fast=True)
        if not _leaf_pointers_ok(tables, leaf_batches, ps_size):
            raise MemoryMapError("shared or misaligned radix leaf")
    except KhoFormatError:
        budget.pages, budget.entries = charged
        tree, leaf_batches, _ = _walk_tables(image, root, geom, lay, budget, fast=False)
    per_order: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    if leaf_batches:
        _read_leaves(image, leaf_batches, geom, lay, tree, per_order, budget)
    runs = {}
    for order, (firsts, lens) in per_order.items():
        if len(firsts) == 1:  # one stack of leaves: already merged
            s, c = firsts[0], lens[0]
            s <<= U64(lay.page_shift + order)
            runs[order] = (s, c)
        else:
            s = np.concatenate(firsts) << U64(lay.page_shift + order)
            runs[order] = coalesce_runs(s, np.concatenate(lens), ps_size << order)
    return PageSet._from_coalesced(ps_size, runs), tree


def _walk_tables(
    image: PhysImage,
    root: int,
    geom: RadixGeometry,
    lay: Layout,
    budget: Budget,
    *,
    fast: bool,
) -> tuple[RadixTree, list[LeafBatch], list[int]]:
    """Walk the tables in the kernel's order and collect the leaf pointers
    (and the tables' addresses).  ``fast``: leaf pointers are not checked
    one by one (the caller checks them together)."""
    ps_size = lay.page_size
    depth = geom.depth
    o0 = geom.order_0_log2
    tree = RadixTree(root=root, depth=depth)
    seen: dict[int, NodeId] = {}
    leaf_batches: list[LeafBatch] = []

    entries, table_at = lay.radix_table_entries, lay.radix_table_offset
    entry_size = lay.dtype.itemsize
    nshift = [_node_shift(geom, lv) for lv in range(depth)]
    lshifts = [geom.level_shift(lv) if lv else 0 for lv in range(depth)]

    def source(parent: int | None, level: int, index: int) -> str:
        return f" (entry {index} of the level-{level + 1} node at {parent:#x})" if parent is not None else ""

    def check_ptr(phys: int, level: int, parent: int | None, index: int) -> None:
        where = f"radix level {level} node" if level else "radix leaf"
        if phys % ps_size:
            raise MemoryMapError(
                f"{where} pointer is not page aligned{source(parent, level, index)}",
                phys=phys,
                expected=f"a multiple of {ps_size:#x}",
            )
        if phys in seen:
            lvl, _ = seen[phys]
            raise MemoryMapError(
                f"{where} at {phys:#x} is already used as a level-{lvl} node{source(parent, level, index)}: "
                "shared or cyclic radix node",
                phys=phys,
                expected="every node referenced once",
            )

    check_ptr(root, depth - 1, None, 0)
    stack: list[tuple[int, int, int, int | None, int]] = [(root, depth - 1, 0, None, 0)]
    level1: list[tuple[int, int]] = []  # fast: the level-1 tables (phys, key prefix), read together at the end
    tables: list[int] = []
    while stack:
        phys, level, prefix, parent, index = stack.pop()
        tables.append(phys)
        nid = prefix >> nshift[level]
        seen[phys] = (level, nid)
        tree.placement[(level, nid)] = phys
        budget.page(phys, "radix node")
        if fast and level == 1:
            tree.tables += 1
            level1.append((phys, prefix))
            continue
        try:
            node = image.view(phys, ps_size, "radix node")
            words = np.frombuffer(node, dtype=lay.dtype, count=entries, offset=table_at)
        except ImageError:
            where = f"radix level {level} node" if level else "radix leaf"
            raise MemoryMapError(
                f"{where}{source(parent, level, index)} points outside the image",
                phys=phys,
                expected="a page present in the memory image",
            ) from None
        tree.tables += 1
        nz = np.flatnonzero(words)
        lshift = lshifts[level]
        if nz.size and (prefix | (int(nz[-1]) << lshift)) >> (o0 + 1):
            i = next(i for i in nz.tolist() if (prefix | (i << lshift)) >> (o0 + 1))
            raise MemoryMapError(
                f"entry {i} of the level-{level} node makes keys with bits above the order-0 bit {o0}",
                phys=phys + table_at + entry_size * i,
                expected=f"entries whose keys stay below 1 << {o0 + 1}",
            )
        if level > 1:
            for i, child in zip(nz[::-1].tolist(), words[nz[::-1]].tolist()):
                check_ptr(child, level - 1, phys, i)
                seen[child] = (level - 1, -1)  # reserve: a second reference is an error
                stack.append((child, level - 1, prefix | (i << lshift), phys, i))
            continue
        # level 1: its children are leaves; read them later, all at once
        if nz.size == 0:
            continue
        ptrs = words[nz].astype(np.uint64)
        prefixes = np.uint64(prefix) | (nz.astype(np.uint64) << np.uint64(lshift))
        if fast:  # checked together at the end (_leaf_pointers_ok)
            ids = (prefixes >> U64(nshift[0])).tolist()
            tree.placement.update(zip(zip(repeat(0, len(ids)), ids), ptrs.tolist()))
        else:
            for i, child, cp in zip(nz.tolist(), ptrs.tolist(), prefixes.tolist()):
                check_ptr(child, 0, phys, i)
                seen[child] = (0, cp >> nshift[0])
                tree.placement[(0, cp >> nshift[0])] = child
        budget.page(int(ptrs[0]), "radix leaf", count=int(nz.size))
        leaf_batches.append((ptrs, prefixes, np.full(nz.size, phys, dtype=np.uint64), nz))
    if level1:
        leaf_batches.append(
            _level1_leaves(image, level1, geom, lay, tree, budget, nshift[0], lshifts[1] if depth > 1 else 0)
        )
    return tree, leaf_batches, tables


def _level1_leaves(
    image: PhysImage,
    level1: list[tuple[int, int]],
    geom: RadixGeometry,
    lay: Layout,
    tree: RadixTree,
    budget: Budget,
    leaf_shift: int,
    lshift: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fast walk's level-1 tables, all at once (they hold nearly every
    entry of a big tree): their leaf pointers and key prefixes in the
    kernel's walk order, one batch.  Any problem raises, and the caller
    walks again entry by entry for the precise error."""
    ps_size = lay.page_size
    phys = np.fromiter((p for p, _ in level1), dtype=np.uint64, count=len(level1))
    pref = np.fromiter((q for _, q in level1), dtype=np.uint64, count=len(level1))
    entries, table_at = lay.radix_table_entries, lay.radix_table_offset
    placed = image.rows(phys, ps_size)
    if placed is not None:
        pages, rows = placed
    else:
        pages, rows = image.gather(phys, ps_size, "radix node"), np.arange(phys.size, dtype=np.intp)
    table = pages[:, table_at : table_at + entries * lay.dtype.itemsize]
    words = np.ascontiguousarray(table[rows]).view(lay.dtype)
    r, c = np.nonzero(words)
    ptrs = words[r, c].astype(np.uint64)
    prefixes = pref[r] | (c.astype(np.uint64) << U64(lshift))
    if prefixes.size and int(prefixes.max()) >> (geom.order_0_log2 + 1):
        raise MemoryMapError("a level-1 entry makes keys above the order-0 bit")
    tree._defer_leaves((prefixes >> U64(leaf_shift)).astype(np.int64), ptrs)
    if ptrs.size:
        budget.page(int(ptrs[0]), "radix leaf", count=int(ptrs.size))
    return ptrs, prefixes, phys[r], c


def _leaf_pointers_ok(tables: list[int], batches: list[LeafBatch], page_size: int) -> bool:
    """Every leaf pointer page aligned, and no page used twice among all
    nodes (tables and leaves)."""
    if not batches:
        return True
    leaves = np.concatenate([b[0] for b in batches])
    if np.any(leaves & U64(page_size - 1)):
        return False
    every = np.sort(np.concatenate([leaves, np.array(tables, dtype=np.uint64)]))
    return not np.any(every[1:] == every[:-1])


def _read_leaves(
    image: PhysImage,
    batches: list[LeafBatch],
    geom: RadixGeometry,
    lay: Layout,
    tree: RadixTree,
    per_order: dict[int, tuple[list[np.ndarray], list[np.ndarray]]],
    budget: Budget,
) -> None:
    """Every leaf at once, read where it lies in the image (or gathered
    when the leaves are not in one segment): orders from the key prefixes,
    one :func:`bitmaps_to_runs` per order, its runs charged to
    ``Limits.max_runs``.  Whether a leaf is empty is told by the runs found,
    not by a pass over every leaf word."""
    ptrs = np.concatenate([b[0] for b in batches])
    prefixes = np.concatenate([b[1] for b in batches])
    n_words = lay.radix_leaf_words
    placed = image.rows(ptrs, lay.page_size) if n_words * lay.dtype.itemsize == lay.page_size else None
    if placed is not None:
        words = placed[0].view(lay.dtype)
        rows: np.ndarray = placed[1]
    else:
        try:
            raw = image.gather(ptrs, lay.page_size, "radix leaf")
        except ImageError as exc:
            bad = exc.phys
            for p, _, parent, nz in batches:
                hit = np.flatnonzero(p == np.uint64(bad if bad is not None else 0))
                if hit.size:
                    raise MemoryMapError(
                        f"radix leaf (entry {int(nz[hit[0]])} of the level-1 node at {int(parent[hit[0]]):#x}) "
                        "points outside the image",
                        phys=int(p[hit[0]]),
                        expected="a page present in the memory image",
                    ) from None
            raise MemoryMapError(str(exc), phys=bad) from None
        words = raw.view(lay.dtype).reshape(ptrs.size, n_words)
        rows = np.arange(ptrs.size, dtype=np.intp)
    tree.leaves += int(ptrs.size)
    nonempty = 0
    o0 = geom.order_0_log2
    zero = np.flatnonzero(prefixes == 0)
    if zero.size:
        full = zero[words[rows[zero]].any(axis=1)]
        nonempty += int(full.size)
    else:
        full = zero
    for k in full.tolist():
        # order bit inside the leaf's own bits: orders >= ORDER_0_LOG2 - BITMAP_SIZE_LOG2 + 1
        le = words[rows[k]].astype("<u8")
        for key in np.flatnonzero(np.unpackbits(le.view(np.uint8), bitorder="little")).tolist():
            if key == 0:
                raise MemoryMapError("leaf bit 0 under an all-zero key prefix encodes no order", phys=int(ptrs[k]))
            hb = key.bit_length() - 1
            order = o0 - hb
            if order > geom.max_order:
                raise MemoryMapError(
                    f"leaf bit {key} encodes order {order}", phys=int(ptrs[k]), expected=f"orders 0..{geom.max_order}"
                )
            _collect(per_order, order, np.array([key ^ (1 << hb)], dtype=np.uint64))
            budget.runs_add(1, "radix leaf", int(ptrs[k]))
    sel = np.flatnonzero(prefixes != 0)
    if sel.size:
        pref = prefixes[sel]
        hb = np.frexp(pref.astype(np.float64))[1].astype(np.int64) - 1  # exact: prefixes have few significant bits
        orders = o0 - hb
        if np.any(orders < 0):  # only an empty leaf may have such a prefix
            neg = np.flatnonzero(orders < 0)
            used = neg[words[rows[sel[neg]]].any(axis=1)]
            if used.size:
                k = int(sel[used[0]])
                raise MemoryMapError(f"leaf key prefix {int(prefixes[k]):#x} has no valid order bit", phys=int(ptrs[k]))
            ok = np.flatnonzero(orders >= 0)
            sel, pref, hb, orders = sel[ok], pref[ok], hb[ok], orders[ok]
        bases = pref ^ (np.uint64(1) << hb.astype(np.uint64))
        nbits = U64(64 * n_words)
        for order in np.flatnonzero(np.bincount(orders)).tolist():  # orders are small and >= 0 here
            grp = np.flatnonzero(orders == order)
            gb = bases[grp]
            what, at = f"order-{order} radix leaves", int(ptrs[sel[grp[0]]])
            stats: dict[str, int] = {}
            got = leaf_runs(words, gb, rows[sel[grp]], charge=functools.partial(_charge, budget, what, at), stats=stats)
            if got is None:  # no C scan: numpy's, which gives the same runs
                got = bitmaps_to_runs(words, gb, rows[sel[grp]])
                budget.runs_add(int(got[0].size), what, at)
            f, l = got
            if not f.size:
                continue
            if "nonempty" in stats:
                nonempty += stats["nonempty"]
            else:
                # a leaf holds bits iff the last run starting before its end reaches into it
                last = np.searchsorted(f, gb + nbits, side="left") - 1
                hit = last >= 0
                hit[hit] = f[last[hit]] + l[last[hit]] > gb[hit]
                nonempty += int(np.count_nonzero(hit))
            lists = per_order.setdefault(order, ([], []))
            lists[0].append(f)
            lists[1].append(l)
    tree.empty_leaves += int(ptrs.size) - nonempty


def _charge(budget: Budget, what: str, phys: int, runs: int) -> None:
    budget.runs_add(runs, what, phys)


def _collect(per_order: dict[int, tuple[list[np.ndarray], list[np.ndarray]]], order: int, idx: np.ndarray) -> None:
    f, l = runs_from_sorted_indexes(idx)
    lists = per_order.setdefault(order, ([], []))
    lists[0].append(f)
    lists[1].append(l)


def check_representable(pages: PageSet, geom: RadixGeometry) -> None:
    """Refuse orders the tree cannot hold (e.g. order 0 in a kho-v2 tree with 16 KiB pages)."""
    for order in pages.orders:
        geom.check_order(order)
        bit = geom.order_0_log2 - order
        if bit >= geom.key_bits_covered:
            first = int(pages.runs(order).starts[0])
            raise UnrepresentableError(
                f"order-{order} pages (first at {first:#x}) have their order bit at key bit {bit}, "
                f"which no table index of a depth-{geom.depth} tree with "
                f"{geom.page_size // 1024} KiB pages covers",
                phys=first,
                expected=f"orders >= {geom.order_0_log2 - geom.key_bits_covered + 1}",
            )


def build_radix(
    pages: PageSet,
    geom: RadixGeometry,
    lay: Layout,
    alloc: PageAllocator | None,
    *,
    placement: dict[NodeId, int] | None = None,
    keep_empty: bool = False,
) -> tuple[int, list[tuple[int, bytes | memoryview]], RadixTree]:
    """Pages -> ``(root_phys, [(phys, page bytes)], tree)``.

    The page bytes are read-only ``memoryview`` slices of one array per
    level (bytes-like: ``bytes(view)`` copies one out), in pre-order.

    Returns root 0 and no pages for an empty set (unless ``keep_empty``
    with a ``placement`` that has nodes).
    """
    check_representable(pages, geom)
    _check_geometry(geom, lay)
    depth = geom.depth
    bshift = geom.bitmap_size_log2
    tshift = geom.table_size_log2
    tmask = (1 << tshift) - 1
    nbits = 1 << bshift
    o0 = geom.order_0_log2
    # 1. leaves: every order's runs as key ranges, packed into leaf bitmaps
    orders = sorted(pages.orders, reverse=True)  # ascending keys
    runs = [pages.runs(order) for order in orders]
    n = sum(r.starts.size for r in runs)
    if n:
        # written in place: no per-order temporaries, no concatenation
        first = np.empty(n, dtype=np.uint64)
        length = np.empty(n, dtype=np.uint64)
        at = 0
        for order, r in zip(orders, runs):
            part = first[at : at + r.starts.size]
            np.right_shift(r.starts, U64(lay.page_shift + order), out=part)
            part |= U64(1 << (o0 - order))
            length[at : at + r.starts.size] = r.counts
            at += r.starts.size
        leaf_ids, packed = runs_to_bitmaps(first, length, nbits)
        del first, length
    else:
        leaf_ids, packed = np.zeros(0, np.uint64), np.zeros((0, nbits // 8), np.uint8)
    # 2. node ids per level, sorted (a level's ids are its children's ids >> tshift)
    ids: list[np.ndarray] = [leaf_ids.view(np.int64)]
    for level in range(1, depth):
        up = ids[level - 1] >> tshift
        keep = np.ones(up.size, dtype=bool)
        np.not_equal(up[1:], up[:-1], out=keep[1:])
        ids.append(up[keep])
    if placement and keep_empty:
        extra: list[list[int]] = [[] for _ in range(depth)]
        for level, node_id in placement:
            if 0 <= level < depth:
                for lv in range(level, depth):
                    extra[lv].append(node_id >> (tshift * (lv - level)))
        ids = [np.union1d(ids[lv], np.array(extra[lv], dtype=np.int64)) for lv in range(depth)]
    if not ids[0].size and not (placement and keep_empty and any(x.size for x in ids)):
        return 0, [], RadixTree(root=0, depth=depth)
    if ids[depth - 1].size != 1 or int(ids[depth - 1][0]) != 0:
        raise UnrepresentableError("keys above the root table's range", expected="root node id 0")
    # 3. placement: depth-first pre-order, ascending indexes = sorted by (first leaf id covered, level descending)
    lvl = np.concatenate([np.full(x.size, lv, dtype=np.int64) for lv, x in enumerate(ids)])
    nid = np.concatenate(ids)
    first_leaf = np.concatenate([x << (tshift * lv) for lv, x in enumerate(ids)])
    preorder = np.lexsort((-lvl, first_leaf))
    pre_lvl = lvl[preorder].tolist()
    pre_nid = nid[preorder].tolist()
    nodes = list(zip(pre_lvl, pre_nid))
    addr = np.empty(nid.size, dtype=np.uint64)  # level-major, like ``nid``
    given: list[int | None] | None = None
    fresh_at: Sequence[int] = range(len(nodes))
    if placement:
        given = [placement.get(n) for n in nodes]
        fresh_at = [k for k, g in enumerate(given) if g is None]
        if alloc is not None:
            for q in placement.values():
                alloc.avoid(q, q + lay.page_size)
    fresh: list[int] = []
    if len(fresh_at):
        if alloc is None:
            raise MemoryMapError(f"no address for radix node {nodes[fresh_at[0]]} and no allocator")
        fresh = alloc.alloc_pages(len(fresh_at), what="radix node")
    if given is None:
        pre_addr = fresh
    else:
        for k, q in zip(fresh_at, fresh):
            given[k] = q
        pre_addr = [int(g) for g in given if g is not None]
        if len(pre_addr) != len(nodes):  # the allocator hands out exactly what is asked, or raises
            raise MemoryMapError(f"{len(nodes) - len(pre_addr)} radix nodes got no address")
    addr[preorder] = np.array(pre_addr, dtype=np.uint64)
    tree = RadixTree(root=0, depth=depth)
    tree.placement = dict(zip(nodes, pre_addr))
    # 4. bytes: every level's tables in one array, leaves straight from the packed bitmaps
    ps = lay.page_size
    offs = np.cumsum([0] + [x.size for x in ids])
    node_bytes: list[memoryview] = []  # per level, the flat page bytes of that level's nodes in id order
    for level in range(depth):
        if level == 0:
            if ids[0].size == leaf_ids.size:
                rows = packed
            else:  # empty leaves kept from a placement
                rows = np.zeros((ids[0].size, ps), dtype=np.uint8)
                rows[np.searchsorted(ids[0], leaf_ids.view(np.int64))] = packed
            if lay.byteorder == "big":
                rows = rows.view("<u8").astype(">u8").view(np.uint8)
            node_bytes.append(np.ascontiguousarray(rows).reshape(-1).data.toreadonly())
            continue
        children = ids[level - 1]
        table = np.zeros((ids[level].size, lay.radix_table_entries), dtype=np.uint64)
        table[np.searchsorted(ids[level], children >> tshift), children & tmask] = addr[offs[level - 1] : offs[level]]
        node_bytes.append(table.astype(lay.dtype, copy=False).reshape(-1).data.cast("B").toreadonly())
    row_in_level = np.arange(nid.size, dtype=np.int64) - np.repeat(offs[:-1], [x.size for x in ids])
    out: list[tuple[int, bytes | memoryview]] = []
    for lv, row, q in zip(pre_lvl, (row_in_level[preorder] * ps).tolist(), pre_addr):
        out.append((q, node_bytes[lv][row : row + ps]))
    tree.tables = int(nid.size - ids[0].size)
    tree.leaves = int(ids[0].size)
    tree.empty_leaves = int(ids[0].size - leaf_ids.size)
    tree.root = tree.placement[(depth - 1, 0)]
    return tree.root, out, tree


class RadixCodec:
    """kho-v2+: the radix tree of page-sized tables with bitmap leaves; the
    depth comes from the version's formula (``schemas/kho-vN.toml``)."""

    kind: ClassVar[str] = "radix"
    params: ClassVar[Mapping[str, str]] = {}
    #: the next kernel reads sub-nodes from the root FDT page: it must stay preserved
    root_fdt_must_be_preserved: ClassVar[bool] = True
    unpreserved_blob_severity: ClassVar[str] = "error"

    def check_schema(self, version: AbiVersion, where: str) -> None:
        check_radix_schema(version, where)

    @staticmethod
    def geometry(ctx: MapContext) -> RadixGeometry:
        return ctx.version.radix(ctx.page_size)

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
        pages, tree = read_radix(image, first, self.geometry(ctx), ctx.layout, budget=budget)
        notes = []
        if tree.empty_leaves:
            notes.append(f"radix tree has {tree.empty_leaves} empty leaves (the kernel never frees nodes)")
        return MapRead(pages, tree, {}, notes)

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
        where = placement.placement if isinstance(placement, RadixTree) else None
        first, out, tree = build_radix(
            pages, self.geometry(ctx), ctx.layout, alloc, placement=where, keep_empty=keep_empty
        )
        return MapBuilt(first, list(out), tree)

    def check_representable(self, pages: PageSet, ctx: MapContext) -> None:
        check_representable(pages, self.geometry(ctx))

    def params_for(self, ctx: MapContext, source: Mapping[str, int], options: Mapping[str, Any]) -> dict[str, int]:
        return {}

    def summary(self, ctx: MapContext, m: MemoryMap | None) -> dict[str, Any]:
        if not isinstance(m, RadixTree):
            return {}
        return {"depth": self.geometry(ctx).depth, "pages": len(m.placement)}

    def describe(self, summary: Mapping[str, Any]) -> str:
        # keys the report fills with null (the map was not read) say nothing
        depth, pages = summary.get("depth"), summary.get("pages")
        if depth is None or pages is None:
            return ""
        return f", radix depth {depth}, {pages} node/leaf pages"

    def param_lines(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        return []

    def changes(self, old: MapContext, new: MapContext) -> list[str]:
        d0, d1 = self.geometry(old).depth, self.geometry(new).depth
        return [f"radix depth {d0} -> {d1}"] if d0 != d1 else []


CODEC = register(RadixCodec())
