"""The root FDT our writer lays out against the one a real Linux 7.3.4 kernel shows
(issue 13, "Kernel-identical bytes"): boot the x86_64 live-capture kernel in QEMU
(``scripts/live/run.py``), read its root FDT from debugfs (``kho/out/fdt``) and from
memory (``kho capture``), and rebuild it from the parsed handover with the history
left to ``auto``.

Which histories a 7.3 kernel can reach from its command line: ``kho_init()`` always
adds ``kexec-metadata`` right after writing the root FDT, so a 7.3 root FDT is always
packed (reserve map at 0x28); "no sub-tree ever added" only existed before 7.3 (kho-v2,
kho-v3 kernels booted with ``kho=on`` and no client). ``initcall_blacklist=kho_test_init``
without ``liveupdate=on`` or ``reserve_mem=`` leaves ``kexec-metadata`` the only
sub-tree; the default run adds ``kho_test`` and ``LUO`` too, and ``reserve_mem=``
adds ``memblock``. No built-in client removes a sub-tree on a normal boot
(``kho_remove_subtree`` is only called by ``test_kho``'s module exit and memblock's
error path), so "added then removed" is checked against the real libfdt instead
(``tests/test_fdt_history.py``).

Skipped (with the reason) when the kernel or qemu-system-x86_64 is missing, or with
``KHO_BOOT_TESTS=0``. About 30 s a boot here (QEMU TCG).
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest
from _kernel import x86_kernel, x86_missing

from kho_formats.model.fdt import parse_fdt
from kho_formats.model.state import root_fdt_bytes
from kho_formats.ops.capture import load_capture, parse_capture

ROOT = Path(__file__).resolve().parents[1]
KERNEL = x86_kernel()


pytestmark = [
    pytest.mark.kernel,
    pytest.mark.slow,
    pytest.mark.skipif(x86_missing() is not None, reason=x86_missing() or ""),
]


def _boot(out: Path, params: str) -> Path:
    spec = importlib.util.spec_from_file_location("kho_live_run", ROOT / "scripts" / "live" / "run.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.run(KERNEL, out, params=params, timeout=900)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "params, subtrees",
    [
        ("initcall_blacklist=kho_test_init", ["kexec-metadata"]),
        ("liveupdate=on reserve_mem=4M:4096:trace_buf", ["memblock", "LUO", "kho_test", "kexec-metadata"]),
    ],
    ids=["kexec-metadata-only", "every-client"],
)
def test_rebuilt_root_fdt_is_the_kernels(tmp_path: Path, params: str, subtrees: list[str]) -> None:
    out = _boot(tmp_path / "live", params)
    debugfs = (out / "debugfs-kho" / "out" / "fdt").read_bytes()
    cap = load_capture(out / "capture", [])
    real = bytes(cap.root_fdt)
    # debugfs shows the first fdt_totalsize() bytes kho_init() saw (after kexec-metadata)
    assert len(debugfs) == 233 and real[: len(debugfs)] == debugfs
    assert [c.name for c in parse_fdt(real).root.children] == subtrees  # last added first
    assert struct.unpack(">I", real[16:20])[0] == 0x28  # packed by kho_add_subtree
    st = parse_capture(cap)
    assert st.fdt_history == "packed"
    st.fdt_history = "auto"
    assert root_fdt_bytes(st, st.memmap_phys) == real
    if subtrees == ["kexec-metadata"]:
        assert real == debugfs
