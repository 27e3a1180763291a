"""Malformed flattened device trees: every lie in the header or the struct
block is one FdtError naming the blob (and node path / struct offset)."""

from __future__ import annotations

import struct

import pytest
from _malformed import end_node, fails, fdt_end, node, prop, raw_fdt, set_header, tok

from kho_formats.errors import FdtError
from kho_formats.model.fdt import FdtNode, build_fdt, parse_fdt

STRINGS = b"compatible\0reg\0"
GOOD_STRUCT = (
    node("") + prop(0, b"kho-v4\0") + node("child") + prop(11, b"\1" * 8) + end_node() + end_node() + fdt_end()
)


def good() -> bytes:
    return raw_fdt(GOOD_STRUCT, STRINGS)


def test_good_blob_parses():
    fdt = parse_fdt(good())
    assert fdt.root.get("compatible") == b"kho-v4\0"
    assert fdt.root.child("child").get("reg") == b"\1" * 8


# -- header lies -----------------------------------------------------------------------


def test_short_blob():
    with fails(FdtError, "shorter than the FDT header", path="FDT"):
        parse_fdt(good()[:39])


def test_bad_magic():
    with fails(FdtError, "bad magic 0xd00dfeee", path="FDT"):
        parse_fdt(set_header(good(), "magic", 0xD00DFEEE))


@pytest.mark.parametrize("total", [0, 39, 10**9, 0xFFFFFFFF])
def test_totalsize_lies(total):
    with fails(FdtError, f"totalsize {total}", path="FDT"):
        parse_fdt(set_header(good(), "totalsize", total))


def test_totalsize_shorter_than_blocks():
    blob = good()
    with fails(FdtError, "strings block", "outside the blob"):
        parse_fdt(set_header(blob, "totalsize", len(blob) - 4))


@pytest.mark.parametrize(
    "field,value,what",
    [
        ("off_dt_struct", 0xFFFFFFF0, "struct block"),
        ("off_dt_struct", 8, "struct block"),  # inside the header
        ("off_dt_strings", 0x7FFFFFFF, "strings block"),
        ("off_mem_rsvmap", 0xFFFFFFF8, "memory reserve map"),
        ("size_dt_struct", 0xFFFFFFFF, "struct block"),  # offset + size overflows 32 bits: no wrap in Python
        ("size_dt_strings", 0xFFFFFFFF, "strings block"),
    ],
)
def test_offsets_and_sizes_past_the_buffer(field, value, what):
    with fails(FdtError, what, "outside the blob", path="FDT"):
        parse_fdt(set_header(good(), field, value))


def test_struct_and_strings_overlap():
    blob = good()
    s_off = struct.unpack_from(">I", blob, 8)[0]
    with fails(FdtError, "struct block and strings block overlap"):
        parse_fdt(set_header(blob, "off_dt_strings", s_off + 8))


def test_reserve_map_runs_into_struct_block():
    blob = good()
    with fails(FdtError, "memory reserve map runs into another block"):
        parse_fdt(set_header(blob, "off_mem_rsvmap", 48))


def test_reserve_map_entry_straddling_the_strings_block():
    # the terminating 0,0 entry of the reserve map is half padding, half the
    # strings block (which starts with NULs): the entry overlaps the block.
    # This used to be accepted: only the entry's first byte was checked.
    strings = bytes(8) + STRINGS
    dt = node("") + prop(8, b"kho-v4\0") + end_node() + fdt_end()
    blob = raw_fdt(dt, strings)
    t0 = struct.unpack_from(">I", blob, 12)[0]
    pad = (-t0) % 8 + 8  # room for 8 zero bytes before an 8-aligned strings block
    blob = blob[:t0] + bytes(pad) + blob[t0:]
    blob = set_header(set_header(blob, "off_dt_strings", t0 + pad), "totalsize", len(blob))
    assert parse_fdt(blob).root.get("compatible") == b"kho-v4\0"
    with fails(FdtError, "memory reserve map runs into another block"):
        parse_fdt(set_header(blob, "off_mem_rsvmap", t0 + pad - 8))


def test_reserve_map_not_terminated():
    dt = GOOD_STRUCT
    body = raw_fdt(dt, STRINGS)
    body += bytes((-len(body)) % 8)
    # reserve map placed after the strings block, at the very end, with no room for its 0,0 entry
    blob = body + struct.pack(">QQ", 0x1000, 0x1000)
    blob = set_header(blob, "totalsize", len(blob))
    with fails(FdtError, "memory reserve map is not terminated"):
        parse_fdt(set_header(blob, "off_mem_rsvmap", len(body)))


@pytest.mark.parametrize("version,last", [(15, 15), (1, 1), (17, 18), (16, 17), (0xFFFFFFFF, 0xFFFFFFFF)])
def test_versions(version, last):
    blob = set_header(set_header(good(), "version", version), "last_comp_version", last)
    with fails(FdtError, "unsupported version", path="FDT"):
        parse_fdt(blob)


def test_version_16_without_size_dt_struct_is_read():
    # v16 headers have no size_dt_struct: the struct block runs to totalsize
    blob = set_header(set_header(good(), "version", 16), "size_dt_struct", 0xDEAD)
    with fails(FdtError, "struct block and strings block overlap"):
        parse_fdt(blob)


def test_misaligned_struct_block():
    blob = good()
    off = struct.unpack_from(">I", blob, 8)[0]
    with fails(FdtError, "misaligned"):
        parse_fdt(set_header(blob, "off_dt_struct", off + 2))


# -- the struct block ------------------------------------------------------------------


def test_bad_token():
    dt = node("") + tok(7) + end_node() + fdt_end()
    with fails(FdtError, "bad token 0x7", "struct offset 0x8", path="FDT:/"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_bad_token_names_the_node_path():
    dt = node("") + node("kho_test") + tok(0xDEADBEEF) + end_node() + end_node() + fdt_end()
    with fails(FdtError, "bad token 0xdeadbeef", path="FDT:/kho_test"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_no_fdt_end():
    dt = node("") + end_node()
    with fails(FdtError, "struct block ends without FDT_END"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_nodes_left_open():
    dt = node("") + node("a") + end_node() + fdt_end()
    with fails(FdtError, "FDT_END with nodes still open"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_end_node_without_open_node():
    dt = node("") + end_node() + end_node() + fdt_end()
    with fails(FdtError, "FDT_END_NODE without an open node"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_property_outside_any_node():
    dt = node("") + end_node() + prop(0, b"x\0") + fdt_end()
    with fails(FdtError, "property outside any node"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_second_root():
    dt = node("") + end_node() + node("") + end_node() + fdt_end()
    with fails(FdtError, "second root"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_named_root():
    dt = node("oops") + end_node() + fdt_end()
    with fails(FdtError, "root node is named 'oops'"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_unterminated_node_name():
    dt = node("") + tok(1) + b"abcd" * 3  # BEGIN_NODE then a name with no NUL to the end of the block
    with fails(FdtError, "node name is not NUL-terminated"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_non_ascii_node_name():
    dt = node("") + tok(1) + b"\xff\xfe\0\0" + end_node() + end_node() + fdt_end()
    with fails(FdtError, "node name is not ASCII"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_empty_child_name():
    dt = node("") + node("") + end_node() + end_node() + fdt_end()
    with fails(FdtError, "bad node name ''"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_unterminated_property_name_string():
    dt = node("") + prop(0, b"v\0") + end_node() + fdt_end()
    with fails(FdtError, "property name is not NUL-terminated"):
        parse_fdt(raw_fdt(dt, b"compatible"))  # strings block without the final NUL


@pytest.mark.parametrize("nameoff", [15, 16, 0x7FFFFFFF, 0xFFFFFFFF])
def test_string_offset_out_of_range(nameoff):
    dt = node("") + prop(nameoff, b"v\0") + end_node() + fdt_end()
    with fails(FdtError, f"property name offset {nameoff} is past the strings block", path="FDT:/"):
        parse_fdt(raw_fdt(dt, STRINGS))


@pytest.mark.parametrize("length", [0xFFFFFFFF, 0x80000000, 0xFFFFFFF8, 1000])
def test_property_length_overflow(length):
    dt = node("") + prop(0, b"kho-v4\0", length=length) + end_node() + fdt_end()
    with fails(FdtError, f"property length {length} runs past the struct block"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_property_header_cut_off():
    dt = node("") + tok(3) + b"\0\0"
    with fails(FdtError, "property header runs past the struct block"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_nesting_depth_is_bounded():
    dt = node("") + node("a") * 100 + end_node() * 101 + fdt_end()
    with fails(FdtError, "nested deeper than 64"):
        parse_fdt(raw_fdt(dt, STRINGS))


def test_huge_flat_blob_is_linear():
    # 100k NOPs then a tree: a linear walk, no per-token recursion
    dt = node("") + tok(4) * 100_000 + end_node() + fdt_end()
    with fails(FdtError, "bad magic", seconds=3.0):
        parse_fdt(set_header(raw_fdt(dt, STRINGS), "magic", 0))
    assert parse_fdt(raw_fdt(dt, STRINGS)).root.props == []


@pytest.mark.parametrize("cut", range(0, 120, 7))
def test_every_truncation_is_an_fdt_error(cut):
    blob = build_fdt(FdtNode("", [("compatible", b"kho-v4\0"), ("preserved-memory-map", bytes(8))]))
    assert cut < len(blob)
    with pytest.raises(FdtError):
        parse_fdt(blob[:cut])


# -- the DTS renderer (kho dts) on untrusted blobs ----------------------------------------


def test_to_dts_of_an_8_byte_string_with_angle_brackets():
    # an 8-byte property pyfdt renders as a string containing "<x>" used to be
    # parsed as cells: ValueError escaped from int("x", 16)
    from kho_formats.model.fdt import to_dts

    blob = build_fdt(
        FdtNode(
            "",
            [
                ("compatible", b"kho-v4\0"),
                ("preserved-memory-map", b"a<x>cde\0"),
                ("m", (0x1234).to_bytes(8, "little")),
            ],
        )
    )
    text = to_dts(blob)
    assert 'preserved-memory-map = "a<x>cde";' in text
    assert "m = <0x34120000 0x00000000>; /* u64 little-endian: 0x1234 */" in text


def test_to_dts_validates_first():
    from kho_formats.model.fdt import to_dts

    with fails(FdtError, "bad token", path="x:/"):
        to_dts(raw_fdt(node("") + tok(7) + end_node() + fdt_end(), STRINGS), where="x")
