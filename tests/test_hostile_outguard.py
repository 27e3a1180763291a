"""Issue 21 item 3: one output guard (``kho_formats.safeio.refuse_touching_inputs``)
that every writer goes through.  An output that is, holds or lies inside an
input -- after symlinks and hard links, by ``(st_dev, st_ino)`` -- is refused,
``--force`` included, and the inputs stay byte-identical."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from kho_formats import cli
from kho_formats.errors import OutputError
from kho_formats.memory.image import PhysImage
from kho_formats.safeio import read_regular, refuse_touching_inputs, tracking_inputs

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
LUO_CAP = FIX / "captures" / "linux-7.3-x86_64-luo-v5-small"
KHO_CAP = FIX / "captures" / "linux-7.3-x86_64-kho-v4"
SPEC = FIX / "specs" / "v4-4k.toml"


def run(*argv: object) -> int:
    return cli.main([str(a) for a in argv])


def hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted([root, *root.rglob("*")] if root.is_dir() else [root]):
        if p.is_symlink():
            out[str(p)] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p)] = "dir"
    return out


def refused(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kho: error:"), err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_luo_extract_force_refuses_a_target_holding_its_raw_mem_image(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    img = PhysImage.load(str(LUO_CAP / "image.elf"))
    lo, hi = img.covered()[0][0], img.covered()[-1][1]
    raw = out / "mem.raw"
    with open(raw, "wb") as fh:
        for a, b in img.covered():
            fh.seek(a - lo)
            fh.write(img.read(a, b - a))
        fh.truncate(hi - lo)
    before = hashes(out)
    # RAW@BASE is no path the command can stat: the guard knows it because the command opened it
    assert run("luo", "extract", LUO_CAP / "debugfs", "--mem", f"{raw}@{lo:#x}", "-o", out, "--force") == 1
    refused(capsys, str(out), "holds", "mem.raw")
    assert hashes(out) == before
    # an ELF image inside the target: the same
    shutil.copy(LUO_CAP / "image.elf", out / "image.elf")
    before = hashes(out)
    assert run("luo", "extract", LUO_CAP / "debugfs", "--mem", out / "image.elf", "-o", out, "--force") == 1
    refused(capsys, "holds", "image.elf")
    assert hashes(out) == before
    # the same image elsewhere: extracted
    other = tmp_path / "other"
    assert run("luo", "extract", LUO_CAP / "debugfs", "--mem", out / "image.elf", "-o", other) == 0
    capsys.readouterr()


def test_luo_extract_into_its_own_fixture_is_refused(tmp_path: Path, capsys) -> None:
    cap = tmp_path / "cap"
    shutil.copytree(LUO_CAP, cap)
    before = hashes(cap)
    for target in (cap, cap / "debugfs", cap / "new", cap / "debugfs" / "x" / "y"):
        assert run("luo", "extract", cap, "-o", target, "--force") == 1
        refused(capsys, str(target))
        assert hashes(cap) == before


def test_capture_inside_its_input_is_refused(tmp_path: Path, capsys) -> None:
    cap = tmp_path / "cap"
    shutil.copytree(KHO_CAP, cap)
    before = hashes(cap)
    for target in (cap / "debugfs" / "new", cap / "debugfs" / "kho" / "new", cap / "debugfs", cap / "image.elf"):
        assert run("capture", "--from-dump", cap / "image.elf", cap / "debugfs", "-o", target) == 1
        refused(capsys, str(target), "input")
        assert hashes(cap) == before
    # the directory holding the dump: refused (it holds an input)
    assert run("capture", "--from-dump", cap / "image.elf", "-o", cap) == 1
    refused(capsys, "holds")
    assert hashes(cap) == before
    # next to the inputs (holding none, inside none): written; the root FDT address comes from the image
    assert run("capture", "--from-dump", cap / "image.elf", cap / "debugfs", "-o", cap / "new") == 0
    assert "captured the kho-v4 handover" in capsys.readouterr().out
    assert {k: v for k, v in hashes(cap).items() if "/new" not in k} == before


def test_a_symlinked_or_hard_linked_path_to_an_input_is_the_input(tmp_path: Path, capsys) -> None:
    fx = tmp_path / "fx"
    shutil.copytree(FIX / "v4-4k", fx)
    link = tmp_path / "link"
    link.symlink_to(fx, target_is_directory=True)
    before = hashes(fx)
    # through a symlinked parent: inside the input
    assert run("dts", fx, "-O", link / "sub", "--force") == 1
    refused(capsys, "inside the input")
    # a target holding a hard link of an input file (not at a name the command writes)
    out = tmp_path / "out"
    (out / "deep").mkdir(parents=True)
    os.link(fx / "image.elf", out / "deep" / "keep.elf")
    luo = tmp_path / "luo"
    shutil.copytree(LUO_CAP, luo)
    os.link(luo / "image.elf", out / "deep" / "luo.elf")
    for argv in (
        ("dts", fx, "-O", out, "--force"),
        ("convert", "--to", "kho-v3", fx, out, "--force", "--alloc", "0x7f000000:16M"),
        ("luo", "extract", luo, "-o", out, "--force"),
    ):
        assert run(*argv) == 1
        refused(capsys, "hard link")
    assert hashes(fx) == before
    assert os.listdir(out) == ["deep"]


def test_build_refuses_a_target_holding_its_spec(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    spec = out / "spec.toml"
    shutil.copy(SPEC, spec)
    assert run("build", spec, "-o", out, "--force") == 1
    refused(capsys, "holds")
    assert sorted(os.listdir(out)) == ["spec.toml"]


def test_the_guard_by_inode_and_tracked_opens(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.mkdir()
    (a / "f").write_bytes(b"x")
    hard = tmp_path / "hard"
    os.link(a / "f", hard)
    with pytest.raises(OutputError, match="is the input"):
        refuse_touching_inputs(hard, [a / "f"])
    with pytest.raises(OutputError, match="lies inside the input"):
        refuse_touching_inputs(a / "new" / "deeper", [a])
    with pytest.raises(OutputError, match="holds the input"):
        refuse_touching_inputs(tmp_path, [a / "f"])
    refuse_touching_inputs(tmp_path / "elsewhere", [a])  # unrelated: fine
    # not named, but opened through safeio while tracking: the same refusal
    with tracking_inputs():
        read_regular(hard, "test input")
        with pytest.raises(OutputError, match="holds"):
            refuse_touching_inputs(a)
    refuse_touching_inputs(a)  # tracking ended: nothing is known
