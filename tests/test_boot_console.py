"""Kernel records inside the workload's own lines (one console for both).

``data/console-interleaved-luo_stress_files.log`` is an excerpt of a real serial
log: ``luo_stress_files -s 2`` as ``kho boot``'s workload on the x86_64 live
kernel (``CONFIG_LIVEUPDATE_TEST=y``), where the three test FLBs' ``finish was
triggered`` records landed inside the test's last line, so the raw log has no
``--- MANY-FILES KEXEC TEST PASSED (500 files) ---`` (the flaky
``test_stage_2_passes[x86_64-luo_stress_files]``).  Its first line is the same
log's ``KHO: found kexec handover data.``; the rest is lines 183-202, unchanged.
"""

from __future__ import annotations

from pathlib import Path

from kho_formats import boot
from kho_formats.boot.judge import console_lines
from kho_formats.boot.runner import BootResult
from kho_formats.boot.workload import judge_workload, parse_workload

LOG = (Path(__file__).parent / "data" / "console-interleaved-luo_stress_files.log").read_bytes().decode()
PASSED = "--- MANY-FILES KEXEC TEST PASSED (500 files) ---"
FINISH = [f"liveupdate test: liveupdate-test-flb-v{i}: finish was triggered" for i in (2, 1, 0)]


def test_the_excerpt_is_interleaved():
    assert PASSED not in LOG and "\r\n" in LOG
    assert "--- MANY-FILES KEXEC TEST PASSED ([    0.609708] liveupdate test:" in LOG
    assert not any(PASSED in l for l in LOG.splitlines())


def test_records_move_out_and_the_line_is_rejoined():
    lines = console_lines(LOG)
    at = lines.index(PASSED)
    assert lines[at - 3 : at] == FINISH  # the records, whole and in order, before the rejoined line
    assert lines[at + 1 :] == ["", "KHOINIT end status=0"]
    assert not any("[    0." in l for l in lines)  # every timestamp stripped, none left mid-line
    assert lines[0] == boot.FOUND


def test_the_verdict_and_the_result_see_the_selftests_line():
    verdict, reason, _, kho_lines = boot.judge_log(LOG)
    assert verdict == "accepted", reason
    assert FINISH[0] in kho_lines  # the record that was mid-line is a kernel line of its own
    w = parse_workload(console_lines(LOG))
    assert w.status == 0 and PASSED in w.lines
    assert judge_workload(verdict, reason, console_lines(LOG))[0] == "accepted"
    r = BootResult(verdict, reason, kho_lines, LOG)
    assert r.printed(PASSED) and PASSED not in r.log
    assert r.printed(FINISH[2])


def _cut(line: str, at: int, records: list[str]) -> str:
    """``line`` with the excerpt's three finish records inserted after its ``at``-th character."""
    return line[:at] + "".join(r + "\r\n" for r in records) + line[at:]


RECORDS = [l for l in LOG.splitlines() if "finish was triggered" in l]


def test_a_bail_out_or_the_exit_status_cut_by_records_still_counts():
    """The excerpt's three records, cut into a failing test's ``Bail out!`` and into the init's end line."""
    recs = [RECORDS[0][RECORDS[0].index("[") :], *RECORDS[1:]]
    assert [r[15:] for r in recs] == FINISH
    head = "[    0.000000] " + boot.FOUND + "\r\nKHOINIT begin argc=2\r\n"
    bail = "Bail out! [run_stage_2:81] data mismatch in file 7 (errno: errno=0)"
    log = head + _cut(bail + "\r\n", 14, recs) + _cut("KHOINIT end status=1\r\n", 12, recs)
    assert bail not in log.splitlines() and "KHOINIT end status=1" not in log.splitlines()
    w = parse_workload(console_lines(log))
    assert w.bail_out == [bail] and w.status == 1
    verdict, reason = judge_workload("accepted", "handover found", console_lines(log))
    assert verdict == "rejected" and bail in reason


def test_firmware_text_before_the_first_record_is_not_held():
    """SeaBIOS's text and screen reset on the kernel's first line: not a program line to rejoin."""
    log = "Booting from ROM..\x1bc\x1b[?7l\x1b[2J[    0.000000] Linux version 7.3.4\r\nKHOINIT begin argc=1\r\n"
    assert console_lines(log) == ["Booting from ROM..", "Linux version 7.3.4", "KHOINIT begin argc=1"]


def test_a_log_without_timestamps_is_only_split():
    assert console_lines("a\r\nb [not a record] c\r\n") == ["a", "b [not a record] c"]
