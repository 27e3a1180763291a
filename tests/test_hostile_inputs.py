"""Issue 12: a hostile corpus for everything but the image/capture readers.

Specs (typed errors, limits before conversion, files confined), convert,
boot manifests, library argument types, bounds (paths, DTS, sub-blob
copies, findings, regions, checksum, fragmented map memory), terminal
safety, check verdicts and the usability bugs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from kho_formats import cli
from kho_formats.errors import BootError, FdtError, KhoFormatError, LimitExceeded, ScratchError, SpecError
from kho_formats.limits import Limits
from kho_formats.memory.alloc import disjoint_regions
from kho_formats.memory.image import PhysImage
from kho_formats.memory.pageset import PageSet
from kho_formats.model.clients import decode_clients
from kho_formats.model.fdt import FdtNode, build_fdt, parse_fdt, str_bytes, to_dts, u64_bytes
from kho_formats.model.spec import build_spec, load_spec, loads_spec
from kho_formats.model.state import KhoState, build, parse
from kho_formats.ops.capture import load_capture, parse_capture
from kho_formats.ops.check import check
from kho_formats.ops.migrate import convert_capture
from kho_formats.ops.report import inspect_report, render_check, render_inspect, safe_text

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
V4 = FIX / "v4-4k"


def run(*argv: object) -> int:
    return cli.main([str(a) for a in argv])


# -- specs ---------------------------------------------------------------------------------------------

BOMB = "\n".join(["a0: &a0 [x, x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 40)] + ["blob: *a39"])

HOSTILE_SPECS = {
    "json nested 100k deep": ("json", '{"blob":' + "[" * 100000 + "]" * 100000 + "}", "nested deeper"),
    "toml nested 100k deep": ("toml", "x = " + "[" * 100000 + "]" * 100000, "nested deeper"),
    "yaml nested 100k deep": ("yaml", "x: " + "[" * 100000 + "]" * 100000, "nested deeper"),
    "yaml block nesting": ("yaml", "".join(" " * i + "- \n" for i in range(200)), "nested deeper"),
    "5000-digit toml int": ("toml", "seed = " + "9" * 5000, "characters"),
    "5000-digit yaml int": ("yaml", "seed: " + "9" * 5000, "characters"),
    "5000-digit json int": ("json", '{"seed": ' + "9" * 5000 + "}", "characters"),
    "5000-digit string int": ("toml", 'root_fdt_phys = "' + "9" * 5000 + '"', "characters"),
    "negative order": ("toml", "[[preserve]]\nphys = 0x4000000\norder = -1\n", "out of range"),
    "order 60 at 4k": ("toml", "[[preserve]]\nphys = 0\norder = 60\n", "order"),
    "range wrapping 2**64": ("toml", "[[preserve]]\nstart = 0xfffffffffffff000\nsize = 0x2000\n", "wraps"),
    "scratch wrapping 2**64": ("toml", "[[scratch]]\nstart = 0xfffffffffffff000\nsize = 0x2000\n", "wraps"),
    "pages past 2**64": ("toml", "[[preserve]]\nphys = 0xfffffffffffff000\norder = 0\ncount = 2\n", "past 2**64"),
    "count 2**40": ("toml", "[[preserve]]\nphys = 0x4000000\ncount = 1099511627776\n", "count"),
    "order-31 folio": ("toml", '[[blob]]\nname = "kho_test"\norders = [31]\n', "folio order"),
    "vmalloc 2**32 pages": ("toml", "[[vmalloc]]\npages = 4294967296\n", "pages"),
    "negative alloc": ("toml", '[[alloc]]\nstart = -4096\nsize = "16M"\n', "out of range"),
    "yaml alias bomb": ("yaml", BOMB, "YAML"),
    "bool as int": ("toml", "seed = true", "expected an integer"),
    "float": ("toml", "seed = 1e999", "expected an integer"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_SPECS))
def test_hostile_specs_are_spec_errors(name: str, tmp_path: Path) -> None:
    fmt, text, needle = HOSTILE_SPECS[name]
    with pytest.raises(SpecError) as info:
        build_spec(loads_spec(text, fmt=fmt, base_dir=tmp_path))
    assert needle in str(info.value), str(info.value)
    assert len(str(info.value)) < 600  # no 5000-digit or megabyte reprs in messages


def test_a_few_yaml_aliases_still_work() -> None:
    sp = loads_spec("x: &c [kho-extra]\nextra_compatible: *c\n".replace("x:", "extra_compatible:"), fmt="yaml")
    assert sp.extra_compatible == ["kho-extra"]


def test_spec_raw_files_stay_in_the_spec_directory(tmp_path: Path) -> None:
    d = tmp_path / "specs"
    d.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"secret")
    (d / "inside.bin").write_bytes(b"fine")
    (d / "link.bin").symlink_to(tmp_path / "outside.bin")
    for name, needle in [
        ("../outside.bin", "outside the spec's directory"),
        (str(tmp_path / "outside.bin"), "outside the spec's directory"),
        ("link.bin", "outside the spec's directory"),
    ]:
        (d / "s.toml").write_text(f'[[blob]]\nname = "x"\ntype = "raw"\nfile = "{name}"\n')
        with pytest.raises(SpecError, match=needle):
            load_spec(d / "s.toml")
    # the explicit option lets them in
    sp = load_spec(d / "s.toml", allow_outside_files=True)
    assert sp.blobs[0].params.data == b"secret"
    (d / "s.toml").write_text('[[blob]]\nname = "x"\ntype = "raw"\nfile = "inside.bin"\n')
    assert load_spec(d / "s.toml").blobs[0].params.data == b"fine"
    # not a regular file: refused without reading (a FIFO would block, /dev/zero never ends)
    (d / "s.toml").write_text('[[blob]]\nname = "x"\ntype = "raw"\nfile = "/dev/zero"\n')
    with pytest.raises(SpecError, match="not a regular file"):
        load_spec(d / "s.toml", allow_outside_files=True)
    assert run("build", d / "s.toml", "-o", tmp_path / "o") == 1


def test_cli_allow_outside_files(tmp_path: Path, capsys) -> None:
    d = tmp_path / "specs"
    d.mkdir()
    (tmp_path / "b.bin").write_bytes(b"abc")
    (d / "s.toml").write_text('version = "kho-v3"\n[[blob]]\nname = "x"\ntype = "raw"\nfile = "../b.bin"\n')
    assert run("build", d / "s.toml", "-o", tmp_path / "o1") == 1
    assert "outside the spec's directory" in capsys.readouterr().err
    assert run("build", d / "s.toml", "-o", tmp_path / "o2", "--allow-outside-files") == 0


def test_spec_that_is_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not a regular file"):
        load_spec("/dev/null")


# -- convert ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v4() -> tuple:
    cap = load_capture(V4)
    return cap, parse_capture(cap)


@pytest.mark.parametrize(
    "alloc", [[(-4096, 1 << 20)], [((1 << 64) - 4096, 8192)], [(0x1000, -5)]], ids=["negative", "wraps", "neg-size"]
)
def test_convert_refuses_bad_alloc_regions(v4: tuple, alloc: list) -> None:
    cap, st = v4
    with pytest.raises(KhoFormatError, match="64-bit space"):
        convert_capture(cap, st, "kho-v3", alloc=alloc)


def test_convert_of_a_sub_blob_past_2_64_is_typed(v4: tuple) -> None:
    cap, st = v4
    st2 = st.copy()
    st2.subblobs[0] = dataclasses.replace(st2.subblobs[0], phys=(1 << 64) - 4096, size=8192)
    with pytest.raises(KhoFormatError, match="64-bit space"):
        convert_capture(cap, st2, "kho-v3")
    st3 = st.copy()
    st3.scratch = [(1 << 64, 4096)]
    with pytest.raises(ScratchError):
        convert_capture(cap, st3, "kho-v3")


def test_cli_convert_negative_alloc_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert run("convert", "--to", "kho-v3", V4, tmp_path / "o", "--alloc", "-4096:16M") == 2
    capsys.readouterr()


# -- boot manifests -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fname,patch",
    [
        ("manifest.json", {"segments": [1, "x", None]}),
        ("manifest.json", {"segments": [{"file": "../outside.bin", "phys": 0}]}),
        ("handover.json", {"page_size": "x"}),
        ("handover.json", {"scratch": [[-1, 5]]}),
        ("handover.json", {"fdt_phys": {"x": 1}}),
        ("handover.json", [1, 2]),
    ],
)
def test_boot_manifests_are_boot_errors(tmp_path: Path, fname: str, patch: object) -> None:
    from kho_formats.boot.load import load_fixture

    d = tmp_path / "fx"
    shutil.copytree(V4, d)
    doc = json.loads((d / fname).read_text())
    doc = {**doc, **patch} if isinstance(patch, dict) else patch
    (d / fname).write_text(json.dumps(doc))
    with pytest.raises(BootError):
        load_fixture(d)


# -- library argument types ---------------------------------------------------------------------------


def test_library_entry_points_check_argument_types(v4: tuple) -> None:
    cap, st = v4
    cases = [
        (lambda: parse(2**40), "root_fdt"),
        (lambda: parse(b"", "image"), "image"),
        (lambda: parse(cap.root_fdt, page_size="4096"), "page_size"),
        (lambda: parse(cap.root_fdt, limits={"max_pages": 1}), "limits"),
        (lambda: parse_fdt(12), "data"),
        (lambda: to_dts("text"), "blob"),
        (lambda: check(cap.root_fdt), "state"),
        (lambda: check(st, b"image"), "image"),
        (lambda: convert_capture(cap, st, 4), "to_version"),
        (lambda: convert_capture(cap, st, "kho-v3", alloc=[("x", 1)]), "alloc"),
        (lambda: loads_spec(12), "raw"),
        (lambda: build_spec({"version": "kho-v4"}), "sp"),
        (lambda: Limits(max_pages="1"), "max_pages"),
    ]
    for fn, param in cases:
        with pytest.raises(TypeError, match=param):
            fn()


# -- bounds -------------------------------------------------------------------------------------------------


def test_fdt_paths_are_not_copied_per_node() -> None:
    root = FdtNode("")
    big = root.add_child("a" * 20000)
    for i in range(20000):
        big.add_child(f"c{i}")
    blob = build_fdt(root)
    tracemalloc.start()
    try:
        f = parse_fdt(blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak  # copying the parent path: 20000 x 20 KB = 400 MB
    assert f.root.children[0].children[5].path == "/" + "a" * 20000 + "/c5"


def test_dts_of_20k_siblings_is_not_quadratic_and_duplicates_are_refused() -> None:
    root = FdtNode("")
    for i in range(20000):
        root.add_child(f"n{i}").props.append(("x", b"\1\2\3\4"))
    text = to_dts(build_fdt(root))  # 15 s with pyfdt's quadratic name check; now well under 2 s
    assert text.count("{") == 20001
    dup = FdtNode("")
    dup.add_child("a")
    dup.add_child("a")
    with pytest.raises(FdtError, match="duplicate name"):
        to_dts(build_fdt(dup))


def _root_with(children: list[tuple[str, int, int]]) -> bytes:
    root = FdtNode("")
    root.props += [("compatible", str_bytes("kho-v4")), ("preserved-memory-map", u64_bytes(0, "little"))]
    for name, phys, size in children:
        c = root.add_child(name)
        c.props += [("preserved-data", u64_bytes(phys, "little")), ("blob-size", u64_bytes(size, "little"))]
    return build_fdt(root)


def test_sub_blobs_naming_one_blob_share_one_copy() -> None:
    img = PhysImage()
    img.add(0x100000, bytes(8 << 20), what="blob")
    blob = _root_with([(f"n{i}", 0x100000, 8 << 20) for i in range(200)])
    tracemalloc.start()
    try:
        st = parse(blob, img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak  # 200 copies would be 1.6 GB
    assert all(sb.data is st.subblobs[0].data for sb in st.subblobs)
    # distinct windows are charged: Limits.max_blob_bytes
    blob = _root_with([(f"n{i}", 0x100000 + i * 4096, 4 << 20) for i in range(200)])
    with pytest.raises(LimitExceeded, match="sub-blob bytes"):
        parse(blob, img, limits=Limits(max_blob_bytes=64 << 20))


def test_scratch_areas_are_bounded() -> None:
    blob = _root_with([])
    with pytest.raises(LimitExceeded, match="scratch"):
        parse(blob, None, scratch=[(i << 12, 4096) for i in range(300_000)])
    st = parse(blob, None, scratch=[(i << 13, 4096) for i in range(60_000)])
    assert not [f for f in check(st) if "scratch" in f.message and f.severity == "error"]


def test_disjoint_regions_of_20k_regions() -> None:
    regions = [((i * 7919) % 20000 << 20, 3 << 20) for i in range(20000)]
    out = disjoint_regions(regions)  # the quadratic version took 10-20 s: benchmarks/hostile.py
    # every byte named once, the union unchanged
    spans = sorted((a, a + s) for a, s in out)
    assert all(b0 >= a1 for (_, a1), (b0, _) in zip(spans, spans[1:]))
    assert sum(s for _, s in out) == (20000 + 2) << 20
    assert disjoint_regions([(0, 10), (5, 10), (0, 20)]) == [(0, 10), (10, 5), (15, 5)]


def test_findings_are_capped_and_summed_up() -> None:
    ps = 4096
    pres = PageSet.from_runs(ps, {0: (np.arange(100, 4100, 2, dtype=np.uint64) * ps, np.ones(2000, np.uint64))})
    st = KhoState(version="kho-v4", page_size=ps, byteorder="little", preserved=pres, scratch=[])
    b = build(st, alloc=[(1 << 30, 1 << 24)])
    scratch = [(int(p) * ps, ps) for p in range(100, 4100, 2)]  # one finding per preserved page
    s2 = parse(b.root_fdt, b.image, root_fdt_phys=b.state.root_fdt_phys, scratch=scratch)
    full = check(s2, b.image)
    assert len(full) > 2000
    capped = check(s2, b.image, limits=Limits(max_findings=10))
    assert len(capped) <= 10 + len({(f.severity, f.code) for f in full})
    summary = [f for f in capped if "more" in f.message and "max_findings" in f.message]
    assert summary and sum(f.severity == "error" for f in capped) >= 1


def test_fragmented_map_memory_per_metadata_page() -> None:
    """A maximally fragmented radix map (every other 4 KiB page preserved):
    peak traced memory of parse + check + inspect per radix leaf page.  The
    README's errors section quotes this figure (KiB per metadata page)."""
    ps, leaves = 4096, 32
    bits = ps * 8
    phys = np.concatenate(
        [np.arange(0, bits, 2, dtype=np.uint64) * ps + np.uint64((1 << 40) + i * bits * ps * 4) for i in range(leaves)]
    )
    pres = PageSet.from_runs(ps, {0: (phys, np.ones(phys.size, dtype=np.uint64))})
    b = build(KhoState(version="kho-v4", page_size=ps, byteorder="little", preserved=pres), alloc=[(1 << 30, 1 << 30)])
    del pres, phys
    tracemalloc.start()
    try:
        st = parse(b.root_fdt, b.image, root_fdt_phys=b.state.root_fdt_phys)
        cl = decode_clients(st, b.image)
        check(st, b.image, clients=cl)
        render_inspect(inspect_report(st, b.image, cl, max_ranges=32))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert st.preserved.num_pages == leaves * bits // 2
    per_page = peak / leaves
    assert per_page < 600 << 10, f"{per_page / 1024:.0f} KiB per metadata page"


def test_checksum_is_bounded(v4: tuple) -> None:
    cap, st = v4
    from kho_formats.limits import Budget

    cl = decode_clients(st, cap.image, budget=Budget(Limits(max_csum_bytes=1024)))
    assert any("max_csum_bytes" in p for p in cl["kho_test"].decoded.problems)
    assert not decode_clients(st, cap.image)["kho_test"].decoded.problems


# -- terminal safety ---------------------------------------------------------------------------------------


def test_safe_text() -> None:
    assert safe_text("plain text ok") == "plain text ok"
    assert safe_text("a\x1b]0;pwned\x07b") == "a\\x1b]0;pwned\\x07b"
    assert safe_text("x\u202ey\n") == "x\\u202ey\\x0a"


def _evil_fixture(tmp_path: Path) -> Path:
    d = tmp_path / "evil"
    shutil.copytree(V4, d)
    cap = load_capture(d)
    fdt = parse_fdt(cap.root_fdt)
    fdt.root.children[0].name = "kho_test\x1b[2J\x1b]0;pwned\x07"
    (d / "root.dtb").write_bytes(build_fdt(fdt.root))
    return d


def test_control_characters_from_the_input_are_escaped(tmp_path: Path, capsys) -> None:
    d = _evil_fixture(tmp_path)
    for argv in (["inspect", d], ["check", d], ["dts", d], ["diff", d, V4]):
        run(*argv)
        out = capsys.readouterr()
        assert "\x1b" not in out.out and "\x07" not in out.out, argv
        assert "\x1b" not in out.err, argv
    run("inspect", d, "--json")
    j = json.loads(capsys.readouterr().out)  # JSON stays JSON: the real name, JSON-escaped
    assert any(s["name"].startswith("kho_test\x1b") for s in j["subblobs"])


def test_one_line_errors_are_escaped(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text('version = "kho-v4\x1b[2J"\n')
    assert run("build", spec, "-o", tmp_path / "o") == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b" in err and len(err.strip().splitlines()) == 1


# -- check -----------------------------------------------------------------------------------------------------


def _fixture_without_root_phys(tmp_path: Path) -> Path:
    d = tmp_path / "noroot"
    shutil.copytree(V4, d)
    h = json.loads((d / "handover.json").read_text())
    h["fdt_phys"] = None
    (d / "handover.json").write_text(json.dumps(h))
    return d


def test_check_flags_handovers_a_kernel_cannot_use(tmp_path: Path, capsys) -> None:
    assert run("check", _fixture_without_root_phys(tmp_path)) == 1
    assert "root-fdt-address" in capsys.readouterr().out
    cap = load_capture(V4)
    st = parse_capture(cap)
    codes = lambda s: {f.code for f in check(s, cap.image) if f.severity == "error"}
    assert not codes(st)
    for phys, code in [
        (0, "root-fdt-address"),
        (st.root_fdt_phys + 4, "root-fdt-align"),  # not 8-byte aligned: the kernel refuses it
        (1 << 50, "root-fdt-outside"),
    ]:
        s = st.copy()
        s.root_fdt_phys = phys
        assert code in codes(s), (phys, codes(s))
    s = st.copy()
    s.subblobs[0] = dataclasses.replace(s.subblobs[0], phys=(1 << 64) - 4096, size=1 << 20)
    assert "blob-address" in codes(s)


# -- usability bugs ------------------------------------------------------------------------------------------


def test_diff_without_images_is_not_compared(capsys) -> None:
    r = run("diff", V4 / "root.dtb", V4 / "root.dtb")
    out = capsys.readouterr().out
    assert r == 1 and out.startswith("not compared") and "different" not in out
    run("diff", V4 / "root.dtb", V4 / "root.dtb", "--json")
    j = json.loads(capsys.readouterr().out)
    assert j["identical"] is False and j["preserved_identical"] is None


def test_check_strict_verdict_matches_exit_status(tmp_path: Path, capsys) -> None:
    d = tmp_path / "w"
    shutil.copytree(V4, d)
    (d / "image.elf").unlink()
    (d / "manifest.json").unlink()
    assert run("check", d) == 0
    assert "OK" in capsys.readouterr().out
    assert run("check", d, "--strict") == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "OK" not in out


def test_no_prefix_matching_and_version_everywhere(capsys) -> None:
    assert run("inspect", "--version", V4) == 0
    assert capsys.readouterr().out.startswith("kho ")
    assert run("inspect", "--version-o", "kho-v1", V4) == 2
    assert run("--version") == 0
    capsys.readouterr()


def test_documented_json_keys_are_null_not_missing(capsys) -> None:
    run("inspect", V4 / "root.dtb", "--json")
    j = json.loads(capsys.readouterr().out)
    assert set(j["sources"]) >= {"root_fdt", "images", "debugfs", "metadata"}
    assert j["sources"]["images"] is None
    assert j["memory_map"]["depth"] is None and j["memory_map"]["pages"] is None


def test_an_elf_alone_is_a_memory_image_to_search(capsys, tmp_path) -> None:
    # issue 14: a memory image given alone is searched for the root FDT ...
    assert run("inspect", V4 / "image.elf") == 0
    assert "root FDT found in the image" in capsys.readouterr().out
    # ... and a file that is neither an FDT nor holds one says which file and what it is
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 16)
    for cmd in ("inspect", "dts", "check"):
        assert run(cmd, junk) == 1
        err = capsys.readouterr().err
        assert "junk.bin" in err and "not a flattened device tree" in err, err


def test_render_check_says_failed_for_strict_warnings() -> None:
    from kho_formats.findings import Finding
    from kho_formats.ops.report import check_report

    r = check_report([Finding("warning", "x", "w")], strict=True)
    assert not r["ok"] and "FAILED" in render_check(r)
    assert check_report([Finding("warning", "x", "w")])["ok"]
