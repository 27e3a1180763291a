"""The root FDT laid out as the kernel's history leaves it (issue 13, "Kernel-identical
bytes"; KHO-ABI.md 2.1): sequential-write until a sub-tree is added (reserve map at 0x30),
reopened and packed after each ``kho_add_subtree``/``kho_remove_subtree`` (0x28), the
names of removed sub-trees' properties left in the strings block; kho-v1's finalize
writes it whole with sequential-write.

Three independent checks of :func:`kho_formats.model.state.root_fdt_bytes`:

* layout facts worked out by hand here (offsets, sizes, the strings block byte for
  byte) and read back by ``fdtdump`` (device-tree-compiler; CI installs it);
* the real libfdt replaying the same kernel calls (``tests/libfdt_oracle.py`` under
  the system Python with Debian's ``python3-libfdt``; CI installs it), which in turn
  reproduces both real 7.3 captures byte for byte;
* the real kernel: ``tests/test_kernel_fdt_history.py``.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from kho_formats.memory.pageset import PageSet
from kho_formats.model.fdt import parse_fdt, u64_bytes
from kho_formats.model.spec import build_spec, spec_from_dict
from kho_formats.model.state import KhoState, SubBlob, build, convert, fdt_history, parse, root_fdt_bytes
from kho_formats.ops.capture import load_capture, parse_capture

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "fixtures" / "captures"
ORACLE = ROOT / "tests" / "libfdt_oracle.py"
SYSTEM_PYTHON = "/usr/bin/python3"
MAP = 0x10F_4000  # preserved-memory-map value used throughout


def _oracle_missing() -> str | None:
    if not Path(SYSTEM_PYTHON).is_file():
        return f"no {SYSTEM_PYTHON} (the libfdt oracle runs under the system Python)"
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import libfdt"], capture_output=True)
    if r.returncode:
        return "the system Python has no libfdt module (apt-get install python3-libfdt)"
    return None


requires_libfdt = pytest.mark.skipif(_oracle_missing() is not None, reason=_oracle_missing() or "")


def libfdt(sequential: dict, edits: list[dict] = (), page: int = 4096) -> bytes:  # type: ignore[assignment]
    """The blob the real libfdt leaves after these kernel calls (tests/libfdt_oracle.py)."""
    spec = {"page": page, "sequential": sequential, "edits": list(edits)}
    r = subprocess.run(
        [SYSTEM_PYTHON, str(ORACLE)], input=json.dumps(spec), capture_output=True, text=True, check=True, timeout=60
    )
    return bytes.fromhex(r.stdout.strip())


def _hex(props: list[tuple[str, bytes]]) -> list[list[str]]:
    return [[n, v.hex()] for n, v in props]


def _root_props(version: str, compatible: tuple[str, ...] = ()) -> list[tuple[str, bytes]]:
    compat = b"".join(c.encode() + b"\0" for c in (version, *compatible))
    return [("compatible", compat), ("preserved-memory-map", u64_bytes(MAP, "little"))]


def _add(name: str, phys: int, size: int | None) -> dict:
    """kho_add_subtree (v2+): preserved-data, then blob-size (when the kernel writes it)."""
    props = [("preserved-data", u64_bytes(phys, "little"))]
    if size is not None:
        props.append(("blob-size", u64_bytes(size, "little")))
    return {"add": name, "props": _hex(props)}


def _state(version: str, blobs: list[tuple[str, int, int | None]] = (), **kw) -> KhoState:  # type: ignore[assignment]
    subs = [
        SubBlob(n, p, s, None, "blob-size" if s is not None and version != "kho-v1" else "fdt-header")
        for n, p, s in blobs
    ]
    return KhoState(version=version, preserved=PageSet.from_pages(4096, [(0x10_0000, 0)]), subblobs=subs, **kw)


def _header(blob: bytes) -> dict[str, int]:
    names = ("magic totalsize off_dt_struct off_dt_strings off_mem_rsvmap version last_comp_version "
             "boot_cpuid_phys size_dt_strings size_dt_struct").split()  # fmt: skip
    return dict(zip(names, struct.unpack(">10I", blob[:40])))


def _strings(blob: bytes) -> bytes:
    h = _header(blob)
    return blob[h["off_dt_strings"] : h["off_dt_strings"] + h["size_dt_strings"]]


SETUP = b"preserved-memory-map\0compatible\0"  # kho_out_fdt_setup: reverse order of first use
ADDED = b"preserved-data\0blob-size\0"  # appended by the first kho_add_subtree, in fdt_setprop order
# struct block of the root alone: BEGIN_NODE "" (8), compatible "kho-v4\0" (12 + 8),
# preserved-memory-map (12 + 8), END_NODE (4), END (4)
ROOT_STRUCT = 8 + 20 + 20 + 4 + 4


# -- layout facts worked out by hand ----------------------------------------------------------


def test_no_subtree_ever_added_is_the_sequential_write_layout():
    blob = root_fdt_bytes(_state("kho-v4"), MAP)
    h = _header(blob)
    assert h["off_mem_rsvmap"] == 0x30  # ALIGN(sizeof(fdt_header) = 40, sizeof(fdt_reserve_entry) = 16)
    assert h["off_dt_struct"] == 0x30 + 16  # one (0, 0) reserve entry
    assert h["size_dt_struct"] == ROOT_STRUCT
    assert _strings(blob) == SETUP
    assert h["totalsize"] == len(blob) == 0x40 + ROOT_STRUCT + len(SETUP) == 152
    assert blob[40:48] == bytes(8)  # the gap fdt_create leaves between header and reserve map
    assert (h["version"], h["last_comp_version"]) == (17, 16)
    # 8 bytes longer than the packed layout of the same tree (what build wrote before)
    packed = root_fdt_bytes(_state("kho-v4", fdt_history="packed"), MAP)
    assert len(packed) == len(blob) - 8 + len(ADDED)
    assert _header(packed)["off_mem_rsvmap"] == 0x28


def test_subtrees_added_are_packed_with_their_names_appended():
    blob = root_fdt_bytes(_state("kho-v4", [("LUO", 0x5000, 32), ("kexec-metadata", 0x6000, 73)]), MAP)
    h = _header(blob)
    assert h["off_mem_rsvmap"] == 0x28 and h["off_dt_struct"] == 0x38
    assert _strings(blob) == SETUP + ADDED
    root = parse_fdt(blob).root
    assert [c.name for c in root.children] == ["LUO", "kexec-metadata"]
    assert [n for n, _ in root.children[0].props] == ["blob-size", "preserved-data"]  # each inserted first
    assert h["totalsize"] == len(blob) == h["off_dt_strings"] + len(SETUP + ADDED)


def test_subtrees_added_then_all_removed_keep_their_names():
    st = _state("kho-v4", fdt_history="packed")
    blob = root_fdt_bytes(st, MAP)
    h = _header(blob)
    assert h["off_mem_rsvmap"] == 0x28
    assert h["size_dt_struct"] == ROOT_STRUCT  # the nodes are gone ...
    assert _strings(blob) == SETUP + ADDED  # ... their property names are not
    assert h["totalsize"] == 0x28 + 16 + ROOT_STRUCT + len(SETUP + ADDED) == 169


def test_v1_finalize_is_one_sequential_write_pass():
    st = _state(
        "kho-v1", [("memblock", 0x5000, None), ("kho_test", 0x6000, None)], map_params={"v1_bitmap_bytes": 4096}
    )
    blob = root_fdt_bytes(st, MAP)
    assert fdt_history(st) == "sequential"
    h = _header(blob)
    assert h["off_mem_rsvmap"] == 0x30
    # compatible, preserved-memory-map, then every sub-node's "fdt": reverse order of first use
    assert _strings(blob) == b"fdt\0" + SETUP
    assert [c.name for c in parse_fdt(blob).root.children] == ["memblock", "kho_test"]


def test_kho_v1_packed_is_the_live_v1_kernels():
    """The last kho-v1 kernels kept the root FDT live like v2+ (kho_add_subtree with
    fdt_open_into/fdt_pack, sub-node property ``fdt``)."""
    st = _state("kho-v1", [("kho_test", 0x6000, None)], fdt_history="packed", map_params={"v1_bitmap_bytes": 4096})
    blob = root_fdt_bytes(st, MAP)
    assert _header(blob)["off_mem_rsvmap"] == 0x28 and _strings(blob) == SETUP + b"fdt\0"
    st.subblobs = []
    assert _strings(root_fdt_bytes(st, MAP)) == SETUP + b"fdt\0"


def test_parse_records_the_history_and_convert_resets_it():
    seq = root_fdt_bytes(_state("kho-v4"), MAP)
    assert parse(seq).fdt_history == "sequential"
    removed = root_fdt_bytes(_state("kho-v4", fdt_history="packed"), MAP)
    got = parse(removed)
    assert got.fdt_history == "packed" and not got.subblobs
    assert root_fdt_bytes(got, MAP) == removed  # a removed-sub-trees blob rebuilds byte for byte
    assert convert(got, "kho-v3").fdt_history == "auto"
    cap = parse_capture(load_capture(CAPTURES / "linux-7.3-x86_64-kho-v4", []))
    assert cap.fdt_history == "packed"
    with pytest.raises(Exception, match="history"):
        root_fdt_bytes(_state("kho-v4", fdt_history="finalized"), MAP)


def test_spec_root_fdt_history():
    base = {"version": "kho-v4", "alloc": [{"start": "16M", "size": "16M"}]}
    empty = build_spec(spec_from_dict(dict(base)))
    assert _header(empty.root_fdt)["off_mem_rsvmap"] == 0x30 and _strings(empty.root_fdt) == SETUP
    removed = build_spec(spec_from_dict({**base, "root_fdt_history": "packed"}))
    assert _header(removed.root_fdt)["off_mem_rsvmap"] == 0x28 and _strings(removed.root_fdt) == SETUP + ADDED
    blob = {"name": "m", "type": "raw", "text": "hello"}
    one = build_spec(spec_from_dict({**base, "blob": [blob]}))
    assert _header(one.root_fdt)["off_mem_rsvmap"] == 0x28
    seq = build_spec(spec_from_dict({**base, "blob": [blob], "root_fdt_history": "sequential"}))
    assert _header(seq.root_fdt)["off_mem_rsvmap"] == 0x30
    with pytest.raises(Exception, match="root_fdt_history"):
        spec_from_dict({**base, "root_fdt_history": "finalized"})


@pytest.mark.skipif(
    shutil.which("fdtdump") is None, reason="fdtdump not on PATH (apt-get install device-tree-compiler)"
)
@pytest.mark.parametrize(
    "st, rsvmap, total",
    [
        (_state("kho-v4"), 0x30, 152),
        (_state("kho-v4", fdt_history="packed"), 0x28, 169),
        (_state("kho-v4", [("kexec-metadata", 0xA0E000, 73)]), 0x28, 233),
    ],
    ids=["never-added", "added-then-removed", "kexec-metadata-only"],
)
def test_fdtdump_reads_the_layout(tmp_path, st, rsvmap, total):
    path = tmp_path / "root.dtb"
    path.write_bytes(root_fdt_bytes(st, MAP))
    out = subprocess.run(["fdtdump", str(path)], capture_output=True, text=True, check=True).stdout
    assert f"// off_mem_rsvmap:\t0x{rsvmap:x}" in out
    assert f"// totalsize:\t\t0x{total:x} ({total})" in out
    assert 'compatible = "kho-v4";' in out
    subprocess.run(["dtc", "-I", "dtb", "-O", "dts", "-o", str(tmp_path / "root.dts"), str(path)], check=True)


# -- the real libfdt --------------------------------------------------------------------------


def _capture_calls(blob: bytes) -> tuple[dict, list[dict]]:
    """The kernel calls that leave ``blob``: setup with the root properties, then one
    kho_add_subtree per sub-node, last node first, its properties last first."""
    root = parse_fdt(blob).root
    edits = [{"add": c.name, "props": _hex(list(reversed(c.props)))} for c in reversed(root.children)]
    return {"props": _hex(root.props)}, edits


@requires_libfdt
@pytest.mark.parametrize("name", ["linux-7.3-x86_64-kho-v4", "linux-7.3-x86_64-luo-v5-small"])
def test_libfdt_replay_reproduces_the_real_captures(name):
    real = (CAPTURES / name / "root.dtb").read_bytes()
    assert libfdt(*_capture_calls(real)) == real
    st = parse_capture(load_capture(CAPTURES / name, []))
    st.fdt_history = "auto"
    assert root_fdt_bytes(st, st.memmap_phys) == real


HISTORIES = {
    # name: (our state, libfdt calls)
    "v4-never-added": (_state("kho-v4"), []),
    "v4-one": (_state("kho-v4", [("kexec-metadata", 0x6000, 73)]), [_add("kexec-metadata", 0x6000, 73)]),
    "v4-three": (
        _state("kho-v4", [("memblock", 0x8000, 300), ("kho_test", 0x7000, 4200), ("kexec-metadata", 0x6000, 73)]),
        [_add("kexec-metadata", 0x6000, 73), _add("kho_test", 0x7000, 4200), _add("memblock", 0x8000, 300)],
    ),
    "v4-all-removed": (
        _state("kho-v4", fdt_history="packed"),
        [
            _add("kexec-metadata", 0x6000, 73),
            _add("memblock", 0x8000, 300),
            {"remove": "memblock"},
            {"remove": "kexec-metadata"},
        ],
    ),  # fmt: skip
    "v4-one-removed": (
        _state("kho-v4", [("memblock", 0x8000, 300), ("kexec-metadata", 0x6000, 73)]),
        [
            _add("kexec-metadata", 0x6000, 73),
            _add("kho_test", 0x7000, 4200),
            _add("memblock", 0x8000, 300),
            {"remove": "kho_test"},
        ],
    ),  # fmt: skip
    "v3-two": (
        _state("kho-v3", [("b", 0x8000, 16), ("a", 0x6000, 8)]),
        [_add("a", 0x6000, 8), _add("b", 0x8000, 16)],
    ),
    "v2-no-blob-size": (
        _state("kho-v2", [("b", 0x8000, None), ("a", 0x6000, None)]),
        [_add("a", 0x6000, None), _add("b", 0x8000, None)],
    ),
    "v4-extra-compatible": (
        _state("kho-v4", [("a", 0x6000, 8)], extra_compatible=["acme,kho"]),
        [_add("a", 0x6000, 8)],
    ),
}


@requires_libfdt
@pytest.mark.parametrize("name", sorted(HISTORIES))
def test_v2_plus_histories_match_libfdt(name):
    st, edits = HISTORIES[name]
    compat = tuple(st.extra_compatible)
    want = libfdt({"props": _hex(_root_props(st.version, compat))}, edits)
    assert root_fdt_bytes(st, MAP) == want


@requires_libfdt
@pytest.mark.parametrize("history", ["finalize", "live", "live-all-removed"])
def test_v1_histories_match_libfdt(history):
    blobs = [("memblock", 0x8000, None), ("kho_test", 0x6000, None)]
    fdt = [(n, [("fdt", u64_bytes(p, "little"))]) for n, p, _ in blobs]
    params = {"map_params": {"v1_bitmap_bytes": 4096}}
    if history == "finalize":  # 6.16 .. 6.18: kho_finalize writes everything in one pass
        st = _state("kho-v1", blobs, **params)
        want = libfdt(
            {"props": _hex(_root_props("kho-v1")), "children": [{"name": n, "props": _hex(p)} for n, p in fdt]}
        )
    else:  # later kho-v1 kernels: setup at boot, kho_add_subtree reopens and packs
        adds = [{"add": n, "props": _hex(p)} for n, p in reversed(fdt)]
        if history == "live":
            st = _state("kho-v1", blobs, fdt_history="packed", **params)
            want = libfdt({"props": _hex(_root_props("kho-v1"))}, adds)
        else:
            st = _state("kho-v1", [], fdt_history="packed", **params)
            want = libfdt(
                {"props": _hex(_root_props("kho-v1"))}, adds + [{"remove": "memblock"}, {"remove": "kho_test"}]
            )
    assert root_fdt_bytes(st, MAP) == want


def test_build_writes_the_same_bytes_as_root_fdt_bytes():
    st = _state("kho-v4", [("a", 0x20_0000, 8)], root_fdt_phys=0x30_0000)
    b = build(st, alloc=[(0x4000_0000, 0x100_0000)])
    assert b.root_fdt == root_fdt_bytes(st, b.memmap_phys)
