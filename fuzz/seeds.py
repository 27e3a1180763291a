"""Seed handovers for the fuzzer and the malformed-input tests, built in-process.

Every seed is a :class:`FuzzInput`: root FDT bytes, the physical memory image
as ``(phys, bytes)`` segments, and the keyword arguments :func:`state.parse`
needs.  :func:`build_seed` makes one valid handover of any version, page size
and byte order from a small random page set, with real clients
(``kho_test`` with its vmalloc area, ``memblock``, ``kexec-metadata``) and an
``LUO`` blob whose first u64 points at a chain of KHO serialization blocks.
Nothing here reads ``fixtures/`` except :func:`capture_seed`.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from fuzz.blocks import build_block_chain
from kho_formats.abi.layout import layout
from kho_formats.memory.alloc import PageAllocator
from kho_formats.memory.image import PhysImage
from kho_formats.memory.pageset import PageSet
from kho_formats.model import state as kstate
from kho_formats.model.clients import kexec_metadata, kho_test, memblock

LUO_NAME = "LUO"
LUO_ENTRY_SIZE = 32
REPO = Path(__file__).resolve().parent.parent
CAPTURE = REPO / "fixtures" / "captures" / "linux-7.3-x86_64-kho-v4"


@dataclass
class FuzzInput:
    """One fuzz input: a handover as bytes plus how to read it."""

    name: str
    params: dict  # state.parse keyword arguments (version, page_size, byteorder, v1_bitmap, root_fdt_phys, scratch)
    root: bytes
    segments: list[tuple[int, bytes]] = field(default_factory=list)
    #: when set, the image is this ELF core instead of ``segments``
    elf: bytes | None = None
    #: physical pages worth corrupting (memory-map pages, client chunks, blocks)
    hot: list[int] = field(default_factory=list)

    def image(self) -> PhysImage:
        if self.elf is not None:
            return PhysImage.from_elf(self.elf, name="fuzz ELF")
        return PhysImage(self.segments)

    # -- a small self-describing container (zlib: pages are mostly zeros) --------
    MAGIC = b"KHOFUZZ1"

    def dumps(self) -> bytes:
        meta = {
            "name": self.name,
            "params": {k: (list(map(list, v)) if k == "scratch" else v) for k, v in self.params.items()},
            "root": len(self.root),
            "segments": [[p, len(d)] for p, d in self.segments],
            "elf": None if self.elf is None else len(self.elf),
            "hot": self.hot,
        }
        mj = json.dumps(meta, sort_keys=True).encode()
        body = struct.pack("<I", len(mj)) + mj + self.root + b"".join(d for _, d in self.segments) + (self.elf or b"")
        return self.MAGIC + zlib.compress(body, 9)

    @classmethod
    def loads(cls, blob: bytes) -> FuzzInput:
        if not blob.startswith(cls.MAGIC):
            raise ValueError("not a kho fuzz input")
        body = zlib.decompress(blob[len(cls.MAGIC) :])
        (n,) = struct.unpack_from("<I", body, 0)
        meta = json.loads(body[4 : 4 + n])
        off = 4 + n
        root = body[off : off + meta["root"]]
        off += meta["root"]
        segs = []
        for p, ln in meta["segments"]:
            segs.append((p, body[off : off + ln]))
            off += ln
        elf = None
        if meta["elf"] is not None:
            elf = body[off : off + meta["elf"]]
        params = dict(meta["params"])
        if "scratch" in params:
            params["scratch"] = [tuple(x) for x in params["scratch"]]
        return cls(meta["name"], params, root, segs, elf, list(meta["hot"]))


def _random_pages(rng: random.Random, ps: int, base: int, span_pages: int, n: int, orders: list[int]) -> PageSet:
    """``n`` non-overlapping random pages of the given orders in ``[base, base + span)``."""
    taken: list[tuple[int, int]] = []
    pages = []
    for _ in range(n * 4):
        if len(pages) >= n:
            break
        o = rng.choice(orders)
        size = ps << o
        slots = (span_pages * ps) // size
        if slots == 0:
            continue
        a = base + rng.randrange(slots) * size
        if any(a < e and s < a + size for s, e in taken):
            continue
        taken.append((a, a + size))
        # sometimes a run of consecutive pages of the same order
        pages.append((a, o))
        if rng.random() < 0.3 and a + 2 * size <= base + span_pages * ps:
            b = a + size
            if not any(b < e and s < b + size for s, e in taken):
                taken.append((b, b + size))
                pages.append((b, o))
    return PageSet.from_pages(ps, pages)


def build_seed(
    version: str,
    page_size: int = 4096,
    byteorder: str = "little",
    v1_bitmap: str | None = None,
    *,
    seed: int = 0,
    clients: bool = True,
    npages: int = 24,
) -> FuzzInput:
    """A valid handover of ``version`` built with :func:`state.build`."""
    rng = random.Random(f"{version}/{page_size}/{byteorder}/{v1_bitmap}/{seed}")
    ps = page_size
    lay = layout(ps, byteorder)
    ver = kstate.abi.get_version(version)
    # address plan (in pages, so every page size gets the same shape)
    root_phys = 0x100 * ps
    client_region = (0x200 * ps, 0x100 * ps)
    meta_region = (0x400 * ps, 0x400 * ps)
    data_base, data_span = 0x1000 * ps, 0x4000
    scratch = [(0x10000 * ps, 0x40 * ps)]
    # orders a v2 tree with 16 KiB pages cannot hold are left out (KHO-ABI.md 4.1)
    min_order = 1 if (version == "kho-v2" and ps == 16384) else 0
    orders = [o for o in (0, 0, 0, 1, 2, 3, 5, 9) if o >= min_order]
    preserved = _random_pages(rng, ps, data_base, data_span, npages, orders)
    segments: list[tuple[int, bytes]] = []
    subblobs: list[kstate.SubBlob] = []
    hot: list[int] = []
    if clients:
        calloc = PageAllocator([client_region], ps)
        blob_order = min_order

        def place_blob(data: bytes) -> int:
            size = ps << blob_order
            phys = calloc.alloc(size, align=size, what="blob")
            segments.append((phys, data.ljust(size, b"\0")))
            hot.append(phys)
            preserved.add(phys, blob_order)
            return phys

        # memblock (an FDT)
        mb = memblock.encode([memblock.ReserveMem("trace_buf", 0x20000 * ps, 0x40 * ps)], byteorder)
        preserved.update(PageSet.from_ranges(ps, [(0x20000 * ps, 0x20040 * ps)]))
        p = place_blob(mb)
        subblobs.append(kstate.SubBlob("memblock", p, len(mb), mb, "blob-size" if ver.size_property else "fdt-header"))
        # kho_test (an FDT + a vmalloc area of folio descriptors + folios)
        folios = []
        for _k in range(rng.randint(1, 4)):
            o = rng.choice([max(min_order, 0), 1, 2])
            fp = calloc.alloc(ps << o, align=ps << o, what="folio")
            folios.append((fp, o, bytes(rng.getrandbits(8) for _ in range(64)).ljust(ps << o, b"\xa5")))
        try:  # the real x86_64 csum when the csum module is there
            kho_test.csum_function("x86_64")
            kt = kho_test.encode(folios, lay, calloc, arch="x86_64")
        except ImportError:
            kt = kho_test.encode(folios, lay, calloc, csum=rng.getrandbits(32))
        segments.extend(kt.segments)
        hot.extend(p for p, _ in kt.segments if p not in {f[0] for f in folios})  # FDT, info pages, chunks
        pres = kt.preserve
        if min_order:  # v2 @ 16 KiB: drop what it cannot hold (check reports it)
            pres = PageSet.from_runs(
                ps, {o: (pres.runs(o).starts, pres.runs(o).counts) for o in pres.orders if o >= min_order}
            )
        preserved.update(pres)
        size_src = "blob-size" if (ver.size_property and ver.size_required) else "fdt-header"
        subblobs.append(kstate.SubBlob("kho_test", kt.fdt_phys, len(kt.fdt), kt.fdt, size_src))
        if not ver.blob_is_fdt:
            md = kexec_metadata.encode(lay, "7.3.4", 3)
            p = place_blob(md)
            subblobs.append(kstate.SubBlob("kexec-metadata", p, len(md), md, "blob-size"))
            # LUO: first u64 of the blob = first serialization block
            entries = [
                bytes([k & 0xFF]) * LUO_ENTRY_SIZE for k in range(rng.randint(1, 2 * ((ps - 16) // LUO_ENTRY_SIZE)))
            ]
            first, bpages = build_block_chain(entries, LUO_ENTRY_SIZE, lay, calloc)
            segments.extend(bpages)
            hot.extend(p for p, _ in bpages)
            for bp, _ in bpages:
                preserved.add(bp, 0) if not min_order else None
            luo = first.to_bytes(8, byteorder) + b"luo-v5\0".ljust(24, b"\0")
            p = place_blob(luo)
            subblobs.append(kstate.SubBlob(LUO_NAME, p, len(luo), luo, "blob-size"))
    if ver.memory_map == "radix":
        preserved.add(root_phys, min_order)
    st = kstate.KhoState(
        version=version,
        page_size=ps,
        byteorder=byteorder,
        preserved=preserved,
        subblobs=subblobs,
        scratch=scratch,
        root_fdt_phys=root_phys,
        map_params={"v1_bitmap_bytes": 512 if v1_bitmap == "512" else ps} if ver.memory_map == "chunk-list" else {},
    )
    img = PhysImage(segments)
    built = kstate.build(st, alloc=[meta_region], image=img)
    hot = sorted(set(hot) | {p for p, _ in built.metadata} | {root_phys})
    segs = [(s.phys, bytes(s.data)) for s in built.image]
    params = dict(
        version=None, page_size=ps, byteorder=byteorder, v1_bitmap=v1_bitmap, root_fdt_phys=root_phys, scratch=scratch
    )
    name = f"{version}-{ps // 1024}k-{byteorder}" + (f"-bm{v1_bitmap}" if v1_bitmap else "") + f"-s{seed}"
    return FuzzInput(name, params, built.root_fdt, segs, None, hot)


def capture_seed() -> FuzzInput | None:
    """The real Linux 7.3 x86_64 kho-v4 capture, if it is in the tree."""
    if not (CAPTURE / "image.elf").exists():
        return None
    meta = json.loads((CAPTURE / "meta.json").read_text())
    img = PhysImage.from_elf(CAPTURE / "image.elf")
    segs = [(s.phys, bytes(s.data)) for s in img]
    hot = sorted({p for a, b in img.covered() for p in range(a, b, 4096)})
    params = dict(
        version=None,
        page_size=4096,
        byteorder="little",
        v1_bitmap=None,
        root_fdt_phys=meta["root_fdt_phys"],
        scratch=[],
    )
    return FuzzInput("capture-linux-7.3-x86_64-kho-v4", params, (CAPTURE / "root.dtb").read_bytes(), segs, None, hot)


#: every (version, page size, byte order, v1 bitmap) the fuzzer seeds from
SEED_CONFIGS = [
    ("kho-v1", ps, bo, bm) for ps in (4096, 16384, 65536) for bo in ("little", "big") for bm in ("512", "page")
] + [
    (v, ps, bo, None) for v in ("kho-v2", "kho-v3", "kho-v4") for ps in (4096, 16384, 65536) for bo in ("little", "big")
]


def all_seeds(seed: int = 0) -> list[FuzzInput]:
    out = [build_seed(v, ps, bo, bm, seed=seed) for v, ps, bo, bm in SEED_CONFIGS]
    cap = capture_seed()
    if cap is not None:
        out.append(cap)
    return out
