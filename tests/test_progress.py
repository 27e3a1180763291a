"""Progress bars of long work (kho_formats.progress): shown on a terminal only,
counting exactly the work done, and silent for scripts, pipes, --json and --quiet."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from kho_formats import progress
from kho_formats.boot.qemu import run_qemu
from kho_formats.memory.image import PhysImage
from kho_formats.ops import locate

ROOT = Path(__file__).resolve().parents[1]
ELF_CAPTURE = ROOT / "fixtures" / "captures" / "linux-7.3-x86_64-kho-v4" / "image.elf"
KDUMP = ROOT / "tests" / "data" / "qemu-7.2-x86_64-firmware-16m.kdump"
LUO_FIXTURE = ROOT / "fixtures" / "v4-4k-luo"


@pytest.fixture
def shown(monkeypatch):
    """Progress on, into a string; yields (text buffer, [(description, total, units counted)])."""
    buf = io.StringIO()
    progress.configure(True, file=buf)
    record: list[list] = []
    orig_task = progress.task.__wrapped__  # the generator under the contextmanager
    orig_update = progress._Bar.update

    def task(desc, total=None, unit="B"):
        entry = [desc, total, 0]
        record.append(entry)
        return progress.contextmanager(orig_task)(desc, total, unit)

    def update(self, n=1):
        for e in record:
            if e[0] == self._bar.desc.rstrip(": "):
                e[2] += n
        orig_update(self, n)

    monkeypatch.setattr(progress, "task", task)
    monkeypatch.setattr(progress._Bar, "update", update)
    yield buf, record
    progress.configure(False)


def test_off_by_default_and_outside_a_task():
    assert not progress.enabled()
    with progress.task("nothing shown", total=10) as bar:
        bar.update(10)
        assert bar is progress.current()
    assert isinstance(progress.current(), progress._Silent)


def test_wanted_follows_the_command_line_rule():
    m, s = pty.openpty()
    try:
        with os.fdopen(os.dup(s), "w") as tty:
            assert progress.wanted(stream=tty)
            assert not progress.wanted(stream=tty, quiet=True)
            assert not progress.wanted(stream=tty, json=True)
        assert not progress.wanted(stream=io.StringIO())
    finally:
        os.close(m)
        os.close(s)


def test_a_shown_bar_is_the_current_one_and_is_cleared():
    buf = io.StringIO()
    progress.configure(True, file=buf)
    try:
        with progress.task("copying", total=2048) as bar:
            assert progress.current() is bar
            bar.update(2048)
        assert isinstance(progress.current(), progress._Silent)
    finally:
        progress.configure(False)
    text = buf.getvalue()
    assert "copying" in text and "/2.00k" in text  # the total, in KiB (unit_divisor 1024)
    assert text.endswith("\r")  # leave=False: the line is wiped at the end


@pytest.mark.parametrize("path", [ELF_CAPTURE, KDUMP], ids=["elf", "kdump"])
def test_the_scan_counts_every_byte_of_the_image_once(shown, path):
    buf, record = shown
    img = PhysImage.load(str(path))
    locate.scan_root_fdts(img, 4096)
    (desc, total, counted) = next(e for e in record if e[0] == "scanning for the root FDT")
    assert total == sum(len(seg.data) for seg in img) > 0
    assert counted == total
    assert "scanning for the root FDT" in buf.getvalue()


def test_luo_extract_counts_the_bytes_it_writes(shown, tmp_path):
    from kho_formats.ops.capture import load_capture, parse_capture
    from kho_formats.ops.luo_extract import extract

    buf, record = shown
    cap = load_capture(str(LUO_FIXTURE))
    st = parse_capture(cap)
    from kho_formats.model.clients import decode_clients

    luo = decode_clients(st, cap.image)["LUO"].decoded
    index = extract(luo, cap.image, tmp_path / "out", page_size=st.page_size)
    written = [tmp_path / "out" / f["file"] for s in index["sessions"] for f in s["files"] if f["file"]]
    assert written
    # every byte the files hold that is not a hole was counted (holes are never written)
    data_bytes = sum(len(p.read_bytes().rstrip(b"\0")) for p in written)
    (_, _, counted) = next(e for e in record if e[0] == "extracting LUO files")
    assert data_bytes <= counted <= sum(p.stat().st_size for p in written)


def test_capture_counts_the_image_bytes_it_writes(shown, tmp_path):
    import kho_formats

    buf, record = shown
    h = kho_formats.open(str(ELF_CAPTURE.parent))
    h.write(tmp_path / "cap")
    (_, total, counted) = next(e for e in record if e[0] == "writing the capture")
    assert total == counted == h.handover_image().total_bytes > 0
    assert (tmp_path / "cap" / "image.elf").stat().st_size > counted  # the ELF headers are not image bytes
    assert "writing the capture" in buf.getvalue()


def test_build_counts_the_image_bytes_it_writes(shown, tmp_path):
    import kho_formats

    buf, record = shown
    h = kho_formats.build(str(LUO_FIXTURE.parent / "specs" / "v4-4k-luo.toml"))
    h.write(tmp_path / "fx")
    (_, total, counted) = next(e for e in record if e[0] == "writing image.elf")
    assert h.image is not None and total == counted == h.image.total_bytes > 0
    assert "writing image.elf" in buf.getvalue()


def test_qemu_serial_lines_are_counted(shown):
    buf, record = shown
    script = "import sys\nfor i in range(7): print('line', i)\n"
    log, rc, timed_out, _ = run_qemu([sys.executable, "-c", script], timeout=30, keep_going=True)
    assert rc == 0 and not timed_out and log.count("line") == 7
    (desc, _, counted) = next(e for e in record if e[0].endswith("serial console"))
    assert counted == 7


def _run_on_a_terminal(*args: str, delay: str = "0") -> tuple[int, bytes, bytes]:
    """``kho ARGS`` with stderr a 100-column terminal; (rc, stdout, what the terminal got).
    ``delay``: KHO_PROGRESS_DELAY (0: the bar is drawn at once, even for work this short)."""
    m, s = pty.openpty()
    fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = dict(os.environ, KHO_PROGRESS_DELAY=delay)
    env.pop("KHO_DEBUG", None)
    p = subprocess.Popen(
        [sys.executable, "-m", "kho_formats.cli", *args], stdout=subprocess.PIPE, stderr=s, cwd=ROOT, env=env
    )
    os.close(s)
    tty = b""
    while True:
        ready, _, _ = select.select([m], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(m, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        tty += chunk
    out = p.stdout.read() if p.stdout else b""
    p.wait(timeout=60)
    os.close(m)
    return p.returncode, out, tty


def test_cli_shows_a_bar_on_a_terminal_only():
    rc, out, tty = _run_on_a_terminal("inspect", str(ELF_CAPTURE))
    assert rc == 0 and out.startswith(b"KHO handover: kho-v4")
    assert b"scanning for the root FDT" in tty
    for quiet in (("-q",), ("--quiet",), ("--json",)):
        rc, out, tty = _run_on_a_terminal("inspect", *quiet, str(ELF_CAPTURE))
        assert rc == 0 and tty == b"", quiet
    rc, out, tty = _run_on_a_terminal("inspect", "--json", str(ELF_CAPTURE))
    assert json.loads(out)["version"] == "kho-v4"


def test_cli_draws_no_bar_for_work_shorter_than_its_delay():
    rc, out, tty = _run_on_a_terminal("inspect", str(ELF_CAPTURE), delay="30")
    assert rc == 0 and out.startswith(b"KHO handover: kho-v4")
    assert tty == b""  # nothing drawn (and tqdm never imported) for a scan this short


def test_a_delayed_bar_starts_from_the_work_already_done(monkeypatch):
    """Before its delay a task counts without a bar (no tqdm); the bar made
    when the delay has passed starts at what was counted."""
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    buf = io.StringIO()
    progress.configure(True, file=buf, delay=1.0)
    try:
        with progress.task("scanning", total=4096) as bar:
            bar.update(1024)
            bar.set_total(8192)
            assert bar._bar is None and buf.getvalue() == ""
            clock[0] += 1.5
            bar.update(1024)
            assert bar._bar is not None and bar._bar.n == 2048 and bar._bar.total == 8192
        assert "scanning" in buf.getvalue()
    finally:
        progress.configure(False)


def test_the_cli_delay_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("KHO_PROGRESS_DELAY", raising=False)
    assert progress.cli_delay() == progress.CLI_DELAY
    monkeypatch.setenv("KHO_PROGRESS_DELAY", "0.25")
    assert progress.cli_delay() == 0.25
    monkeypatch.setenv("KHO_PROGRESS_DELAY", "soon")
    assert progress.cli_delay() == progress.CLI_DELAY


def test_cli_is_silent_on_a_pipe():
    r = subprocess.run(
        [sys.executable, "-m", "kho_formats.cli", "inspect", str(ELF_CAPTURE)], capture_output=True, cwd=ROOT
    )
    assert r.returncode == 0 and r.stderr == b""
