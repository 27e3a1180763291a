"""The spec field tables drive validation, defaults and the README's spec table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from kho_formats.errors import SpecError
from kho_formats.model.clients import registry
from kho_formats.model.spec import Spec, doc_tables, loads_spec
from kho_formats.model.spec.tables import BLOB, PRESERVE, TOP
from kho_formats.model.specfields import BOOL, INT, RANGE, STR, ListOf, SpecField, Table, validate

ROOT = Path(__file__).resolve().parent.parent

FIELDS = (
    SpecField("n", INT, 3, doc="an int"),
    SpecField("flag", BOOL, True),
    SpecField("s", STR, "a", choices=("a", "b"), convert=lambda v: v.lower()),
    SpecField("lst", ListOf(INT, "a list of ints"), []),
    SpecField("opt", INT),
    SpecField("req", STR, required=True),
    SpecField("sub", ListOf(Table((SpecField("k", INT, 1),))), []),
)


def test_defaults_applied_and_fresh() -> None:
    v = validate(FIELDS, {"req": "x"}, "t")
    assert v == {"n": 3, "flag": True, "s": "a", "lst": [], "opt": None, "req": "x", "sub": []}
    v["lst"].append(1)
    assert validate(FIELDS, {"req": "x"}, "t")["lst"] == []


def test_suffixed_ints_and_conversions() -> None:
    v = validate(FIELDS, {"req": "x", "n": "16M", "opt": "0x10", "lst": ["4K", 2, "2MiB"], "s": "B"}, "t")
    assert (v["n"], v["opt"], v["lst"], v["s"]) == (16 << 20, 16, [4096, 2, 2 << 20], "b")
    assert validate(FIELDS, {"req": "x", "sub": [{}, {"k": "1_000"}]}, "t")["sub"] == [{"k": 1}, {"k": 1000}]


@pytest.mark.parametrize(
    "d,needle",
    [
        ({"req": "x", "bogus": 1}, "t: unknown key(s) bogus"),
        ({"req": "x", "n": True}, "t.n: expected an integer, got true"),
        ({"req": "x", "n": "12Q"}, "t.n: expected an integer"),
        ({"req": "x", "flag": 1}, "t.flag: expected true or false"),
        ({"req": 5}, "t.req: expected a string"),
        ({"req": "x", "s": "c"}, "t.s: unknown s 'c'"),
        ({"req": "x", "lst": 4}, "t.lst: expected a list of ints"),
        ({"req": "x", "lst": [1, "z"]}, "t.lst[1]: expected an integer"),
        ({"req": "x", "sub": [{"j": 1}]}, "t.sub[0]: unknown key(s) j"),
        ({}, "t: missing req"),
        ([], "t: expected a table/mapping, got a list"),
    ],
)
def test_validation_errors(d: object, needle: str) -> None:
    with pytest.raises(SpecError) as e:
        validate(FIELDS, d, "t")
    assert needle in str(e.value)


def test_ranges() -> None:
    assert RANGE.parse("0x1000:4K", "r") == (0x1000, 4096)
    assert RANGE.parse([1, 2], "r") == (1, 2)
    assert RANGE.parse({"addr": "1M", "end": "3M"}, "r") == (1 << 20, 2 << 20)
    for bad, needle in (({"start": 1, "addr": 1, "size": 1}, "start / addr"), ({"start": 2, "end": 1}, "below")):
        with pytest.raises(SpecError, match=needle):
            RANGE.parse(bad, "r")


def test_table_defaults_are_the_model_defaults() -> None:
    sp = loads_spec("")
    for f in TOP.fields:
        if f.name in ("blob", "blobs") or f.default is None:
            continue
        assert getattr(sp, f.name) == f.default, f.name
    assert sp == Spec(name="fixture")
    b = loads_spec('[[blob]]\nname = "kho_test"\n').blobs[0]
    assert (b.type, b.preserve, b.seed, b.phys) == ("kho_test", BLOB.field("preserve").default, None, None)
    assert [f.order for f in b.params.folios] == [0, 1, 2]
    p = loads_spec('[[preserve]]\nphys = "0x4000"\n').preserve[0]
    assert (p.order, p.count) == (PRESERVE.field("order").default, PRESERVE.field("count").default)


def test_client_tables_drive_blob_keys() -> None:
    # the keys a [[blob]] accepts are the common ones plus every client's table
    md = registry.get("kexec-metadata")
    assert md is not None and md.spec_table is not None
    assert [f.name for f in md.spec_table.fields] == ["previous_release", "kexec_count", "metadata_version"]
    b = loads_spec('[[blob]]\nname = "kexec-metadata"\nkexec_count = "0x10"\n').blobs[0]
    assert (b.params.previous_release, b.params.kexec_count, b.params.metadata_version) == ("", 16, 1)
    with pytest.raises(SpecError, match="kexec_count: expected an integer"):
        loads_spec('[[blob]]\nname = "kexec-metadata"\nkexec_count = "many"\n')


def test_every_field_is_documented() -> None:
    for t in doc_tables():
        rows = t.doc_rows()
        keys = {k for r in t.rows for k in r.keys}
        for f in t.fields:
            assert f.name in keys or any(f"`{f.name}`" in r[0] for r in rows), (t.name, f.name)


def test_readme_spec_table_is_current() -> None:
    spec = importlib.util.spec_from_file_location("gen_spec_docs", ROOT / "scripts" / "gen_spec_docs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = (ROOT / "README.md").read_text()
    assert mod.render(text) == text, "README spec table is stale: run scripts/gen_spec_docs.py"
    assert mod.main(["--check"]) == 0


@pytest.mark.parametrize(
    "value,shown",
    [(True, "true"), (None, "null"), ({"a": None}, '{"a": null}'), (["x", False], '["x", false]'), ("16Q", '"16Q"')],
)
def test_spec_errors_quote_values_in_the_spec_s_own_syntax(tmp_path, value, shown):
    """A bad value is quoted as TOML/YAML/JSON writes it, never as a Python repr (True, None, {'a': ...})."""
    import json

    import kho_formats

    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"version": "kho-v4", "page_size": value}))
    with pytest.raises(kho_formats.KhoFormatError) as info:
        kho_formats.build(spec)
    msg = str(info.value)
    assert f"page_size: expected an integer, got {shown}" in msg
    for python in ("True", "False", "None", "{'", "['"):
        assert python not in msg
