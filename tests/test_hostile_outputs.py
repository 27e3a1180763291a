"""Issue 12, outputs: nothing clobbered, nothing written through a symlink,
an output equal to or inside an input refused (``kho_formats.outdir``).

The commands run in-process (``cli.main``) so the whole matrix stays fast.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from kho_formats import cli
from kho_formats.errors import OutputError
from kho_formats.outdir import OutputDir

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
CAP = FIX / "captures" / "linux-7.3-x86_64-kho-v4"
SPEC = FIX / "specs" / "v4-4k.toml"


def run(*argv: object) -> int:
    return cli.main([str(a) for a in argv])


def tree_hashes(*roots: Path) -> dict[str, str]:
    """Every file and symlink under ``roots``: content hash (or link target)."""
    out: dict[str, str] = {}
    for r in roots:
        paths = [r] if not r.is_dir() or r.is_symlink() else sorted(r.rglob("*"))
        for p in paths:
            if p.is_symlink():
                out[str(p)] = "-> " + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A copy of every kind of input: fixture dir, capture dir, debugfs dir,
    root FDT + ELF, bundle dir, spec file."""
    d = tmp_path / "in"
    d.mkdir()
    shutil.copytree(FIX / "v4-4k", d / "fixture")
    shutil.copytree(CAP, d / "capture")
    shutil.copy(SPEC, d / "spec.toml")
    return {
        "fixture": d / "fixture",
        "capture": d / "capture",
        "debugfs": d / "capture" / "debugfs",
        "spec": d / "spec.toml",
    }


def test_every_command_leaves_every_input_unchanged(inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    before = tree_hashes(inputs["fixture"].parent)
    fx, capd, spec = inputs["fixture"], inputs["capture"], inputs["spec"]
    elf = capd / "image.elf"
    n = iter(range(1000))

    def out() -> Path:
        return tmp_path / f"out{next(n)}"

    cases: list[list[object]] = []
    for src in (fx, capd, inputs["debugfs"]):
        mem = ["--mem", elf] if src == inputs["debugfs"] else []
        cases += [
            ["inspect", src, *mem],
            ["check", src, *mem],
            ["dts", src, "--sub", *mem],
            ["dts", src, "-o", out(), *mem],
            ["dts", src, "--sub", "-O", out(), *mem],
            ["diff", src, src],
            ["convert", "--to", "kho-v3", src, out(), "--alloc", "0x7f000000:16M", *mem],
        ]
    cases += [
        ["inspect", capd / "root.dtb", "--mem", elf, "--root-phys", "0"],
        ["inspect", fx / "root.dtb", "--mem", fx],  # the fixture directory as a bundle
        ["build", spec, "-o", out()],
        # refused ones: output equal to / inside the input
        ["convert", "--to", "kho-v3", fx, fx],
        ["convert", "--to", "kho-v3", fx, fx / "sub"],
        ["dts", fx, "-O", fx, "--force"],
        ["dts", fx, "-o", fx],
        ["dts", fx, "-o", fx / "root.dtb"],
        ["convert", "--to", "kho-v3", fx, fx, "--force"],
    ]
    for argv in cases:
        run(*argv)
        assert tree_hashes(inputs["fixture"].parent) == before, argv
    capsys.readouterr()


def test_convert_onto_its_input_is_refused(inputs: dict[str, Path], capsys) -> None:
    fx = inputs["fixture"]
    before = tree_hashes(fx)
    assert run("convert", "--to", "kho-v4", fx, fx) == 1
    assert run("convert", "--to", "kho-v4", fx, fx, "--force") == 1
    err = capsys.readouterr().err
    assert "output is the input" in err
    assert tree_hashes(fx) == before


def test_nonempty_directory_needs_force_and_force_deletes_nothing(tmp_path: Path, capsys) -> None:
    d = tmp_path / "o"
    d.mkdir()
    (d / "seg-mine.bin").write_bytes(b"mine")
    (d / "notes.txt").write_text("keep")
    assert run("build", SPEC, "-o", d) == 1
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt", "seg-mine.bin"]
    assert run("build", SPEC, "-o", d, "--force") == 0
    assert (d / "seg-mine.bin").read_bytes() == b"mine"
    assert (d / "notes.txt").read_text() == "keep"
    assert (d / "root.dtb").is_file()
    # an empty existing directory needs no --force
    e = tmp_path / "empty"
    e.mkdir()
    assert run("build", SPEC, "-o", e) == 0
    # no staging directory is left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_symlinks_in_the_target_are_replaced_not_followed(tmp_path: Path, capsys) -> None:
    d = tmp_path / "o"
    d.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (d / "root.dtb").symlink_to(victim)
    (d / "root.dts").symlink_to(victim)
    assert run("build", SPEC, "-o", d, "--force") == 0
    assert run("dts", d, "-o", tmp_path / "dts") == 0
    assert run("dts", FIX / "v4-4k", "-o", d / "root.dts") == 1  # -o FILE: a symlink is refused
    assert run("dts", FIX / "v4-4k", "-O", d, "--force") == 0
    assert victim.read_text() == "precious"
    assert not (d / "root.dtb").is_symlink() and not (d / "root.dts").is_symlink()
    # the target itself a symlink: refused
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert run("build", SPEC, "-o", link) == 1
    assert "symlink" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()


def test_outputdir_api(tmp_path: Path) -> None:
    t = tmp_path / "new"
    with OutputDir(t) as out:
        out.write("a.txt", "A")
        out.write("b.bin", b"B")
    assert out.written == ["a.txt", "b.bin"] and (t / "a.txt").read_text() == "A"
    with pytest.raises(OutputError, match="not empty"):
        OutputDir(t)
    with pytest.raises(OutputError, match="plain file name"), OutputDir(t, force=True) as out:
        out.write("../escape", "x")
    assert not (tmp_path / "escape").exists()
    # a failure inside the block leaves the target untouched
    with pytest.raises(RuntimeError), OutputDir(t, force=True) as out:
        out.write("a.txt", "changed")
        raise RuntimeError("boom")
    assert (t / "a.txt").read_text() == "A"
    with pytest.raises(OutputError, match="inside the input"):
        OutputDir(tmp_path / "new" / "x", inputs=[t])
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(OutputError, match="not a directory"):
        OutputDir(f, force=True)


@pytest.mark.parametrize("bad", ['x"\n#error injected', "a b", "x/../y", "", "é"])
def test_name_is_checked_everywhere(tmp_path: Path, bad: str, capsys) -> None:
    assert run("build", SPEC, "-o", tmp_path / "b", "--name", bad) == 1
    assert run("convert", "--to", "kho-v3", FIX / "v4-4k", tmp_path / "c", "--name", bad) == 1
    assert "not a plain name" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_name_defaults_from_an_odd_output_name_are_made_plain(tmp_path: Path, capsys) -> None:
    assert run("convert", "--to", "kho-v3", FIX / "v4-4k", tmp_path / "my out#1") == 0
    h = (tmp_path / "my out#1" / "kho_fixture.h").read_text()
    assert '#define KHO_FIXTURE_NAME "my_out_1"' in h
    capsys.readouterr()
