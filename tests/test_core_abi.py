"""Known answers for the ABI descriptions and the radix key arithmetic
(KHO-ABI.md sections 2 and 4), worked out by hand from the field guide."""

from __future__ import annotations

import pytest

from kho_formats import abi
from kho_formats.errors import UnrepresentableError, VersionError

PAGE_SIZES = (4096, 16384, 65536)

# PAGE_SIZE: (PAGE_SHIFT, ORDER_0_LOG2, TABLE_SIZE_LOG2, BITMAP_SIZE_LOG2, DEPTH v2, DEPTH v3+)
CONSTANTS = {
    4096: (12, 52, 9, 15, 6, 6),
    16384: (14, 50, 11, 17, 4, 5),
    65536: (16, 48, 13, 19, 4, 4),
}


def test_versions_known():
    assert abi.version_names() == ["kho-v1", "kho-v2", "kho-v3", "kho-v4"]
    assert [v.number for v in abi.versions()] == [1, 2, 3, 4]


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_constants_table(page_size):
    shift, o0, tlog, blog, d2, d3 = CONSTANTS[page_size]
    assert abi.page_shift(page_size) == shift
    for name, depth in (("kho-v2", d2), ("kho-v3", d3), ("kho-v4", d3)):
        g = abi.get_version(name).radix(page_size)
        assert g.page_shift == shift
        assert g.order_0_log2 == o0
        assert g.table_size_log2 == tlog
        assert g.bitmap_size_log2 == blog
        assert g.depth == depth, (name, page_size)
        assert g.max_order == o0 - 1


def test_unsupported_page_size_refused():
    with pytest.raises(VersionError):
        abi.page_shift(8192)


def test_v1_has_no_radix():
    with pytest.raises(VersionError):
        abi.get_version("kho-v1").radix(4096)


def test_unknown_version_refused():
    with pytest.raises(VersionError):
        abi.get_version("kho-v9")


def test_schema_facts():
    v1, v2, v3, v4 = (abi.get_version(f"kho-v{i}") for i in range(1, 5))
    assert v1.memory_map == "chunk-list"
    assert v1.address_property == "fdt" and v1.size_property == "" and v1.blob_is_fdt
    assert set(v1.bitmap_variants) == {"page", "512"}
    assert v1.bitmap_sizes(4096) == (4096, 512) and v1.bitmap_sizes(65536) == (65536, 512)
    # a v1 map of 0 is "empty or not finalized" (KHO-ABI.md 3.1): the reader says so
    from kho_formats.memory.image import PhysImage
    from kho_formats.model.fdt import FdtNode, build_fdt, str_bytes, u64_bytes
    from kho_formats.model.state import parse

    root = FdtNode("")
    root.set("compatible", str_bytes("kho-v1"))
    root.set("preserved-memory-map", u64_bytes(0, "little"))
    assert any("not finalized" in n for n in parse(build_fdt(root), PhysImage()).notes)
    for v in (v2, v3, v4):
        assert v.memory_map == "radix"
        assert v.address_property == "preserved-data"
        assert v.size_property == "blob-size"
        assert not v.blob_is_fdt
        # the capture shows blob-size written before preserved-data
        assert v.property_order == ("blob-size", "preserved-data")
    assert not v2.size_required
    assert v3.size_required and v4.size_required
    for v in (v1, v2, v3, v4):
        assert set(v.root_required) == {"compatible", "preserved-memory-map"}
        assert v.compatible == v.name


def test_formula_evaluator():
    assert abi.eval_formula("ceil((52 - 15) / 9) + 1", {}) == 6
    assert abi.eval_formula("ceil((A + 1 - B) / C) + 1", {"A": 50, "B": 17, "C": 11}) == 5
    with pytest.raises(VersionError):
        abi.eval_formula("__import__('os')", {})
    with pytest.raises(VersionError):
        abi.eval_formula("X + 1", {})
    with pytest.raises(VersionError):
        abi.eval_formula("3 / 2", {})


# -- worked examples of KHO-ABI.md 4.3 ------------------------------------------


def test_worked_example_order0_4k():
    g = abi.get_version("kho-v4").radix(4096)
    key = g.encode(0x1_0000_0000, 0)
    assert key == 0x0010_0000_0010_0000
    assert key == (1 << 52) | 0x100000
    idx, bit = g.indexes(key)
    assert idx == [2, 0, 0, 0, 32]  # levels 5, 4, 3, 2, 1
    assert bit == 0
    assert g.decode(key) == (0x1_0000_0000, 0)
    assert g.representable(key)


def test_worked_example_order9_4k():
    g = abi.get_version("kho-v3").radix(4096)
    key = g.encode(0x1_0000_0000, 9)
    assert key == 0x0000_0800_0000_0800
    idx, bit = g.indexes(key)
    assert idx == [0, 2, 0, 0, 0]
    assert bit == 2048
    assert g.decode(key) == (0x1_0000_0000, 9)


def test_worked_example_v2_16k_not_representable():
    g2 = abi.get_version("kho-v2").radix(16384)
    key = g2.encode(0x4000, 0)
    assert key == 0x0004_0000_0000_0001
    assert g2.key_bits_covered == 3 * 11 + 17 == 50
    assert not g2.representable(key)  # bit 50 is outside every index
    with pytest.raises(UnrepresentableError) as ei:
        g2.check_representable(0x4000, 0)
    assert ei.value.phys == 0x4000
    # order 1 is fine with the v2 depth, and v3's depth holds order 0
    assert g2.representable(g2.encode(0x8000, 1))
    g3 = abi.get_version("kho-v3").radix(16384)
    assert g3.representable(g3.encode(0x4000, 0))


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_v2_representability_by_order(page_size):
    g2 = abi.get_version("kho-v2").radix(page_size)
    g4 = abi.get_version("kho-v4").radix(page_size)
    for order in range(g2.order_0_log2):
        phys = 1 << (g2.page_shift + order)
        if phys >= 1 << 64:
            phys = 0
        k = g2.encode(phys, order)
        # only 16 KiB v2 loses order 0
        assert g2.representable(k) == (not (page_size == 16384 and order == 0))
        assert g4.representable(g4.encode(phys, order))


def _phys_samples(shift: int, order: int):
    unit_shift = shift + order
    top = (1 << 64) - (1 << unit_shift)  # highest aligned address
    out = {0, top, (0x1234_5678_9ABC_DEF0 >> unit_shift) << unit_shift}
    if unit_shift < 64:
        out.add(1 << unit_shift if unit_shift < 63 else 0)
    return sorted(out)


@pytest.mark.parametrize("page_size", PAGE_SIZES)
@pytest.mark.parametrize("version", ["kho-v2", "kho-v3"])
def test_encode_decode_every_order(page_size, version):
    g = abi.get_version(version).radix(page_size)
    shift = g.page_shift
    seen_keys = set()
    for order in range(g.order_0_log2):  # 0 .. ORDER_0_LOG2 - 1
        for phys in _phys_samples(shift, order):
            key = g.encode(phys, order)
            # the formula of KHO-ABI.md 4.2, independently
            assert key == (1 << (g.order_0_log2 - order)) | (phys >> (shift + order))
            assert key.bit_length() - 1 == g.order_0_log2 - order
            assert g.decode(key) == (phys, order)
            assert key not in seen_keys
            seen_keys.add(key)
            if g.representable(key):
                idx, bit = g.indexes(key)
                assert len(idx) == g.depth - 1
                rebuilt = bit
                for lvl, i in zip(range(g.depth - 1, 0, -1), idx):
                    assert 0 <= i < 1 << g.table_size_log2
                    rebuilt |= i << g.level_shift(lvl)
                assert rebuilt == key


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_encode_refuses_misaligned_and_bad_orders(page_size):
    g = abi.get_version("kho-v4").radix(page_size)
    with pytest.raises(UnrepresentableError):
        g.encode(page_size, 1)  # order-1 pages are 2-page aligned
    with pytest.raises(UnrepresentableError):
        g.encode(page_size // 2, 0)
    with pytest.raises(UnrepresentableError):
        g.encode(0, g.order_0_log2)
    with pytest.raises(UnrepresentableError):
        g.encode(0, -1)
    with pytest.raises(UnrepresentableError):
        g.decode(0)


def test_by_compatible_composite():
    v, extra = abi.by_compatible(["kho-v4", "radix-v1", "vmalloc-v1"])
    assert v.name == "kho-v4"
    assert extra == ["radix-v1", "vmalloc-v1"]
    v, extra = abi.by_compatible(["kho-v2"])
    assert v.name == "kho-v2" and extra == []
    # Linux 7.3 matches with fdt_node_check_compatible: its version anywhere in the list
    v, extra = abi.by_compatible(["radix-v1", "kho-v4"])
    assert v.name == "kho-v4" and extra == ["radix-v1"]
    with pytest.raises(VersionError):
        abi.by_compatible(["radix-v1", "vmalloc-v1"])  # no known version at all
    with pytest.raises(VersionError):
        abi.by_compatible([])


def test_version_not_first_in_compatible_is_read_and_noted():
    from kho_formats.model.fdt import FdtNode, build_fdt, str_bytes, u64_bytes
    from kho_formats.model.state import parse

    root = FdtNode("")
    root.set("compatible", str_bytes("foo", "kho-v4"))
    root.set("preserved-memory-map", u64_bytes(0, "little"))
    st = parse(build_fdt(root))
    assert st.version == "kho-v4" and st.extra_compatible == ["foo"]
    assert any("not the first entry" in n for n in st.notes)


# -- schemas as data -----------------------------------------------------------------------


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_schema_file_checks_keys(tmp_path):
    from pathlib import Path

    v4 = (Path(abi.get_version("kho-v4").source)).read_text()
    v = abi.load_schema_file(_write(tmp_path, "kho-v4.toml", v4))
    assert v == abi.get_version("kho-v4")  # same description, whatever the file
    with pytest.raises(VersionError, match="unknown keys"):
        abi.load_schema_file(_write(tmp_path, "a.toml", 'map_zero_means = "x"\n' + v4))
    with pytest.raises(VersionError, match="memory_map"):
        abi.load_schema_file(_write(tmp_path, "b.toml", v4.replace('"radix"', '"tree"', 1)))
    with pytest.raises(VersionError, match="not TOML"):
        abi.load_schema_file(_write(tmp_path, "c.toml", "version = "))
    with pytest.raises(VersionError):
        abi.load_schema_file(tmp_path / "missing.toml")


def test_register_refuses_clashes(tmp_path):
    v4 = abi.get_version("kho-v4")
    with pytest.raises(VersionError, match="already known"):
        abi.register(v4)
    text = open(v4.source).read().replace('version = "kho-v4"', 'version = "kho-v4b"')
    with pytest.raises(VersionError, match="compatible"):
        with abi.extra_schemas(_write(tmp_path, "kho-v4b.toml", text)):
            pass
    assert "kho-v4b" not in abi.version_names()
    with pytest.raises(VersionError):
        abi.unregister("kho-v4")
