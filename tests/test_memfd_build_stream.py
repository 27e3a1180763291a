"""``kho build`` streams memfd contents: the same bytes, memory held by the folio list.

The specs under ``tests/data/memfd-build/`` hold memfds with contents in the
image (order-0 and order-2 folios, explicit folios out of index order with
holes, a head then seeded or zero contents, 4 and 16 KiB pages);
``sha256.json`` holds the SHA-256 of every file ``kho build`` wrote for them
before folio contents were made lazily (the builder kept every folio's bytes).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from kho_formats import api
from kho_formats.api import load_spec
from kho_formats.model.clients import memfd

DATA = Path(__file__).parent / "data" / "memfd-build"
WANT = json.loads((DATA / "sha256.json").read_text())


@pytest.mark.parametrize("name", sorted(WANT))
def test_build_output_is_byte_identical(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    api.build(load_spec(DATA / f"{name}.toml")).write(out)
    got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}
    assert got == WANT[name]


def test_folio_contents_are_segments_made_when_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64 MiB order-0 memfd: one lazy segment for its 16384 contiguous
    folios, no folio's bytes made while building, at most CHUNK bytes made at
    a time when written; the written image holds the contents read lazily."""
    made: list[int] = []
    real = memfd.MemfdContents.read

    def read(self: memfd.MemfdContents, off: int, n: int) -> bytearray:
        made.append(n)
        return real(self, off, n)

    monkeypatch.setattr(memfd.MemfdContents, "read", read)
    spec = {
        "name": "lazy",
        "version": "kho-v4",
        "page_size": 4096,
        "arch": "x86_64",
        "seed": 3,
        "alloc": [{"start": "0x100000000", "size": "0x5000000"}],
        "scratch": [{"start": "256M", "size": "64M"}],
        "blob": [
            {
                "name": "LUO",
                "type": "LUO",
                "liveupdate_num": 1,
                "sessions": [{"name": "s", "files": [{"token": 1, "size": 64 << 20}]}],
            }
        ],
    }
    h = api.build(spec)
    assert made == []  # nothing generated while building
    lazy = [s for s in h.image.segments if isinstance(s.data, memfd.FolioContents)]
    assert len(lazy) == 1 and len(lazy[0].data) == 64 << 20
    h.write(tmp_path / "fx", c_header=False)
    assert made and max(made) <= memfd.CHUNK
    assert bytes(lazy[0].data)[:8192] == bytes(lazy[0].data[0:8192])  # bytes(seg.data) as for real bytes

    def digest(luo: api.Luo | None) -> str | None:
        assert luo is not None
        _, f = next(iter(luo.files()))
        return luo.digest(f)

    built = digest(h.luo)
    assert built is not None and built == digest(api.open(tmp_path / "fx").luo)
