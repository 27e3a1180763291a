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

import numpy as np

from ..alloc import PageAllocator
from ..errors import ClientError, ImageError, KhoFormatError
from ..fdt import FdtNode, build_fdt, get_strings, get_u32, parse_fdt, str_bytes, u32_bytes
from ..image import PhysImage
from ..layout import KHO_VMALLOC_ALLOC, KhoVmalloc, Layout
from ..limits import Budget
from ..pageset import PageSet
from .vmalloc import VmallocArea, build_vmalloc, read_vmalloc

NAME = "kho_test"
COMPATIBLE = "kho-test-v1"
MAGIC = 0x4B484F21


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
    area: VmallocArea | None = None
    #: arch -> csum over the folio bytes in the image (when present)
    csum_check: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

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
        raise ClientError(f"compatible {compat}", path=f"{where}:/compatible", expected=COMPATIBLE)
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
            f"folios_info is {None if raw is None else len(raw)} bytes",
            path=f"{where}:/data/folios_info",
            expected=f"{lay.kho_vmalloc.sizeof()} bytes (struct kho_vmalloc)",
        )
    desc = lay.kho_vmalloc.parse(raw)
    kt = KhoTest(nr_folios=nr, folios_info=desc, csum=csum)
    if image is None:
        return kt
    kt.area = read_vmalloc(image, desc, lay, budget=budget, where=f"{where}:/data/folios_info")
    need = nr * 8
    if need > kt.area.nr_pages * lay.page_size:
        raise ClientError(
            f"nr_folios {nr} needs {need} bytes, folios_info area has {kt.area.nr_pages} pages",
            path=f"{where}:/data/nr_folios",
        )
    if budget:
        budget.entries_add(nr, f"{where} folios")
    # read only the pages the nr_folios entries occupy (not the whole area)
    npages = -(-need // lay.page_size)
    addrs = (int(g) + k * lay.page_size for g in kt.area.groups.tolist() for k in range(1 << desc.order))
    content = b"".join(image.read(a, lay.page_size, "kho_test folios_info page") for a, _ in zip(addrs, range(npages)))[
        :need
    ]
    vals = np.frombuffer(content, dtype=lay.dtype)
    mask = lay.page_size - 1
    kt.folios = [(int(v) & ~mask, int(v) & mask) for v in vals.tolist()]
    bad = False
    for p, o in kt.folios:
        if o + lay.page_shift >= 64 or p % (lay.page_size << o) or p + (lay.page_size << o) > 1 << 64:
            kt.problems.append(f"folio {p:#x} order {o} is not aligned to its size")
            bad = True
    spans = sorted((p, p + (lay.page_size << o)) for p, o in kt.folios) if not bad else []
    for (a0, a1), (b0, _b1) in zip(spans, spans[1:]):
        if b0 < a1:
            kt.problems.append(f"folio {b0:#x} overlaps folio {a0:#x} (a folio is preserved once)")
            bad = True
            break
    # csum only over folios that can all be in the image: distinct folios
    # whose bytes add up to no more than the image holds (so hostile lists
    # that repeat one big folio cannot make us checksum it thousands of times)
    if bad or sum(b - a for a, b in spans) > image.total_bytes:
        return kt
    try:
        for arch in archs:
            kt.csum_check[arch] = folio_csum(image, kt.folios, lay.page_size, arch)
    except (ImageError, ImportError):
        kt.csum_check = {}
    return kt


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
