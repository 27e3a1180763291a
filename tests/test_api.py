"""The library face (``kho_formats.open``, ``Handover``, ``build``): each
attribute against what ``kho --json`` prints for the same input, every reading
option against its flag, the files it writes against the command's, errors as
``KhoFormatError`` subclasses naming the path, and a package root that imports
nothing it does not need."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kho_formats
from kho_formats import cli
from kho_formats.errors import FdtError, ImageError, KhoFormatError, SpecError
from kho_formats.ops.documents import error_document
from kho_formats.ops.report import dumps_json

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
LUO = FIX / "captures" / "linux-7.3-x86_64-luo-v5-small"
V4CAP = FIX / "captures" / "linux-7.3-x86_64-kho-v4"
#: the RAM of a 1 GiB x86_64 QEMU guest (as tests/test_live_capture.py)
RAM_1G = [(0x1000, 0x9E000), (0x100000, 0x3FEE0000)]


def rel(p: Path) -> str:
    return os.path.relpath(p, ROOT)


#: every kind of input the command takes: (INPUT, --mem images)
INPUTS = {
    "fixture-v4": (rel(FIX / "v4-4k"), []),
    "fixture-v1-512": (rel(FIX / "v1-512-4k"), []),
    "fixture-v3-16k": (rel(FIX / "v3-16k"), []),
    "fixture-luo": (rel(FIX / "v4-4k-luo"), []),
    "fixture-x86": (rel(FIX / "v4-4k-x86"), []),
    "capture-luo": (rel(LUO), []),
    "capture-kho": (rel(V4CAP), []),
    "debugfs-out+mem": (rel(V4CAP / "debugfs"), [rel(V4CAP / "image.elf")]),
    "debugfs-in+mem": (rel(LUO / "debugfs" / "kho" / "in"), [rel(LUO / "image.elf")]),
    "debugfs-alone": (rel(V4CAP / "debugfs"), []),
    "root-fdt+mem": (rel(FIX / "v4-4k" / "root.dtb"), [rel(FIX / "v4-4k" / "image.elf")]),
    "root-fdt-alone": (rel(FIX / "v2-4k" / "root.dtb"), []),
    "elf-dump": (rel(LUO / "image.elf"), []),
    "bundle-as-mem": (rel(FIX / "v4-4k" / "root.dtb"), [rel(FIX / "v4-4k")]),
}


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the same relative names for the command and the face


def kho(*argv) -> tuple[int, dict]:
    """``kho --json ARGV`` in-process: exit status and the JSON document."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = cli.main(["--json", *map(str, argv)])
    return rc, json.loads(out.getvalue())


def as_json(doc) -> dict:
    """A document as the command prints it (tuples become lists)."""
    return json.loads(dumps_json(doc))


def mem_args(mem, flag="--mem"):
    return [x for m in mem for x in (flag, m)]


@pytest.mark.parametrize("key", sorted(INPUTS))
def test_attributes_match_inspect_json(key):
    path, mem = INPUTS[key]
    rc, j = kho("inspect", path, *mem_args(mem), "--all-ranges")
    h = kho_formats.open(path, mem)
    assert as_json(h.to_json(max_ranges=None)) == j
    assert j["schema"] == "kho-formats/inspect/1"
    assert h.version == j["version"] and h.compatible == j["compatible"]
    assert h.page_size == j["page_size"] and h.byteorder == j["byte_order"]
    assert h.root_fdt_phys == j["root_fdt"]["phys"] and len(h.root_fdt) == j["root_fdt"]["size"]
    assert h.root_fdt[:4] == b"\xd0\x0d\xfe\xed"
    assert [list(s) for s in h.scratch] == [[s["addr"], s["size"]] for s in j["scratch"]]
    assert [(s.name, s.phys, s.size) for s in h.subblobs] == [(s["name"], s["phys"], s["size"]) for s in j["subblobs"]]
    for s in j["subblobs"]:
        rep = h.clients[s["name"]]
        assert rep.kind == s["kind"]
        assert as_json(rep.decoded_json()) == s["decoded"]
        assert (str(rep.error) if rep.error else None) == s["error"]
    assert h.notes == j["notes"] and h.received == j["memory_map"]["released"]
    assert h.sources == {k: v for k, v in j["sources"].items() if v is not None}
    assert (h.image.total_bytes if h.image is not None else None) == (j["image"] or {}).get("bytes")
    if j["preserved"] is None:
        with pytest.raises(KhoFormatError, match="memory map was not read"):
            h.ranges()
    else:
        p = j["preserved"]
        assert [list(r) for r in h.ranges()] == [[r["start"], r["end"]] for r in p["ranges"]]
        pages = list(h.pages())
        assert len(pages) == p["pages"] and pages == sorted(pages)
        assert sum(h.page_size << o for _, o in pages) == p["bytes"]
        runs = h.runs()
        assert len(runs) == p["runs"] and runs == sorted(runs)
        assert {str(o): n for o, n in h.preserved.counts_by_order().items()} == {
            o: v["pages"] for o, v in p["per_order"].items()
        }
    luo = h.luo
    assert (as_json(luo.to_json()) if luo is not None else None) == j["luo"]
    assert rc == (1 if any(s["error"] for s in j["subblobs"]) and not h.received else 0)


@pytest.mark.parametrize("key", ["fixture-v4", "fixture-luo", "capture-luo", "debugfs-alone", "root-fdt-alone"])
@pytest.mark.parametrize("strict", [False, True])
def test_check_matches_kho_check(key, strict):
    path, mem = INPUTS[key]
    rc, j = kho("check", path, *mem_args(mem), *(["--strict"] if strict else []))
    f = kho_formats.open(path, mem).check(strict=strict)
    assert as_json(f.to_json()) == j
    assert f.ok == j["ok"] and f.errors == j["errors"] and f.warnings == j["warnings"] and len(f) == len(j["findings"])
    assert [x.code for x in f] == [x["code"] for x in j["findings"]]
    assert rc == (0 if f.ok else 1)


DIFFS = [
    ("fixture-v4", "fixture-v3-16k"),
    ("fixture-v4", "root-fdt+mem"),
    ("capture-luo", "fixture-luo"),
    ("capture-luo", "elf-dump"),
    ("debugfs-alone", "capture-kho"),
]


@pytest.mark.parametrize(("ka", "kb"), DIFFS)
def test_diff_matches_kho_diff(ka, kb):
    (a, ma), (b, mb) = INPUTS[ka], INPUTS[kb]
    rc, j = kho("diff", a, b, *mem_args(ma, "--mem-a"), *mem_args(mb, "--mem-b"))
    d = kho_formats.open(a, ma).diff(kho_formats.open(b, mb))
    assert as_json(d.to_json()) == j
    assert d.identical == j["identical"] and d.preserved_identical == j["preserved_identical"]
    assert d.subblobs == j["subblobs"] and as_json(d.other) == j["other"] and as_json(d.luo) == j["luo"]
    assert rc == (0 if d.identical else 1)


@pytest.mark.parametrize("key", ["fixture-v4", "capture-luo", "debugfs-alone", "root-fdt-alone"])
def test_dts_matches_kho_dts(key):
    path, mem = INPUTS[key]
    _, j = kho("dts", path, *mem_args(mem), "--sub")
    h = kho_formats.open(path, mem)
    docs, skipped = h.dts_documents(sub=True)
    assert [d._asdict() for d in docs] == j["documents"] and skipped == j["skipped"]
    assert h.to_dts() == j["documents"][0]["dts"] and h.to_dts().startswith("/dts-v1/;")
    _, root_only = kho("dts", path, *mem_args(mem))
    assert [d._asdict() for d in h.dts_documents(sub=False)[0]] == root_only["documents"]


def files_of(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("key", "to"), [("fixture-v1-512", "kho-v4"), ("fixture-v3-16k", "kho-v4"), ("capture-kho", "kho-v2")]
)
def test_convert_writes_what_kho_convert_writes(key, to, tmp_path):
    path, mem = INPUTS[key]
    rc, j = kho("convert", "--to", to, path, tmp_path / "cli", *mem_args(mem), "--name", "conv")
    assert rc == 0
    h = kho_formats.open(path, mem).convert(to, name="conv")
    assert h.version == to and h.fixture is not None
    files = h.write(tmp_path / "api")
    assert files == j["files"]
    assert as_json({**h.conversion, "outdir": str(tmp_path / "cli"), "files": files}) == j
    assert files_of(tmp_path / "api") == files_of(tmp_path / "cli")
    again = kho_formats.open(tmp_path / "api")
    assert again.version == to and again.preserved == kho_formats.open(path, mem).preserved


def test_build_writes_what_kho_build_writes(tmp_path):
    spec = FIX / "specs" / "v4-4k-luo.toml"
    rc, j = kho("build", spec, "-o", tmp_path / "cli", "--page-size", "4096")
    assert rc == 0
    h = kho_formats.build(spec, page_size=4096)
    files = h.write(tmp_path / "api")
    assert files == j["files"] and h.fixture.name == j["name"] == "v4-4k-luo"
    assert files_of(tmp_path / "api") == files_of(tmp_path / "cli")
    # the shipped fixture is this spec's output
    assert files_of(tmp_path / "api") == {
        k: v for k, v in files_of(FIX / "v4-4k-luo").items() if k in files_of(tmp_path / "api")
    }
    assert as_json(kho_formats.open(tmp_path / "api").to_json()["luo"]) == as_json(h.to_json()["luo"])


def test_build_from_a_dict_is_the_same_as_from_its_file(tmp_path):
    import tomllib

    spec = FIX / "specs" / "v4-16k.toml"
    d = tomllib.loads(spec.read_text())
    a, b = kho_formats.build(spec), kho_formats.build(d, name="v4-16k")
    assert a.root_fdt == b.root_fdt and a.image == b.image and a.preserved == b.preserved
    assert kho_formats.load_spec(d).page_size == kho_formats.load_spec(spec).page_size == 16384
    built = kho_formats.build(FIX / "specs" / "v4-4k.toml", version="kho-v3", byteorder="big", name="other")
    assert (built.version, built.byteorder, built.fixture.name) == ("kho-v3", "big", "other")


def test_luo_extract_and_streams_match_kho_luo_extract(tmp_path):
    rc, j = kho("luo", "extract", rel(LUO), "-o", tmp_path / "cli")
    assert rc == 0
    luo = kho_formats.open(rel(LUO)).luo
    assert luo.extract(tmp_path / "api") == j
    assert files_of(tmp_path / "api") == files_of(tmp_path / "cli")
    n = 0
    for s in j["sessions"]:
        for entry in s["files"]:
            f = next(f for f in luo.session(s["name"]).files if f.token == entry["token"])
            want = (tmp_path / "cli" / entry["file"]).read_bytes()
            with luo.open(f) as fh:
                assert fh.read() == want
            pieces = list(luo.contents(f, chunk=1000))
            assert b"".join(pieces) == want and all(len(p) <= 1000 for p in pieces)
            assert luo.size(f) == len(want) == entry["size"]
            n += 1
    assert n == 3


def test_luo_streams_of_a_fixture_with_holes(tmp_path):
    """v4-4k-luo's memfds have folios missing from the file (holes read as zeros)."""
    rc, j = kho("luo", "extract", rel(FIX / "v4-4k-luo"), "-o", tmp_path / "cli")
    assert rc == 0
    luo = kho_formats.open(rel(FIX / "v4-4k-luo")).luo
    for s in j["sessions"]:
        for entry in s["files"]:
            if entry["file"] is None:
                continue
            f = next(f for f in luo.session(s["name"]).files if f.token == entry["token"])
            want = (tmp_path / "cli" / entry["file"]).read_bytes()
            got = io.BytesIO()
            with luo.open(f) as fh:
                while chunk := fh.read(777):
                    got.write(chunk)
            assert got.getvalue() == want


def test_capture_from_dump_writes_what_kho_capture_writes(tmp_path):
    image, dbg = rel(V4CAP / "image.elf"), rel(V4CAP / "debugfs")
    rc, j = kho("capture", "--from-dump", image, dbg, "-o", tmp_path / "cli", "--root-phys", "0x11f3000")
    assert rc == 0
    h = kho_formats.open(dbg, [image], root_phys=0x11F3000)
    assert h.write(tmp_path / "api", source=image) == j["files"]
    assert files_of(tmp_path / "api") == files_of(tmp_path / "cli")
    keep = h.handover_image()
    assert (keep.total_bytes, len(keep.covered())) == (j["image_bytes"], j["image_segments"])
    back = kho_formats.open(tmp_path / "api")
    assert back.preserved == h.preserved and back.root_fdt_phys == 0x11F3000 and back.check().ok
    rc, j = kho("capture", "--from-dump", image, dbg, "-o", tmp_path / "cli2", "--referenced-only")
    assert rc == 0 and j["root_fdt_phys"] == 0x11F3000  # the root FDT found in the image, by its address
    assert kho_formats.open(dbg, [image]).write(tmp_path / "api2", referenced_only=True, source=image) == j["files"]
    assert files_of(tmp_path / "api2") == files_of(tmp_path / "cli2")


def test_kcore_input_and_live_capture(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from _kcore import debugfs_copy, write_kcore
    finally:
        sys.path.remove(str(ROOT / "tests"))
    from kho_formats.memory.image import PhysImage

    kcore = write_kcore(tmp_path / "kcore", PhysImage.from_elf(V4CAP / "image.elf"), RAM_1G)
    dbg = debugfs_copy(V4CAP / "debugfs" / "kho" / "out", tmp_path / "out", prefix=200)
    rc, j = kho("capture", "--kcore", kcore, "--debugfs", dbg, "-o", tmp_path / "cli")
    assert rc == 0
    live = kho_formats.open_live(kcore=kcore, debugfs=dbg)
    assert live.live == j["live"] and live.source == f"live: {kcore} + {dbg}"
    assert live.write(tmp_path / "api", meta={"live": live.live}) == j["files"]
    assert files_of(tmp_path / "api") == files_of(tmp_path / "cli")
    assert live.preserved == kho_formats.open(rel(V4CAP)).preserved


def test_kdump_input(tmp_path):
    from kho_formats.memory.image import PhysImage
    from kho_formats.memory.kdump import write_kdump

    p = tmp_path / "dump.kdump"
    with p.open("wb") as fh:
        write_kdump(PhysImage.from_elf(LUO / "image.elf"), fh, compression="zlib")
    _, j = kho("inspect", p, "--all-ranges")
    h = kho_formats.open(p)
    assert as_json(h.to_json(max_ranges=None)) == j
    assert h.preserved == kho_formats.open(rel(LUO)).preserved and len(h.luo.sessions) == 1


#: each reading option of open() against its kho flag: (input, flags, keywords)
OPTIONS = [
    ("fixture-v4", ["--page-size", "16384"], {"page_size": 16384}),
    ("fixture-v4", ["--byte-order", "big"], {"byteorder": "big"}),
    ("fixture-v4", ["--abi", "kho-v3"], {"version": "kho-v3"}),
    ("fixture-v3-16k", ["--version-override", "kho-v4"], {"version": "kho-v4"}),
    ("fixture-v1-512", ["--v1-bitmap", "page"], {"v1_bitmap": "page"}),
    ("fixture-v1-512", ["--v1-bitmap", "auto"], {"v1_bitmap": "auto"}),
    ("capture-luo", ["--received", "yes"], {"received": True}),
    ("debugfs-in+mem", ["--received", "no"], {"received": False}),
    ("debugfs-in+mem", ["--received", "auto"], {"received": None}),
    ("fixture-v4", ["--max-pages", "3"], {"max_pages": 3}),
    ("fixture-luo", ["--max-entries", "5"], {"max_entries": 5}),
    ("fixture-v4", ["--max-runs", "2"], {"max_runs": 2}),
    ("elf-dump", ["--root-phys", "0x1cfe000"], {"root_phys": 0x1CFE000}),
    ("elf-dump", ["--root-phys", "0x1000"], {"root_phys": 0x1000}),
    ("fixture-v4", ["--root-phys", "0x78000000"], {"root_phys": 0x78000000}),
    (rel(FIX / "v4-4k-x86" / "image.elf"), ["--boot-info", rel(FIX / "v4-4k-x86" / "setup_data.bin")],
     {"boot_info": rel(FIX / "v4-4k-x86" / "setup_data.bin")}),
]  # fmt: skip


@pytest.mark.parametrize(("key", "flags", "kw"), OPTIONS, ids=[" ".join(o[1]) for o in OPTIONS])
def test_reading_options_are_the_flags(key, flags, kw):
    path, mem = INPUTS.get(key, (key, []))
    rc, j = kho("inspect", path, *mem_args(mem), *flags, "--all-ranges")
    try:
        doc = as_json(kho_formats.open(path, mem, **kw).to_json(max_ranges=None))
    except KhoFormatError as exc:
        assert rc == 1 and j == error_document(exc), j
        assert exc.path or path in str(exc) or exc.phys is not None
    else:
        assert doc == j


def test_limits_object_and_flags_combine():
    from kho_formats.limits import Limits

    with pytest.raises(KhoFormatError, match="metadata pages") as e:
        _ = kho_formats.open(rel(FIX / "v4-4k"), limits=Limits(max_pages=3)).preserved
    assert e.value.kind == "limit"
    h = kho_formats.open(rel(FIX / "v4-4k"), limits=Limits(max_pages=3), max_pages=100)
    assert h.preserved.num_pages == 17


# -- errors: KhoFormatError subclasses that name the path ----------------------------------------


def test_missing_input_names_it():
    with pytest.raises(KhoFormatError) as e:
        kho_formats.open("no/such/input")
    assert "no/such/input" in str(e.value)


def test_not_an_fdt_names_the_file(tmp_path):
    bad = tmp_path / "junk.dtb"
    bad.write_bytes(b"\x01\x02\x03\x04" * 64)
    h = kho_formats.open(bad)  # read, not parsed yet
    with pytest.raises(FdtError) as e:
        _ = h.version
    assert str(bad) in e.value.path and "not a flattened device tree" in str(e.value)
    with pytest.raises(FdtError) as e:
        h.to_dts()
    assert str(bad) in e.value.path


def test_elf_given_as_root_fdt_says_to_use_mem(tmp_path):
    bad = tmp_path / "x.dtb"
    bad.write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(KhoFormatError) as e:
        _ = kho_formats.open(bad).version
    assert str(bad) in str(e.value)


def test_directory_without_a_handover(tmp_path):
    with pytest.raises(KhoFormatError) as e:
        kho_formats.open(tmp_path)
    assert str(tmp_path) in str(e.value) and "no root FDT" in str(e.value)


def test_missing_memory_image_names_it():
    with pytest.raises(KhoFormatError) as e:
        kho_formats.open(rel(FIX / "v4-4k" / "root.dtb"), ["no/such.elf"])
    assert "no/such.elf" in str(e.value)


def test_operations_that_need_memory_say_so():
    h = kho_formats.open(rel(FIX / "v4-4k" / "root.dtb"))
    with pytest.raises(KhoFormatError, match="memory map was not read") as e:
        _ = h.preserved
    assert rel(FIX / "v4-4k" / "root.dtb") in str(e.value)
    with pytest.raises(KhoFormatError, match="memory image"):
        h.convert("kho-v2")
    with pytest.raises(KhoFormatError, match="no memory image"):
        h.handover_image()
    full = kho_formats.open(rel(LUO)).luo
    luo = kho_formats.Luo(full.state, None, 4096, "somewhere")  # the LUO state without its memory image
    with pytest.raises(KhoFormatError, match="no memory image") as e:
        luo.extract("unused")
    assert "somewhere" in str(e.value)
    with pytest.raises(KhoFormatError, match="no memory image"):
        luo.contents(full.session("vm-a").files[1])
    assert luo.digest(full.session("vm-a").files[1]) is None


def test_receiving_side_cannot_convert():
    h = kho_formats.open(rel(LUO), received=True)
    with pytest.raises(KhoFormatError, match="receiving side"):
        h.convert("kho-v3")


def test_bad_image_is_an_image_error(tmp_path):
    bad = tmp_path / "bad.img"
    bad.write_bytes(b"not an image" * 10)
    with pytest.raises(ImageError) as e:
        kho_formats.open(rel(FIX / "v4-4k" / "root.dtb"), [str(bad)])
    assert str(bad) in str(e.value)


def test_spec_errors_name_the_spec(tmp_path):
    with pytest.raises(SpecError, match=r"spec\.version"):
        kho_formats.build({"version": "kho-v9"})
    with pytest.raises(SpecError) as e:
        kho_formats.build(tmp_path / "missing.toml")
    assert "missing.toml" in str(e.value)
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "kho-v4"\npage_size = 1234\n')
    with pytest.raises(SpecError) as e:
        kho_formats.load_spec(bad)
    assert str(bad) in str(e.value)
    with pytest.raises(SpecError, match="name"):
        kho_formats.build({}, name="../x")


def test_write_refuses_what_it_would_overwrite(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(KhoFormatError) as e:
        kho_formats.open(rel(V4CAP)).write(tmp_path / "full")
    assert "full" in str(e.value)
    with pytest.raises(KhoFormatError) as e:
        kho_formats.build(FIX / "specs" / "v4-4k.toml").write(tmp_path / "full")
    assert "full" in str(e.value)
    spec = tmp_path / "s" / "spec.toml"
    spec.parent.mkdir()
    spec.write_text('version = "kho-v4"\n')
    with pytest.raises(KhoFormatError, match="input"):  # never into the spec's own path
        kho_formats.build(spec).write(spec)
    assert (tmp_path / "full" / "x").read_text() == "keep"


def test_luo_lookups():
    luo = kho_formats.open(rel(LUO)).luo
    with pytest.raises(KeyError):
        luo.session("no-such-session")
    assert [f.token for _, f in luo.files()] == [0, 0x1001, (1 << 64) - 1]
    assert (
        luo.digest(luo.session("vm-a").files[0]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert kho_formats.open(rel(FIX / "v4-4k")).luo is None
    with pytest.raises(TypeError):
        kho_formats.open(rel(FIX / "v4-4k")).diff("fixtures/v4-4k")


# -- the package root -------------------------------------------------------------------------------


def _modules_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(sorted(m for m in sys.modules if m.startswith('kho_formats')))"],
        capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    return eval(out.stdout.strip().splitlines()[-1])


def test_package_root_imports_nothing_until_asked():
    assert _modules_after("import kho_formats") == ["kho_formats", "kho_formats._version"]
    assert _modules_after("import kho_formats.errors") == ["kho_formats", "kho_formats._version", "kho_formats.errors"]
    assert _modules_after("import kho_formats; kho_formats.__version__") == ["kho_formats", "kho_formats._version"]
    low = _modules_after("import kho_formats.abi.layout")  # a low layer alone: nothing above it
    assert "kho_formats.abi.layout" in low
    assert not [m for m in low if m.split(".")[1:2] in (["api"], ["cli"], ["ops"], ["model"], ["memory"], ["boot"])], (
        low
    )
    assert "kho_formats.api" in _modules_after("import kho_formats; kho_formats.open")
    assert "kho_formats.cli" not in _modules_after("import kho_formats; kho_formats.open('fixtures/v4-4k').version")


def test_package_root_exports():
    from kho_formats import api
    from kho_formats._version import __version__

    assert kho_formats.__version__ == __version__
    assert kho_formats.open is api.open and kho_formats.Handover is api.Handover
    assert kho_formats.KhoFormatError is KhoFormatError
    for name in kho_formats.__all__:
        assert getattr(kho_formats, name) is not None
        assert name in dir(kho_formats)
    with pytest.raises(AttributeError):
        kho_formats.no_such_name  # noqa: B018
    ns: dict = {}
    exec("from kho_formats import *", ns)
    assert set(kho_formats.__all__) <= set(ns)
