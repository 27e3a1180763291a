"""The field's own tools read what kho writes (issue 19, item 3).

* ``makedumpfile -R`` (Debian ``makedumpfile``; ``.ci/run`` installs it) rebuilds
  every flattened kdump kho writes into exactly the kdump-compressed file kho
  writes unflattened, and our reader gives the same pages from both: for every
  shipped fixture and capture image, every compression, both byte orders, and
  the files ``kho convert --image-format kdump|kdump-flat`` writes.
* drgn (PyPI ``drgn``, in the ``test`` extra) reads physical memory from every
  ELF image kho writes (the shipped fixtures' and captures' ``image.elf``,
  ``kho build``, ``kho convert`` and ``kho capture`` output) byte for byte as our
  reader does.  drgn needs nothing for these cores: with no VMCOREINFO it takes
  the platform from the ELF header and maps ``PT_LOAD`` segments by
  ``p_paddr``, so ``prog.read(addr, size, physical=True)`` works as it is.

These are oracle tests: under ``CI`` a skip fails (see ``tests/conftest.py``).
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from kho_formats.cli import main
from kho_formats.memory.image import PhysImage
from kho_formats.memory.kdump import write_kdump

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = sorted(p.parent for p in (ROOT / "fixtures").glob("*/image.elf"))
CAPTURES = sorted(p.parent for p in (ROOT / "fixtures" / "captures").glob("*/image.elf"))
IMAGES = {d.relative_to(ROOT / "fixtures").as_posix(): d / "image.elf" for d in FIXTURES + CAPTURES}
MAKEDUMPFILE = shutil.which("makedumpfile")

needs_makedumpfile = pytest.mark.skipif(
    MAKEDUMPFILE is None, reason="makedumpfile not installed (apt-get install makedumpfile)"
)


def _same_pages(a: PhysImage, b: PhysImage, block: int) -> None:
    """``b`` holds ``a``'s bytes, page by page; what ``a`` does not cover reads as zeros in ``b``
    (a kdump stores whole pages)."""
    assert a.covered(), "an empty image proves nothing"
    for s, t in a.covered():
        for p in range(s - s % block, t, block):
            lo, hi = max(s, p), min(t, p + block)
            assert b.read(lo, hi - lo) == a.read(lo, hi - lo), f"page {p:#x}"


def _reassemble(flat: Path, out: Path) -> bytes:
    assert MAKEDUMPFILE is not None
    with open(flat, "rb") as fh:
        r = subprocess.run([MAKEDUMPFILE, "-R", str(out)], stdin=fh, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


def test_the_sources_are_all_there():
    assert len(FIXTURES) >= 10 and len(CAPTURES) >= 2


@pytest.mark.oracle
@needs_makedumpfile
@pytest.mark.parametrize(
    "source, byteorder, compression",
    [(s, bo, c) for s in sorted(IMAGES) for bo in ("little", "big") for c in ("zlib", "none")]
    + [("v4-4k-luo", "little", "snappy"), ("v4-4k-luo", "little", "zstd")],
)
def test_makedumpfile_reassembles_every_flattened_kdump(tmp_path, source, byteorder, compression):
    img = PhysImage.from_elf(IMAGES[source])
    block = 16384 if "16k" in source else 65536 if "64k" in source else 4096
    plain, flat = io.BytesIO(), tmp_path / "flat.kdump"
    write_kdump(img, plain, compression=compression, byteorder=byteorder, block_size=block)
    with open(flat, "wb") as fh:
        write_kdump(img, fh, compression=compression, byteorder=byteorder, block_size=block, flattened=True)
    assert flat.read_bytes()[-16:] == b"\xff" * 16  # makedumpfile's END_FLAG_FLAT_HEADER, in both fields
    rebuilt = _reassemble(flat, tmp_path / "rebuilt.kdump")
    assert rebuilt == plain.getvalue()
    ours_flat, ours_rebuilt = PhysImage.load(str(flat)), PhysImage.load(str(tmp_path / "rebuilt.kdump"))
    assert ours_rebuilt.covered() == ours_flat.covered()
    _same_pages(img, ours_rebuilt, block)
    _same_pages(img, ours_flat, block)


@pytest.mark.oracle
@needs_makedumpfile
@pytest.mark.parametrize("fixture", ["v4-4k", "v3-16k", "v4-64k", "v4-4k-luo"])
def test_convert_writes_kdumps_makedumpfile_reads_back(tmp_path, capsys, fixture):
    """``kho convert --image-format``: the flattened file rebuilds into the plain one
    byte for byte, and both (and the rebuilt one) hold the converted image."""
    src = ROOT / "fixtures" / fixture
    to = "kho-v4" if fixture.startswith("v3") else "kho-v3"
    for fmt in ("elf", "kdump", "kdump-flat"):
        assert main(["convert", "--to", to, str(src), str(tmp_path / fmt), "--image-format", fmt]) == 0
    capsys.readouterr()
    assert not (tmp_path / "kdump" / "image.elf").exists()
    converted = PhysImage.from_elf(tmp_path / "elf" / "image.elf")
    page = {"v3-16k": 16384, "v4-64k": 65536}.get(fixture, 4096)
    rebuilt = _reassemble(tmp_path / "kdump-flat" / "image.kdump", tmp_path / "rebuilt.kdump")
    assert rebuilt == (tmp_path / "kdump" / "image.kdump").read_bytes()
    for f in (tmp_path / "kdump" / "image.kdump", tmp_path / "kdump-flat" / "image.kdump", tmp_path / "rebuilt.kdump"):
        _same_pages(converted, PhysImage.load(str(f)), page)
    # the directory still reads as the converted handover, and a kdump of it as a dump alone
    assert main(["inspect", "--json", str(tmp_path / "kdump")]) == 0
    assert main(["inspect", "--json", str(tmp_path / "rebuilt.kdump"), "--page-size", str(page)]) == 0
    capsys.readouterr()


def test_convert_image_format_is_documented():
    from kho_formats.cli import build_parser

    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["convert"].format_help().split())
    assert "--image-format {elf,kdump,kdump-flat}" in help_text and "makedumpfile -R" in help_text
    readme = (ROOT / "README.md").read_text()
    assert "--image-format kdump-flat" in readme and "makedumpfile -R" in readme


# -- drgn --------------------------------------------------------------------------------------


def _drgn_reads_like_us(path: Path) -> int:
    drgn = pytest.importorskip("drgn", reason="drgn not installed (pip install '.[test]')")
    prog = drgn.Program()
    prog.set_core_dump(str(path))
    ours = PhysImage.from_elf(path)
    assert ours.covered(), f"{path}: an empty image proves nothing"
    n = 0
    for s, t in ours.covered():
        for off in range(s, t, 1 << 20):
            size = min(t, off + (1 << 20)) - off
            assert prog.read(off, size, True) == ours.read(off, size), f"{path}: {off:#x}+{size:#x}"
            n += size
    lo, hi = ours.covered()[0][0], ours.covered()[-1][1]
    for outside in (lo - 1, hi):  # and neither invents bytes around the image
        if outside >= 0 and not any(a <= outside < b for a, b in ours.covered()):
            with pytest.raises(drgn.FaultError):
                prog.read(outside, 1, True)
    return n


@pytest.mark.oracle
@pytest.mark.parametrize("source", sorted(IMAGES))
def test_drgn_reads_every_shipped_image(source):
    assert _drgn_reads_like_us(IMAGES[source]) == PhysImage.from_elf(IMAGES[source]).total_bytes


@pytest.mark.oracle
@pytest.mark.parametrize(
    "src, to", [("v1-512-4k", "kho-v4"), ("v4-4k", "kho-v2"), ("v4-4k", "kho-v3"), ("v4-4k-x86", "kho-v3")]
)
def test_drgn_reads_converted_images(tmp_path, capsys, src, to):
    src = ROOT / "fixtures" / src
    assert main(["convert", "--to", to, str(src), str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert _drgn_reads_like_us(tmp_path / "out" / "image.elf")


@pytest.mark.oracle
@pytest.mark.parametrize("byte_order", ["little", "big"])
def test_drgn_reads_built_images(tmp_path, capsys, byte_order):
    spec = ROOT / "fixtures" / "specs" / "v4-16k.toml"
    assert main(["build", str(spec), "-o", str(tmp_path / "out"), "--byte-order", byte_order]) == 0
    capsys.readouterr()
    assert _drgn_reads_like_us(tmp_path / "out" / "image.elf")


@pytest.mark.oracle
@pytest.mark.parametrize("capture", [d.name for d in CAPTURES])
def test_drgn_reads_capture_output(tmp_path, capsys, capture):
    """``kho capture --from-dump``: the compact capture it writes."""
    cap = ROOT / "fixtures" / "captures" / capture
    argv = ["capture", "--from-dump", str(cap / "image.elf"), "-o", str(tmp_path / "out")]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert _drgn_reads_like_us(tmp_path / "out" / "image.elf")
