"""Usage errors say where an option belongs, and every one points at the help of the command it
is about (argparse's errors and the UsageErrors commands raise alike)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kho_formats.cli import main

ROOT = Path(__file__).resolve().parent.parent
V4 = ROOT / "fixtures" / "v4-4k"
CAP = ROOT / "fixtures" / "captures" / "linux-7.3-x86_64-kho-v4"


def _usage(capsys, *argv: object) -> str:
    assert main([str(a) for a in argv]) == 2
    got = capsys.readouterr()
    assert got.out == ""
    (line,) = got.err.splitlines()
    return line


@pytest.mark.parametrize(
    "argv, says, helps",
    [
        # a command's option before the command
        (
            ["--max-ranges", "3", "inspect", "x"],
            "--max-ranges is an option of 'kho inspect': give it after 'inspect' (kho inspect --max-ranges N ...)",
            "kho inspect",
        ),
        (["--all-ranges", "inspect", "x"], "give it after 'inspect' (kho inspect --all-ranges ...)", "kho inspect"),
        (["--strict", "check", "x"], "--strict is an option of 'kho check': give it after 'check'", "kho check"),
        (["luo", "--force", "extract", "x", "-o", "y"], "give it after 'extract'", "kho luo extract"),
        # an option given to a command that does not take it
        (
            ["inspect", "x", "--strict"],
            "'kho inspect' has no option --strict: it is an option of 'kho check'",
            "kho inspect",
        ),
        (["check", "x", "--max-ranges", "3"], "it is an option of 'kho inspect'", "kho check"),
        (["diff", "--mem", "x", "a", "b"], "'kho diff' takes --mem-a and --mem-b", "kho diff"),
    ],
)
def test_an_option_in_the_wrong_place_says_where_it_belongs(capsys, argv, says, helps) -> None:
    line = _usage(capsys, *argv)
    assert says in line, line
    assert line.endswith(f"(see '{helps} --help')"), line
    assert "invalid choice" not in line


@pytest.mark.parametrize(
    "argv, helps",
    [
        (["convert", V4, "a", "-o", "b", "--to", "kho-v4"], "kho convert"),
        (["convert", V4, "--to", "kho-v4"], "kho convert"),
        (["dts", V4, "--sub", "-o", "x.dts"], "kho dts"),
        (["capture", "--from-dump", V4 / "image.elf", "--side", "in", "-o", "x"], "kho capture"),
    ],
)
def test_usage_errors_from_inside_a_command_point_at_its_help(capsys, argv, helps) -> None:
    line = _usage(capsys, *argv)
    assert line.startswith("kho: error: ") and line.endswith(f" (see '{helps} --help')"), line


def test_capture_from_a_dump_and_debugfs_names_the_root_address(tmp_path: Path, capsys) -> None:
    """The debugfs fdt is the whole root FDT; the dump holds it at one address: say which."""
    out = tmp_path / "cap"
    assert main(["capture", "--from-dump", str(CAP / "image.elf"), str(CAP / "debugfs"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("captured the kho-v4 handover at 0x11f3000 into "), text
    assert "at ?" not in text
    assert "root FDT at 0x11f3000: the image holds " in text
