"""``kho luo extract``: the real capture's memfds come out with the contents
userspace hashed in both kernels; hostile session names stay inside DIR;
existing directories and symlinks are refused; memory stays flat for a big
memfd."""

from __future__ import annotations

import json
import os
import re
import tracemalloc
from pathlib import Path

import pytest
from _luo import LUO_CAP, TRUTH, SynthMemfd, SynthSession, fnv1a64, h, load_luo, luo_of, synth

from kho_formats.cli import main
from kho_formats.model.clients import decode_clients
from kho_formats.ops.luo_extract import MAX_NAME, ExtractError, extract, safe_name


def test_real_capture_contents_match_userspace_hashes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x"
    assert main(["luo", "extract", str(LUO_CAP), "-o", str(out)]) == 0
    assert "wrote 3 files" in capsys.readouterr().out
    index = json.loads((out / "index.json").read_text())
    assert index["schema"] == "kho-formats/luo-extract/1" and index["liveupdate_num"] == 1
    for s, ts in zip(index["sessions"], TRUTH["sessions"]):
        assert s["name"] == ts["name"] == s["dir"]
        for f, tf in zip(s["files"], ts["files"]):
            path = out / s["name"] / f"{h(tf['token']):016x}.bin"
            assert f["file"] == f"{s['name']}/{path.name}"
            data = path.read_bytes()
            u = tf["second_kernel"]
            assert len(data) == u["size"] == f["size"] == tf["memfd"]["size"]
            assert fnv1a64([data]) == h(u["fnv1a64"]) == h(tf["first_kernel"]["fnv1a64"])
            assert (f["pos"], f["seals"], f["flags"], f["nr_folios"]) == (
                tf["memfd"]["pos"],
                tf["memfd"]["seals"],
                tf["memfd"]["flags"],
                tf["memfd"]["nr_folios"],
            )
    assert sorted(p.name for p in (out / "vm-a").iterdir()) == [
        "0000000000000000.bin",
        "0000000000001001.bin",
        "ffffffffffffffff.bin",
    ]
    # JSON on stdout is the index
    out2 = tmp_path / "y"
    assert main(["--json", "luo", "extract", str(LUO_CAP), "-o", str(out2)]) == 0
    assert json.loads(capsys.readouterr().out)["sessions"] == index["sessions"]


def test_refuses_non_empty_dir_and_symlinks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep").write_text("mine")
    assert main(["luo", "extract", str(LUO_CAP), "-o", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err and sorted(os.listdir(out)) == ["keep"]
    # --force writes, but never through a symlink planted where a file goes
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (out / "vm-a").mkdir()
    (out / "vm-a" / "0000000000001001.bin").symlink_to(victim)
    assert main(["luo", "extract", str(LUO_CAP), "-o", str(out), "--force"]) == 1
    assert "not a regular file" in capsys.readouterr().err and victim.read_text() == "untouched"
    # a symlinked session directory is not followed either
    for p in (out / "vm-a").iterdir():
        p.unlink()
    os.rmdir(out / "vm-a")
    (tmp_path / "elsewhere").mkdir()
    (out / "vm-a").symlink_to(tmp_path / "elsewhere")
    assert main(["luo", "extract", str(LUO_CAP), "-o", str(out), "--force"]) == 1
    assert os.listdir(tmp_path / "elsewhere") == []
    # DIR itself as a symlink
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    assert main(["luo", "extract", str(LUO_CAP), "-o", str(tmp_path / "link")]) == 1
    assert "symlink" in capsys.readouterr().err


def test_no_luo_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = Path(__file__).resolve().parent.parent / "fixtures" / "captures" / "linux-7.3-x86_64-kho-v4"
    assert main(["luo", "extract", str(cap), "-o", str(tmp_path / "x")]) == 1
    assert "no LUO sub-node" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"vm-a", "vm-a"),
        (b"../x", "%2E.%2Fx"),
        (b"/", "%2F"),
        (b"..", "%2E."),
        (b".", "%2E"),
        (b"", "%"),
        (b"a b%c", "a%20b%25c"),
        (b"\xff\x01", "%FF%01"),
    ],
)
def test_safe_name(raw: bytes, name: str) -> None:
    assert safe_name(raw) == name


def test_long_names_are_cut_with_a_hash() -> None:
    assert safe_name(b"x" * 64) == "x" * 64  # 64 bytes fit
    for raw in (b"/" * 64, b"a" + b"/" * 63, b"ab" + b"/" * 62):  # escaped to ~190 characters
        long = safe_name(raw)
        head, _, tail = long.partition("~")
        assert len(long) <= MAX_NAME and len(tail) == 16 and re.fullmatch(r"(%[0-9A-F]{2}|[A-Za-z0-9._-])*", head)
    assert safe_name(b"/" * 64) != safe_name(b"/" * 63 + b"a")


def test_hostile_session_names_stay_inside(tmp_path: Path) -> None:
    names = [b"../x", b"/", b"../../etc", b"x" * 64, b"dup", b"dup", b"", b"\x00hidden", b"."]
    sy = synth([SynthSession(n, [SynthMemfd(i, 100, [(0, 0)])]) for i, n in enumerate(names)])
    lu = luo_of(decode_clients(sy.state, sy.image))
    out = tmp_path / "o"
    idx = extract(lu, sy.image, out, page_size=4096)
    dirs = [s["dir"] for s in idx["sessions"]]
    assert len(set(dirs)) == len(dirs) and "dup~2" in dirs and "%" in dirs
    for s in idx["sessions"]:
        for f in s["files"]:
            p = (out / f["file"]).resolve()
            assert p.is_relative_to(out.resolve()) and p.parent.parent == out.resolve()
            assert p.read_bytes() == sy.contents[f["token"]]
    assert sorted(os.listdir(tmp_path)) == ["o"]


def test_holes_are_zero_and_size_exact(tmp_path: Path) -> None:
    ps = 16384
    f = SynthMemfd(7, 5 * ps + 3, [(3, 0), (0, 1)])  # pages 2 and 4 are holes, size not page aligned
    sy = synth([SynthSession(b"s", [f])], page_size=ps, byteorder="big")
    lu = luo_of(decode_clients(sy.state, sy.image))
    extract(lu, sy.image, tmp_path / "o", page_size=ps)
    data = (tmp_path / "o" / "s" / f"{7:016x}.bin").read_bytes()
    assert len(data) == 5 * ps + 3 and data == sy.contents[7]
    assert data[2 * ps : 3 * ps] == bytes(ps) and data[4 * ps :] == bytes(ps + 3)


def test_streaming_memory_does_not_grow_with_size(tmp_path: Path) -> None:
    """A 32 MiB memfd in one order-13 folio: extraction allocates a small
    fraction of that (pieces of at most 4 MiB, memoryviews of the image)."""
    ps = 4096
    f = SynthMemfd(1, 32 << 20, [(0, 13)])
    sy = synth([SynthSession(b"big", [f])], page_size=ps)
    lu = luo_of(decode_clients(sy.state, sy.image))
    del sy.contents[1]
    tracemalloc.start()
    try:
        extract(lu, sy.image, tmp_path / "o", page_size=ps)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "o" / "big" / f"{1:016x}.bin").stat().st_size == 32 << 20
    assert peak < 4 << 20, peak


def test_without_image_refused() -> None:
    _, _, reps = load_luo()
    lu = luo_of(reps)
    lu.read = False
    with pytest.raises(ExtractError, match="no memory image"):
        extract(lu, reps["LUO"].decoded, "/nonexistent", page_size=4096)  # type: ignore[arg-type]
