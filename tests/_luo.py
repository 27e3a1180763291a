"""Shared helpers of the LUO tests: the real capture, its truth, and a small
synthesizer that lays out ``luo_ser`` + session/file blocks + memfd
structures + folios from the layout declarations at any page size and byte
order (a test helper, not a builder: the spec builder comes with issue 11's
deliverable 5)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kho_formats.abi.layout import KhoVmalloc, Layout, layout, memfd_folio_word
from kho_formats.memory.image import PhysImage
from kho_formats.memory.pageset import PageSet
from kho_formats.model.clients import ClientReport, decode_clients
from kho_formats.model.clients.luo import LuoState
from kho_formats.model.state import KhoState, SubBlob
from kho_formats.ops.capture import Capture, load_capture, parse_capture

FIX = Path(__file__).resolve().parent.parent / "fixtures"
LUO_CAP = FIX / "captures" / "linux-7.3-x86_64-luo-v5-small"
TRUTH: dict[str, Any] = json.loads((LUO_CAP / "luo-truth.json").read_text())


def h(v: str) -> int:
    return int(v, 16)


def load_luo(image: PhysImage | None = None) -> tuple[Capture, KhoState, dict[str, ClientReport]]:
    cap = load_capture(LUO_CAP)
    if image is not None:
        cap.image = image
    st = parse_capture(cap)
    return cap, st, decode_clients(st, cap.image)


def luo_of(reps: dict[str, ClientReport]) -> LuoState:
    rep = reps["LUO"]
    assert rep.error is None, rep.error
    assert isinstance(rep.decoded, LuoState)
    return rep.decoded


def fnv1a64(chunks: Any) -> int:
    """FNV-1a 64 (what luoprep hashes the contents with)."""
    v = 0xCBF29CE484222325
    for c in chunks:
        for b in bytes(c):
            v = ((v ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return v


# -- the synthesizer ------------------------------------------------------------------------------


@dataclass
class SynthMemfd:
    token: int
    size: int
    #: (page index, order) of each folio, in array order
    folios: list[tuple[int, int]] = field(default_factory=list)
    seals: int = 1
    pos: int = 0
    compatible: str = "memfd-v2"


@dataclass
class SynthSession:
    name: bytes
    files: list[SynthMemfd] = field(default_factory=list)


@dataclass
class Synth:
    lay: Layout
    image: PhysImage
    state: KhoState
    luo_phys: int
    #: (token -> expected contents)
    contents: dict[int, bytes]


def synth(
    sessions: list[SynthSession],
    *,
    page_size: int = 4096,
    byteorder: str = "little",
    flbs: list[tuple[str, int, int]] = (),  # type: ignore[assignment]
    liveupdate_num: int = 3,
    base: int = 0x100000,
) -> Synth:
    """Lay out LUO state like the kernel does (one page per structure,
    folios at their order, aligned) into a fresh image, with a state whose
    preserved set holds exactly those pages."""
    lay = layout(page_size, byteorder)
    ps = page_size
    img = PhysImage()
    pages: list[tuple[int, int]] = []
    nxt = [base]

    def alloc(order: int = 0) -> int:
        size = ps << order
        p = -(-nxt[0] // size) * size
        nxt[0] = p + size
        return p

    def put(data: bytes, order: int = 0) -> int:
        p = alloc(order)
        img.add(p, data.ljust(ps << order, b"\0"))
        pages.append((p, order))
        return p

    def chain(entries: list[bytes], esize: int) -> int:
        per = lay.kho_block_entries_per_page(esize)
        groups = [entries[i : i + per] for i in range(0, len(entries), per)] or [[]]
        addrs = [alloc() for _ in groups]
        for i, g in enumerate(groups):
            hdr = lay.build("kho_block_header_ser", dict(next=addrs[i + 1] if i + 1 < len(addrs) else 0, count=len(g)))
            img.add(addrs[i], (hdr + b"".join(g)).ljust(ps, b"\0"))
            pages.append((addrs[i], 0))
        return addrs[0]

    contents: dict[int, bytes] = {}
    sess_entries = []
    for s in sessions:
        fents = []
        for f in s.files:
            big = f.size > 64 << 20  # a huge hole: no expected contents kept (tests of sizes)
            data = bytearray(0 if big else f.size)
            recs = b""
            for k, (index, order) in enumerate(f.folios):
                pat = bytes(((index * 7 + k + i) & 0xFF) or 1 for i in range(256))
                body = pat * ((ps << order) // 256)
                fp = put(body, order)
                lo, hi = index * ps, min(f.size, (index * ps) + (ps << order))
                if lo < f.size and not big:
                    data[lo:hi] = body[: hi - lo]
                word = memfd_folio_word(fp >> lay.page_shift, 3, byteorder)
                recs += lay.build("memfd_luo_folio_ser", dict(pfn_flags=word, index=index))
            contents[f.token] = bytes(data)
            if f.folios:
                npages = -(-len(recs) // ps)
                groups = [put(recs[i * ps : (i + 1) * ps]) for i in range(npages)]
                cap = lay.kho_vmalloc_chunk_capacity
                chunk_words = groups + [0] * (cap - len(groups))
                ch = put(lay.build("kho_vmalloc_chunk", dict(next=0, phys=chunk_words)))
                desc = KhoVmalloc(first=ch, total_pages=npages, flags=1, order=0)
            else:
                desc = KhoVmalloc(first=0, total_pages=0, flags=0, order=0)
            ser = lay.build(
                "memfd_luo_ser",
                dict(pos=f.pos, size=f.size, seals=f.seals, flags=0, nr_folios=len(f.folios), folios=desc),
            )
            data_pa = put(ser)
            fents.append(
                lay.build(
                    "luo_file_ser", dict(compatible=f.compatible.encode().ljust(48, b"\0"), data=data_pa, token=f.token)
                )
            )
        files_pa = chain(fents, lay.sizeof("luo_file_ser")) if fents else 0
        sess_entries.append(
            lay.build("luo_session_ser", dict(name=s.name.ljust(64, b"\0")[:64], files=files_pa, count=len(s.files)))
        )
    sessions_pa = chain(sess_entries, lay.sizeof("luo_session_ser"))
    flb = lay.build("luo_flb_header_ser", dict(pgcnt=1, count=len(flbs)))
    for name, d, c in flbs:
        flb += lay.build("luo_flb_ser", dict(name=name.encode().ljust(48, b"\0"), data=d, count=c))
    flbs_pa = put(flb)
    blob = lay.build(
        "luo_ser",
        dict(compatible=b"luo-v5\0\0", liveupdate_num=liveupdate_num, sessions_pa=sessions_pa, flbs_pa=flbs_pa),
    )
    luo_phys = put(blob)
    st = KhoState(
        version="kho-v4",
        page_size=ps,
        byteorder=byteorder,
        preserved=PageSet.from_pages(ps, pages),
        subblobs=[SubBlob("LUO", luo_phys, len(blob), blob, "blob-size")],
    )
    return Synth(lay, img, st, luo_phys, contents)


# -- the kernel-in-the-loop LUO spec at any page size -------------------------------------------------------------

KERNEL_LUO_SPEC = FIX / "specs" / "kernel" / "luo.toml"


def kernel_luo_spec_dict(page_size: int = 4096) -> dict[str, Any]:
    """``fixtures/specs/kernel/luo.toml`` (4 KiB) carried to ``page_size``,
    keeping what each file tests: memfd 0x1001 is 3 pages + 100 bytes (4
    order-0 folios), the 2 MiB memfd is two 1 MiB folios (order 8 at 4 KiB,
    6 at 16 KiB, 4 at 64 KiB), the sparse memfd is 32 pages with folios at
    pages 0 (order 2) and 16 (order 1), and session "vm-a" holds 4 files more
    than a file block takes (63 at 4 KiB, 255 at 16 KiB, 1023 at 64 KiB), so
    its file set spans two blocks.  At 4 KiB this is the spec file as it is."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    d = tomllib.loads(KERNEL_LUO_SPEC.read_text())
    if page_size == 4096:
        return d
    ps = page_size
    lay = layout(ps)
    cap = lay.kho_block_entries_per_page(lay.sizeof("luo_file_ser"))
    d["name"] = f"kernel-luo-{ps // 1024}k"
    d["page_size"] = ps
    luo = next(b for b in d["blob"] if b["type"] == "LUO")
    a, b = luo["sessions"]
    few = next(f for f in a["files"] if f["token"] == 0x1001)
    few["size"] = 3 * ps + 100
    big = next(f for f in a["files"] if f["token"] == 0xFFFFFFFFFFFFFFFF)
    big["folio_order"] = (1 << 20).bit_length() - ps.bit_length()
    keep = [f for f in a["files"] if not 0x2000 <= f["token"] < 0x3000]
    a["files"] = keep + [{"token": 0x2000 + i} for i in range(cap + 4 - len(keep))]
    b["files"][0]["size"] = 32 * ps
    for flb in luo.get("flbs", []):  # a test FLB: one reference per file (see luo.toml)
        flb["count"] = len(a["files"]) + len(b["files"])
    # one memfd_luo_ser page per file: 1027 x 64 KiB at 64 KiB pages
    d["alloc"] = [{"start": 0x6000_0000, "size": 2 * (cap + 4) * ps + (8 << 20)}]
    return d


def elf_patch(path: Path, phys: int, data: bytes) -> None:
    """Write ``data`` at physical address ``phys`` of an ELF64 little-endian core."""
    raw = bytearray(path.read_bytes())
    (phoff,) = struct.unpack_from("<Q", raw, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", raw, 0x36)
    for k in range(phnum):
        p_type, _, p_offset, _, p_paddr, p_filesz = struct.unpack_from("<IIQQQQ", raw, phoff + k * phentsize)
        if p_type == 1 and p_paddr <= phys and phys + len(data) <= p_paddr + p_filesz:
            raw[p_offset + phys - p_paddr : p_offset + phys - p_paddr + len(data)] = data
            path.write_bytes(bytes(raw))
            return
    raise AssertionError(f"{phys:#x} not in {path}")
