"""A memory dump alone says its byte order: an ELF core's ``EI_DATA`` and a kdump header's are the
handover's own byte order when no option and no capture file says it (a big-endian dump read as
little-endian finds the root FDT, FDTs being big-endian, and then misreads every KHO structure)."""

from __future__ import annotations

import pytest

import kho_formats
from kho_formats.memory.image import PhysImage
from kho_formats.memory.kdump import load_kdump, write_kdump


@pytest.fixture(scope="module", params=["little", "big"])
def built(request, tmp_path_factory):
    bo = request.param
    d = tmp_path_factory.mktemp(f"bo-{bo}")
    kho_formats.build("fixtures/specs/v4-4k-luo.toml", byteorder=bo).write(d / "fx")
    return bo, d / "fx"


def test_elf_core_alone_is_read_in_its_own_byte_order(built):
    bo, fx = built
    img = PhysImage.from_elf(fx / "image.elf")
    assert img.byteorder == bo
    h = kho_formats.open(fx / "image.elf")
    assert h.byteorder == bo
    ref = kho_formats.open(fx)
    assert h.ranges() == ref.ranges()
    assert h.check().ok, h.check()


@pytest.mark.parametrize("compression", ["zlib"])
def test_kdump_alone_is_read_in_its_own_byte_order(built, tmp_path, compression):
    bo, fx = built
    dump = tmp_path / "dump.kdump"
    with open(dump, "wb") as fh:
        write_kdump(PhysImage.from_elf(fx / "image.elf"), fh, compression=compression, byteorder=bo)
    assert load_kdump(dump).byteorder == bo
    h = kho_formats.open(dump)
    assert h.byteorder == bo
    assert h.ranges() == kho_formats.open(fx).ranges()


def test_an_option_still_wins_over_the_dump(built):
    bo, fx = built
    other = "little" if bo == "big" else "big"
    h = kho_formats.open(fx / "image.elf", byteorder=other)
    with pytest.raises(kho_formats.KhoFormatError):
        h.ranges()
