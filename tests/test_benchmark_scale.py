"""benchmarks/scale.py (issue 22): its workload generators at tiny sizes give
what they say (dumps read back by kho's own readers, LUO specs that build and
decode), and ``--quick --runs 1`` runs and prints its table.  No timing is
asserted."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kho_formats
from kho_formats.memory.image import PhysImage
from kho_formats.memory.kdump import load_kdump

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

MiB = 1 << 20


def _gen():
    spec = importlib.util.spec_from_file_location("scalegen", ROOT / "benchmarks" / "scalegen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _gen()


def test_pool_pages_are_data_and_not_fdts() -> None:
    pool = gen.pool()
    assert pool.shape == (gen.POOL_PAGES, gen.PAGE)
    live = pool[: gen.POOL_PAGES - gen.ZERO_PAGES]
    assert all(p.any() for p in live) and not pool[gen.POOL_PAGES - gen.ZERO_PAGES :].any()
    assert len({p.tobytes() for p in live}) == len(live)
    assert not any(p[:4].tobytes() == b"\xd0\x0d\xfe\xed" for p in pool)
    idx = gen.pool_index(np.arange(1 << 16, dtype=np.uint64))
    assert set(np.unique(idx).tolist()) == set(range(gen.POOL_PAGES))


@pytest.mark.parametrize("comp", ["zlib", "snappy", "zstd"])
def test_generated_dumps_read_back_and_hold_the_handover(tmp_path: Path, comp: str) -> None:
    size = 32 * MiB
    h, mem = gen.dump_memory(size)
    assert min(mem.overlay) * gen.PAGE >= size // 4  # the handover is in the middle, not at the start
    elf, kd = tmp_path / "vmcore", tmp_path / f"kdump.{comp}"
    assert gen.write_elf_dump(elf, mem) > size
    gen.write_kdump_dump(kd, mem, comp)
    a, b = PhysImage.from_elf(elf), load_kdump(kd)
    assert a.covered() == [(0, size)]
    rng = np.random.default_rng(3)
    pfns = sorted(mem.overlay)[:40] + rng.integers(0, size // gen.PAGE, 300).tolist()
    zeros = 0
    for pfn in pfns:
        want = mem.fetch(pfn * gen.PAGE, gen.PAGE)
        assert a.read(pfn * gen.PAGE, gen.PAGE) == want
        if b.has(pfn * gen.PAGE, gen.PAGE):
            assert b.read(pfn * gen.PAGE, gen.PAGE) == want
        else:  # excluded from the kdump: only the all-zero pages
            assert want == bytes(gen.PAGE)
            zeros += 1
    assert zeros > 0
    # the root FDT is found in each dump alone, and the LUO state decodes from it
    for path in (elf, kd):
        d = kho_formats.open(path)
        assert d.root_fdt_phys == h.root_fdt_phys
        luo = d.luo
        assert luo is not None and [s.name for s in luo.sessions] == ["vm-a", "vm-b"]
        assert d.check().ok


def test_luo_specs_build_and_decode() -> None:
    st = kho_formats.build(gen.stress_spec(12))
    luo = st.luo
    assert luo is not None
    assert [len(s.files) for s in luo.sessions] == [5, 5, 2]
    assert b"".join(luo.contents(luo.sessions[2].files[1])).rstrip(b"\0") == b"file-data-11"
    vmm = kho_formats.build(gen.vmm_spec(2, 64 * MiB))
    assert vmm.image is not None and vmm.image.total_bytes < 2 * MiB
    assert vmm.preserved.total_bytes > 128 * MiB
    assert vmm.check().ok


def test_radix_shapes_preserve_what_they_say() -> None:
    for shape in ("order9", "order0", "mixed"):
        ps = gen.radix_pages(shape, 16 << 30)
        assert ps.total_bytes == 16 << 30, shape


def test_quick_run_prints_a_table(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = tmp_path / "rows.json"
    p = subprocess.run(
        [sys.executable, "benchmarks/scale.py", "--quick", "--runs", "1", "--warm-only", "--only", "stress", "memfd"]
        + ["--tmp", str(tmp_path), "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert lines[0].startswith("command: python benchmarks/scale.py --quick")
    assert any(line.startswith("load average before") for line in lines)
    hdr = next(i for i, line in enumerate(lines) if line.lstrip().startswith("#  section"))
    assert "median" in lines[hdr] and "RSS MiB" in lines[hdr]
    assert "LUO decode and check per file:" in lines
    assert any("luo extract" in line for line in lines) and any("throughput / cp" in line for line in lines)
    assert "commands:" in lines and any("$TMP" in line for line in lines)
    import json

    doc = json.loads(out.read_text())
    ops = {(r["section"], r["op"]) for r in doc["rows"]}
    assert {("stress", "open + decode (api)"), ("memfd", "luo extract"), ("memfd", "check")} <= ops
    assert all(r["runs"] == 1 and r["min"] <= r["median"] <= r["max"] for r in doc["rows"])
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"]  # the workloads were cleaned up


def test_page_cache_helpers_warm_evict_and_count(tmp_path: Path) -> None:
    scale = importlib.import_module("scale")
    f = tmp_path / "big"
    f.write_bytes(np.random.default_rng(5).integers(0, 256, 3 * MiB + 100, dtype=np.uint8).tobytes())
    scale.warm(f)
    assert scale.resident(f) == 1.0
    scale.evict(f)
    got = scale.resident(f)
    if not scale.fadvise_works():
        pytest.skip("POSIX_FADV_DONTNEED does not drop pages here (tmpfs?)")
    assert got is not None and got < 0.5
    scale.warm(f)
    assert scale.resident(f) == 1.0
    assert scale._resident_note([1.0, 0.5], [0.25]) == "resident before: min 50.0% max 100.0%, after: min 25.0%"


def test_one_page_cache_module_for_both_benchmarks(tmp_path: Path) -> None:
    """scale.py and extract.py evict and warm files with the same helpers (pagecache.py)."""
    scale = importlib.import_module("scale")
    pc = importlib.import_module("pagecache")
    extract = importlib.import_module("extract")
    assert (scale.evict, scale.warm, scale.resident) == (pc.evict, pc.warm, pc.resident)
    assert (extract.evict, extract.warm) == (pc.evict, pc.warm)
    f = tmp_path / "input"
    f.write_bytes(bytes(range(256)) * 4096)
    extract.cache([f], "warm")
    assert pc.resident(f) == 1.0
    if not pc.fadvise_works():
        pytest.skip("POSIX_FADV_DONTNEED does not drop pages here (tmpfs?)")
    extract.cache([f], "cold")
    got = pc.resident(f)
    assert got is not None and got < 0.5


def test_tool_commands_per_op() -> None:
    """Each dump tool's command is its own arguments, the dump, then -o only where there is an output."""
    scale = importlib.import_module("scale")
    d, out = Path("/d/vmcore"), Path("/d/out")
    tail = ["-m", "kho_formats.cli"]
    assert scale.tool_cmd("check", d, [])[1:] == [*tail, "check", str(d)]
    assert scale.tool_cmd("capture", d, [out])[1:] == [*tail, "capture", "--from-dump", str(d), "-o", str(out)]
    assert scale.tool_cmd("luo extract", d, [out])[1:] == [*tail, "luo", "extract", str(d), "-o", str(out)]
    with pytest.raises(KeyError):
        scale.tool_cmd("inspect", d, [])
