"""No Python repr in user text: every text-output command over every shipped fixture and capture.

A renderer that formats a value it did not mean to (``f"{v}"`` of a tuple, a list, a dict, None, a
bool) shows the user Python: ``radix depth None``, ``[(1342177280, 268435456)]``, ``{'a': 1}``.
Each command's stdout and stderr is searched for those shapes (the patterns below are precise:
the words None / True / False, a ``(``/``[`` that opens a list or tuple of numbers or strings, a
``{'`` dict, a ``[]``, an object or numpy repr), so the test fails on any one that slips in.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kho_formats.cli import main

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
INPUTS = sorted([*FIX.glob("v*-*"), *(p for p in (FIX / "captures").iterdir() if p.is_dir())])
SPECS = sorted((FIX / "specs").glob("v*.*"))
LUO = [p for p in INPUTS if (p / "image.elf").exists() and "luo" in p.name]

#: what a Python repr looks like in text, and what a sentence never holds
REPR = re.compile(
    r"\bNone\b|\bTrue\b|\bFalse\b"  # a None or bool formatted into a sentence
    r"|\[\(|\[\[|\[\]|\[-?\d+,|\[0x[0-9a-f]+,"  # a list: of tuples, of lists, empty, of numbers
    r"|\['|\[\""  # a list of strings
    r"|\(-?\d+, -?\d+\)|\('[^']*', "  # a tuple of numbers or strings
    r"|\{'|\{\"|\{\}"  # a dict
    r"|<[a-zA-Z_.]+ object at 0x|\barray\(|np\.u?int\d+\(|\bPageSet\("  # object / numpy reprs
)
#: the DTS syntax has ``[..]`` byte strings and ``<..>`` cells: only the words and object reprs count
DTS_REPR = re.compile(r"\bNone\b|\bTrue\b|\bFalse\b|\{'|<[a-zA-Z_.]+ object at 0x|\barray\(")


def _text(capsys, *argv: object) -> str:
    main([str(a) for a in argv])
    got = capsys.readouterr()
    return got.out + got.err


def _reprs(text: str, pattern: re.Pattern[str] = REPR) -> list[str]:
    return [line for line in text.splitlines() if pattern.search(line)]


def test_the_pattern_catches_reprs() -> None:
    """Each shape the renderers once printed is caught; ordinary report text is not."""
    for bad in (
        "  memory map:      0x78001000 (radix, radix depth None, None node/leaf pages)",
        "  note: scratch differs (A [(1342177280, 268435456)], B []; not compared)",
        "  LUO: serialized differs (A True, B False)",
        "  decoded {'size': 3}",
        "  folios [4096, 8192]",
        "  names ['a', 'b']",
    ):
        assert _reprs(bad), bad
    for good in (
        "Preserved memory: 17 folios (1566 pages of 4 KiB) in 5 ranges, 6.1 MiB",
        "  kho_test        0x7800e000  240   kho_test        4 folios, csum 0x0001a225 (matches arm64)",
        "  note: scratch differs: A 0x50000000-0x60000000 (256 MiB); B none (not compared)",
        "  0xffffffffffffffff  memfd-v2  64 KiB    1 (order 4)  0x7 seal|shrink|grow",
        "info: [csum] /kho_test: kho_test csum 0x1a225 matches the arm64 csum_partial of the folio data",
    ):
        assert not _reprs(good), good


@pytest.mark.parametrize("path", INPUTS, ids=[p.name for p in INPUTS])
def test_reading_commands_print_no_repr(path: Path, capsys) -> None:
    out = []
    out.append(_text(capsys, "inspect", path))
    out.append(_text(capsys, "inspect", "--received", "yes", path))
    out.append(_text(capsys, "check", path))
    out.append(_text(capsys, "diff", path, FIX / "v4-4k"))
    out.append(_text(capsys, "diff", FIX / "v4-16k", path))
    text = "\n".join(out)
    assert "Preserved memory" in text or "preserved" in text
    assert not _reprs(text)
    assert not _reprs(_text(capsys, "dts", "--sub", path), DTS_REPR)


@pytest.mark.parametrize("path", INPUTS, ids=[p.name for p in INPUTS])
def test_writing_commands_print_no_repr(path: Path, tmp_path: Path, capsys) -> None:
    out = []
    if (path / "image.elf").exists():
        out.append(_text(capsys, "capture", "--from-dump", path / "image.elf", "-o", tmp_path / "cap"))
    out.append(_text(capsys, "convert", path, "-o", tmp_path / "conv", "--to", "kho-v4"))
    text = "\n".join(out)
    assert "into" in text or "error" in text
    assert not _reprs(text)


@pytest.mark.parametrize("spec", SPECS, ids=[p.name for p in SPECS])
def test_build_prints_no_repr(spec: Path, tmp_path: Path, capsys) -> None:
    text = _text(capsys, "build", spec, "-o", tmp_path / "out")
    assert text.startswith("built ")
    assert not _reprs(text)


@pytest.mark.parametrize("path", LUO, ids=[p.name for p in LUO])
def test_luo_text_prints_no_repr(path: Path, tmp_path: Path, capsys) -> None:
    other = FIX / "v4-4k-luo" if path.name != "v4-4k-luo" else FIX / "captures" / "linux-7.3-x86_64-luo-v5-small"
    text = _text(capsys, "luo", "extract", path, "-o", tmp_path / "x")
    text += _text(capsys, "diff", path, other)
    assert "wrote" in text and "LUO session" in text
    assert not _reprs(text)


def test_luo_diff_values_are_words_not_reprs() -> None:
    """A LUO field that differs by a bool or a missing error reads as words, seals in hex."""
    from kho_formats.model.clients.luo.diff import diff_text

    d = {
        "identical": False,
        "fields": ["serialized", "error", "liveupdate_num"],
        "a": {"serialized": True, "error": None, "liveupdate_num": 1},
        "b": {"serialized": False, "error": "bad magic", "liveupdate_num": 2},
        "sessions": [
            {
                "name": "vm-a",
                "change": "differs",
                "files": [
                    {
                        "token": 1,
                        "change": "differs",
                        "fields": ["seals", "size"],
                        "a": {"seals": 1, "size": 4096},
                        "b": {"seals": 5, "size": None},
                    }
                ],
            }
        ],
        "flbs": [],
    }
    text = "\n".join(diff_text(d))
    assert not _reprs(text), text
    assert "LUO: serialized differs (A yes, B no)" in text
    assert "LUO: error differs (A none, B 'bad magic')" in text
    assert "file 0x1: seals 0x1 -> 0x5, size 4 KiB -> none differ" in text


def test_notes_on_compatible_lists_are_written_as_dts_strings(tmp_path: Path, capsys) -> None:
    """A string list in a note reads as a DTS writes it, not as a Python list."""
    from kho_formats.model.fdt import build_fdt, parse_fdt, str_bytes

    fdt = parse_fdt((FIX / "v4-4k" / "root.dtb").read_bytes())
    fdt.root.set("compatible", str_bytes("x-first", "kho-v4", "radix-v1"))
    (tmp_path / "root.dtb").write_bytes(build_fdt(fdt.root))
    text = _text(capsys, "inspect", tmp_path / "root.dtb")
    assert 'compatible "x-first", "kho-v4", "radix-v1": \'kho-v4\' is not the first entry' in text
    assert 'unknown compatible entries after \'kho-v4\': "x-first", "radix-v1"' in text
    text += _text(capsys, "inspect", "--abi", "kho-v3", tmp_path / "root.dtb")
    assert 'compatible "x-first", "kho-v4", "radix-v1" overridden: reading as kho-v3' in text
    assert not _reprs(text)
