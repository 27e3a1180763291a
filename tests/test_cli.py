"""End-to-end tests of the ``kho`` command: real files, a real subprocess.

Covers inspect (capture directory in its debugfs layouts, fixture directory,
root FDT alone, --mem as ELF / bundle / RAW@BASE / several merged), dts,
check, diff, boot (the dispatch only), --json, and the error paths: exit 1
with one ``kho: error:`` line for bad input, exit 2 for usage errors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kho_formats.memory.image import PhysImage
from kho_formats.model.fdt import FdtNode, build_fdt, str_bytes, u64_bytes
from kho_formats.ops.capture import strip_ranges

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
CAP = FIX / "captures" / "linux-7.3-x86_64-kho-v4"
DEBUGFS = CAP / "debugfs" / "kho" / "out"
ROOT_PHYS = json.loads((CAP / "meta.json").read_text())["root_fdt_phys"]


def kho(*args, check_rc=None, cwd=None):
    """Run ``python -m kho_formats.cli ARGS``; return the CompletedProcess."""
    env = dict(os.environ)
    env.pop("KHO_DEBUG", None)
    r = subprocess.run(
        [sys.executable, "-m", "kho_formats.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
    )
    if check_rc is not None:
        assert r.returncode == check_rc, (r.returncode, r.stdout[-2000:], r.stderr)
    return r


def kho_json(*args, check_rc=0):
    r = kho(*args, "--json", check_rc=check_rc)
    return json.loads(r.stdout)


def one_error_line(r, *needles):
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("kho: error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def kernel_walk():
    out = []
    for line in (CAP / "kernel-walk.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p, o = line.split()
            out.append((int(p, 16), int(o)))
    return out


# -- help / usage -------------------------------------------------------------------------

SUBCOMMANDS = ("inspect", "dts", "build", "convert", "check", "diff", "boot")


def test_help_everywhere():
    r = kho("--help", check_rc=0)
    for c in SUBCOMMANDS:
        assert c in r.stdout
    for opt in (
        "--page-size",
        "--byte-order",
        "--abi",
        "--version-override",
        "--v1-bitmap",
        "--max-pages",
        "--max-entries",
        "--json",
    ):
        assert opt in r.stdout
    for c in SUBCOMMANDS:
        r = kho(c, "--help", check_rc=0)
        assert r.stdout.startswith(f"usage: kho {c}")
        assert "--json" in r.stdout and "exit status" in r.stdout


@pytest.mark.parametrize(
    "argv,says,helps",
    [
        (["--insp"], "did you mean the command 'inspect'?", "kho inspect"),
        (["insp", "x"], "did you mean 'inspect'?", "kho inspect"),
        (
            ["inspect", "--max", "3", "x"],
            "it could be --max-pages, --max-entries, --max-runs, --max-ranges",
            "kho inspect",
        ),
        (
            ["inspect", "x", "--rec", "yes"],
            "--rec is an abbreviation, which kho does not accept: did you mean --received?",
            "kho inspect",
        ),
        (["luo", "extr", "x"], "did you mean 'extract'?", "kho luo extract"),
        (["luo", "extract", "x", "--ou", "y"], "did you mean --output?", "kho luo extract"),
        (["dts", "x", "--ou", "y"], "it could be --output, --outdir", "kho dts"),
        (["--sub", "x"], "--sub is an option of kho dts", "kho dts"),
        (["inspect"], "required: INPUT", "kho inspect"),
        (["frobnicate"], "invalid choice", "kho"),
    ],
)
def test_usage_errors_point_at_the_right_help(argv, says, helps):
    r = kho(*argv, check_rc=2)
    line = one_error_line(r, says)
    assert line.endswith(f"(see '{helps} --help')"), line
    assert r.stdout == ""


def test_version():
    r = kho("--version", check_rc=0)
    assert r.stdout.startswith("kho ")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["inspect"],
        ["convert", str(FIX / "v1-512-4k"), "/tmp/x"],  # no --to
        ["convert", "--to", "kho-v9", str(FIX / "v1-512-4k"), "/tmp/x"],
        ["--page-size", "1234", "inspect", str(CAP)],
        ["inspect", str(CAP), "--page-size", "8K"],
        ["--byte-order", "middle", "inspect", str(CAP)],
        ["--abi", "kho-v0", "inspect", str(CAP)],
        ["build", str(FIX / "specs" / "v4-4k.toml")],  # no -o
        ["convert", "--to", "kho-v4", "--alloc", "0x1000", str(FIX / "v1-512-4k"), "/tmp/x"],
        ["inspect", str(CAP), "--root-phys", "zzz"],
        ["diff", str(CAP)],
    ],
)
def test_usage_errors_exit_2(args):
    r = kho(*args, check_rc=2)
    one_error_line(r)
    assert r.stdout == ""


def test_global_options_before_or_after_the_subcommand():
    a = kho_json("--page-size", "4096", "inspect", str(CAP))
    b = kho_json("inspect", str(CAP), "--page-size", "4096")
    assert a == b


# -- inspect ------------------------------------------------------------------------------------


def test_inspect_capture_dir_human():
    r = kho("inspect", CAP, check_rc=0)
    out = r.stdout
    assert "kho-v4" in out and "4 KiB pages" in out and "little-endian" in out
    for name in ("memblock", "kho_test", "kexec-metadata"):
        assert name in out
    assert "'7.3.4'" in out and "trace_buf" in out and "29 folios" in out
    assert "Preserved memory: 36 folios" in out
    assert "vmalloc areas (1)" in out
    assert r.stderr == ""


def test_inspect_capture_dir_json_matches_kernel_walk():
    j = kho_json("inspect", CAP)
    assert j["schema"] == "kho-formats/inspect/1"
    assert (j["version"], j["page_size"], j["byte_order"]) == ("kho-v4", 4096, "little")
    assert j["root_fdt"] == {"phys": ROOT_PHYS, "size": 353}
    walk = kernel_walk()
    assert j["preserved"]["pages"] == len(walk) == 36
    per_order = {}
    for _, o in walk:
        per_order[str(o)] = per_order.get(str(o), 0) + 1
    assert {o: v["pages"] for o, v in j["preserved"]["per_order"].items()} == per_order
    assert j["preserved"]["bytes"] == sum(4096 << o for _, o in walk)
    # ranges are coalesced, sorted and cover exactly the walked pages
    covered = sum(r["size"] for r in j["preserved"]["ranges"])
    assert covered == j["preserved"]["bytes"]
    starts = [r["start"] for r in j["preserved"]["ranges"]]
    assert starts == sorted(starts)
    subs = {s["name"]: s for s in j["subblobs"]}
    assert subs["kexec-metadata"]["decoded"] == {"version": 1, "previous_release": "7.3.4", "kexec_count": 1}
    assert subs["memblock"]["decoded"] == [{"name": "trace_buf", "start": 0x3E800000, "size": 4 << 20}]
    assert subs["kho_test"]["decoded"]["nr_folios"] == 29
    assert [v["client"] for v in j["vmalloc"]] == ["kho_test"]
    assert j["vmalloc"][0]["total_pages"] == 1
    assert [(s["addr"], s["size"]) for s in j["scratch"]] == [
        (0x39800000, 0x4C00000),
        (0x3E400000, 0),
        (0x2B400000, 0xE400000),
    ]
    assert j["memory_map"]["kind"] == "radix" and j["memory_map"]["depth"] == 6


@pytest.mark.parametrize("rel", ["debugfs", "debugfs/kho", "debugfs/kho/out"])
def test_inspect_debugfs_layouts_with_mem(rel):
    j = kho_json("inspect", CAP / rel, "--mem", CAP / "image.elf", "--root-phys", hex(ROOT_PHYS))
    assert j["preserved"]["pages"] == 36
    assert len(j["scratch"]) == 3
    assert {s["name"] for s in j["subblobs"]} == {"memblock", "kho_test", "kexec-metadata"}


def test_inspect_dir_holding_out(tmp_path):
    shutil.copytree(DEBUGFS, tmp_path / "out")
    j = kho_json("inspect", tmp_path, "--mem", CAP / "image.elf")
    assert j["preserved"]["pages"] == 36


def test_inspect_debugfs_without_image_reads_sub_fdts():
    j = kho_json("inspect", CAP / "debugfs")
    assert j["preserved"] is None and j["memory_map"]["read"] is False
    subs = {s["name"]: s for s in j["subblobs"]}
    assert subs["kexec-metadata"]["decoded"]["previous_release"] == "7.3.4"
    assert subs["memblock"]["decoded"][0]["name"] == "trace_buf"
    assert subs["kho_test"]["decoded"]["nr_folios"] == 29
    assert any("debugfs sub_fdts/kexec-metadata" in n for n in j["notes"])
    r = kho("inspect", CAP / "debugfs", check_rc=0)
    assert "not read" in r.stdout


def test_inspect_image_lacking_sub_blobs_uses_debugfs(tmp_path):
    img = PhysImage.from_elf(CAP / "image.elf")
    meta = json.loads((CAP / "meta.json").read_text())
    cut = [(s["phys"], s["phys"] + 4096) for s in meta["subtrees"]]
    (tmp_path / "partial.elf").write_bytes(strip_ranges(img, cut).to_elf())
    j = kho_json("inspect", CAP / "debugfs", "--mem", tmp_path / "partial.elf", "--root-phys", ROOT_PHYS)
    subs = {s["name"]: s for s in j["subblobs"]}
    assert all(s["has_data"] and not s["in_image"] for s in subs.values())
    assert subs["kho_test"]["decoded"]["nr_folios"] == 29
    assert len(j["vmalloc"]) == 1  # the folios_info area is still read from the image
    assert j["preserved"]["pages"] == 36


def test_inspect_root_fdt_alone():
    j = kho_json("inspect", CAP / "root.dtb")
    assert j["version"] == "kho-v4" and j["preserved"] is None
    assert all(not s["has_data"] for s in j["subblobs"])
    assert j["root_fdt"]["phys"] is None


def test_inspect_mem_forms(tmp_path):
    fx = FIX / "v4-4k"
    ref = kho_json("inspect", fx)
    ho = json.loads((fx / "handover.json").read_text())
    seg = json.loads((fx / "manifest.json").read_text())["segments"]
    assert len(seg) == 1
    raw = f"{fx / seg[0]['file']}@{seg[0]['phys']:#x}"
    by_raw = kho_json("inspect", fx / "root.dtb", "--mem", raw, "--root-phys", ho["fdt_phys"])
    by_bundle = kho_json("inspect", fx / "root.dtb", "--mem", fx, "--root-phys", ho["fdt_phys"])
    # the same image split into two ELF files, merged again
    img = PhysImage.from_elf(fx / "image.elf")
    a, b = img.covered()[0]
    mid = a + ((b - a) // 2 // 4096) * 4096
    (tmp_path / "lo.elf").write_bytes(PhysImage([(a, img.read(a, mid - a))]).to_elf())
    (tmp_path / "hi.elf").write_bytes(PhysImage([(mid, img.read(mid, b - mid))]).to_elf())
    merged = kho_json(
        "inspect",
        fx / "root.dtb",
        "--mem",
        tmp_path / "lo.elf",
        "--mem",
        tmp_path / "hi.elf",
        "--root-phys",
        ho["fdt_phys"],
    )
    for j in (by_raw, by_bundle, merged):
        assert j["preserved"] == ref["preserved"]
        assert [s["decoded"] for s in j["subblobs"]] == [s["decoded"] for s in ref["subblobs"]]


@pytest.mark.parametrize(
    "name,ps",
    [
        ("v4-4k", 4096),
        ("v3-16k", 16384),
        ("v4-16k", 16384),
        ("v4-64k", 65536),
        ("v1-512-4k", 4096),
        ("v1-page-4k", 4096),
        ("v2-4k", 4096),
        ("v3-4k", 4096),
        ("v4-4k-x86", 4096),
    ],
)
def test_inspect_every_fixture(name, ps):
    j = kho_json("inspect", FIX / name)
    assert j["page_size"] == ps
    kt = {s["name"]: s for s in j["subblobs"]}["kho_test"]["decoded"]
    assert kt["nr_folios"] == len(kt["folios"]) > 0
    arch = json.loads((FIX / name / "handover.json").read_text())["arch"]
    assert kt["csum_check"][arch] == kt["csum"]
    r = kho("inspect", FIX / name, check_rc=0)
    assert f"{ps // 1024} KiB pages" in r.stdout


def test_inspect_v1_bitmap_choice():
    j = kho_json("inspect", FIX / "v1-512-4k")
    assert j["v1_bitmap_bytes"] == 512 and j["memory_map"]["bitmap_bytes"] == 512
    j2 = kho_json("--v1-bitmap", "512", "inspect", FIX / "v1-512-4k")
    assert j2["preserved"] == j["preserved"]
    assert kho_json("inspect", FIX / "v1-page-4k")["v1_bitmap_bytes"] == 4096
    # explicit auto ignores what the fixture recorded and detects (and says how)
    for name, size in (("v1-512-4k", 512), ("v1-page-4k", 4096)):
        j = kho_json("--v1-bitmap", "auto", "inspect", FIX / name)
        assert j["v1_bitmap_bytes"] == size and any(n.startswith("v1 bitmaps:") for n in j["notes"])
    # the wrong explicit choice is an error, not a silently different set
    one_error_line(kho("--v1-bitmap", "page", "inspect", FIX / "v1-512-4k", check_rc=1), "phys_start")


# -- dts ---------------------------------------------------------------------------------------------


def dtc_ok(path: Path) -> str:
    r = subprocess.run(
        ["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", os.devnull, str(path)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return r.stderr


def test_dts_root_is_accepted_by_dtc(tmp_path):
    r = kho("dts", CAP / "root.dtb", check_rc=0)
    assert "/dts-v1/;" in r.stdout and 'compatible = "kho-v4";' in r.stdout
    assert "u64 little-endian: 0x10f4000" in r.stdout
    (tmp_path / "root.dts").write_text(r.stdout)
    dtc_ok(tmp_path / "root.dts")


def test_dts_sub_fdts_into_dir(tmp_path):
    r = kho("dts", CAP, "--sub", "-O", tmp_path / "out", check_rc=0)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["root.dts", "sub-kho_test.dts", "sub-memblock.dts"]  # kexec-metadata is raw
    for f in files:
        dtc_ok(tmp_path / "out" / f)
    assert "kho-test-v1" in (tmp_path / "out" / "sub-kho_test.dts").read_text()
    j = kho_json("dts", CAP, "--sub")
    assert [d["name"] for d in j["documents"]] == ["root", "memblock", "kho_test"]
    assert j["skipped"] == [{"name": "kexec-metadata", "reason": "not an FDT (raw blob)"}]
    r = kho("dts", CAP, "--sub", check_rc=0)
    assert r.stdout.count("/dts-v1/;") == 3 and "sub-blob kexec-metadata skipped" in r.stdout


def test_dts_header_keeps_its_tabs_and_dtc_reads_every_form(tmp_path):
    # pyfdt's header lines have tabs: whitespace is printed, not escaped as \x09
    r = kho("dts", FIX / "v4-4k", check_rc=0)
    assert "// version:\t\t17\n" in r.stdout and "\\x09" not in r.stdout
    assert r.stdout == kho("dts", FIX / "v4-4k", "-o", "-", check_rc=0).stdout  # dtc's -o -: stdout
    assert not (ROOT / "-").exists()
    (tmp_path / "stdout.dts").write_text(r.stdout)
    dtc_ok(tmp_path / "stdout.dts")
    # -o FILE: one file (not a directory), byte for byte what --json says, read by dtc
    out = tmp_path / "out.dts"
    r = kho("dts", FIX / "v4-4k", "-o", out, check_rc=0)
    assert out.is_file() and r.stdout == f"wrote {out}\n"
    assert out.read_text() == kho_json("dts", FIX / "v4-4k")["documents"][0]["dts"] == r_stdout_of(FIX / "v4-4k")
    dtc_ok(out)
    # compiled back by dtc, it is the input's root FDT (same nodes and property bytes)
    back = tmp_path / "back.dtb"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(back), str(out)], check=True)
    assert fdt_tree(back.read_bytes()) == fdt_tree((FIX / "v4-4k" / "root.dtb").read_bytes())
    # an existing file is replaced, as dtc does; a directory is not a FILE
    kho("dts", CAP, "-o", out, check_rc=0)
    assert 'compatible = "kho-v4"' in out.read_text() and "0x10f4000" in out.read_text()
    one_error_line(kho("dts", CAP, "-o", tmp_path, check_rc=1), "is a directory", "-O DIR")
    # several documents need a directory, with its own flag
    one_error_line(kho("dts", CAP, "--sub", "-o", tmp_path / "x.dts", check_rc=2), "--outdir")
    assert not (tmp_path / "x.dts").exists()
    r = kho("dts", CAP, "-o", tmp_path / "y.dts", "-O", tmp_path / "d", check_rc=2)
    assert "not allowed with" in r.stderr
    assert "-O DIR, --outdir DIR" in kho("dts", "--help", check_rc=0).stdout


def fdt_tree(blob: bytes) -> list:
    from kho_formats.model.fdt import parse_fdt

    return [(n.path, list(n.props)) for n in parse_fdt(blob).root.walk()]


def r_stdout_of(path) -> str:
    return kho("dts", path, check_rc=0).stdout


def test_dts_big_endian_annotation():
    r = kho("--byte-order", "big", "dts", CAP / "root.dtb", check_rc=0)
    assert "u64 big-endian" in r.stdout


# -- check / diff ---------------------------------------------------------------------------------------


def test_check_capture_passes():
    j = kho_json("check", CAP)
    assert j["ok"] and j["errors"] == 0
    assert all(set(f) == {"severity", "code", "message", "phys", "path"} for f in j["findings"])


def test_check_reports_errors_with_addresses(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text(
        (FIX / "specs" / "v4-4k.toml")
        .read_text()
        .replace('name = "kho_test"\ntype = "kho_test"', 'name = "kho_test"\ntype = "kho_test"\npreserve = false')
    )
    kho("build", spec, "-o", tmp_path / "bad", check_rc=0)
    r = kho("check", tmp_path / "bad", check_rc=1)
    assert "FAILED" in r.stdout and "error: [folio-not-preserved]" in r.stdout
    j = kho_json("check", tmp_path / "bad", check_rc=1)
    errs = [f for f in j["findings"] if f["severity"] == "error"]
    assert errs and all(f["phys"] is not None for f in errs)
    assert {f["code"] for f in errs} >= {"folio-not-preserved", "vmalloc-chunk-not-preserved", "blob-not-preserved"}


def test_check_says_where_output_goes_and_json_has_the_same_findings(tmp_path):
    h = " ".join(kho("check", "--help", check_rc=0).stdout.split())
    assert "every finding goes to stdout" in h and "summary line on stdout" in h and "with --json the same" in h
    spec = tmp_path / "bad.toml"
    spec.write_text(
        (FIX / "specs" / "v4-4k.toml").read_text().replace('type = "kho_test"', 'type = "kho_test"\npreserve = false')
    )
    kho("build", spec, "-o", tmp_path / "bad", check_rc=0)
    for src in (tmp_path / "bad", CAP, CAP / "root.dtb"):
        r = kho("check", src)
        j = kho_json("check", src, check_rc=r.returncode)
        assert r.stderr == ""
        *found, summary = r.stdout.splitlines()
        from kho_formats.findings import Finding

        assert found == [str(Finding(**f)) for f in j["findings"]]
        e, w = j["errors"], j["warnings"]
        counts = f"{e} error{'' if e == 1 else 's'}, {w} warning{'' if w == 1 else 's'}"  # "1 error", "0 warnings"
        assert summary.endswith(f"{'OK' if j['ok'] else 'FAILED'}: {counts}")


def test_check_strict_fails_on_warnings():
    # the root FDT alone: "no-image" warning
    kho("check", CAP / "root.dtb", check_rc=0)
    kho("check", CAP / "root.dtb", "--strict", check_rc=1)


def test_diff_identical_and_different():
    # v2-4k and v3-4k come from the same spec body: same preserved set and sub-blobs
    r = kho("diff", FIX / "v2-4k", FIX / "v3-4k", check_rc=0)
    assert r.stdout.startswith("identical")
    kho("diff", CAP, CAP / "debugfs", "--mem-b", CAP / "image.elf", check_rc=0)
    r = kho("diff", FIX / "v3-4k", FIX / "v4-4k", check_rc=1)
    assert r.stdout.startswith("different")
    j = kho_json("diff", FIX / "v3-4k", FIX / "v4-4k", check_rc=1)
    assert j["identical"] is False and j["preserved_identical"] is False
    assert j["only_in_b"]["folios"] > 0 and j["only_in_b"]["bytes"] > 0
    assert {s["name"] for s in j["subblobs"]} >= {"memblock", "kexec-metadata"}
    assert j["other"]["version"] == {"a": "kho-v3", "b": "kho-v4"}


def test_diff_needs_memory_maps():
    # without an image the map is unknown: never "identical"
    kho("diff", CAP / "root.dtb", CAP / "root.dtb", check_rc=1)


# -- error paths -------------------------------------------------------------------------------------------


def test_missing_file():
    r = kho("inspect", ROOT / "no-such-file.dtb", check_rc=1)
    one_error_line(r, "no-such-file.dtb")


def test_not_an_fdt(tmp_path):
    (tmp_path / "junk").write_bytes(b"hello, world" * 10)
    r = kho("inspect", tmp_path / "junk", check_rc=1)
    one_error_line(r, "bad magic")


def test_truncated_fdt(tmp_path):
    data = (CAP / "root.dtb").read_bytes()
    (tmp_path / "trunc.dtb").write_bytes(data[:200])
    for cmd in ("inspect", "check", "dts"):
        r = kho(cmd, tmp_path / "trunc.dtb", check_rc=1)
        one_error_line(r, "totalsize")


def test_truncated_elf(tmp_path):
    data = (CAP / "image.elf").read_bytes()
    (tmp_path / "trunc.elf").write_bytes(data[: len(data) // 2])
    r = kho("inspect", CAP / "root.dtb", "--mem", tmp_path / "trunc.elf", check_rc=1)
    one_error_line(r, "past end of file")


def unknown_version_fdt(path: Path) -> None:
    root = FdtNode("")
    root.set("compatible", str_bytes("kho-v9"))
    root.set("preserved-memory-map", u64_bytes(0, "little"))
    path.write_bytes(build_fdt(root))


def test_unknown_version(tmp_path):
    unknown_version_fdt(tmp_path / "v9.dtb")
    r = kho("inspect", tmp_path / "v9.dtb", check_rc=1)
    one_error_line(r, "unknown compatible 'kho-v9'")
    j = json.loads(kho("inspect", tmp_path / "v9.dtb", "--json", check_rc=1).stdout)
    assert j["schema"] == "kho-formats/error/1" and j["kind"] == "version"
    # --abi reads it anyway, with a note
    j = kho_json("--abi", "kho-v2", "inspect", tmp_path / "v9.dtb")
    assert j["version"] == "kho-v2" and any("overridden" in n for n in j["notes"])


def test_wrong_page_size_is_a_problem_not_a_crash():
    r = kho("inspect", CAP, "--page-size", "65536")
    assert r.returncode == 1
    one_error_line(r)


def test_limits(tmp_path):
    r = kho("--max-pages", "3", "inspect", CAP, check_rc=1)
    one_error_line(r, "more than 3 metadata pages", "--max-pages")
    # a client blob over the limit: check reports it as an error finding ...
    r = kho("--max-entries", "2", "check", CAP, check_rc=1)
    assert "error: [client]" in r.stdout and "more than 2 entries" in r.stdout
    # ... inspect prints the whole report, then fails with one error line
    r = kho("--max-entries", "2", "inspect", CAP, check_rc=1)
    assert "Preserved memory: 36 folios" in r.stdout
    one_error_line(r, "kho_test", "more than 2 entries")


def test_kho_v2_16k_refused(tmp_path):
    r = kho("convert", "--to", "kho-v2", FIX / "v4-16k", tmp_path / "out", check_rc=1)
    line = one_error_line(r, "order-0", "depth-4", "16 KiB")
    assert not (tmp_path / "out").exists(), line
    spec = tmp_path / "v2-16k.toml"
    spec.write_text((FIX / "specs" / "v3-16k.toml").read_text().replace('"kho-v3"', '"kho-v2"'))
    r = kho("build", spec, "-o", tmp_path / "b", check_rc=1)
    one_error_line(r, "order-0")
    # only order >= 1 pages: v2 at 16 KiB can hold them
    spec.write_text(
        'version = "kho-v2"\npage_size = 16384\npreserve_root = false\n'
        '[[alloc]]\nstart = "0x78000000"\nsize = "16M"\n[[preserve]]\nphys = "0x74000000"\norder = 1\n'
    )
    kho("build", spec, "-o", tmp_path / "ok", check_rc=0)
    kho("check", tmp_path / "ok", check_rc=0)


def test_convert_takes_its_output_as_o_like_build_and_capture(tmp_path):
    r1 = kho("convert", "--to", "kho-v3", FIX / "v4-4k", "-o", tmp_path / "a", check_rc=0)
    r2 = kho("convert", "--to", "kho-v3", FIX / "v4-4k", tmp_path / "b", check_rc=0)  # the positional still works
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir()) and "root.dtb" in names
    for n in ("root.dtb", "image.elf"):
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes()
    assert r1.stdout.replace(str(tmp_path / "a"), "X") == r2.stdout.replace(str(tmp_path / "b"), "X")
    one_error_line(
        kho("convert", "--to", "kho-v3", FIX / "v4-4k", tmp_path / "c", "-o", tmp_path / "d", check_rc=2), "give one"
    )
    one_error_line(kho("convert", "--to", "kho-v3", FIX / "v4-4k", check_rc=2), "-o OUTDIR")
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_convert_refuses_raw_blob_into_v1(tmp_path):
    r = kho("convert", "--to", "kho-v1", CAP, tmp_path / "out", check_rc=1)
    one_error_line(r, "kexec-metadata", "not an FDT")


def test_convert_needs_the_image(tmp_path):
    r = kho("convert", "--to", "kho-v3", CAP / "root.dtb", tmp_path / "out", check_rc=1)
    one_error_line(r, "memory image")


# -- boot dispatch ----------------------------------------------------------------------------------------------


def test_boot_missing_kernel_is_a_problem(tmp_path):
    r = kho("boot", FIX / "v4-4k", "--kernel", tmp_path / "no-Image")
    assert r.returncode in (1, 2)  # 2 only if kho_formats.boot is absent
    one_error_line(r)


def test_boot_not_a_fixture(tmp_path):
    r = kho("boot", tmp_path, "--kernel", tmp_path / "Image")
    assert r.returncode in (1, 2)
    one_error_line(r)


def test_boot_dispatch_in_process(monkeypatch, capsys):
    from kho_formats import boot, cli

    class Result:
        def __init__(self, verdict):
            self.verdict, self.reason, self.kho_lines, self.log = verdict, "because", ["KHO: found\x1b[2J"], ""
            self.kernel = "/k/Image"

    verdict = ["accepted"]

    seen_via = []

    def run_boot(fixture_dir, kernel, timeout, **kw):
        assert Path(fixture_dir, "handover.json").is_file()
        seen_via.append(kw.get("via", "loader"))
        return Result(verdict[0])

    monkeypatch.setattr(boot, "run_boot", run_boot)
    assert cli.main(["boot", str(FIX / "v4-4k"), "--kernel", "Image"]) == 0
    out = capsys.readouterr().out
    assert "accepted" in out and "\x1b" not in out and "KHO: found\\x1b[2J" in out  # escaped, not sent
    verdict[0] = "rejected"
    assert cli.main(["--json", "boot", str(FIX / "v4-4k")]) == 1  # --kernel is optional
    j = json.loads(capsys.readouterr().out)
    assert j["verdict"] == "rejected" and j["kho_lines"] == ["KHO: found\x1b[2J"]
    assert j["kernel"] == "/k/Image"  # the kernel run_boot used (given or picked)
    assert cli.main(["boot", str(FIX / "v4-4k-x86"), "--via", "kexec"]) == 1
    assert seen_via == ["loader", "loader", "kexec"]
    capsys.readouterr()

    def refuse(fixture_dir, kernel, timeout):
        raise boot.BootError("segment file x is not a regular file")

    monkeypatch.setattr(boot, "run_boot", refuse)  # a BootError is reported like every KhoFormatError
    assert cli.main(["--json", "boot", str(FIX / "v4-4k"), "--kernel", "Image"]) == 1
    out = capsys.readouterr()
    assert "not a regular file" in out.err and json.loads(out.out)["kind"] == "boot"
