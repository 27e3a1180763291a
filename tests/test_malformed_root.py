"""The root KHO FDT: missing or wrong-length KHO properties, unknown or
missing ``compatible``, sub-nodes that lie.  Each is one typed error that
names the FDT path."""

from __future__ import annotations

import pytest
from _malformed import fails, handover, parse, root_fdt

from kho_formats.errors import FdtError, KhoFormatError, PropertyError, VersionError
from kho_formats.memory.image import PhysImage
from kho_formats.model import state as kstate
from kho_formats.model.fdt import str_bytes, u64_bytes

MAP = ("preserved-memory-map", u64_bytes(0, "little"))


def test_missing_compatible():
    with fails(VersionError, "no compatible string", path="/compatible"):
        kstate.parse(root_fdt([MAP]))


@pytest.mark.parametrize("compat", ["kho-v5", "kho-v0", "", "KHO-V4", "radix-v1"])
def test_unknown_compatible(compat):
    with fails(VersionError, f"unknown compatible {compat!r}", path="/compatible"):
        kstate.parse(root_fdt([("compatible", str_bytes(compat)), MAP]))


def test_compatible_not_nul_terminated():
    with fails(PropertyError, "not NUL-terminated", path="root FDT:/compatible"):
        kstate.parse(root_fdt([("compatible", b"kho-v4"), MAP]))


def test_compatible_not_ascii():
    with fails(PropertyError, "not ASCII", path="root FDT:/compatible"):
        kstate.parse(root_fdt([("compatible", b"kho-\xff4\0"), MAP]))


def test_composite_compatible_is_read_and_reported():
    st = kstate.parse(root_fdt([("compatible", str_bytes("kho-v4", "radix-v1", "vmalloc-v1")), MAP]))
    assert st.version == "kho-v4"
    assert st.extra_compatible == ["radix-v1", "vmalloc-v1"]
    assert any("unknown compatible entries" in n for n in st.notes)


def test_version_override_to_an_unknown_version():
    with fails(VersionError, "unknown KHO ABI version 'kho-v9'", located=False):
        kstate.parse(root_fdt([("compatible", str_bytes("kho-v4")), MAP]), version="kho-v9")


@pytest.mark.parametrize("version", ["kho-v1", "kho-v2", "kho-v3", "kho-v4"])
def test_missing_preserved_memory_map(version):
    with fails(PropertyError, "missing required root property", path="root FDT:/preserved-memory-map"):
        kstate.parse(root_fdt([("compatible", str_bytes(version))]))


@pytest.mark.parametrize("length", [0, 4, 7, 9, 16])
def test_wrong_length_preserved_memory_map(length):
    with fails(PropertyError, f"property is {length} bytes", "8 bytes", path="root FDT:/preserved-memory-map"):
        kstate.parse(root_fdt([("compatible", str_bytes("kho-v4")), ("preserved-memory-map", bytes(length))]))


@pytest.mark.parametrize(
    "version,prop",
    [("kho-v1", "fdt"), ("kho-v2", "preserved-data"), ("kho-v3", "preserved-data"), ("kho-v4", "preserved-data")],
)
def test_subnode_missing_address(version, prop):
    fdt = root_fdt([("compatible", str_bytes(version)), MAP], [("memblock", [("blob-size", u64_bytes(8, "little"))])])
    with fails(PropertyError, "missing property", path=f"root FDT:/memblock/{prop}"):
        kstate.parse(fdt)


@pytest.mark.parametrize("version", ["kho-v3", "kho-v4"])
def test_subnode_missing_required_blob_size(version):
    fdt = root_fdt(
        [("compatible", str_bytes(version)), MAP], [("memblock", [("preserved-data", u64_bytes(0x1000, "little"))])]
    )
    with fails(PropertyError, "missing property", path="root FDT:/memblock/blob-size"):
        kstate.parse(fdt)


def test_v2_blob_size_is_optional():
    fdt = root_fdt(
        [("compatible", str_bytes("kho-v2")), MAP], [("memblock", [("preserved-data", u64_bytes(0x1000, "little"))])]
    )
    st = kstate.parse(fdt)
    assert st.subblobs[0].size is None


@pytest.mark.parametrize("length", [0, 1, 4, 12])
def test_subnode_wrong_length_properties(length):
    fdt = root_fdt(
        [("compatible", str_bytes("kho-v4")), MAP],
        [("kho_test", [("blob-size", bytes(length)), ("preserved-data", u64_bytes(0x1000, "little"))])],
    )
    with fails(PropertyError, f"property is {length} bytes", path="root FDT:/kho_test/blob-size"):
        kstate.parse(fdt)
    fdt = root_fdt(
        [("compatible", str_bytes("kho-v4")), MAP],
        [("kho_test", [("blob-size", u64_bytes(8, "little")), ("preserved-data", bytes(length))])],
    )
    with fails(PropertyError, f"property is {length} bytes", path="root FDT:/kho_test/preserved-data"):
        kstate.parse(fdt)


def test_v1_subnode_pointing_at_a_non_fdt():
    img = PhysImage([(0x10000, b"not an fdt at all" + bytes(4096 - 17))])
    fdt = root_fdt([("compatible", str_bytes("kho-v1")), MAP], [("memblock", [("fdt", u64_bytes(0x10000, "little"))])])
    with fails(FdtError, "bad magic", phys=0x10000, path="root FDT:/memblock"):
        kstate.parse(fdt, img)


@pytest.mark.parametrize("phys,size", [((1 << 64) - 8, 64), (0x10000, (1 << 64) - 1), (0xFFFF_FFFF_FFFF_F000, 1 << 63)])
def test_subblob_pointing_past_the_address_space_is_a_note(phys, size):
    img = PhysImage([(0x10000, bytes(4096))])
    fdt = root_fdt(
        [("compatible", str_bytes("kho-v4")), MAP],
        [("x", [("blob-size", u64_bytes(size, "little")), ("preserved-data", u64_bytes(phys, "little"))])],
    )
    st = kstate.parse(fdt, img)
    assert st.subblobs[0].data is None
    assert any("is not in the memory image" in n for n in st.notes)


def test_root_fdt_garbage_is_an_fdt_error():
    with fails(FdtError, "bad magic", path="root FDT"):
        kstate.parse(b"\0" * 64)


def test_good_handover_parses():
    b = handover("kho-v4", [(0x100000, 0)])
    st = parse(b)
    assert st.preserved.contains(0x100000, 0)


def test_preserved_memory_map_pointing_outside_the_image():
    b = handover("kho-v4", [(0x100000, 0)])
    fdt = root_fdt([("compatible", str_bytes("kho-v4")), ("preserved-memory-map", u64_bytes(0x7770000, "little"))])
    with fails(KhoFormatError, "points outside the image", phys=0x7770000):
        kstate.parse(fdt, b.image)
