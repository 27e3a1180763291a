"""fixtures/captures/linux-7.3-x86_64-selftest-luo_kexec_simple/: the handover the real
luo_kexec_simple stage 1 left on the x86_64 live kernel, dumped at machine_kexec
(scripts/live/stage1.py luo_kexec_simple --append test_kho.max_mem=16384).

kho inspect --json, kho check --strict and kho luo extract give exactly what the
test created (scripts/live/stage1_compare.py): session names, tokens, size, seals,
pos, bytes and the three test FLBs; compared as another test it differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "fixtures" / "captures" / "linux-7.3-x86_64-selftest-luo_kexec_simple"
sys.path.insert(0, str(ROOT / "scripts" / "live"))

from stage1_compare import compare  # noqa: E402


def test_capture_is_what_stage_1_created():
    diffs, stats = compare(CAPTURE, "luo_kexec_simple")
    assert diffs == []
    assert stats == {"sessions": 2, "files": 2, "flbs": 3}


def test_compared_as_another_test_it_differs():
    diffs, _ = compare(CAPTURE, "luo_multi_session")
    assert any(d.startswith("sessions differ") for d in diffs)
    assert any("FLBs" in d for d in diffs)


def test_the_kernel_passed_stage_2_on_it():
    log = (CAPTURE / "console.log").read_text(errors="replace")
    assert "--- SIMPLE KEXEC TEST PASSED ---" in log and "INIT: Stage 2 completed successfully." in log
