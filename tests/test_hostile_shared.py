"""Issue 21 item 4: structures two owners claim are ``check`` errors, with
what Linux 7.3's restore code does with them (kernel/liveupdate/kho_block.c,
luo_file.c, mm/memfd_luo.c): one file-block chain in two sessions, one
``memfd_luo_ser`` in two files, one folio in two memfds."""

from __future__ import annotations

from _luo import SynthMemfd, SynthSession, luo_of, synth

from kho_formats.abi.layout import layout, memfd_folio_word
from kho_formats.model.clients import decode_clients
from kho_formats.ops.check import check

PS = 4096
LAY = layout(PS, "little")


def two_sessions():
    s = synth(
        [
            SynthSession(b"a", [SynthMemfd(1, 2 * PS, [(0, 0), (1, 0)])]),
            SynthSession(b"b", [SynthMemfd(2, 2 * PS, [(0, 0), (1, 0)])]),
        ]
    )
    return s, luo_of(decode_clients(s.state, s.image))


def findings(s, code: str):
    reps = decode_clients(s.state, s.image)
    return [f for f in check(s.state, s.image, clients=reps) if f.code == code]


def test_unshared_sessions_have_no_sharing_findings() -> None:
    s, _ = two_sessions()
    for code in ("luo-file-blocks-shared", "luo-file-data-shared", "memfd-folio-shared"):
        assert findings(s, code) == []


def test_one_file_block_chain_in_two_sessions() -> None:
    s, luo = two_sessions()
    a, b = luo.sessions
    s.image.write(b.entry_phys + LAY.offsetof("luo_session_ser", "files"), a.ser.files.to_bytes(8, "little"))
    got = findings(s, "luo-file-blocks-shared")
    assert len(got) == 1 and got[0].severity == "error" and got[0].phys == a.ser.files
    assert "sessions 'a' and 'b'" in got[0].message and "frees the block twice" in got[0].message


def test_one_memfd_luo_ser_in_two_files() -> None:
    s, luo = two_sessions()
    fa, fb = luo.sessions[0].files[0], luo.sessions[1].files[0]
    s.image.write(fb.entry_phys + LAY.offsetof("luo_file_ser", "data"), fa.data.to_bytes(8, "little"))
    got = findings(s, "luo-file-data-shared")
    assert len(got) == 1 and got[0].phys == fa.data
    assert "session 'b' file 0x2 has the data (memfd_luo_ser) of session 'a' file 0x1" in got[0].message
    assert "frees it again" in got[0].message
    assert findings(s, "memfd-folio-shared") == []  # the same file twice: reported once, as shared data


def test_one_folio_in_two_memfds() -> None:
    s, luo = two_sessions()
    ma, mb = luo.sessions[0].files[0].decoded, luo.sessions[1].files[0].decoded
    folio = int(ma.phys[1])
    rec = int(mb.area.page_addresses(PS)[0])  # memfd b's record 0 names memfd a's folio 1
    s.image.write(rec, memfd_folio_word(folio >> 12, 3, "little").to_bytes(8, "little"))
    got = findings(s, "memfd-folio-shared")
    assert len(got) == 1 and got[0].phys == folio
    assert "session 'a' file 0x1 and by session 'b' file 0x2" in got[0].message
    assert "memfd_luo_retrieve_folios fails with -EIO" in got[0].message
