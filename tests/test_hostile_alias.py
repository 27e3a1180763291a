"""Issue 21 item 1 (rest): aliased records cost what the distinct bytes cost.

* a folio array (a ``kho_vmalloc`` area) that lists one group again and
  again: ``kho_restore_vmalloc`` fails on the second listing (its pages were
  restored), so the decode reads records only from the groups before it, once,
  and ``check`` says why (``vmalloc-group-aliased``);
* many records naming folios at one index: ``luo extract`` writes each
  destination page once;
* a ``kho_test`` area listing millions of unpreserved folios: ``check``
  names the first few and counts the rest in numpy;
* a spec memfd of 1 TiB or ``MAX_LFS_FILESIZE``: refused before any folio
  object exists (traced memory, not a timer).

Memory bounds are measured with ``tracemalloc`` (numpy reports its buffers to it).
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from _luo import SynthMemfd, SynthSession, luo_of, synth
from _malformed import handover, parse

from kho_formats.abi.layout import KHO_VMALLOC_ALLOC, KhoVmalloc, layout, memfd_folio_word
from kho_formats.errors import SpecError
from kho_formats.memory.alloc import PageAllocator
from kho_formats.memory.image import PhysImage
from kho_formats.model import state as kstate
from kho_formats.model.clients import decode_clients, kho_test
from kho_formats.model.clients.luo import content_runs_digest, diff
from kho_formats.model.clients.memfd import MAX_LFS_FILESIZE, MemfdFile
from kho_formats.model.clients.vmalloc import build_vmalloc, encode_vmalloc_chunks
from kho_formats.model.fdt import build_fdt, parse_fdt, u32_bytes
from kho_formats.model.spec import build_spec, spec_from_dict
from kho_formats.ops import luo_extract
from kho_formats.ops.check import check
from kho_formats.ops.report import inspect_report

PS = 4096
LAY = layout(PS, "little")


def chunk_page(groups: list[int], nxt: int = 0) -> bytes:
    cap = LAY.kho_vmalloc_chunk_capacity
    return LAY.build("kho_vmalloc_chunk", dict(next=nxt, phys=list(groups) + [0] * (cap - len(groups))))


def first_memfd(luo) -> MemfdFile:
    for s in luo.sessions:
        for f in s.files:
            if isinstance(f.decoded, MemfdFile):
                return f.decoded
    raise AssertionError("no memfd")


def traced(fn):
    """``(fn(), peak traced bytes)``."""
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- one vmalloc group listed again and again ------------------------------------------------------

GROUP = 0x4000_0000
CHUNK = 0x3FF0_0000


def aliased_group(times: int = 511, order: int = 4, nr_folios: int = 60_000_000):
    """A memfd whose folio array lists one order-``order`` group ``times``
    times (one chunk), ``nr_folios`` claiming all of it; the group's records
    all name the file's one folio at index 0."""
    s = synth([SynthSession(b"s", [SynthMemfd(9, 4 * PS, [(0, 0)])])])
    m = first_memfd(luo_of(decode_clients(s.state, s.image)))
    rec = s.image.read(int(m.area.page_addresses(PS)[0]), 16)
    s.image.add(GROUP, rec * ((PS << order) // 16))
    s.image.add(CHUNK, chunk_page([GROUP] * times))
    desc = KhoVmalloc(first=CHUNK, total_pages=times << order, flags=KHO_VMALLOC_ALLOC, order=order)
    ser = LAY.build("memfd_luo_ser", dict(pos=0, size=4 * PS, seals=1, flags=0, nr_folios=nr_folios, folios=desc))
    s.image.write(m.ser_phys, ser)
    s.state.preserved.add(GROUP, order)
    s.state.preserved.add(CHUNK, 0)
    return s


def test_a_vmalloc_group_listed_511_times_is_read_once(tmp_path: Path) -> None:
    """511 listings of a 64 KiB group with nr_folios 60 M: without the fix the
    decode joins 32 MiB of records and expands 2 M of them (over 100 MiB
    traced); with it, one group (4096 records) in a few MiB, and every
    consumer (check, inspect, extract, diff) stays there."""
    s = aliased_group()

    def work():
        reps = decode_clients(s.state, s.image)
        luo = luo_of(reps)
        findings = check(s.state, s.image, clients=reps)
        rep = inspect_report(s.state, s.image, reps)
        idx = luo_extract.extract(luo, s.image, tmp_path / "o", page_size=PS)
        d = diff(luo, luo, (s.image, s.image), (PS, PS))
        return luo, findings, rep, idx, d

    (luo, findings, rep, idx, d), peak = traced(work)
    assert peak < 16 << 20, peak
    m = first_memfd(luo)
    assert m.area.groups.size == 511 and m.area.restorable == 1 and m.area.repeated == 510
    assert m.phys.size == (PS << 4) // 16  # the one group's records, once
    al = [f for f in findings if f.code == "vmalloc-group-aliased"]
    assert len(al) == 1 and al[0].severity == "error" and al[0].phys == CHUNK
    assert f"group {GROUP:#x} is listed again at entry 1" in al[0].message
    assert "kho_restore_vmalloc fails" in al[0].message and "memfd folio array" in al[0].message
    nr = [f for f in findings if f.code == "memfd-nr-folios"]
    assert nr and "before the first repeated one" in nr[0].message
    assert d["identical"]
    assert (tmp_path / "o" / idx["sessions"][0]["files"][0]["file"]).stat().st_size == 4 * PS
    assert rep["luo"] is not None or rep  # inspect finished


def test_a_chunk_page_inside_a_group_is_aliasing_too() -> None:
    """The chunk that lists a group lies inside it: the kernel restores the
    group, then fails on the chunk page."""
    from kho_formats.model.clients.vmalloc import read_vmalloc

    img = PhysImage()
    g = 0x20_0000  # an order-1 group holding the chunk in its second page
    img.add(g, bytes(PS) + chunk_page([g]))
    desc = KhoVmalloc(first=g + PS, total_pages=2, flags=KHO_VMALLOC_ALLOC, order=1)
    area = read_vmalloc(img, desc, LAY, where="t")
    assert area.restorable == 0 and area.restored_nr_pages == 0
    assert f"kho_vmalloc_chunk page {g + PS:#x} lies in group {g:#x}" in (area.alias_reason or "")


def test_kernel_order_restore_prefix_is_what_is_read() -> None:
    """Groups A, B, A: the kernel restores A and B, then fails on A again; the
    records of A and B are read, once each."""
    s = synth([SynthSession(b"s", [SynthMemfd(9, 600 * PS, [(k, 0) for k in range(300)])])])
    m = first_memfd(luo_of(decode_clients(s.state, s.image)))
    a, b = m.area.groups.tolist()
    s.image.add(CHUNK, chunk_page([a, b, a]))
    s.state.preserved.add(CHUNK, 0)
    desc = KhoVmalloc(first=CHUNK, total_pages=3, flags=KHO_VMALLOC_ALLOC, order=0)
    ser = LAY.build("memfd_luo_ser", dict(pos=0, size=600 * PS, seals=1, flags=0, nr_folios=300, folios=desc))
    s.image.write(m.ser_phys, ser)
    reps = decode_clients(s.state, s.image)
    m2 = first_memfd(luo_of(reps))
    assert m2.area.restorable == 2 and m2.phys.size == 300
    assert np.array_equal(m2.index, m.index)
    codes = [f.code for f in check(s.state, s.image, clients=reps)]
    assert "vmalloc-group-aliased" in codes and "memfd-nr-folios" not in codes


# -- many records, one destination -------------------------------------------------------------------


def test_luo_extract_writes_each_destination_page_once(tmp_path: Path, monkeypatch) -> None:
    """130 k records of distinct folios (one 4 KiB page, aliased in the image)
    all at index 0 of a 1-page file: one page is written, from the first record
    (the kernel adds it to the page cache; shmem_add_to_page_cache refuses the
    rest with -EEXIST)."""
    n = 130_000
    s = synth([SynthSession(b"s", [SynthMemfd(9, PS, [(0, 0)])])])
    m = first_memfd(luo_of(decode_clients(s.state, s.image)))
    base = 0x1_0000_0000
    body = memoryview(b"\x5a" * PS)
    for k in range(n):
        s.image.add(base + k * PS, body)
    first = b"\x11" * PS
    s.image.write(base, first)
    words = memfd_folio_word((np.arange(n, dtype=np.uint64) + np.uint64(base >> 12)), 3, "little")
    recs = np.zeros(n, dtype=[("w", "<u8"), ("i", "<u8")])
    recs["w"] = words
    raw = recs.tobytes()
    npages = -(-len(raw) // PS)
    raw = raw.ljust(npages * PS, b"\0")
    arr = 0x8000_0000
    for i in range(npages):
        s.image.add(arr + i * PS, raw[i * PS : (i + 1) * PS])
    nch = npages // LAY.kho_vmalloc_chunk_capacity + 1
    chunks = [0x9000_0000 + i * PS for i in range(nch)]
    for c, data in encode_vmalloc_chunks([arr + i * PS for i in range(npages)], chunks, LAY):
        s.image.add(c, data)
    desc = KhoVmalloc(first=chunks[0], total_pages=npages, flags=KHO_VMALLOC_ALLOC, order=0)
    s.image.write(
        m.ser_phys, LAY.build("memfd_luo_ser", dict(pos=0, size=PS, seals=1, flags=0, nr_folios=n, folios=desc))
    )
    luo = luo_of(decode_clients(s.state, s.image))
    assert first_memfd(luo).phys.size == n
    written = [0]
    real = os.pwrite

    def counting(fd: int, data, off: int) -> int:
        written[0] += len(data)
        return real(fd, data, off)

    monkeypatch.setattr(luo_extract.os, "pwrite", counting)
    idx = luo_extract.extract(luo, s.image, tmp_path / "o", page_size=PS)
    assert written[0] == PS
    assert (tmp_path / "o" / idx["sessions"][0]["files"][0]["file"]).read_bytes() == first
    f = luo.sessions[0].files[0]
    assert content_runs_digest(f, s.image, PS) is not None


# -- kho check on a kho_test area of 1.5 Mi unpreserved folios ---------------------------------------


def kho_test_many(n: int):
    alloc = PageAllocator([(0x2000_0000, 0x1000_0000)], PS)
    kt = kho_test.encode([(0x3000_0000, 0, b"\1" * PS)], LAY, alloc, csum=0x1234)
    info = (np.arange(n, dtype=np.uint64) * np.uint64(PS) + np.uint64(0x1_0000_0000)).tobytes()
    npages = -(-len(info) // PS)
    info = info.ljust(npages * PS, b"\0")
    groups = [alloc.alloc(what="folios_info page") for _ in range(npages)]
    segs = list(kt.segments) + [(g, info[i * PS : (i + 1) * PS]) for i, g in enumerate(groups)]
    desc, chunks, vpres = build_vmalloc(groups, 0, LAY, alloc, flags=KHO_VMALLOC_ALLOC)
    segs += chunks
    root = parse_fdt(kt.fdt).root
    root.child("data").set("nr_folios", u32_bytes(n, "little"))
    root.child("data").set("folios_info", LAY.kho_vmalloc.build(desc))
    fdt = build_fdt(root, style="sequential-write")
    segs = [(p, fdt.ljust(len(d), b"\0") if p == kt.fdt_phys else d) for p, d in segs]
    sb = kstate.SubBlob("kho_test", kt.fdt_phys, len(fdt), fdt, "blob-size")
    pres = kt.preserve
    pres.update(vpres)
    return handover("kho-v4", list(pres.iter_pages()), subblobs=[sb], image=PhysImage(segs))


def test_check_of_a_kho_test_area_of_unpreserved_folios_counts_the_rest() -> None:
    """1.5 Mi folios (12 MiB of folios_info), none preserved: the first 64 are
    named and one finding counts the rest; the decode problems and findings
    are a few dozen objects, not 1.5 M (the per-folio loop traced over 300 MiB)."""
    n = 3 << 19
    b = kho_test_many(n)
    st = parse(b)

    def work():
        reps = decode_clients(st, b.image)
        return check(st, b.image, clients=reps)

    findings, peak = traced(work)
    fp = [f for f in findings if f.code == "folio-not-preserved"]
    assert len(fp) == 65
    assert fp[-1].message.startswith(f"... and {n - 64} more kho_test folios")
    assert fp[0].phys == 0x1_0000_0000
    # the folio list itself (phys/order, as tuples for the API) is the floor: about 150 bytes a folio
    assert peak < 200 * n, peak


def test_kho_test_misaligned_folios_are_counted_not_listed() -> None:
    n = 10_000
    b = kho_test_many(n)
    st = parse(b)
    # the first page's folios claim order 1: those at an odd page (half of 512) are misaligned
    kt = decode_clients(st, b.image)["kho_test"].decoded
    info_page = kt.area.groups[0].item()
    vals = np.frombuffer(b.image.read(info_page, PS), dtype="<u8") | np.uint64(1)
    b.image.write(info_page, (vals + np.uint64(PS)).tobytes())
    kt = decode_clients(st, b.image)["kho_test"].decoded
    assert len(kt.problems) == 65 and kt.problems[-1].startswith(f"... and {PS // 8 // 2 - 64} more folios not aligned")
    assert PS // 8 // 2 - 64 == 192


# -- a spec memfd of 1 TiB or MAX_LFS_FILESIZE ---------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "alloc", "match"),
    [
        (1 << 40, "64M", "more than the .* bytes of the alloc regions"),
        (1 << 40, "2T", "at most 2097152 folios per file"),
        (MAX_LFS_FILESIZE, "64M", "more than the .* bytes of the alloc regions"),
        (MAX_LFS_FILESIZE, (1 << 64) - (64 << 20), "UINT_MAX pages"),
    ],
)
def test_spec_folio_demand_is_refused_before_any_folio_exists(size: int, alloc: str | int, match: str) -> None:
    d = {
        "version": "kho-v4",
        "seed": 5,
        "alloc": [{"start": "64M", "size": alloc}],
        "blob": [{"name": "LUO", "sessions": [{"name": "big", "files": [{"token": 1, "size": size}]}]}],
    }

    def work():
        with pytest.raises(SpecError, match=match):
            build_spec(spec_from_dict(d, name="t"))

    _, peak = traced(work)
    # 268 M folio objects (the 1 TiB file at order 0) would be tens of GiB; the refusal is a few MiB at most
    assert peak < 8 << 20, peak
