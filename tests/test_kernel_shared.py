"""Kernel in the loop, issue 21 item 4: structures two owners claim, booted
on the arm64 Linux 7.3 LUO kernel (negative controls for ``kho check``'s
``memfd-folio-shared``, ``luo-file-data-shared`` and ``luo-file-blocks-shared``).

One ``memfd_luo_ser`` in two files, or one file-block chain in two sessions:
``memfd_luo_retrieve`` frees the ser after the first file
(``kho_restore_free``), so the second reads freed memory and gets back an
empty file without an error, while the kernel warns at
``kho_restore_page`` and ``kho_restore_free`` (the double free).

One folio listed by two memfds: session "vm-b"'s sparse memfd (token 1)
names, in its record 0, the first folio of session "vm-a"'s memfd 0x1001.
The kernel restores the folio for the file retrieved first and refuses the
second restore, so that file's retrieve fails (``memfd_luo: Unable to restore
folio at physical address``); ``kho check`` says so before any boot.

Run with ``python -m pytest -m kernel``; skipped, naming what is missing,
without the LUO kernel Image, QEMU or the cross compiler (``tests/_kernel.py``).
"""

from __future__ import annotations

import dataclasses

import pytest
from _kernel import boot_fixture, kernel_for, kernel_params, show
from _luo import kernel_luo_spec_dict

from kho_formats.abi.layout import layout, memfd_folio_word
from kho_formats.model.clients import decode_clients
from kho_formats.model.clients.luo import boot as luo_boot
from kho_formats.model.spec import build_spec, spec_from_dict
from kho_formats.ops.check import check

pytestmark = [pytest.mark.kernel, pytest.mark.parametrize("ps", kernel_params(luo=True, sizes=(4096,)))]


def test_one_folio_in_two_memfds_second_restore_refused(tmp_path, ps):
    fx = build_spec(spec_from_dict(kernel_luo_spec_dict(ps), source=f"kernel-luo-{ps // 1024}k"))
    st = decode_clients(fx.state, fx.image)["LUO"].decoded
    files = {(s.name, f.token): f.decoded for s in st.sessions for f in s.files}
    a, b = files[("vm-a", 0x1001)], files[("vm-b", 1)]
    folio = int(a.phys[0])
    image = fx.image.copy()
    rec = int(b.area.page_addresses(ps)[0])
    image.write(rec, memfd_folio_word(folio >> layout(ps).page_shift, 3, "little").to_bytes(8, "little"))
    shared = dataclasses.replace(fx, image=image)
    found = [f for f in check(shared.state, image) if f.code == "memfd-folio-shared"]
    assert len(found) == 1 and found[0].phys == folio and found[0].severity == "error"
    r = boot_fixture(shared, tmp_path, "folio-shared", kernel_for(ps, luo=True), timeout=60)
    assert r.verdict == "rejected", show(r)
    # kho_restore_page's magic check (the first restore cleared it), then memfd_luo gives up on that file
    assert any("WARNING: kernel/liveupdate/kexec_handover.c:529 at kho_restore_page" in l for l in r.kho_lines), show(r)
    assert f"memfd_luo: Unable to restore folio at physical address: {folio:x}" in r.kho_lines, show(r)
    out = luo_boot.parse_check_output(r.log.splitlines())
    failed = [k for k, kv in out.files.items() if "err" in kv]
    # luo_check retrieves "vm-a" first: its 0x1001 gets the folio, "vm-b"'s memfd fails
    assert failed == [("vm-b", 1)], out.files
    assert "err" not in out.files[("vm-a", 0x1001)]


def _patched(ps: int, edit):
    fx = build_spec(spec_from_dict(kernel_luo_spec_dict(ps), source=f"kernel-luo-{ps // 1024}k"))
    st = decode_clients(fx.state, fx.image)["LUO"].decoded
    image = fx.image.copy()
    edit(image, {s.name: s for s in st.sessions}, layout(ps))
    return dataclasses.replace(fx, image=image)


def _double_free_seen(r) -> bool:
    return any("WARNING: kernel/liveupdate/kexec_handover.c:1613 at kho_restore_free" in l for l in r.kho_lines)


def test_one_memfd_luo_ser_in_two_files_is_read_after_free(tmp_path, ps):
    def edit(image, ses, lay):
        fa = next(f for f in ses["vm-a"].files if f.token == 0x1001)
        fb = ses["vm-b"].files[0]
        image.write(fb.entry_phys + lay.offsetof("luo_file_ser", "data"), fa.data.to_bytes(8, "little"))

    fx = _patched(ps, edit)
    assert [f.code for f in check(fx.state, fx.image) if f.code == "luo-file-data-shared"] == ["luo-file-data-shared"]
    r = boot_fixture(fx, tmp_path, "data-shared", kernel_for(ps, luo=True), timeout=60)
    assert r.verdict == "rejected", show(r)
    assert _double_free_seen(r), show(r)
    # the second file comes back empty, and RETRIEVE_FD does not fail
    assert "LUO session 'vm-b' file token 0x1: size 0 != fixture 12388" in r.reason, show(r)
    out = luo_boot.parse_check_output(r.log.splitlines())
    assert "err" not in out.files[("vm-b", 1)] and "err" not in out.files[("vm-a", 0x1001)]


def test_one_file_block_chain_in_two_sessions_is_read_after_free(tmp_path, ps):
    def edit(image, ses, lay):
        a, b = ses["vm-a"], ses["vm-b"]
        image.write(b.entry_phys + lay.offsetof("luo_session_ser", "files"), a.ser.files.to_bytes(8, "little"))
        image.write(b.entry_phys + lay.offsetof("luo_session_ser", "count"), a.ser.count.to_bytes(8, "little"))

    fx = _patched(ps, edit)
    assert "luo-file-blocks-shared" in [f.code for f in check(fx.state, fx.image)]
    r = boot_fixture(fx, tmp_path, "blocks-shared", kernel_for(ps, luo=True), timeout=60)
    assert r.verdict == "rejected", show(r)
    assert _double_free_seen(r), show(r)
    assert "LUO session 'vm-b' file token 0x1001: size 0 != fixture 12388" in r.reason, show(r)
