"""Issue 21 items 1 and 2: work bounded by the bytes present, typed errors
for every size field.

A memfd's ``size`` is a field: digests take holes in closed form (FNV-1a)
or compare by runs (``kho diff``), ``luo extract`` refuses a size no kernel
preserves before anything reaches ``os.ftruncate``, and a folio listed at
many indexes is restored (hashed, written) once, as the kernel would.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _luo import LUO_CAP, SynthMemfd, SynthSession, elf_patch, fnv1a64, luo_of, synth

from kho_formats import cli
from kho_formats.model.clients import decode_clients
from kho_formats.model.clients.digest import EXACT_HOLE_MAX, Fnv1a64, runs_digest
from kho_formats.model.clients.luo import content_digest, content_runs_digest
from kho_formats.model.clients.luo.boot import luo_truth
from kho_formats.model.clients.memfd import MAX_LFS_FILESIZE, MemfdFile, memfd_max_size
from kho_formats.ops.check import check
from kho_formats.ops.luo_extract import ExtractError, extract

ROOT = Path(__file__).resolve().parent.parent
PS = 4096


def first_memfd(st) -> tuple[object, MemfdFile]:
    for s in st.sessions:
        for f in s.files:
            if isinstance(f.decoded, MemfdFile):
                return f, f.decoded
    raise AssertionError("no memfd")


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kho: error:"), err
    assert "internal error" not in err[0]
    return err[0]


@pytest.mark.parametrize("size", [1 << 63, (1 << 64) - 1, MAX_LFS_FILESIZE, memfd_max_size(PS) + 1])
def test_luo_extract_refuses_a_size_no_kernel_preserves(tmp_path: Path, capsys, size: int) -> None:
    cap = tmp_path / "cap"
    shutil.copytree(LUO_CAP, cap)
    from _luo import load_luo

    _, _, reps = load_luo()
    _, m = first_memfd(luo_of(reps))
    elf_patch(cap / "image.elf", m.ser_phys + 8, size.to_bytes(8, "little"))  # memfd_luo_ser.size
    before = hashlib.sha256((cap / "image.elf").read_bytes()).hexdigest()
    out = tmp_path / "out"
    assert cli.main(["luo", "extract", str(cap), "-o", str(out)]) == 1
    line = one_line_error(capsys)
    assert f"phys {m.ser_phys:#x}" in line and "more than a kernel preserves" in line
    assert not out.exists()
    assert hashlib.sha256((cap / "image.elf").read_bytes()).hexdigest() == before
    # check says why: an error finding, not an exception
    assert cli.main(["check", str(cap)]) == 1
    assert "memfd-size" in capsys.readouterr().out


def test_extract_turns_an_os_refusal_into_a_typed_error(tmp_path: Path, monkeypatch) -> None:
    s = synth([SynthSession(b"s", [SynthMemfd(1, 3 * PS, [(0, 0)])])])
    luo = luo_of(decode_clients(s.state, s.image))

    def efbig(fd: int, n: int) -> None:
        raise OSError(27, "File too large")

    monkeypatch.setattr(os, "ftruncate", efbig)
    with pytest.raises(ExtractError, match=r"s/0000000000000001\.bin: cannot write 12288 bytes \(File too large\)"):
        extract(luo, s.image, tmp_path / "o", page_size=PS)


def test_fnv_holes_in_closed_form_equal_the_bytewise_digest() -> None:
    for n in (0, 1, 4095, 4096, 4097, (1 << 20) + 3):
        h = Fnv1a64()
        h.update(b"ab")
        h.update_zeros(n)
        h.update(b"c")
        assert h.value == fnv1a64([b"ab", bytes(n), b"c"])


def huge_hole_state(size: int, marker: bytes = b"") -> tuple[object, object]:
    s = synth([SynthSession(b"s", [SynthMemfd(7, size, [(0, 0), (1 << 20, 1)])])])
    if marker:
        s.image.write(first_memfd(luo_of(decode_clients(s.state, s.image)))[1].phys[0].item(), marker)
    return s, luo_of(decode_clients(s.state, s.image))


def test_boot_digest_and_diff_of_huge_holes_cost_what_the_folios_cost() -> None:
    """A 4 EiB memfd (2**62) and a 2**63 - 1 one with three pages of folios:
    the boot FNV-1a, the diff and check finish (a subprocess, so a regression
    fails instead of hanging for hours)."""
    code = r"""
import sys
sys.path.insert(0, "tests")
from test_hostile_sizes import huge_hole_state, first_memfd
from _luo import fnv1a64
from kho_formats.model.clients.luo import diff, content_digest
from kho_formats.model.clients.luo.boot import luo_truth
from kho_formats.model.clients.digest import Fnv1a64
from kho_formats.ops.check import check
from kho_formats.model.clients import decode_clients
for size in (1 << 62, (1 << 63) - 1):
    a, la = huge_hole_state(size)
    b, lb = huge_hole_state(size)
    c, lc = huge_hole_state(size, marker=b"changed")
    t = luo_truth(la, a.image, 4096)
    # the expected FNV: folio bytes where they are, zeros in closed form
    f, m = first_memfd(la)
    h = Fnv1a64()
    h.update(a.image.read(int(m.phys[0]), 4096))
    h.update_zeros((1 << 20) * 4096 - 4096)
    h.update(a.image.read(int(m.phys[1]), 8192))
    h.update_zeros(size - (1 << 20) * 4096 - 8192)
    assert t.files[0].fnv1a64 == h.value, (t.files[0], h.hexdigest())
    assert content_digest(f, a.image, 4096) is None  # no exact SHA-256 of 4 EiB of zeros
    assert diff(la, lb, (a.image, b.image), (4096, 4096))["identical"]
    d = diff(la, lc, (a.image, c.image), (4096, 4096))
    assert not d["identical"] and d["sessions"][0]["files"][0]["fields"] == ["contents"], d
    check(a.state, a.image, clients=decode_clients(a.state, a.image))
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_runs_digest_sees_bytes_not_layout() -> None:
    """A zero-filled folio and a hole compare equal; one byte more does not."""
    z = memoryview(bytes(3 * PS))
    data = memoryview(b"x" * 100 + bytes(PS - 100))
    assert runs_digest([(0, data)], 10 * PS) == runs_digest([(0, data), (PS, z)], 10 * PS)
    assert runs_digest([(0, data)], 10 * PS) != runs_digest([(0, data)], 10 * PS + 1)
    assert runs_digest([(0, data)], 10 * PS) != runs_digest([(PS, data)], 10 * PS)
    # an exact SHA-256 pads at most EXACT_HOLE_MAX bytes
    s, luo = huge_hole_state(EXACT_HOLE_MAX + (1 << 20) * PS)
    f, _ = first_memfd(luo)
    assert content_digest(f, s.image, PS) is None and content_runs_digest(f, s.image, PS) is not None


def aliased(n: int, order: int = 0):
    """A memfd whose ``n`` records all name the folio of the first one."""
    s = synth([SynthSession(b"s", [SynthMemfd(9, n * (PS << order), [(k << order, order) for k in range(n)])])])
    luo = luo_of(decode_clients(s.state, s.image))
    _, m = first_memfd(luo)
    word = s.image.read(m.area.page_addresses(PS)[0].item(), 8)
    rec = 16
    for p in m.area.page_addresses(PS).tolist():
        for off in range(0, PS, rec):
            k = (off + (m.area.page_addresses(PS).tolist().index(p)) * PS) // rec
            if 0 < k < n:
                s.image.write(p + off, word)
    return s, luo_of(decode_clients(s.state, s.image))


def test_a_folio_listed_at_256_indexes_is_restored_once(tmp_path: Path) -> None:
    s, luo = aliased(256, order=1)
    f, m = first_memfd(luo)
    assert m.phys.size == 256 and len(set(m.phys.tolist())) == 1
    pieces = list(f.handler.contents(m, s.image, PS))
    assert sum(len(p) for _, p in pieces) == 2 * PS  # once, not 256 times
    # the digest: the folio at index 0, the rest of the file a hole (the kernel fails the second restore)
    first = s.image.read(int(m.phys[0]), 2 * PS)
    t = luo_truth(luo, s.image, PS)
    assert t.files[0].fnv1a64 == fnv1a64([first, bytes(m.size - 2 * PS)])
    idx = extract(luo, s.image, tmp_path / "o", page_size=PS)
    out = tmp_path / "o" / idx["sessions"][0]["files"][0]["file"]
    assert out.read_bytes() == first + bytes(m.size - 2 * PS)
    codes = [x.code for x in check(s.state, s.image, clients=decode_clients(s.state, s.image))]
    assert codes.count("memfd-folio-duplicate") >= 1


def test_a_record_with_pfn_0_is_skipped_like_the_kernel_does() -> None:
    s = synth([SynthSession(b"s", [SynthMemfd(3, 2 * PS, [(0, 0), (1, 0)])])])
    luo = luo_of(decode_clients(s.state, s.image))
    _, m = first_memfd(luo)
    second = m.area.page_addresses(PS)[0].item() + 16
    s.image.write(second, bytes(8))  # pfn_flags 0: memfd_luo_retrieve_folios skips the record
    luo = luo_of(decode_clients(s.state, s.image))
    f, m = first_memfd(luo)
    assert [off for off, _ in f.handler.contents(m, s.image, PS)] == [0]
