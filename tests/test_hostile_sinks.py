"""Issue 21 item 2: every integer from the input that reaches an OS call,
numpy or ``range()`` is refused with a typed error (or a ``check``
finding) before the call.

The sweep (``grep -rn 'os\\.pwrite\\|os\\.ftruncate\\|os\\.pread\\|mmap\\.mmap\\|\\.seek(\\|np\\.frombuffer\\|
np\\.\\(zeros\\|empty\\|full\\|arange\\)(\\|range(' kho_formats``), the sinks an input integer reaches and
their guards, one test class each:

OS calls
  * ``os.ftruncate(fd, size)`` / ``os.pwrite(fd, data, off)`` in ``luo extract``
    (ops/luo_extract.py) <- ``memfd_luo_ser.size`` and a folio record's
    ``index`` (offset = index * PAGE_SIZE): ``_check_sizes`` refuses a size
    no kernel preserves before anything is written; offsets at or past
    ``size`` are dropped; an OS refusal is an ``ExtractError``;
  * ``os.pread(fd, n, off)`` in memory/kcore.py <- ``e_phoff``, ``e_shoff``,
    ``p_offset``, ``p_filesz``: ``KcoreFile.pread`` refuses offsets outside
    ``[0, 2**63)`` (``ImageError``);
  * ``mmap.mmap(fd, 0)`` (safeio.py): whole files, no input integer;
  * ``seek(off)`` of a spec memfd's ``file`` (model/clients/memfd.py) <- the
    spec's ``size`` (``SpecError`` outside 0 .. MAX_LFS_FILESIZE) and the file's
    own ``st_size``.
numpy
  * ``np.frombuffer(count=n)`` of memfd records <- ``nr_folios`` (at most the
    records the restored groups hold), of kho_test ``folios_info`` <-
    ``nr_folios`` (``ClientError`` past the area);
  * ``np.frombuffer(offset, count)`` of kdump bitmaps and page descriptors
    (memory/kdump.py ``_Mapped.array``) <- ``sub_hdr_size``,
    ``bitmap_blocks``, ``max_mapnr(_64)``: ``ImageError`` before the call;
  * ``np.uint64`` arrays and ``1 << order`` shifts of ``PageSet``
    (memory/pageset.py) <- page addresses and orders (spec, API, decoders):
    ``UnrepresentableError`` for a value outside ``[0, 2**64)`` or an order
    past the 64-bit space (it was a numpy ``OverflowError`` or a ``MemoryError``);
  * ``kho_vmalloc`` ``order`` / ``total_pages`` (model/clients/vmalloc.py):
    ``VmallocError`` before anything is sized from them.
range()
  * ``range(block.count)`` of session and file blocks
    (model/clients/luo/decode.py) <- ``kho_block_header_ser.count``:
    ``BlockError`` past the page's capacity;
  * ``range(n)`` of FLBs <- ``luo_flb_header_ser.count``: at most the page's
    capacity (finding ``luo-flb-count``);
  * ``range(0, n, CHUNK)`` of memfd contents <- ``size`` and the folio's
    order: clipped at ``size``.

The values: 2**63, 2**63 + 1 (negative as a signed 64-bit number), 2**64 - 1
(-1 signed) and 0xfffffffffffff000 (a negative page address).
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest
from _luo import LUO_CAP, SynthMemfd, SynthSession, elf_patch, load_luo, luo_of, synth

from kho_formats import cli
from kho_formats.abi.layout import KhoVmalloc, layout
from kho_formats.errors import KhoFormatError, UnrepresentableError
from kho_formats.memory.image import PhysImage
from kho_formats.memory.pageset import PageSet
from kho_formats.model.clients import decode_clients
from kho_formats.model.clients.memfd import MemfdFile
from kho_formats.model.clients.vmalloc import read_vmalloc
from kho_formats.ops import luo_extract
from kho_formats.ops.check import check

HOSTILE = [1 << 63, (1 << 63) + 1, (1 << 64) - 1, 0xFFFF_FFFF_FFFF_F000]
PS = 4096
LAY = layout(PS, "little")


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kho: error:") and "internal error" not in err[0], err
    return err[0]


def real_memfd():
    _, st, reps = load_luo()
    luo = luo_of(reps)
    for s in luo.sessions:
        for f in s.files:
            if isinstance(f.decoded, MemfdFile) and f.decoded.phys.size > 1:
                return st, luo, f
    raise AssertionError("no memfd with folios")


# -- OS calls -------------------------------------------------------------------------------------


def _os_size(tmp_path: Path, v: int, capsys) -> None:
    """memfd_luo_ser.size -> os.ftruncate: refused before anything is written."""
    _, _, f = real_memfd()
    cap = tmp_path / "cap"
    shutil.copytree(LUO_CAP, cap)
    elf_patch(cap / "image.elf", f.decoded.ser_phys + LAY.offsetof("memfd_luo_ser", "size"), v.to_bytes(8, "little"))
    assert cli.main(["luo", "extract", str(cap), "-o", str(tmp_path / "o")]) == 1
    line = one_error_line(capsys)
    assert f"phys {f.decoded.ser_phys:#x}" in line and f"size {v:#x} is more than a kernel preserves" in line
    assert not (tmp_path / "o").exists()


def _os_index(tmp_path: Path, v: int, capsys) -> None:
    """A folio record's index -> the os.pwrite offset: never past the file's size."""
    s = synth([SynthSession(b"s", [SynthMemfd(5, 3 * PS, [(0, 0), (1, 0)])])])
    m = luo_of(decode_clients(s.state, s.image)).sessions[0].files[0].decoded
    s.image.write(int(m.area.page_addresses(PS)[0]) + 16 + 8, v.to_bytes(8, "little"))  # record 1's index
    luo = luo_of(decode_clients(s.state, s.image))
    seen: list[int] = []
    real = os.pwrite

    def pwrite(fd: int, data, off: int) -> int:
        seen.append(off)
        return real(fd, data, off)

    mp = pytest.MonkeyPatch()
    mp.setattr(luo_extract.os, "pwrite", pwrite)
    try:
        idx = luo_extract.extract(luo, s.image, tmp_path / "o", page_size=PS)
    finally:
        mp.undo()
    assert seen == [0]
    assert (tmp_path / "o" / idx["sessions"][0]["files"][0]["file"]).stat().st_size == 3 * PS
    codes = [x.code for x in check(s.state, s.image, clients=decode_clients(s.state, s.image))]
    assert "memfd-folio-past-size" in codes


def _poke(path: Path, off: int, data: bytes) -> None:
    """Overwrite bytes of a (large, sparse) file in place."""
    with open(path, "r+b") as fh:
        fh.seek(off)
        fh.write(data)


def _os_kcore(tmp_path: Path, v: int, capsys) -> None:
    """ELF offsets -> os.pread of a kcore-like file: ImageError."""
    from _kcore import write_kcore

    from kho_formats.memory.kcore import KcoreFile

    img = PhysImage([(0x10_0000, b"k" * PS)])
    u64 = v.to_bytes(8, "little")
    pokes = {
        "e_phoff": [(0x20, u64)],
        # e_phnum PN_XNUM: the count is read from section header 0 at e_shoff
        "e_shoff": [(0x28, u64), (0x38, b"\xff\xff"), (0x3A, (64).to_bytes(2, "little")), (0x3C, b"\x01\x00")],
    }
    for name, edits in pokes.items():
        path = write_kcore(tmp_path / f"kcore-{name}", img, [(0x10_0000, PS)])
        for off, data in edits:
            _poke(path, off, data)
        with pytest.raises(KhoFormatError, match="out of range|beyond what the OS can read"):
            KcoreFile(path)
    # p_offset of the RAM segment: refused when the segment is set up
    # (the text segment smaller than RAM, so the RAM segment's vaddr - paddr is the direct map)
    path = write_kcore(tmp_path / "kcore-p", img, [(0x10_0000, 4 * PS)], text=(0x200_0000, PS))
    with open(path, "rb") as fh:
        head = fh.read(64)
        (phoff,) = struct.unpack_from("<Q", head, 0x20)
        (phnum,) = struct.unpack_from("<H", head, 0x38)
        fh.seek(phoff)
        phs = fh.read(phnum * 56)
    ram = [k for k in range(phnum) if struct.unpack_from("<Q", phs, k * 56 + 24)[0] == 0x10_0000]
    assert ram
    for k in ram:
        _poke(path, phoff + k * 56 + 8, u64)
    with pytest.raises(KhoFormatError, match="past the end of the file"):
        KcoreFile(path)


@pytest.mark.parametrize("v", HOSTILE, ids=hex)
@pytest.mark.parametrize("sink", [_os_size, _os_index, _os_kcore], ids=lambda f: f.__name__[1:])
def test_os_call_sinks_refuse_hostile_integers(tmp_path: Path, capsys, sink, v: int) -> None:
    sink(tmp_path, v, capsys)


# -- numpy ----------------------------------------------------------------------------------------


def _np_nr_folios(v: int) -> None:
    """memfd nr_folios -> np.frombuffer(count=): at most the records present, and a finding."""
    s = synth([SynthSession(b"s", [SynthMemfd(5, 3 * PS, [(0, 0), (1, 0)])])])
    m = luo_of(decode_clients(s.state, s.image)).sessions[0].files[0].decoded
    s.image.write(m.ser_phys + LAY.offsetof("memfd_luo_ser", "nr_folios"), v.to_bytes(8, "little"))
    reps = decode_clients(s.state, s.image)
    m2 = luo_of(reps).sessions[0].files[0].decoded
    assert m2.phys.size == PS // 16  # the one array page's records
    assert "memfd-nr-folios" in [x.code for x in check(s.state, s.image, clients=reps)]


def _np_pageset(v: int) -> None:
    """Page addresses and orders -> np.uint64 arrays and shifts: UnrepresentableError."""
    for bad in (v + (1 << 64) - (1 << 63), -(v & ((1 << 63) - 1)) - 1):  # past 2**64, negative
        with pytest.raises(UnrepresentableError, match="outside the 64-bit physical space"):
            PageSet(PS).add(bad, 0)
        with pytest.raises(UnrepresentableError):
            PageSet.from_pages(PS, [(bad, 0)])
        assert not PageSet.from_pages(PS, [(0x1000, 0)]).contains(bad, 0)
    with pytest.raises(UnrepresentableError, match="page order .* is impossible"):
        PageSet(PS).add(0x1000, v)
    with pytest.raises(UnrepresentableError, match="page order .* is impossible"):
        PageSet.from_pages(PS, [(0x1000, v)])


def _np_vmalloc(v: int) -> None:
    """kho_vmalloc total_pages / order -> sizes: VmallocError before any is used."""
    img = PhysImage([(0x20_0000, LAY.build("kho_vmalloc_chunk", dict(next=0, phys=[0x30_0000] + [0] * 510)))])
    for desc in (
        KhoVmalloc(first=0x20_0000, total_pages=v >> 32, flags=1, order=0),  # the u32 field's top half
        KhoVmalloc(first=0x20_0000, total_pages=1, flags=1, order=v >> 56),  # the u8 order: 128 or 255
        KhoVmalloc(first=v & ~0xFFF, total_pages=1, flags=1, order=0),
    ):
        with pytest.raises(KhoFormatError):
            read_vmalloc(img, desc, LAY)


def _np_kdump(v: int) -> None:
    """kdump header fields -> np.frombuffer(offset=, count=): ImageError."""
    from test_hostile_dumps import plain_kdump, put

    from kho_formats.memory.kdump import KdumpFile

    base = plain_kdump()
    from kho_formats.abi.struct import field_offsets
    from kho_formats.memory.kdump import kdump_structs

    ks = kdump_structs("little")
    offs, sub = field_offsets(ks.header), field_offsets(ks.sub_header)
    bs = ks.header.parse(bytes(base[:464])).block_size
    # the 32-bit fields get v's top half (0x80000000: negative, or 0xffffffff); max_mapnr_64
    # (what header_version 6 uses instead of max_mapnr) the whole value
    for at, width, val in (
        (offs["sub_hdr_size"], 4, v >> 32),
        (offs["bitmap_blocks"], 4, v >> 32),
        (bs + sub["max_mapnr_64"], 8, v),
    ):
        b = bytearray(base)
        put(b, at, width, val)
        with pytest.raises(KhoFormatError):
            KdumpFile(bytes(b), "d.kdump")


@pytest.mark.parametrize("v", HOSTILE, ids=hex)
@pytest.mark.parametrize("sink", [_np_nr_folios, _np_pageset, _np_vmalloc, _np_kdump], ids=lambda f: f.__name__[1:])
def test_numpy_sinks_refuse_hostile_integers(sink, v: int) -> None:
    sink(v)


# -- range() ----------------------------------------------------------------------------------------


def _range_block_count(v: int) -> None:
    """kho_block_header_ser.count -> range(count): the session's file blocks are refused."""
    s = synth([SynthSession(b"s", [SynthMemfd(5, PS, [(0, 0)])])])
    luo = luo_of(decode_clients(s.state, s.image))
    blk = luo.sessions[0].blocks[0].phys
    s.image.write(blk + LAY.offsetof("kho_block_header_ser", "count"), v.to_bytes(8, "little"))
    reps = decode_clients(s.state, s.image)
    luo2 = luo_of(reps)
    assert luo2.sessions[0].error is not None and not luo2.sessions[0].files
    assert "luo-file-blocks" in [x.code for x in check(s.state, s.image, clients=reps)]


def _range_session_blocks(v: int) -> None:
    """The session block's count: the LUO client reports a typed error."""
    s = synth([SynthSession(b"s", [SynthMemfd(5, PS, [(0, 0)])])])
    luo = luo_of(decode_clients(s.state, s.image))
    blk = luo.session_blocks[0].phys
    s.image.write(blk + LAY.offsetof("kho_block_header_ser", "count"), v.to_bytes(8, "little"))
    rep = decode_clients(s.state, s.image)["LUO"]
    assert isinstance(rep.error, KhoFormatError)


def _range_flb_count(v: int) -> None:
    """luo_flb_header_ser.count -> range(): at most the page's capacity, and a finding."""
    s = synth([SynthSession(b"s", [SynthMemfd(5, PS, [(0, 0)])])], flbs=[("f", 0, 1)])
    luo = luo_of(decode_clients(s.state, s.image))
    s.image.write(luo.ser.flbs_pa + LAY.offsetof("luo_flb_header_ser", "count"), v.to_bytes(8, "little"))
    reps = decode_clients(s.state, s.image)
    assert len(luo_of(reps).flbs) == luo_of(reps).flb_capacity
    assert "luo-flb-count" in [x.code for x in check(s.state, s.image, clients=reps)]


def _range_contents(v: int) -> None:
    """memfd size -> range(0, n, CHUNK) of the contents: clipped at what the folios hold."""
    s = synth([SynthSession(b"s", [SynthMemfd(5, 3 * PS, [(0, 0), (1, 0)])])])
    f = luo_of(decode_clients(s.state, s.image)).sessions[0].files[0]
    s.image.write(f.decoded.ser_phys + LAY.offsetof("memfd_luo_ser", "size"), v.to_bytes(8, "little"))
    f = luo_of(decode_clients(s.state, s.image)).sessions[0].files[0]
    got = sum(len(p) for _, p in f.handler.contents(f.decoded, s.image, PS))
    assert got == 2 * PS


@pytest.mark.parametrize("v", HOSTILE, ids=hex)
@pytest.mark.parametrize(
    "sink",
    [_range_block_count, _range_session_blocks, _range_flb_count, _range_contents],
    ids=lambda f: f.__name__[1:],
)
def test_range_sinks_refuse_hostile_integers(sink, v: int) -> None:
    sink(v)


def test_pageset_order_and_address_errors_name_what_was_expected() -> None:
    """The largest order that fits the 64-bit space is accepted, one more is not."""
    ps = PageSet(PS)
    ps.add(0, 51)
    assert ps.orders == [51]
    with pytest.raises(UnrepresentableError, match=r"expected 0 \.\. 51"):
        PageSet(PS).add(0, 52)
    with pytest.raises(UnrepresentableError, match=r"page address 18446744073709551616 is outside"):
        PageSet(PS).add(1 << 64, 0)
