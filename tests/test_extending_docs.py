"""docs/extending.md: every path it names exists, every kernel-header module is on it, and its
"an image format" row holds: a format the package does not know, declared and registered from
this test only, opens wherever a memory image is taken."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import construct as cs
import pytest

import kho_formats
from kho_formats.abi.layout import Layout, layout
from kho_formats.abi.struct import Typed, declare
from kho_formats.errors import ImageError
from kho_formats.memory.image import (
    ImageFormat,
    PhysImage,
    image_format_of,
    image_formats,
    register_format,
    unregister_format,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "extending.md"
TOP = ("kho_formats/", "schemas/", "tests/", "benchmarks/", "scripts/", "docs/", "fuzz/", "fixtures/")


def doc_paths(text: str) -> list[str]:
    """Backticked repository paths of ``text`` (``kho_formats/...``, ``tests/...`` ...)."""
    out = []
    for tok in re.findall(r"`([^`\s]+)`", text):
        if tok.startswith(TOP):
            out.append(tok)
    return out


def missing(paths: list[str], root: Path = ROOT) -> list[str]:
    """The paths that do not exist; one with a ``<placeholder>`` (or ``kho-vN``-style name) needs its
    folder to exist."""
    bad = []
    for p in paths:
        if "<" in p or re.search(r"kho-v[NM]\.toml$", p):
            if not (root / p).parent.is_dir():
                bad.append(p)
        elif not (root / p).exists():
            bad.append(p)
    return bad


def test_every_path_the_page_names_exists() -> None:
    paths = doc_paths(DOC.read_text(encoding="utf-8"))
    assert len(paths) > 40
    assert missing(paths) == []


def test_the_path_check_catches_a_wrong_path(tmp_path: Path) -> None:
    (tmp_path / "kho_formats" / "abi").mkdir(parents=True)
    (tmp_path / "kho_formats" / "abi" / "luo.py").write_text("")
    text = "`kho_formats/abi/luo.py`, `kho_formats/abi/<header>.py`, `kho_formats/luo.py`, `tests/<x>.py`, `lay.u64`"
    assert doc_paths(text) == [
        "kho_formats/abi/luo.py",
        "kho_formats/abi/<header>.py",
        "kho_formats/luo.py",
        "tests/<x>.py",
    ]
    assert missing(doc_paths(text), tmp_path) == ["kho_formats/luo.py", "tests/<x>.py"]


def test_every_kernel_header_module_and_layer_is_on_the_page() -> None:
    text = DOC.read_text(encoding="utf-8")
    abi = ROOT / "kho_formats" / "abi"
    headers = sorted(p.name for p in abi.glob("*.py") if p.name not in ("__init__.py",))
    assert {"elf.py", "kdump.py", "memblock.py", "luo.py", "struct.py", "layout.py"} <= set(headers)
    assert [h for h in headers if f"kho_formats/abi/{h}" not in text] == []
    for sub in ("abi", "memory", "model", "ops", "boot"):
        assert f"`kho_formats/{sub}/`" in text
    for sect in ("## A new ABI version", "## A changed struct", "## A new client", "## A new memory-map kind"):
        assert sect in text
    assert "## A new image format" in text


# -- a toy image format: "TOYIMAGE", a count, (phys, size) per segment, then the bytes ------------

TOY_MAGIC = b"TOYIMAGE"


@dataclass(frozen=True)
class ToyImageHeader:
    magic: bytes
    nr_segments: int


@declare("toy_image_header")
def _toy_image_header(lay: Layout) -> cs.Construct:
    return Typed(cs.Struct("magic" / cs.Bytes(8), "nr_segments" / lay.u64), ToyImageHeader)


@declare("toy_image_segment")
def _toy_image_segment(lay: Layout) -> cs.Construct:
    return cs.Struct("phys" / lay.u64, "size" / lay.u64)


def write_toy(img: PhysImage, path: Path) -> None:
    lay = layout()
    runs = img.covered()
    out = [lay.build("toy_image_header", dict(magic=TOY_MAGIC, nr_segments=len(runs)))]
    out += [lay.build("toy_image_segment", dict(phys=a, size=b - a)) for a, b in runs]
    out += [img.read(a, b - a) for a, b in runs]
    path.write_bytes(b"".join(out))


def load_toy(path: Path, data) -> PhysImage:
    lay = layout()
    buf = memoryview(data)
    hsize, ssize = lay.sizeof("toy_image_header"), lay.sizeof("toy_image_segment")
    hdr = lay.parse("toy_image_header", buf[:hsize], error=ImageError)
    off = hsize + hdr.nr_segments * ssize
    img = PhysImage()
    for k in range(hdr.nr_segments):
        seg = lay.parse("toy_image_segment", buf[hsize + k * ssize : hsize + (k + 1) * ssize], error=ImageError)
        if off + seg.size > len(buf):
            raise ImageError(f"{path}: segment {k} past the end of the file", phys=seg.phys)
        img.add(seg.phys, buf[off : off + seg.size], what=f"{path} segment {k}")
        off += seg.size
    return img


@pytest.fixture
def toy_format():
    register_format(ImageFormat("toy", lambda head: head.startswith(TOY_MAGIC), load_toy))
    yield
    unregister_format("toy")


def test_a_registered_image_format_opens_wherever_an_image_is_taken(toy_format, tmp_path: Path) -> None:
    fx = ROOT / "fixtures" / "v4-4k"
    elf = PhysImage.from_elf(fx / "image.elf")
    toy = tmp_path / "image.toy"
    write_toy(elf, toy)
    assert "toy" in image_formats() and image_format_of(toy.read_bytes()[:16]) == "toy"
    assert PhysImage.load(str(toy)) == elf
    a = kho_formats.open(fx / "root.dtb", mem=[str(toy)])
    b = kho_formats.open(fx / "root.dtb", mem=[str(fx / "image.elf")])
    assert list(a.ranges()) == list(b.ranges()) and a.check().ok
    assert a.diff(b).identical


def test_an_unregistered_format_is_not_an_image(tmp_path: Path) -> None:
    toy = tmp_path / "image.toy"
    write_toy(PhysImage.from_elf(ROOT / "fixtures" / "v4-4k" / "image.elf"), toy)
    assert "toy" not in image_formats() and image_format_of(toy.read_bytes()[:16]) is None
    with pytest.raises(ImageError, match="neither an ELF core"):
        PhysImage.load(str(toy))
    with pytest.raises(ImageError, match="no image format 'toy'"):
        unregister_format("toy")
