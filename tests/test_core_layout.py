"""Struct sizes, capacities and byte encodings of every KHO structure
(KHO-ABI.md 3, 5, 6, 7), checked against hand-packed bytes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from kho_formats.abi.layout import (
    KexecMetadata,
    KhoData,
    KhoScratch,
    KhoVmalloc,
    fdt_header,
    layout,
)
from kho_formats.errors import KhoFormatError
from kho_formats.model.clients import kexec_metadata

PAGE_SIZES = (4096, 16384, 65536)
ORDERS = ("little", "big")
FMT = {"little": "<", "big": ">"}


@pytest.mark.parametrize("page_size", PAGE_SIZES)
@pytest.mark.parametrize("bo", ORDERS)
def test_struct_sizes(page_size, bo):
    lay = layout(page_size, bo)
    assert lay.kho_vmalloc.sizeof() == 16
    assert lay.kexec_metadata.sizeof() == 73
    assert lay.kho_scratch.sizeof() == 16
    assert lay.kho_data.sizeof() == 32
    assert lay.khoser_mem_chunk_hdr.sizeof() == 16
    assert lay.khoser_mem_bitmap_ptr.sizeof() == 16
    assert lay.khoser_mem_chunk.sizeof() == page_size
    assert lay.kho_vmalloc_chunk.sizeof() == page_size
    assert lay.kho_radix_node.sizeof() == page_size
    assert lay.kho_radix_leaf.sizeof() == page_size
    assert lay.kho_block_header_ser.sizeof() == 16
    assert lay.setup_data_hdr.sizeof() == 16
    assert lay.kho_mem_phys_bits(512).sizeof() == 512
    assert lay.kho_mem_phys_bits(page_size).sizeof() == page_size
    assert fdt_header.sizeof() == 40


@pytest.mark.parametrize(
    "page_size,v1_cap,vmalloc_cap",
    [
        (4096, 255, 511),
        (16384, (16384 - 16) // 16, 16384 // 8 - 1),
        (65536, (65536 - 16) // 16, 65536 // 8 - 1),
    ],
)
def test_chunk_capacities(page_size, v1_cap, vmalloc_cap):
    lay = layout(page_size, "little")
    assert lay.khoser_mem_chunk_capacity == v1_cap
    assert lay.kho_vmalloc_chunk_capacity == vmalloc_cap
    if page_size == 16384:
        assert (v1_cap, vmalloc_cap) == (1023, 2047)
    if page_size == 65536:
        assert (v1_cap, vmalloc_cap) == (4095, 8191)


@pytest.mark.parametrize("bo", ORDERS)
def test_kho_vmalloc_bytes(bo):
    lay = layout(4096, bo)
    d = KhoVmalloc(first=0x1234_5000, total_pages=7, flags=1, order=2)
    raw = lay.kho_vmalloc.build(d)
    assert raw == struct.pack(FMT[bo] + "QIHH", 0x1234_5000, 7, 1, 2)
    assert lay.kho_vmalloc.parse(raw) == d


@pytest.mark.parametrize("bo", ORDERS)
def test_kexec_metadata_bytes(bo):
    lay = layout(4096, bo)
    raw = kexec_metadata.encode(lay, "7.3.4", 3)
    assert len(raw) == 73
    assert raw == struct.pack(FMT[bo] + "I65sI", 1, b"7.3.4", 3)
    md = kexec_metadata.decode(raw, lay)
    assert md == KexecMetadata(1, "7.3.4", 3)
    with pytest.raises(KhoFormatError):
        kexec_metadata.encode(lay, "x" * 65, 0)  # char[65] needs its NUL


@pytest.mark.parametrize("bo", ORDERS)
def test_scratch_and_kho_data_bytes(bo):
    lay = layout(4096, bo)
    assert lay.kho_scratch.build(KhoScratch(0x1000, 0x2000)) == struct.pack(FMT[bo] + "QQ", 0x1000, 0x2000)
    kd = KhoData(0x11F_3000, 0x161, 0x3000, 48)
    raw = lay.kho_data.build(kd)
    assert raw == struct.pack(FMT[bo] + "4Q", 0x11F_3000, 0x161, 0x3000, 48)
    assert lay.kho_data.parse(raw) == kd


@pytest.mark.parametrize("page_size", PAGE_SIZES)
@pytest.mark.parametrize("bo", ORDERS)
def test_khoser_mem_chunk_bytes(page_size, bo):
    lay = layout(page_size, bo)
    cap = lay.khoser_mem_chunk_capacity
    arr = np.zeros((cap, 2), dtype=np.uint64)
    arr[0] = (0x8000_0000, 0x10_0000)
    arr[1] = (0x9000_0000, 0x10_1000)
    raw = lay.khoser_mem_chunk.build(dict(hdr=dict(next=0xABC000, order=3, num_elms=2), bitmaps=arr))
    assert len(raw) == page_size
    f = FMT[bo]
    assert raw[:16] == struct.pack(f + "QII", 0xABC000, 3, 2)
    assert raw[16:48] == struct.pack(f + "4Q", 0x8000_0000, 0x10_0000, 0x9000_0000, 0x10_1000)
    assert raw[48:] == bytes(page_size - 48)
    c = lay.khoser_mem_chunk.parse(raw)
    assert (c.hdr.next, c.hdr.order, c.hdr.num_elms) == (0xABC000, 3, 2)
    assert c.used().tolist() == [[0x8000_0000, 0x10_0000], [0x9000_0000, 0x10_1000]]


@pytest.mark.parametrize("bo", ORDERS)
def test_block_header_bytes(bo):
    lay = layout(4096, bo)
    raw = lay.kho_block_header_ser.build(dict(next=0x5000, count=9))
    assert raw == struct.pack(FMT[bo] + "QQ", 0x5000, 9)


def test_layout_refuses_bad_parameters():
    with pytest.raises(KhoFormatError):
        layout(4096, "middle")
    with pytest.raises(KhoFormatError):
        layout(2048, "little")


# -- declarations carry the numbers the fast paths use ------------------------------------

DTYPE_STRUCTS = (
    "khoser_mem_chunk_hdr",
    "khoser_mem_bitmap_ptr",
    "kho_vmalloc",
    "kho_vmalloc_chunk",
    "kho_scratch",
    "kho_data",
    "setup_data_hdr",
    "kexec_metadata",
    "kho_block_header_ser",
)


@pytest.mark.parametrize("bo", ORDERS)
@pytest.mark.parametrize("name", DTYPE_STRUCTS)
def test_struct_dtype_reads_what_construct_parses(bo, name):
    """``dtype_of`` has the declaration's size, offsets and byte order: numpy
    reads random bytes exactly as the Construct declaration parses them."""
    lay = layout(4096, bo)
    con = lay.struct(name)
    dt = lay.dtype_of(name)
    assert dt.itemsize == con.sizeof()
    raw = np.random.default_rng(1).integers(0, 256, con.sizeof(), dtype=np.uint8).tobytes()
    rec = np.frombuffer(raw, dtype=dt)[0]
    parsed = con.parse(raw)
    for field in dt.names:
        want = getattr(parsed, field) if not isinstance(parsed, dict) else parsed[field]
        got = rec[field]
        if isinstance(want, np.ndarray):
            assert got.tolist() == want.tolist()
        elif isinstance(want, str):
            assert got.split(b"\0", 1)[0].decode("utf-8", "replace") == want
        else:
            assert int(got) == want, field
        assert dt.fields[field][1] == lay.offsetof(name, field)


@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_derived_numbers(page_size):
    lay = layout(page_size, "little")
    assert lay.offsetof("khoser_mem_chunk", "bitmaps") == lay.khoser_mem_bitmaps_offset == 16
    assert lay.khoser_mem_entry_field(0, "phys_start") == 16 and lay.khoser_mem_entry_field(3, "bitmap") == 24 + 48
    assert lay.radix_table_entries == lay.radix_leaf_words == page_size // 8
    assert lay.radix_table_offset == 0
    assert lay.kho_block_header_size == 16 and lay.kho_block_entries_per_page(24) == (page_size - 16) // 24
    assert lay.kho_scratch_size == 16
    assert lay.v1_preserve_bits(512) == 4096 and lay.v1_preserve_bits(page_size) == page_size * 8
    assert lay.khoser_mem_bitmap_ptr_dtype.names == ("phys_start", "bitmap")
    # every released version uses the kernel layout
    for v in ("kho-v1", "kho-v2", "kho-v3", "kho-v4"):
        lv = layout(page_size, "little", v)
        assert lv.version == v and dict(lv.variants) == {}
        assert (
            lv.khoser_mem_chunk.sizeof() == page_size and lv.khoser_mem_chunk_capacity == lay.khoser_mem_chunk_capacity
        )
    assert layout(page_size, "little") is layout(page_size, "little", None)


def test_every_field_documented():
    lay = layout(4096, "little")
    from kho_formats.abi.layout import fdt_header, struct_fields

    for name in (*DTYPE_STRUCTS, "khoser_mem_chunk", "kho_radix_node", "kho_radix_leaf"):
        st = lay.struct(name)
        inner = st.subcon if hasattr(st, "cls") else st
        for sc in inner.subcons:
            if sc.name:
                assert sc.docs, (name, sc.name)
        assert struct_fields(st)
    assert all(sc.docs for sc in fdt_header.subcon.subcons)


def test_construct_errors_become_kho_errors():
    from kho_formats.abi.layout import build_struct, parse_struct
    from kho_formats.errors import MemoryMapError, VersionError

    lay = layout(4096, "little")
    with pytest.raises(MemoryMapError) as ei:
        lay.parse("khoser_mem_chunk", bytes(100), phys=0x5000, error=MemoryMapError)
    assert ei.value.phys == 0x5000 and "khoser_mem_chunk" in str(ei.value)
    with pytest.raises(KhoFormatError, match="kho_vmalloc"):
        build_struct(lay.kho_vmalloc, dict(first=1, total_pages=1 << 40, flags=0, order=0), what="kho_vmalloc")
    with pytest.raises(KhoFormatError):
        parse_struct(lay.kho_scratch, b"\0" * 3, what="kho_scratch")
    with pytest.raises(VersionError):
        layout(4096, "little", "kho-v9")
    with pytest.raises(VersionError):
        lay.struct("no_such_struct")
