"""Issue 12, files: a bundle naming one segment file thousands of times is
mapped once and counted against ``Limits.max_image_bytes``; ``kho boot``'s
fixture loader reads through :mod:`kho_formats.safeio` (regular files only,
opened without blocking, sizes capped before reading)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import tracemalloc
from pathlib import Path

import pytest

from kho_formats.boot import load as boot_load
from kho_formats.boot.load import load_fixture
from kho_formats.errors import BootError, ImageError, LimitExceeded
from kho_formats.limits import Limits
from kho_formats.memory.image import PhysImage
from kho_formats.safeio import read_regular

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures" / "v4-4k"
SEG = "seg-0000000078000000.bin"
SEG_PHYS = 0x7800_0000


def _many(d: Path, n: int, size: int) -> None:
    d.mkdir()
    (d / "seg.bin").write_bytes(b"\xab" * size)
    # listed from the top down: inserting each below the others was quadratic
    segs = [{"file": "seg.bin", "phys": (1 << 32) + i * size, "size": size} for i in reversed(range(n))]
    (d / "manifest.json").write_text(json.dumps({"segments": segs}))


def test_bundle_naming_one_file_3000_times(tmp_path: Path) -> None:
    d = tmp_path / "b"
    _many(d, 3000, 1 << 20)
    tracemalloc.start()
    try:
        img = PhysImage.from_bundle(d)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert img.total_bytes == 3000 << 20
    segs = list(img)
    assert len(segs) == 3000 and len({id(s.data.obj) for s in segs}) == 1  # one shared mapping
    assert img.read((1 << 32) + 2999 * (1 << 20), 4) == b"\xab" * 4
    # before: 64 MiB traced (the manifest read asked for 64 MiB), 2.6 s (6000 path resolutions)
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB traced"
    with pytest.raises(LimitExceeded) as info:
        PhysImage.from_bundle(d, limits=Limits(max_image_bytes=100 << 20))
    assert "max_image_bytes" in str(info.value) and "3000 segments name 1 files" in str(info.value)
    with pytest.raises(TypeError, match="limits"):
        PhysImage.from_bundle(d, limits=100)  # type: ignore[arg-type]


def test_small_reads_do_not_allocate_the_limit(tmp_path: Path) -> None:
    p = tmp_path / "small.json"
    p.write_text("{}")
    tracemalloc.start()
    try:
        assert read_regular(p, "json") == b"{}"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # before: read(64 MiB + 1) allocated the limit


def _boot_fixture(d: Path) -> Path:
    d.mkdir(parents=True)
    for name in ("root.dtb", "handover.json", "manifest.json", SEG):
        shutil.copyfile(FIX / name, d / name)
    return d


def test_boot_segment_named_3000_times_is_mapped_once(tmp_path: Path) -> None:
    d = _boot_fixture(tmp_path / "fx")
    size = (d / SEG).stat().st_size
    segs = [{"file": SEG, "phys": SEG_PHYS}] + [{"file": SEG, "phys": (1 << 36) + i * size} for i in range(2999)]
    (d / "manifest.json").write_text(json.dumps({"segments": segs}))
    tracemalloc.start()
    try:
        fx = load_fixture(d)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(fx.segments) == 3000 and fx.image.total_bytes == 3000 * size
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MiB traced"  # before: 3000 copies, 480 MiB


def test_boot_oversized_root_dtb_is_refused_unread(tmp_path: Path) -> None:
    d = _boot_fixture(tmp_path / "fx")
    with open(d / "root.dtb", "r+b") as fh:  # sparse: 100 MiB that cost nothing on disk
        fh.truncate(100 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(BootError, match="root.dtb: 104857600 bytes, more than the"):
            load_fixture(d)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


@pytest.mark.parametrize("name", ["root.dtb", "handover.json", SEG])
def test_boot_fifo_swapped_in_after_the_check_does_not_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A FIFO that replaces a file between ``_checked_file``'s stat and the
    read (simulated by a check that lets everything through) is refused by
    the read itself, at once; before, ``read_bytes`` blocked forever."""
    d = _boot_fixture(tmp_path / "fx")
    (d / name).unlink()
    os.mkfifo(d / name)
    if name == SEG:  # the FIFO's stat size (0) agrees with the manifest: the read is reached
        (d / "manifest.json").write_text(json.dumps({"segments": [{"file": SEG, "phys": SEG_PHYS, "size": 0}]}))
    monkeypatch.setattr(boot_load, "_checked_file", lambda d, n, what: (d / n).resolve())
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            load_fixture(d)
            result.append(None)
        except BaseException as exc:  # handed to the test thread
            result.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # unblock the reader so the thread ends, then fail
        fd = os.open(d / name, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(10)
        pytest.fail(f"load_fixture blocked on a FIFO {name}")
    assert isinstance(result[0], BootError), result
    assert "FIFO" in str(result[0]) or "not a regular file" in str(result[0])


def test_huge_nested_manifest_is_refused_by_size_with_a_short_message(tmp_path: Path) -> None:
    """Found by the 20,000-input fuzz run: a 40 MB manifest of nested lists
    (the fuzzer's aliased mutations) was parsed whole (500 MiB, 10 s) and
    its error message held the whole document (40 MB)."""
    d = tmp_path / "b"
    d.mkdir()
    inner = json.dumps([[0, 4096]] * 3000)
    text = '{"segments": [{"file": [' + ",".join([inner] * 1000) + '], "phys": 0}]}'
    assert len(text) > 30 << 20
    (d / "manifest.json").write_text(text)
    with pytest.raises(ImageError, match="more than the 4194304") as info:
        PhysImage.from_bundle(d)
    assert len(str(info.value)) < 400
    # under the size cap: the value in the message is summed up, not printed
    (d / "manifest.json").write_text('{"segments": [{"file": ' + inner + ', "phys": 0}]}')
    with pytest.raises(ImageError, match="a list of 3000 items is not a file name") as info:
        PhysImage.from_bundle(d)
    assert len(str(info.value)) < 400
    (d / "manifest.json").write_text(json.dumps({"segments": [{"file": "x" * 1_000_000, "phys": 0}]}))
    with pytest.raises(ImageError) as info:
        PhysImage.from_bundle(d)
    assert len(str(info.value)) < 400


def test_boot_and_capture_messages_sum_up_huge_values(tmp_path: Path) -> None:
    d = _boot_fixture(tmp_path / "fx")
    ho = json.loads((d / "handover.json").read_text())
    ho["cmdline"] = {"x": list(range(200_000))}
    (d / "handover.json").write_text(json.dumps(ho))
    with pytest.raises(BootError) as info:
        load_fixture(d)
    assert "a table of 1 item" in str(info.value) and len(str(info.value)) < 400
