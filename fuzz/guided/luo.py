"""Target ``luo``: structure-aware LUO state (``atheris.FuzzedDataProvider``).

A few small LUO handovers are built once from spec dicts (:data:`BASES`: 4 KiB little-endian and
16 KiB big-endian, session blocks and file blocks over capacity, empty, dense and sparse memfds,
large folios, FLBs) and decoded; every field of every structure they hold is listed with its
address: ``luo_ser``, the session and file blocks' ``kho_block_header_ser`` and entries
(``luo_session_ser``, ``luo_file_ser``), each ``memfd_luo_ser`` with its ``kho_vmalloc``, the
vmalloc chunks, the ``memfd_luo_folio_ser`` records and the FLB page (header and
``luo_flb_ser``).  The input then picks a base and a list of edits, each a field and a value in
the ways an attacker would set it: another structure's address (aliasing, loops, one chain shared
by two sessions, one folio listed twice), the field's own address, unaligned or outside the image,
a count at and past capacity, 0, all ones, the sign bit, huge sizes, a flipped bit, any u64; names
and compatibles set to escapes, traversal, no NUL, another handler; or whole pages copied over
others, dropped, or added with bytes from the input.

What runs on the result: the client decode, ``check``, the inspect JSON, every file's size,
contents and digests (SHA-256, FNV-1a, the runs digest ``kho diff`` uses), re-encoding,
``luo extract`` into a scratch directory, the ``kho boot`` truth (FNV-1a of every memfd) and
``/luo-list``, and ``diff`` against the untouched base.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import atheris

from fuzz.guided.common import exercise, handover, scratch
from kho_formats.api import build
from kho_formats.memory.image import PhysImage

U64 = (1 << 64) - 1


def _luo_blob(sessions: list[dict[str, Any]], flbs: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {"name": "LUO", "type": "LUO", "sessions": sessions, "flbs": flbs, **kw}


_FILES_A = [
    {"token": 0},
    {"token": 0x1001, "size": 12388, "pos": 100, "seals": 1},
    {"token": U64, "size": "64K", "folio_order": 2, "seals": 7, "hex": "4b484f2d4c554f21", "fill": "zero"},
    {"token": 7, "size": "128K", "folios": [{"index": 0, "order": 2}, {"index": 16, "order": 1}]},
]
#: the spec dicts of the base handovers
SPECS: list[dict[str, Any]] = [
    {
        "name": "luo-4k",
        "version": "kho-v4",
        "page_size": 4096,
        "arch": "x86_64",
        "alloc": [{"start": "0x2000000", "size": "4M"}],
        "scratch": [{"start": "256M", "size": "16M"}],
        "blob": [
            _luo_blob(
                [{"name": "vm-a", "files": _FILES_A}, {"name": "vm-b", "files": [{"token": 1, "size": 4096}]}],
                [{"name": "liveupdate-test-flb-v0", "data": "0xfeedf00dcafebee0", "count": 5}, {"name": "f1"}],
            ),
            {"name": "kexec-metadata", "type": "kexec-metadata", "previous_release": "7.3.4", "kexec_count": 1},
        ],
    },
    {
        "name": "luo-16k-be",
        "version": "kho-v4",
        "page_size": 16384,
        "byte_order": "big",
        "arch": "arm64",
        "alloc": [{"start": "0x40000000", "size": "8M"}],
        "scratch": [{"start": "0x50000000", "size": "16M"}],
        "blob": [
            _luo_blob(
                [{"name": "s", "files": [{"token": 2, "size": 40000, "pos": 3}, {"token": 3}]}],
                [{"name": "liveupdate-test-flb-v1", "data": 1, "count": 2}],
                liveupdate_num=3,
            )
        ],
    },
    {
        "name": "luo-blocks",
        "version": "kho-v4",
        "page_size": 4096,
        "alloc": [{"start": "0x2000000", "size": "4M"}],
        "scratch": [{"start": "256M", "size": "16M"}],
        "blob": [
            _luo_blob(
                [{"name": "many", "files": [{"token": 0x100 + i, "size": 64 if i < 2 else 0} for i in range(65)]}]
                + [{"name": f"s{i}"} for i in range(52)],
                [],
            )
        ],
    },
]


@dataclass
class Base:
    handover: Any
    root: bytes
    params: dict[str, Any]
    pages: dict[int, bytes]
    #: (phys, width in bytes, kind: "int" | "name")
    fields: list[tuple[int, int, str]]
    addrs: list[int]
    page_size: int
    byteorder: str
    #: counts a block or FLB page can hold
    caps: list[int]


def _fields_of(h: Any) -> tuple[list[tuple[int, int, str]], list[int], list[int]]:
    lay = h.state.layout
    st = h.luo.state
    ps = h.page_size
    f: list[tuple[int, int, str]] = []
    addrs: list[int] = [st.phys]

    def ints(base: int, widths: list[int]) -> None:
        off = 0
        for w in widths:
            f.append((base + off, w, "int"))
            off += w

    f.append((st.phys, 8, "name"))
    ints(st.phys + 8, [8, 8, 8])
    caps = [lay.kho_block_entries_per_page(lay.sizeof("luo_session_ser"))]
    caps.append(lay.kho_block_entries_per_page(lay.sizeof("luo_file_ser")))
    for b in st.session_blocks:
        ints(b.phys, [8, 8])
        addrs.append(b.phys)
    for s in st.sessions:
        f.append((s.entry_phys, 64, "name"))
        ints(s.entry_phys + 64, [8, 8])
        addrs.append(s.entry_phys)
        for b in s.blocks:
            ints(b.phys, [8, 8])
            addrs.append(b.phys)
        for x in s.files:
            f.append((x.entry_phys, 48, "name"))
            ints(x.entry_phys + 48, [8, 8])
            addrs.append(x.entry_phys)
            d = x.decoded
            if d is None:
                continue
            ints(d.ser_phys, [8, 8, 4, 4, 8, 8, 4, 2, 2])
            addrs.append(d.ser_phys)
            area = d.area
            if area is not None:
                for c in area.chunks:
                    ints(c, [8, 8, 8])
                    addrs.append(c)
                for g in area.groups.tolist():
                    ints(g, [8, 8, 8, 8])  # the first two folio records
                    ints(g + ps - 16, [8, 8])
                    addrs.append(g)
            for p in d.phys.tolist()[:8]:
                addrs.append(p)
    if st.ser.flbs_pa:
        ints(st.ser.flbs_pa, [8, 8])
        addrs.append(st.ser.flbs_pa)
        for e in st.flbs:
            f.append((e.entry_phys, 48, "name"))
            ints(e.entry_phys + 48, [8, 8])
        caps.append(st.flb_capacity)
    return f, sorted(set(addrs)), caps


def _base(spec: dict[str, Any]) -> Base:
    h = build(spec)
    cap = h.capture
    ps = h.page_size
    pages: dict[int, bytes] = {}
    for seg in cap.image:
        data = bytes(seg.data)
        for off in range(0, len(data), ps):
            pages[seg.phys + off] = data[off : off + ps]
    params = dict(
        page_size=ps,
        byte_order=h.byteorder,
        root_fdt_phys=cap.root_fdt_phys,
        scratch=list(cap.scratch),
        map_params=dict(cap.map_params),
        arch=cap.arch,
    )
    fields, addrs, caps = _fields_of(h)
    return Base(h, bytes(cap.root_fdt), params, pages, fields, addrs, ps, h.byteorder, caps)


BASES = [_base(s) for s in SPECS]
NAMES = [
    b"memfd-v2",
    b"memfd-v1",
    b"",
    b"..",
    b"../../x",
    b"a/b",
    b"\x1b[2J",
    b"/",
    b"\xff\xfe",
    b"liveupdate-test-flb-v0",
    b"con",
    b"vm-a",
    b"." * 63,
]


def _int_value(fdp: atheris.FuzzedDataProvider, b: Base, cur: int, width: int) -> int:
    k = fdp.ConsumeIntInRange(0, 15)
    ps = b.page_size
    if k == 0:
        v = 0
    elif k == 1:
        v = 1
    elif k == 2:
        v = U64
    elif k == 3:
        v = 1 << (width * 8 - 1)
    elif k == 4:
        v = cur + fdp.ConsumeIntInRange(-4, 4)
    elif k == 5:
        v = b.addrs[fdp.ConsumeIntInRange(0, len(b.addrs) - 1)]
    elif k == 6:
        v = b.addrs[fdp.ConsumeIntInRange(0, len(b.addrs) - 1)] + fdp.ConsumeIntInRange(1, ps - 1)
    elif k == 7:
        v = fdp.PickValueInList([0x7FFFF0000000, 1 << 52, (1 << 52) * ps, U64 - ps + 1, 0x1000])
    elif k == 8:
        c = b.caps[fdp.ConsumeIntInRange(0, len(b.caps) - 1)]
        v = c + fdp.ConsumeIntInRange(-1, c + 1)
    elif k == 9:
        v = fdp.PickValueInList([1 << 30, 1 << 40, 1 << 62, 1 << 63, U64 - ps + 1, (1 << 52) - 1, 60_000_000])
    elif k == 10:
        v = fdp.ConsumeInt(width)
    elif k == 11:
        v = cur * 2
    elif k == 12:
        v = cur ^ (1 << fdp.ConsumeIntInRange(0, width * 8 - 1))
    elif k == 13:
        v = cur + ps
    elif k == 14:
        v = cur >> 1
    else:
        v = fdp.ConsumeIntInRange(0, 300)
    return v & ((1 << (width * 8)) - 1)


def _edit(fdp: atheris.FuzzedDataProvider, b: Base, pages: dict[int, bytearray | bytes]) -> None:
    ps = b.page_size
    kind = fdp.ConsumeIntInRange(0, 9)
    if kind <= 6:  # a field
        phys, width, what = b.fields[fdp.ConsumeIntInRange(0, len(b.fields) - 1)]
        page, off = phys - phys % ps, phys % ps
        if page not in pages or off + width > ps:
            return
        buf = pages[page] = bytearray(pages[page])
        if what == "int":
            cur = int.from_bytes(buf[off : off + width], b.byteorder)  # type: ignore[arg-type]
            v = _int_value(fdp, b, cur, width)
            buf[off : off + width] = v.to_bytes(width, b.byteorder)
        else:
            r = fdp.ConsumeIntInRange(0, 3)
            if r == 0:
                raw = fdp.PickValueInList(NAMES)
            elif r == 1:
                raw = fdp.ConsumeBytes(width)
            elif r == 2:
                raw = bytes(buf[off : off + width]).rstrip(b"\0") + b"x" * width  # no NUL
            else:
                raw = bytes(buf[off : off + width])
                i = fdp.ConsumeIntInRange(0, width - 1)
                raw = raw[:i] + bytes([fdp.ConsumeInt(1) & 0xFF]) + raw[i + 1 :]
            buf[off : off + width] = raw[:width].ljust(width, b"\0")
    elif kind == 7:  # one page over another
        keys = sorted(pages)
        src = keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
        dst = b.addrs[fdp.ConsumeIntInRange(0, len(b.addrs) - 1)]
        pages[dst - dst % ps] = pages[src]
    elif kind == 8:  # a page dropped
        a = b.addrs[fdp.ConsumeIntInRange(0, len(b.addrs) - 1)]
        pages.pop(a - a % ps, None)
    else:  # a page added: the input's bytes at an address near the others
        a = b.addrs[fdp.ConsumeIntInRange(0, len(b.addrs) - 1)]
        at = a - a % ps + ps * fdp.ConsumeIntInRange(-2, 64)
        if at >= 0:
            pages[at] = fdp.ConsumeBytes(ps).ljust(ps, b"\0")


def make(data: bytes) -> tuple[Base, Any]:
    """The base and the handover the input makes of it."""
    fdp = atheris.FuzzedDataProvider(data)
    b = BASES[fdp.ConsumeIntInRange(0, len(BASES) - 1)]
    pages: dict[int, bytearray | bytes] = dict(b.pages)
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        _edit(fdp, b, pages)
    img = PhysImage([(p, bytes(d)) for p, d in sorted(pages.items())])
    received = fdp.ConsumeIntInRange(0, 7) == 7
    return b, handover(b.root, img, {"received": received}, **b.params)


def TestOneInput(data: bytes) -> None:
    b, h = make(data)
    exercise(h, scratch(), other=b.handover)
