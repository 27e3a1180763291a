"""The promise of ``abi.py``: a new ABI version is a schema file (and, when
it changes a struct, one layout declaration).  Three imaginary ``kho-v5``
versions live under ``tests/schemas/`` only:

(a) ``kho-v5a``: kho-v4's bytes under the compatible ``kho-v5``;
(b) ``kho-v5b``: sub-nodes with one more declared property (``blob-flags``);
(c) ``kho-v5c``: a chunk list whose ``khoser_mem_chunk_hdr`` has one more
    u64 word: the schema plus the declaration in ``tests/v5_layouts.py``.

Each builds and parses back with the same preserved set and sub-blobs, and
nothing under ``kho_formats/`` names them.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import v5_layouts
from reference_readers import reference_read_chunklist, reference_read_radix

from kho_formats import abi
from kho_formats.abi.layout import declared_variants, layout
from kho_formats.errors import MemoryMapError, PropertyError, VersionError
from kho_formats.memory.pageset import PageSet
from kho_formats.model.fdt import parse_fdt
from kho_formats.model.state import KhoState, SubBlob, build, parse

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"
PACKAGE = HERE.parent / "kho_formats"
ALLOC = [(1 << 44, 1 << 36)]
ROOT_PHYS = 1 << 43
BLOB_PHYS = (1 << 43) + (1 << 20)


def preserved(page_size: int) -> PageSet:
    """Order-0 runs across several leaves/bitmaps, 300 order-0 pages one
    bitmap apart (more bitmaps than one v1 chunk holds), scattered order-3
    pages, one order-9 page, and the root FDT and blob pages."""
    rng = np.random.default_rng(5)
    shift = page_size.bit_length() - 1
    o0 = (np.uint64(1) << np.uint64(32)) + (np.arange(70_000, dtype=np.uint64) << np.uint64(shift))
    apart = np.uint64(1 << 36) + np.arange(300, dtype=np.uint64) * np.uint64(page_size * 8 * page_size)
    o0 = np.concatenate([o0, apart])
    o3 = np.unique(rng.integers(0, 1 << 20, 600, dtype=np.uint64)) << np.uint64(shift + 3)
    o3 += np.uint64(1 << 40)
    ps = PageSet.from_arrays(page_size, {0: o0, 3: o3, 9: np.array([1 << 41], dtype=np.uint64)})
    ps.update(PageSet.from_ranges(page_size, [(ROOT_PHYS, ROOT_PHYS + page_size), (BLOB_PHYS, BLOB_PHYS + page_size)]))
    return ps


def state(version: str, page_size: int = 4096, byteorder: str = "little", **blob: object) -> KhoState:
    data = bytes(range(256)) * 3
    sb = SubBlob("client", BLOB_PHYS, len(data), data, "blob-size", **blob)  # type: ignore[arg-type]
    return KhoState(
        version, page_size, byteorder, preserved=preserved(page_size), subblobs=[sb], root_fdt_phys=ROOT_PHYS
    )


def roundtrip(st: KhoState) -> KhoState:
    b = build(st, alloc=ALLOC)
    back = parse(b.root_fdt, b.image, page_size=st.page_size, byteorder=st.byteorder, root_fdt_phys=ROOT_PHYS)
    assert back.version == st.version
    assert back.preserved == st.preserved
    assert [s.key() for s in back.subblobs] == [s.key() for s in st.subblobs]
    assert back == st
    return back


@pytest.mark.parametrize("name", ["kho-v5a", "kho-v5b", "kho-v5c"])
def test_imaginary_versions_live_only_in_tests(name: str) -> None:
    """Not shipped, not named by any file of the package; known only inside
    ``extra_schemas``, loaded from tests/schemas."""
    with pytest.raises(VersionError):
        abi.get_version(name)
    assert not list((PACKAGE.parent / "schemas").glob("kho-v5*")) and not list(PACKAGE.rglob("kho-v5*"))
    for path in PACKAGE.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".toml"):
            text = path.read_text()
            assert "kho-v5" not in text and "blob-flags" not in text and "v5c" not in text, path
    with abi.extra_schemas(SCHEMAS / f"{name}.toml") as (v,):
        assert v.name == name and Path(v.source).parent == SCHEMAS
        assert abi.get_version(name) is v
        assert abi.by_compatible(["kho-v5"])[0] is v
        assert name in abi.version_names()
    with pytest.raises(VersionError):
        abi.get_version(name)


# -- (a) the same bytes under a new compatible --------------------------------------------


@pytest.mark.parametrize("page_size", [4096, 16384])
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_a_same_bytes_new_compatible(page_size: int, byteorder: str) -> None:
    with abi.extra_schemas(SCHEMAS / "kho-v5a.toml"):
        v5 = build(state("kho-v5a", page_size, byteorder), alloc=ALLOC)
        v4 = build(state("kho-v4", page_size, byteorder), alloc=ALLOC)
        assert v5.metadata == v4.metadata  # every radix page, byte for byte, at the same address
        assert v5.memmap_phys == v4.memmap_phys
        assert parse_fdt(v5.root_fdt).root.get("compatible") == b"kho-v5\0"
        assert v5.root_fdt.replace(b"kho-v5\0", b"kho-v4\0") == v4.root_fdt
        back = roundtrip(state("kho-v5a", page_size, byteorder))
        assert not any("compatible" in n for n in back.notes)


# -- (b) an extra sub-node property -------------------------------------------------------


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_b_extra_subnode_property(byteorder: str) -> None:
    with abi.extra_schemas(SCHEMAS / "kho-v5b.toml"):
        st = state("kho-v5b", byteorder=byteorder, values={"blob-flags": 0x5A5A_0001})
        b = build(st, alloc=ALLOC)
        node = parse_fdt(b.root_fdt).root.children[0]
        assert [n for n, _ in node.props] == ["blob-size", "blob-flags", "preserved-data"]
        assert node.get("blob-flags") == (0x5A5A_0001).to_bytes(8, byteorder)
        back = roundtrip(st)
        sb = back.subblobs[0]
        assert sb.values == {"blob-flags": 0x5A5A_0001} and sb.extra_props == []
        assert not any("blob-flags" in n for n in back.notes)  # declared: not "undefined"
        assert sb.to_json()["values"] == {"blob-flags": 0x5A5A_0001}
        # required: building without it is refused, reading without it too
        with pytest.raises(VersionError, match="blob-flags"):
            build(state("kho-v5b"), alloc=ALLOC)
        v4 = build(state("kho-v4"), alloc=ALLOC)
        with pytest.raises(PropertyError, match="missing property"):
            parse(v4.root_fdt, v4.image, version="kho-v5b")
    # kho-v4 reads the same FDT and keeps blob-flags as a property it does not define
    v4_back = parse(b.root_fdt.replace(b"kho-v5\0", b"kho-v4\0"), b.image, byteorder=byteorder)
    assert v4_back.subblobs[0].extra_props == [("blob-flags", (0x5A5A_0001).to_bytes(8, byteorder))]


# -- (c) a changed struct: one more header word in the chunk -------------------------------


def test_c_layout_declaration_registered_by_the_test() -> None:
    assert v5_layouts.VARIANT in declared_variants("khoser_mem_chunk_hdr")
    assert v5_layouts.khoser_mem_chunk_hdr_v5c.__module__ == "v5_layouts"
    with abi.extra_schemas(SCHEMAS / "kho-v5c.toml") as (v,):
        assert dict(v.layout) == {"khoser_mem_chunk_hdr": v5_layouts.VARIANT}


@pytest.mark.parametrize("page_size,cap_v1,cap_v5c", [(4096, 255, 254), (16384, 1023, 1022), (65536, 4095, 4094)])
def test_c_capacity_and_offsets_follow_the_declaration(page_size: int, cap_v1: int, cap_v5c: int) -> None:
    with abi.extra_schemas(SCHEMAS / "kho-v5c.toml"):
        v1, v5 = layout(page_size, "little", "kho-v1"), layout(page_size, "little", "kho-v5c")
        assert (v1.khoser_mem_chunk_capacity, v5.khoser_mem_chunk_capacity) == (cap_v1, cap_v5c)
        assert v5.khoser_mem_chunk_hdr.sizeof() == 24 and v5.khoser_mem_chunk.sizeof() == page_size
        assert v5.offsetof("khoser_mem_chunk", "bitmaps") == 24
        assert v5.khoser_mem_entry_field(2, "bitmap") == 24 + 2 * 16 + 8
        assert layout(page_size, "little").khoser_mem_chunk_capacity == cap_v1  # others unchanged


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_c_changed_chunk_header_builds_and_reads(byteorder: str) -> None:
    fmt = "<" if byteorder == "little" else ">"
    with abi.extra_schemas(SCHEMAS / "kho-v5c.toml"):
        st = state("kho-v5c", byteorder=byteorder)
        b = build(st, alloc=ALLOC)
        back = roundtrip(st)
        assert back.memmap is not None and back.memmap.bitmap_bytes == 4096
        # the order-0 pages need more than 254 bitmaps: full chunks hold exactly 254 entries
        chunks = [b.image.read(p, 4096) for p in back.memmap.chunks]
        counts = [struct.unpack_from(fmt + "QIIQ", c) for c in chunks]
        assert max(n for _, _, n, _ in counts) == 254 and all(flags == 0 for *_, flags in counts)
        full = next(c for c, (_, _, n, _) in zip(chunks, counts) if n == 254)
        assert struct.unpack_from(fmt + "Q", full, 24 + 253 * 16 + 8)[0] != 0  # last entry's bitmap
        assert full[24 + 254 * 16 :] == bytes(8)  # padding
        # the slow reference reader, on the same declarations, agrees
        lay = layout(4096, byteorder, "kho-v5c")
        assert reference_read_chunklist(b.image, b.memmap_phys, lay, 4096) == set(st.preserved.iter_pages())
        # error addresses come from the declaration: entry k's bitmap is at 24 + 16 k + 8
        c0 = back.memmap.chunks[0]
        img = b.image.copy()
        img.write(c0 + 24 + 16 * 3 + 8, (4097).to_bytes(8, byteorder))
        with pytest.raises(MemoryMapError) as ei:
            parse(b.root_fdt, img, byteorder=byteorder)
        assert ei.value.phys == c0 + 24 + 16 * 3 + 8


def test_radix_reference_reader_on_imaginary_version() -> None:
    with abi.extra_schemas(SCHEMAS / "kho-v5a.toml"):
        st = state("kho-v5a")
        b = build(st, alloc=ALLOC)
        lay = layout(4096, "little", "kho-v5a")
        geom = abi.get_version("kho-v5a").radix(4096)
        assert reference_read_radix(b.image, b.memmap_phys, geom, lay) == set(st.preserved.iter_pages())


def test_unknown_layout_variant_refused(tmp_path: Path) -> None:
    text = (SCHEMAS / "kho-v5c.toml").read_text().replace('"v5c-flags"', '"no-such-variant"')
    (tmp_path / "kho-v5x.toml").write_text(text.replace('version = "kho-v5c"', 'version = "kho-v5x"'))
    with abi.extra_schemas(tmp_path):
        with pytest.raises(VersionError, match="no-such-variant"):
            layout(4096, "little", "kho-v5x")
