"""The receiving side after boot: a handover as the kernel that received it
holds it (debugfs ``kho/in``, ``kho capture --side in``, a capture whose
meta.json says ``"received": true``) is read without its memory map, which
that kernel does not keep (seen on a real 7.3 kernel: tests/test_live_kernel.py).
Here without a kernel: which inputs count as received, what inspect, check,
convert and diff say about them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kho_formats import cli
from kho_formats.errors import KhoFormatError
from kho_formats.ops.capture import load_capture, parse_capture
from kho_formats.ops.migrate import convert_capture

ROOT = Path(__file__).resolve().parent.parent
LUO = ROOT / "fixtures" / "captures" / "linux-7.3-x86_64-luo-v5-small"
IMAGE = str(LUO / "image.elf")


def copy_debugfs(side: str, dst: Path) -> Path:
    shutil.copytree(LUO / "debugfs" / "kho" / side, dst)
    return dst


def test_debugfs_in_is_received_and_out_is_not(tmp_path: Path) -> None:
    got_in = load_capture(copy_debugfs("in", tmp_path / "kho" / "in"), [IMAGE])
    assert got_in.received
    st = parse_capture(got_in)
    assert st.map_released and not st.map_read and st.preserved.num_pages == 0
    assert any("keeps the map's pages only until it has read them" in n for n in st.notes)
    got_out = load_capture(copy_debugfs("out", tmp_path / "kho" / "out"), [IMAGE])
    assert not got_out.received and parse_capture(got_out).map_read


def test_a_sending_side_copy_named_in_is_not_received(tmp_path: Path) -> None:
    """kho/out has scratch_phys and scratch_len; a copy of it renamed "in" keeps its map."""
    d = copy_debugfs("out", tmp_path / "in")
    cap = load_capture(d, [IMAGE])
    assert not cap.received and parse_capture(cap).map_read


def test_received_without_an_image_does_not_ask_for_one(tmp_path: Path, capsys) -> None:
    d = copy_debugfs("in", tmp_path / "kho" / "in")
    assert cli.main(["inspect", str(d)]) == 0
    out = capsys.readouterr().out
    assert "not read: released by the receiving kernel" in out
    assert "--mem" not in out and "the receiving kernel released the memory map after reading it" in out


def test_inspect_check_convert_diff_of_a_received_capture(tmp_path: Path, capsys) -> None:
    d = copy_debugfs("in", tmp_path / "kho" / "in")
    assert cli.main(["--json", "inspect", str(d), "--mem", IMAGE]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["memory_map"]["released"] is True and j["memory_map"]["read"] is False and j["preserved"] is None
    assert cli.main(["check", str(d), "--mem", IMAGE]) == 0
    out = capsys.readouterr().out
    assert "[map-released]" in out and "0 errors, 0 warnings" in out
    cap = load_capture(d, [IMAGE])
    with pytest.raises(KhoFormatError, match="receiving side after boot"):
        convert_capture(cap, parse_capture(cap), "kho-v3")
    assert cli.main(["diff", str(d), str(LUO), "--mem-a", IMAGE]) in (0, 1)
    out = capsys.readouterr().out
    assert "released by its receiving kernel" in out and "--mem-a" not in out


def test_capture_meta_received_round_trip(tmp_path: Path) -> None:
    """kho capture --side in writes "received": true; reading the capture back skips the map again."""
    from kho_formats.ops.extract import handover_image, write_capture

    cap = load_capture(copy_debugfs("in", tmp_path / "kho" / "in"), [IMAGE])
    st = parse_capture(cap)
    assert cap.image is not None
    write_capture(tmp_path / "cap", cap, st, handover_image(cap.image, st), source="test")
    meta = json.loads((tmp_path / "cap" / "meta.json").read_text())
    assert meta["received"] is True
    again = load_capture(tmp_path / "cap")
    assert again.received and parse_capture(again).map_released
    # a sending-side capture says false and keeps its map
    sent = load_capture(LUO)
    sst = parse_capture(sent)
    assert sent.image is not None
    write_capture(tmp_path / "sent", sent, sst, handover_image(sent.image, sst), source="test")
    assert json.loads((tmp_path / "sent" / "meta.json").read_text())["received"] is False
    assert parse_capture(load_capture(tmp_path / "sent")).map_read


def test_received_option_overrides_the_detection(tmp_path: Path, capsys) -> None:
    """A kho/in copy under another name: --received yes reads it as the receiving
    side; --received no reads a kho/in directory's map anyway."""
    renamed = copy_debugfs("in", tmp_path / "kho-in-copy")
    assert not load_capture(renamed, [IMAGE]).received
    assert cli.main(["--json", "inspect", str(renamed), "--mem", IMAGE, "--received", "yes"]) == 0
    assert json.loads(capsys.readouterr().out)["memory_map"]["released"] is True
    d = copy_debugfs("in", tmp_path / "kho" / "in")
    assert cli.main(["--json", "inspect", str(d), "--mem", IMAGE, "--received", "no"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["memory_map"]["released"] is False and j["memory_map"]["read"] is True and j["preserved"]["pages"] > 0
