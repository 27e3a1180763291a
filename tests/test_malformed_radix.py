"""kho-v2+ radix trees that lie: cycles, shared nodes (a DAG that would be
exponential to walk), pointers outside the image or unaligned, keys with no
order bit.  Each is one MemoryMapError naming the address, found fast."""

from __future__ import annotations

import time

import numpy as np
import pytest
from _malformed import fails, handover, parse, put64, root_fdt

from kho_formats.errors import LimitExceeded, MemoryMapError
from kho_formats.limits import Limits
from kho_formats.memory.image import PhysImage
from kho_formats.model import state as kstate
from kho_formats.model.fdt import str_bytes, u64_bytes
from kho_formats.ops import check as kcheck

PAGES = [(0x100000, 0), (0x101000, 0), (0x200000, 2), (0x1_0000_0000, 9)]


def tree(version="kho-v4", ps=4096, bo="little", pages=PAGES):
    return handover(version, pages, page_size=ps, byteorder=bo)


def nodes(b, level):
    return sorted(p for (lv, _), p in b.memmap.placement.items() if lv == level)


def first_entry(b, phys, bo="little"):
    """(byte address, value) of the first non-zero entry of a table page."""
    words = np.frombuffer(b.image.read(phys, b.state.page_size), dtype="<u8" if bo == "little" else ">u8")
    i = int(np.flatnonzero(words)[0])
    return phys + 8 * i, int(words[i])


@pytest.mark.parametrize("version", ["kho-v2", "kho-v3", "kho-v4"])
@pytest.mark.parametrize("ps", [4096, 16384, 65536])
@pytest.mark.parametrize("bo", ["little", "big"])
def test_built_trees_parse(version, ps, bo):
    pages = [(p * (ps // 4096), o) for p, o in PAGES]
    if version == "kho-v2" and ps == 16384:  # no order 0 in that layout (KHO-ABI.md 4.1)
        pages = [(0x400000, 1), (0x800000, 2), (0x4_0000_0000, 9)]
    b = tree(version, ps, bo, pages)
    assert parse(b).preserved == b.state.preserved


def test_self_pointer():
    b = tree()
    root = b.memmap.root
    addr, _ = first_entry(b, root)
    put64(b.image, addr, root)
    with fails(MemoryMapError, "shared or cyclic radix node", phys=root):
        parse(b)


def test_cycle_back_to_an_ancestor():
    b = tree()
    root = b.memmap.root
    mid = nodes(b, 3)[0]
    addr, _ = first_entry(b, mid)
    put64(b.image, addr, root)
    with fails(MemoryMapError, "already used as a level-5 node", "shared or cyclic", phys=root):
        parse(b)


def test_two_parents_share_a_child():
    b = tree()
    l1 = nodes(b, 1)
    assert len(l1) >= 2
    addr0, leaf0 = first_entry(b, l1[0])
    addr1, _ = first_entry(b, l1[1])
    put64(b.image, addr1, leaf0)
    with fails(MemoryMapError, "shared or cyclic", phys=leaf0):
        parse(b)


def dag_image(ps=4096, fanout=None, depth=6, wide_from=0):
    """Root + one node per level, every entry of every table pointing at the
    next level's single node: 4 * 512**4 paths over 6 pages (the root has 4
    usable entries at 4 KiB: keys stop at bit 52)."""
    n = fanout or ps // 8
    base = 0x1000_0000
    pages = [base + k * ps for k in range(depth)]
    segs = []
    for k in range(depth - 1):
        table = np.zeros(ps // 8, dtype="<u8")
        table[: (1 if k < wide_from else 4 if k == 0 else n)] = pages[k + 1]
        segs.append((pages[k], table.tobytes()))
    segs.append((pages[-1], b"\xff" * ps))  # a full leaf
    return pages[0], PhysImage(segs)


def test_dag_of_shared_nodes_fails_fast():
    root, img = dag_image()
    fdt = root_fdt([("compatible", str_bytes("kho-v4")), ("preserved-memory-map", u64_bytes(root, "little"))])
    t0 = time.perf_counter()
    with fails(MemoryMapError, "shared or cyclic radix node", seconds=5.0):
        kstate.parse(fdt, img)
    assert time.perf_counter() - t0 < 5.0


@pytest.mark.parametrize("wide_from", [1, 2, 3, 4])
def test_dag_shared_below_narrow_levels_fails_fast(wide_from):
    root, img = dag_image(wide_from=wide_from)
    fdt = root_fdt([("compatible", str_bytes("kho-v4")), ("preserved-memory-map", u64_bytes(root, "little"))])
    shared = root + (wide_from + 1) * 4096
    with fails(MemoryMapError, "shared or cyclic", phys=shared, seconds=5.0):
        kstate.parse(fdt, img)


def test_dag_fails_fast_even_with_generous_limits():
    root, img = dag_image()
    fdt = root_fdt([("compatible", str_bytes("kho-v4")), ("preserved-memory-map", u64_bytes(root, "little"))])
    with fails(MemoryMapError, "shared or cyclic", seconds=5.0):
        kstate.parse(fdt, img, limits=Limits(max_pages=1 << 40, max_entries=1 << 40))


@pytest.mark.parametrize("kind", ["outside", "unaligned", "inside-page", "top"])
def test_bad_child_pointers(kind):
    b = tree()
    root = b.memmap.root
    addr, child = first_entry(b, root)
    value = {"outside": 0x7777_0000_0000, "unaligned": child + 8, "inside-page": child + 2048, "top": (1 << 64) - 4096}[
        kind
    ]
    put64(b.image, addr, value)
    msg = "points outside the image" if kind in ("outside", "top") else "pointer is not page aligned"
    with fails(MemoryMapError, msg, f"entry {(addr - root) // 8} of the level-5 node at {root:#x}", phys=value):
        parse(b)


def test_root_pointer_unaligned_or_outside():
    b = tree()
    for value, msg in [(b.memmap.root + 16, "not page aligned"), (0x5555_0000_0000, "points outside the image")]:
        fdt = root_fdt([("compatible", str_bytes("kho-v4")), ("preserved-memory-map", u64_bytes(value, "little"))])
        with fails(MemoryMapError, msg, phys=value):
            kstate.parse(fdt, b.image)


def test_key_bits_above_the_order_bit():
    # 4 KiB: root index i covers key bits 51.. ; index >= 4 sets bit 53 > ORDER_0_LOG2 (52)
    b = tree()
    root = b.memmap.root
    _, child = first_entry(b, root)
    put64(b.image, root + 8 * 4, child + 0)  # a second reference would be "shared": use a new page instead
    spare = 0x3000_0000
    b.image.add(spare, bytes(4096))
    put64(b.image, root + 8 * 4, spare)
    with fails(
        MemoryMapError, "entry 4 of the level-5 node makes keys with bits above the order-0 bit 52", phys=root + 8 * 4
    ):
        parse(b)


def test_leaf_bit_zero_under_zero_prefix():
    ps = 4096
    base = 0x1000_0000
    segs = []
    for k in range(5):
        t = np.zeros(ps // 8, dtype="<u8")
        t[0] = base + (k + 1) * ps
        segs.append((base + k * ps, t.tobytes()))
    leaf = np.zeros(ps // 8, dtype="<u8")
    leaf[0] = 1
    segs.append((base + 5 * ps, leaf.tobytes()))
    fdt = root_fdt([("compatible", str_bytes("kho-v4")), ("preserved-memory-map", u64_bytes(base, "little"))])
    with fails(MemoryMapError, "leaf bit 0 under an all-zero key prefix encodes no order", phys=base + 5 * ps):
        kstate.parse(fdt, PhysImage(segs))


def test_node_page_missing_from_the_image():
    b = tree()
    leaf = nodes(b, 0)[0]
    img = PhysImage([(s.phys, bytes(s.data)) for s in b.image])
    # rebuild the image without that leaf page
    out = PhysImage()
    for s in img:
        for off in range(0, len(s.data), 4096):
            if s.phys + off != leaf:
                out.add(s.phys + off, s.data[off : off + 4096])
    fdt = b.root_fdt
    with fails(MemoryMapError, "radix leaf", "points outside the image", phys=leaf):
        kstate.parse(fdt, out)


def test_small_page_limit_trips():
    b = tree()
    assert len(b.memmap.placement) > 3
    with fails(LimitExceeded, "more than 3 metadata pages read", "max_pages"):
        parse(b, limits=Limits(max_pages=3))
    assert parse(b, limits=Limits(max_pages=len(b.memmap.placement))).preserved == b.state.preserved


def test_overlapping_orders_are_a_check_finding():
    b = tree(pages=[(0x200000, 2), (0x202000, 0)])
    st = parse(b)
    f = [x for x in kcheck.check(st, b.image) if x.code == "overlap-orders"]
    assert f and f[0].severity == "error" and f[0].phys == 0x202000


def test_page_at_the_top_of_the_address_space():
    # legal bytes (a key can encode it) whose end is 2**64: check must not
    # overflow a u64 while comparing it with scratch or metadata ranges
    top = (1 << 64) - 4096
    b = tree(pages=[(0x100000, 0), (top, 0)])
    st = kstate.parse(b.root_fdt, b.image, scratch=[(top - 0x10000, 0x10000)])
    assert st.preserved.contains(top, 0)
    findings = kcheck.check(st, b.image)
    assert not [f for f in findings if f.code == "scratch-overlap"]
    st = kstate.parse(b.root_fdt, b.image, scratch=[(top, 4096)])
    assert [f for f in kcheck.check(st, b.image) if f.code == "scratch-overlap"]


@pytest.mark.parametrize("kind", ["unaligned", "outside", "is-a-level-1-node", "is-the-root"])
def test_bad_leaf_pointers(kind):
    # leaf pointers are checked together after the walk, then again entry by
    # entry: the error names the level-1 entry either way
    b = tree()
    l1 = nodes(b, 1)
    addr, leaf = first_entry(b, l1[1])
    value = {
        "unaligned": leaf + 64,
        "outside": 0x6666_0000_0000,
        "is-a-level-1-node": l1[0],
        "is-the-root": b.memmap.root,
    }[kind]
    put64(b.image, addr, value)
    msg = {
        "unaligned": "radix leaf pointer is not page aligned",
        "outside": "points outside the image",
        "is-a-level-1-node": "already used as a level-1 node",
        "is-the-root": "already used as a level-5 node",
    }[kind]
    with fails(MemoryMapError, msg, f"entry {(addr - l1[1]) // 8} of the level-1 node at {l1[1]:#x}", phys=value):
        parse(b)


def test_first_bad_entry_in_walk_order_wins():
    # a shared leaf under one level-1 node, and later in the walk a level-2
    # entry pointing outside the image: the shared leaf comes first
    b = tree()
    l1, l2 = nodes(b, 1), nodes(b, 2)
    _, leaf0 = first_entry(b, l1[0])
    addr1, _ = first_entry(b, l1[1])
    put64(b.image, addr1, leaf0)
    later = [t for t in l2 if t > l1[1]][0]  # built trees are placed in walk (pre-)order
    addr2, _ = first_entry(b, later)
    put64(b.image, addr2, 0x6666_0000_0000)
    with fails(MemoryMapError, "shared or cyclic", phys=leaf0):
        parse(b)
    # without the shared leaf, the outside pointer is what is reported
    put64(b.image, addr1, first_entry(tree(), l1[1])[1])
    with fails(MemoryMapError, "points outside the image", f"level-2 node at {later:#x}"):
        parse(b)


def test_limits_are_charged_once_when_the_walk_is_redone():
    # a bad leaf makes the walk run twice; the page budget must not count it twice
    b = tree()
    l1 = nodes(b, 1)
    addr, leaf = first_entry(b, l1[1])
    put64(b.image, addr, leaf + 64)
    n_nodes = len(b.memmap.placement)
    with fails(MemoryMapError, "not page aligned"):
        parse(b, limits=Limits(max_pages=n_nodes))
