"""Root FDT and sub-node rules of each version (KHO-ABI.md 2, 6): property
names, blob-size, composite compatibles, native byte order, one-page root."""

from __future__ import annotations

import struct

import pytest

from kho_formats.errors import KhoFormatError, PropertyError, VersionError
from kho_formats.memory.image import PhysImage
from kho_formats.memory.pageset import PageSet
from kho_formats.model.fdt import FdtNode, build_fdt, parse_fdt, str_bytes, u64_bytes
from kho_formats.model.state import KhoState, SubBlob, build, convert, parse

ALLOC = [(0x4000_0000, 0x100_0000)]


def small_fdt(tag: str = "x") -> bytes:
    root = FdtNode("")
    root.set("compatible", str_bytes(f"test-{tag}-v1"))
    root.set("value", struct.pack(">I", 42))
    return build_fdt(root, style="sequential-write")


def root_fdt(compatible, map_phys=0, children=(), bo="little"):
    """Hand-made root FDT: children are (name, [(prop, bytes)...])."""
    root = FdtNode("")
    root.set("compatible", str_bytes(*compatible))
    root.set("preserved-memory-map", u64_bytes(map_phys, bo))
    for name, props in children:
        c = root.add_child(name)
        for p, v in props:
            c.set(p, v)
    return build_fdt(root)


def _state(version, bo="little", page_size=4096, subblobs=(), pages=((0x10_0000, 1),), **kw):
    return KhoState(
        version=version,
        page_size=page_size,
        byteorder=bo,
        preserved=PageSet.from_pages(page_size, list(pages)),
        subblobs=list(subblobs),
        **kw,
    )


# -- sub-node property names ----------------------------------------------------------------


def test_v1_subnode_uses_fdt_property():
    blob = small_fdt()
    st = _state(
        "kho-v1",
        subblobs=[SubBlob("client", 0x20_0000, len(blob), blob, "fdt-header")],
        map_params={"v1_bitmap_bytes": 4096},
    )
    b = build(st, alloc=ALLOC)
    node = parse_fdt(b.root_fdt).root.child("client")
    assert [n for n, _ in node.props] == ["fdt"]
    assert node.get("fdt") == u64_bytes(0x20_0000, "little")
    got = parse(b.root_fdt, b.image)
    sb = got.subblob("client")
    assert (sb.phys, sb.size, sb.data, sb.size_source) == (0x20_0000, len(blob), blob, "fdt-header")


@pytest.mark.parametrize("version", ["kho-v2", "kho-v3", "kho-v4"])
@pytest.mark.parametrize("bo", ["little", "big"])
def test_v2plus_subnode_properties(version, bo):
    data = b"raw client bytes"
    st = _state(version, bo, subblobs=[SubBlob("client", 0x20_0000, len(data), data, "blob-size")])
    b = build(st, alloc=ALLOC)
    node = parse_fdt(b.root_fdt).root.child("client")
    assert [n for n, _ in node.props] == ["blob-size", "preserved-data"]
    assert node.get("preserved-data") == (0x20_0000).to_bytes(8, bo)
    assert node.get("blob-size") == len(data).to_bytes(8, bo)
    assert node.get("fdt") is None
    got = parse(b.root_fdt, b.image, byteorder=bo)
    assert got.subblob("client").data == data
    assert got.subblob("client").size_source == "blob-size"


def test_v1_root_with_v2_property_names_is_refused():
    fdt = root_fdt(["kho-v1"], children=[("client", [("preserved-data", u64_bytes(0x20_0000, "little"))])])
    with pytest.raises(PropertyError) as ei:
        parse(fdt)
    assert "fdt" in str(ei.value)
    fdt = root_fdt(["kho-v4"], children=[("client", [("fdt", u64_bytes(0x20_0000, "little"))])])
    with pytest.raises(PropertyError):
        parse(fdt)


# -- blob-size -------------------------------------------------------------------------------


def test_v2_blob_size_optional_size_from_fdt_blob():
    blob = small_fdt()
    fdt = root_fdt(["kho-v2"], children=[("client", [("preserved-data", u64_bytes(0x20_0000, "little"))])])
    img = PhysImage([(0x20_0000, blob.ljust(4096, b"\0"))])
    got = parse(fdt, img)
    sb = got.subblob("client")
    assert sb.size == len(blob)
    assert sb.size_source == "fdt-header"
    assert sb.data == blob


def test_v2_blob_size_optional_unknown():
    fdt = root_fdt(["kho-v2"], children=[("client", [("preserved-data", u64_bytes(0x20_0000, "little"))])])
    # a raw (non-FDT) blob: no way to know its size
    got = parse(fdt, PhysImage([(0x20_0000, b"\x01" * 4096)]))
    sb = got.subblob("client")
    assert sb.size is None and sb.size_source == "unknown" and sb.data is None
    # no image at all
    got = parse(fdt)
    assert got.subblob("client").size is None and not got.map_read
    # rebuilding keeps it without blob-size
    b = build(got, alloc=ALLOC)
    assert parse_fdt(b.root_fdt).root.child("client").get("blob-size") is None


def test_v2_without_blob_size_round_trips():
    blob = small_fdt()
    st = _state("kho-v2", subblobs=[SubBlob("client", 0x20_0000, len(blob), blob, "fdt-header")])
    b = build(st, alloc=ALLOC)
    assert parse_fdt(b.root_fdt).root.child("client").get("blob-size") is None
    assert parse(b.root_fdt, b.image) == st


@pytest.mark.parametrize("version", ["kho-v3", "kho-v4"])
def test_blob_size_required_v3_v4(version):
    fdt = root_fdt([version], children=[("client", [("preserved-data", u64_bytes(0x20_0000, "little"))])])
    img = PhysImage([(0x20_0000, small_fdt().ljust(4096, b"\0"))])
    with pytest.raises(PropertyError) as ei:
        parse(fdt, img)
    assert "blob-size" in str(ei.value)
    # and the builder will not write a v3+ sub-node without a size
    st = _state(version, subblobs=[SubBlob("client", 0x20_0000, None, None)])
    with pytest.raises(VersionError):
        build(st, alloc=ALLOC)


def test_blob_size_wrong_length_refused():
    fdt = root_fdt(
        ["kho-v4"],
        children=[("client", [("blob-size", b"\0\0\0\x10"), ("preserved-data", u64_bytes(0x20_0000, "little"))])],
    )
    with pytest.raises(PropertyError):
        parse(fdt)


def test_missing_root_properties():
    root = FdtNode("")
    root.set("compatible", str_bytes("kho-v4"))
    with pytest.raises(PropertyError):
        parse(build_fdt(root))
    root = FdtNode("")
    root.set("preserved-memory-map", bytes(8))
    with pytest.raises(VersionError):
        parse(build_fdt(root))


# -- compatible ----------------------------------------------------------------------------------


def test_composite_compatible_read_as_first_entry():
    fdt = root_fdt(["kho-v4", "radix-v1"])
    got = parse(fdt)
    assert got.version == "kho-v4"
    assert got.extra_compatible == ["radix-v1"]
    assert any("radix-v1" in n for n in got.notes)
    # the builder writes the extra entries back, in order
    st = _state("kho-v4", extra_compatible=["radix-v1", "vmalloc-v1"])
    b = build(st, alloc=ALLOC)
    assert parse_fdt(b.root_fdt).root.get("compatible") == b"kho-v4\0radix-v1\0vmalloc-v1\0"
    back = parse(b.root_fdt, b.image)
    assert back.version == "kho-v4" and back.extra_compatible == ["radix-v1", "vmalloc-v1"]
    assert back.preserved == st.preserved


def test_unknown_compatible_refused_and_override():
    fdt = root_fdt(["kho-v9"])
    with pytest.raises(VersionError):
        parse(fdt)
    got = parse(fdt, version="kho-v3")
    assert got.version == "kho-v3"
    assert any("overridden" in n for n in got.notes)


# -- native byte order ------------------------------------------------------------------------------


@pytest.mark.parametrize("bo", ["little", "big"])
def test_u64_properties_native_order(bo):
    st = _state("kho-v4", bo, pages=[(0x1_2345_6000, 0)])
    b = build(st, alloc=[(0x7654_3000, 0x100_0000)])
    assert b.memmap_phys == 0x7654_3000
    raw = parse_fdt(b.root_fdt).root.get("preserved-memory-map")
    assert raw == b.memmap_phys.to_bytes(8, bo)
    other = "big" if bo == "little" else "little"
    assert int.from_bytes(raw, other) != b.memmap_phys
    # the FDT header itself is ordinary big-endian
    assert b.root_fdt[:4] == b"\xd0\x0d\xfe\xed"
    assert struct.unpack(">I", b.root_fdt[4:8])[0] == len(b.root_fdt)
    # reading with the wrong byte order says so
    wrong = parse(b.root_fdt, byteorder=other)
    assert any("byte order looks wrong" in n for n in wrong.notes)


def test_capture_like_property_bytes_little_endian():
    # preserved-memory-map 0x10f4000 is stored 00 40 0f 01 00 00 00 00 (dtc: <0x400f01 0x00>)
    st = _state("kho-v4")
    fdt = build_fdt_for(st, 0x10F_4000)
    assert parse_fdt(fdt).root.get("preserved-memory-map") == bytes.fromhex("00400f0100000000")


def build_fdt_for(st, memmap_phys):
    from kho_formats.model.state import root_fdt_tree

    return build_fdt(root_fdt_tree(st, memmap_phys), style=st.abi.fdt_style, strings_order=st.abi.strings_order)


# -- one-page root FDT ---------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [4096, 16384])
def test_root_fdt_fits_one_page(page_size):
    subs = [SubBlob(f"client-{i:03d}", 0x20_0000 + i * page_size, 16, b"x" * 16, "blob-size") for i in range(40)]
    st = _state("kho-v4", page_size=page_size, subblobs=subs, pages=[(0x10_0000, 1)])
    b = build(st, alloc=ALLOC)
    assert struct.unpack(">I", b.root_fdt[4:8])[0] == len(b.root_fdt) <= page_size
    # too many sub-nodes for one 4 KiB page: refused rather than written
    subs = [SubBlob(f"client-{i:03d}", 0x20_0000 + i * 4096, 16, b"x" * 16, "blob-size") for i in range(200)]
    st = _state("kho-v4", page_size=4096, subblobs=subs)
    if page_size == 4096:
        with pytest.raises(KhoFormatError):
            build(st, alloc=ALLOC)


def test_oversized_root_fdt_noted_on_parse():
    children = [
        (f"c{i:03d}", [("blob-size", u64_bytes(8, "little")), ("preserved-data", u64_bytes(0x1000, "little"))])
        for i in range(200)
    ]
    fdt = root_fdt(["kho-v4"], children=children)
    assert len(fdt) > 4096
    got = parse(fdt)
    assert any("more than one page" in n for n in got.notes)


# -- root FDT layout of the version's writer ---------------------------------------------------------------


def test_fdt_styles():
    v1 = build(_state("kho-v1", map_params={"v1_bitmap_bytes": 4096}), alloc=ALLOC).root_fdt
    v4 = build(_state("kho-v4"), alloc=ALLOC).root_fdt
    sub = [SubBlob("client", 0x20_0000, 8, bytes(8), "blob-size")]
    v4_sub = build(_state("kho-v4", subblobs=sub), alloc=ALLOC).root_fdt
    # off_mem_rsvmap: sequential-write 0x30 (v1 finalize; v2+ before any
    # kho_add_subtree), read-write-then-packed 0x28 (v2+ after one)
    assert struct.unpack(">I", v1[16:20])[0] == 0x30
    assert struct.unpack(">I", v4[16:20])[0] == 0x30
    assert struct.unpack(">I", v4_sub[16:20])[0] == 0x28


def test_root_fdt_written_into_image_and_convert():
    blob = small_fdt()
    st = _state(
        "kho-v1",
        subblobs=[SubBlob("client", 0x20_0000, len(blob), blob, "fdt-header")],
        root_fdt_phys=0x30_0000,
        map_params={"v1_bitmap_bytes": 4096},
    )
    b = build(st, alloc=ALLOC)
    assert b.image.read(0x30_0000, len(b.root_fdt)) == b.root_fdt
    for p in (b.memmap_phys, *b.memmap.chunks):
        assert not (0x30_0000 <= p < 0x30_1000)
    # convert v1 -> v4: sizes come from the sub-FDT header
    v4 = convert(parse(b.root_fdt, b.image, root_fdt_phys=0x30_0000), "kho-v4")
    b4 = build(v4, alloc=ALLOC)
    back = parse(b4.root_fdt, b4.image)
    assert back.version == "kho-v4"
    assert back.preserved == st.preserved
    assert back.subblob("client").data == blob and back.subblob("client").size == len(blob)


def test_build_writes_consecutive_map_pages_as_one_segment():
    """A map of many leaves placed at consecutive addresses lands in the
    image as one segment (not one per page), so parse reads the leaves where
    they lie; memory the image already holds is left as it was."""
    import numpy as np

    ps = 4096
    starts = (np.arange(300, dtype=np.uint64) << np.uint64(30)) + np.uint64(1 << 32)  # one page per leaf
    pages = PageSet.from_arrays(ps, {0: starts})
    st = KhoState(version="kho-v4", page_size=ps, preserved=pages)
    b = build(st, alloc=[(1 << 46, 1 << 30)])
    assert len(b.metadata) > 300 and len(b.image) == 1
    assert parse(b.root_fdt, b.image).preserved == pages
    first = b.metadata[0][0]
    held = PhysImage([(first + ps, b"\x5a" * ps)])  # where the second map page went: the map goes around it
    b2 = build(st, alloc=[(1 << 46, 1 << 30)], image=held)
    assert b2.image.read(first + ps, ps) == b"\x5a" * ps
    assert parse(b2.root_fdt, b2.image).preserved == pages
    again = build(parse(b.root_fdt, b.image), reuse_placement=True, image=PhysImage([(first, bytes(ps))]))
    assert again.image.read(first, 3 * ps) == b.image.read(first, 3 * ps)  # a map page over held memory: written
