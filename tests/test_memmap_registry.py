"""Memory maps are codecs in a registry keyed by the schemas' ``memory_map``.

The shipped kinds (radix, chunk-list) are found through it, and a new kind
is one module plus a schema: ``tests/toy_pagelist.py`` registers a
"page-list" codec and ``tests/schemas/kho-vpagelist.toml`` names it; parse,
build, convert, inspect and check then work on it without any file under
``kho_formats/`` knowing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import toy_pagelist

from kho_formats import abi
from kho_formats.errors import UnrepresentableError, VersionError
from kho_formats.memory.pageset import PageSet
from kho_formats.model import memmap
from kho_formats.model.state import KhoState, SubBlob, build, convert, parse
from kho_formats.ops.check import check
from kho_formats.ops.report import inspect_report, render_inspect

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "schemas" / "kho-vpagelist.toml"
ALLOC = [(0x4000_0000, 1 << 24)]
ROOT, BLOB = 0x3000_0000, 0x3000_1000


@pytest.fixture
def pagelist() -> Iterator[str]:
    toy_pagelist.register()
    try:
        with abi.extra_schemas(SCHEMA) as added:
            yield added[0].name
    finally:
        toy_pagelist.unregister()


def test_every_shipped_version_has_a_codec_of_its_kind() -> None:
    for v in abi.versions():
        codec = memmap.codec_for(v)
        assert codec.kind == v.memory_map
    assert memmap.kinds() == ["chunk-list", "radix"]
    assert memmap.param_names() == ["v1_bitmap_bytes"]
    with pytest.raises(VersionError, match="unknown memory map kind 'nope'"):
        memmap.get("nope")
    with pytest.raises(VersionError):
        memmap.unregister("nope")


def test_params_belong_to_their_kind() -> None:
    v1, v4 = memmap.get("chunk-list"), memmap.get("radix")
    assert memmap.params_json(v1, {"v1_bitmap_bytes": 512}) == {"v1_bitmap_bytes": 512}
    # a radix state never reports a chunk-list parameter, even if one is carried
    assert memmap.params_json(v4, {"v1_bitmap_bytes": 512}) == {"v1_bitmap_bytes": None}


def test_a_schema_naming_an_unregistered_kind_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kho-vpagelist.toml").write_text(SCHEMA.read_text())
    with pytest.raises(VersionError, match="unknown memory_map 'page-list'"):
        abi.load_schema_file(tmp_path / "kho-vpagelist.toml")


def _state(version: str) -> KhoState:
    pages = PageSet.from_pages(4096, [(0x1000_0000 + 0x1000 * k, 0) for k in range(700)] + [(0x2000_0000, 4)])
    pages.update(PageSet.from_ranges(4096, [(ROOT, ROOT + 0x2000)], max_order=0))
    blob = bytes(range(200))
    return KhoState(
        version, preserved=pages, subblobs=[SubBlob("client", BLOB, len(blob), blob, "blob-size")], root_fdt_phys=ROOT
    )


def test_a_new_kind_is_a_module_and_a_schema(pagelist: str) -> None:
    st = _state(pagelist)
    assert st.codec is toy_pagelist.CODEC
    b = build(st, alloc=ALLOC)
    assert isinstance(b.memmap, toy_pagelist.PageList) and len(b.memmap.pages) == 2  # 702 entries, 510 a page
    back = parse(b.root_fdt, b.image, root_fdt_phys=ROOT)
    assert back.version == pagelist and back.preserved == st.preserved
    assert back.metadata_pages() == b.memmap.metadata_ranges(4096)
    rep = inspect_report(back, b.image, {}, root_fdt=b.root_fdt)
    assert rep["memory_map"]["kind"] == "page-list" and rep["memory_map"]["list_pages"] == 2
    assert rep["v1_bitmap_bytes"] is None
    assert "(page-list, 2 list pages)" in render_inspect(rep)
    assert not [f for f in check(back, b.image) if f.severity == "error"]
    # convert to and from the shipped versions: the same preserved set
    v4 = build(convert(back, "kho-v4"), alloc=[(0x5000_0000, 1 << 24)])
    assert parse(v4.root_fdt, v4.image).preserved == st.preserved
    again = build(convert(parse(v4.root_fdt, v4.image), pagelist), alloc=ALLOC)
    assert parse(again.root_fdt, again.image).preserved == st.preserved


def test_the_new_kind_refuses_what_it_cannot_hold(pagelist: str) -> None:
    st = KhoState(pagelist, preserved=PageSet.from_pages(4096, [(0, 12)]))
    with pytest.raises(UnrepresentableError, match="order 12"):
        build(st, alloc=ALLOC)


def test_nothing_in_the_package_knows_the_new_kind() -> None:
    for path in (HERE.parent / "kho_formats").rglob("*.py"):
        text = path.read_text()
        assert "page-list" not in text and "pagelist" not in text, path
