"""``kho check`` of untrusted LUO state: every rule, on a patched copy of the
real capture, fails with a typed error or a finding naming the address;
hostile sizes and chains stay bounded."""

from __future__ import annotations

import time

import pytest
from _luo import LUO_CAP, TRUTH, h, load_luo

from kho_formats.abi.layout import layout, memfd_folio_word
from kho_formats.errors import BlockError
from kho_formats.findings import ERROR, Finding
from kho_formats.limits import Limits
from kho_formats.memory.image import PhysImage
from kho_formats.ops.check import check

LAY = layout()
LUO_PA = h(TRUTH["luo_ser"]["phys"])
SBLOCK = h(TRUTH["session_blocks"][0]["phys"])
SENTRY = h(TRUTH["sessions"][0]["entry_phys"])
FBLOCK = h(TRUTH["sessions"][0]["file_blocks"][0]["phys"])
F1 = TRUTH["sessions"][0]["files"][1]  # token 0x1001: four order-0 folios
F2 = TRUTH["sessions"][0]["files"][2]  # token ~0: one order-4 folio
SER1, SER2 = h(F1["memfd"]["ser_phys"]), h(F2["memfd"]["ser_phys"])
REC1 = h(F1["memfd"]["folios_vmalloc"]["data_pages"][0])
REC2 = h(F2["memfd"]["folios_vmalloc"]["data_pages"][0])
FLB = h(TRUTH["flbs"]["phys"])


def u64(v: int) -> bytes:
    return v.to_bytes(8, "little")


def patched(*edits: tuple[int, bytes]) -> tuple[list[Finding], PhysImage]:
    """``kho check`` of the capture with ``edits`` written into a copy of its image."""
    img = _patched_image(*edits)
    _, st, reps = load_luo(img)
    return check(st, img, clients=reps), img


def errors(fs: list[Finding]) -> list[tuple[str, int | None]]:
    return [(f.code, f.phys) for f in fs if f.severity == ERROR]


def off(struct: str, field: str) -> int:
    return LAY.offsetof(struct, field)


def test_clean() -> None:
    fs, _ = patched()
    assert errors(fs) == []


@pytest.mark.parametrize(
    ("edits", "want"),
    [
        # block count above capacity (51 session entries, 63 file entries at 4 KiB)
        ([(SBLOCK + 8, u64(52))], ("client", SBLOCK)),
        ([(FBLOCK + 8, u64(64))], ("luo-file-blocks", FBLOCK)),
        # block chain cycles
        ([(SBLOCK, u64(SBLOCK))], ("client", SBLOCK)),
        ([(FBLOCK, u64(FBLOCK))], ("luo-file-blocks", FBLOCK)),
        # pointers outside the image
        ([(LUO_PA + off("luo_ser", "sessions_pa"), u64(0x7000_0000))], ("client", 0x7000_0000)),
        ([(SENTRY + off("luo_session_ser", "files"), u64(0x7000_0000))], ("luo-file-blocks", 0x7000_0000)),
        ([(SBLOCK, u64(0x7000_0000))], ("client", 0x7000_0000)),
        ([(h(F1["entry_phys"]) + off("luo_file_ser", "data"), u64(0x7000_0000))], ("luo-file-data", 0x7000_0000)),
        ([(LUO_PA + off("luo_ser", "flbs_pa"), u64(0x7000_0000))], ("luo-flb-page", 0x7000_0000)),
        # session/file counts that disagree
        ([(SENTRY + off("luo_session_ser", "count"), u64(5))], ("luo-file-count", SENTRY)),
        ([(FBLOCK + 8, u64(2))], ("luo-file-count", SENTRY)),
        # a block with no entries
        ([(FBLOCK + 8, u64(0))], ("luo-block-empty", FBLOCK)),
        # unknown luo_ser compatible
        ([(LUO_PA, b"luo-v9\0\0")], ("luo-compatible", LUO_PA)),
        ([(LUO_PA, b"luo-v5xy")], ("luo-name-unterminated", LUO_PA)),
        # names without NUL
        ([(SENTRY, b"A" * 64)], ("luo-name-unterminated", SENTRY)),
        ([(h(F1["entry_phys"]), b"m" * 48)], ("luo-name-unterminated", h(F1["entry_phys"]))),
        ([(FLB + 16, b"f" * 48)], ("luo-name-unterminated", FLB + 16)),
        # duplicate tokens / session names
        ([(h(F2["entry_phys"]) + off("luo_file_ser", "token"), u64(0x1001))], ("luo-token-duplicate", SENTRY)),
        # memfd nr_folios vs records (the array page holds 256 records)
        ([(SER1 + off("memfd_luo_ser", "nr_folios"), u64(257))], ("memfd-nr-folios", SER1)),
        # folio not preserved in the memory map
        ([(REC1 + 16, u64(memfd_folio_word(0x5000, 3, "little")))], ("memfd-folio-not-preserved", 0x5000 << 12)),
        # preserved at an order that does not cover an aligned index range
        ([(REC2 + 8, u64(3))], ("memfd-folio-order", h(F2["memfd"]["folios"][0]["phys"]))),
        # overlapping folio indexes
        ([(REC1 + 16 + 8, u64(0))], ("memfd-folio-overlap", h(F1["memfd"]["folios"][1]["phys"]))),
        ([(REC1 + 16, u64(memfd_folio_word(0x15D4, 3, "little")))], ("memfd-folio-duplicate", 0x15D4000)),
        # folios past size
        ([(REC1 + 3 * 16 + 8, u64(100))], ("memfd-folio-past-size", h(F1["memfd"]["folios"][3]["phys"]))),
        ([(SER2 + off("memfd_luo_ser", "size"), u64(0))], ("memfd-folio-past-size", None)),
        ([(SER2 + off("memfd_luo_ser", "size"), u64(1 << 63))], ("memfd-size", SER2)),
        # seals the ABI does not know
        ([(SER1 + off("memfd_luo_ser", "seals"), (0x40).to_bytes(4, "little"))], ("memfd-seals", SER1)),
        # FLB count above the page's capacity (63 at 4 KiB)
        ([(FLB + 8, u64(64))], ("luo-flb-count", FLB)),
        # FLB count 0: never written by a kernel (the capture's three files hold one reference each)
        ([(FLB + 16 + 64 + off("luo_flb_ser", "count"), u64(0))], ("luo-flb-refs", FLB + 16 + 64)),
    ],
)
def test_rule(edits: list[tuple[int, bytes]], want: tuple[str, int | None]) -> None:
    fs, _ = patched(*edits)
    got = errors(fs)
    code, phys = want
    if phys is None:
        assert code in [c for c, _ in got], got
    else:
        assert want in got, got


def test_past_size_names_the_folio() -> None:
    # size 0: the order-4 folio at index 0 starts past the end of the file
    fs, _ = patched((SER2 + off("memfd_luo_ser", "size"), u64(0)))
    assert ("memfd-folio-past-size", h(F2["memfd"]["folios"][0]["phys"])) in errors(fs)


def test_unpreserved_luo_pages_are_reported() -> None:
    _, st, reps = load_luo()
    # drop the session block and a memfd_luo_ser from the preserved set
    from kho_formats.memory.pageset import PageSet

    keep = [(p, o) for p, o in st.preserved.iter_pages() if p not in (SBLOCK, SER1)]
    st.preserved = PageSet.from_pages(4096, keep)
    got = [(f.code, f.phys) for f in check(st, load_luo()[0].image, clients=reps) if f.severity == ERROR]
    assert ("luo-page-not-preserved", SBLOCK) in got and ("luo-page-not-preserved", SER1) in got


def test_typed_error_names_the_block() -> None:
    _, _, reps = load_luo(_patched_image((SBLOCK, u64(SBLOCK))))
    err = reps["LUO"].error
    assert isinstance(err, BlockError) and err.phys == SBLOCK and "loops" in str(err)


def _patched_image(*edits: tuple[int, bytes]) -> PhysImage:
    from kho_formats.ops.capture import load_capture

    img = load_capture(LUO_CAP).image
    assert img is not None
    img = img.copy()
    for phys, data in edits:
        img.write(phys, data)
    return img


@pytest.mark.parametrize(
    "edits",
    [
        [(SBLOCK + 8, u64(1 << 63))],
        [(FBLOCK + 8, u64(1 << 63))],
        [(SENTRY + off("luo_session_ser", "count"), u64(1 << 63))],
        [(SER1 + off("memfd_luo_ser", "nr_folios"), u64(1 << 63))],
        [
            (
                SER1 + off("memfd_luo_ser", "folios") + off("kho_vmalloc", "total_pages"),
                (0xFFFFFFFF).to_bytes(4, "little"),
            )
        ],
        [(SER1 + off("memfd_luo_ser", "size"), u64((1 << 64) - 1))],
        [(FLB + 8, u64(1 << 63)), (FLB, u64(1 << 63))],
        [(SBLOCK, u64(FBLOCK)), (FBLOCK, u64(SBLOCK))],
    ],
)
def test_bounded(edits: list[tuple[int, bytes]]) -> None:
    t = time.perf_counter()
    fs, _ = patched(*edits)
    assert errors(fs)
    assert time.perf_counter() - t < 2.0


def test_limits_apply() -> None:
    _, st, _ = load_luo()
    from kho_formats.limits import Budget
    from kho_formats.model.clients import decode_clients

    reps = decode_clients(st, load_luo()[0].image, budget=Budget(Limits(max_entries=20)))
    # the kho_test folios and LUO entries together exceed 20 entries: a typed limit error, named
    errs = [r.error for r in reps.values() if r.error is not None]
    assert errs and all(e.kind == "limit" for e in errs)


def test_duplicate_session_names() -> None:
    from _luo import SynthMemfd, SynthSession, synth

    from kho_formats.model.clients import decode_clients
    from kho_formats.ops.check import _client_findings

    sy = synth([SynthSession(b"dup", [SynthMemfd(1, 0)]), SynthSession(b"dup", [SynthMemfd(2, 0)])])
    reps = decode_clients(sy.state, sy.image)
    got = [(f.code, f.phys) for f in _client_findings(sy.state, reps["LUO"]) if f.severity == ERROR]
    assert got == [("luo-session-duplicate", reps["LUO"].decoded.sessions[0].entry_phys)]


@pytest.mark.parametrize(
    ("entry", "name", "count", "want"),
    [
        (0, None, 3, None),  # as the kernel wrote it: 3 files, 3 references each
        (0, None, 4, "never reaches 0"),  # more references than files: finish() never runs
        (1, None, 2, "underflows"),  # a test FLB (attached to every handler) held by fewer than all files
        (1, b"some-driver-flb\0", 2, None),  # another FLB: which files use it is not in the bytes
    ],
)
def test_flb_references(entry: int, name: bytes | None, count: int, want: str | None) -> None:
    at = FLB + 16 + 64 * entry
    edits = [(at + off("luo_flb_ser", "count"), u64(count))]
    if name:
        edits.append((at, name.ljust(48, b"\0")))
    fs, _ = patched(*edits)
    got = [f for f in fs if f.code == "luo-flb-refs"]
    assert not [f for f in fs if f.severity == ERROR], fs
    if want is None:
        assert got == [], got
    else:
        assert [(f.severity, f.phys) for f in got] == [("warning", at)] and want in got[0].message, got
