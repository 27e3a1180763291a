"""Helpers for the malformed-input tests: build a valid handover, then break it.

Nothing here reads ``fixtures/``: every input is made with :func:`state.build`
(or by hand for FDT headers) and corrupted in place.
"""

from __future__ import annotations

import dataclasses
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kho_formats.abi.layout import FDT_MAGIC, FdtHeader  # noqa: E402
from kho_formats.errors import KhoFormatError  # noqa: E402
from kho_formats.memory.image import PhysImage  # noqa: E402
from kho_formats.memory.pageset import PageSet  # noqa: E402
from kho_formats.model import state as kstate  # noqa: E402
from kho_formats.model.fdt import FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_PROP, FdtNode, build_fdt  # noqa: E402

ALLOC_BASE = 0x4000_0000  # metadata pages are placed from here (page units below)


def handover(
    version: str,
    pages: Iterable[tuple[int, int]],
    *,
    page_size: int = 4096,
    byteorder: str = "little",
    v1_bitmap_bytes: int | None = None,
    subblobs: Sequence[kstate.SubBlob] = (),
    scratch: Sequence[tuple[int, int]] = (),
    image: PhysImage | None = None,
) -> kstate.Built:
    """A valid handover of ``pages`` ((phys, order) pairs) built in-process."""
    st = kstate.KhoState(
        version=version,
        page_size=page_size,
        byteorder=byteorder,
        preserved=PageSet.from_pages(page_size, list(pages)),
        subblobs=list(subblobs),
        scratch=list(scratch),
    )
    if st.abi.memory_map == "chunk-list":
        st.map_params["v1_bitmap_bytes"] = v1_bitmap_bytes or page_size
    return kstate.build(st, alloc=[(ALLOC_BASE, 0x1000 * page_size)], image=image)


def parse(built: kstate.Built, **kw) -> kstate.KhoState:
    st = built.state
    kw.setdefault("page_size", st.page_size)
    kw.setdefault("byteorder", st.byteorder)
    return kstate.parse(built.root_fdt, built.image, **kw)


def put64(image: PhysImage, phys: int, value: int, byteorder: str = "little") -> None:
    image.write(phys, (value % (1 << 64)).to_bytes(8, byteorder))


def put32(image: PhysImage, phys: int, value: int, byteorder: str = "little") -> None:
    image.write(phys, (value % (1 << 32)).to_bytes(4, byteorder))


def get64(image: PhysImage, phys: int, byteorder: str = "little") -> int:
    return int.from_bytes(image.read(phys, 8), byteorder)


@contextmanager
def fails(
    cls: type[KhoFormatError],
    *fragments: str,
    phys: int | None = None,
    path: str | None = None,
    seconds: float = 2.0,
    located: bool = True,
):
    """Expect exactly ``cls`` (or a subclass), with every fragment in its text,
    naming ``phys`` / ``path`` when given, within ``seconds``."""
    t0 = time.perf_counter()
    with pytest.raises(KhoFormatError) as info:
        yield info
    dt = time.perf_counter() - t0
    exc = info.value
    assert isinstance(exc, cls), f"{type(exc).__name__} is not a {cls.__name__}: {exc}"
    text = str(exc)
    for f in fragments:
        assert f in text, f"{f!r} not in {text!r}"
    if phys is not None:
        assert exc.phys == phys, f"error names phys {exc.phys!r}, expected {phys:#x}: {text}"
    if path is not None:
        assert exc.path is not None and path in exc.path, f"error names path {exc.path!r}, expected {path!r}"
    if located:  # errors about the input's bytes say where; a bad caller option need not
        assert exc.phys is not None or exc.path is not None, (
            f"error names neither a physical address nor a path: {text}"
        )
    assert dt < seconds, f"took {dt:.2f}s"


# -- hand-made FDTs ----------------------------------------------------------------------


def tok(t: int) -> bytes:
    return struct.pack(">I", t)


def node(name: str) -> bytes:
    n = name.encode() + b"\0"
    return tok(FDT_BEGIN_NODE) + n + bytes((-len(n)) % 4)


def prop(nameoff: int, value: bytes, length: int | None = None) -> bytes:
    return (
        tok(FDT_PROP)
        + struct.pack(">II", len(value) if length is None else length, nameoff)
        + value
        + bytes((-len(value)) % 4)
    )


def end_node() -> bytes:
    return tok(FDT_END_NODE)


def fdt_end() -> bytes:
    return tok(FDT_END)


#: the FDT header fields in their order in the blob (the declaration in layout.py)
FDT_HEADER_FIELDS = tuple(f.name for f in dataclasses.fields(FdtHeader))


def raw_fdt(dt_struct: bytes, strings: bytes, **hdr) -> bytes:
    """Header + empty reserve map + struct + strings, with header fields overridable."""
    rsv_off = 40
    off_struct = rsv_off + 16
    off_strings = off_struct + len(dt_struct)
    total = off_strings + len(strings)
    h = dict(
        magic=FDT_MAGIC,
        totalsize=total,
        off_dt_struct=off_struct,
        off_dt_strings=off_strings,
        off_mem_rsvmap=rsv_off,
        version=17,
        last_comp_version=16,
        boot_cpuid_phys=0,
        size_dt_strings=len(strings),
        size_dt_struct=len(dt_struct),
    )
    h.update(hdr)
    head = struct.pack(">10I", *[h[k] % (1 << 32) for k in FDT_HEADER_FIELDS])
    return head + bytes(16) + dt_struct + strings


def root_fdt(props: list[tuple[str, bytes]], children: Sequence[tuple[str, list[tuple[str, bytes]]]] = ()) -> bytes:
    """A well-formed root FDT from properties (for KHO-property tests)."""
    r = FdtNode("")
    for n, v in props:
        r.set(n, v)
    for cname, cprops in children:
        c = r.add_child(cname)
        for n, v in cprops:
            c.set(n, v)
    return build_fdt(r)


def set_header(blob: bytes, field: str, value: int) -> bytes:
    i = FDT_HEADER_FIELDS.index(field) * 4
    return blob[:i] + struct.pack(">I", value % (1 << 32)) + blob[i + 4 :]
