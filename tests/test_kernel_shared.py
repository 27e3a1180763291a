"""Kernel in the loop, issue 21 item 4: a structure two owners claim, booted
on the arm64 Linux 7.3 LUO kernel (negative control for ``kho check``'s
``memfd-folio-shared``).

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
