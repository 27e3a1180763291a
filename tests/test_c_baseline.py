"""The benchmark's C baseline (benchmarks/c/kho_baseline.c): its radix walk,
with each callback, finds the pages the library's parse finds."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kho_formats.abi import get_version
from kho_formats.abi.layout import layout
from kho_formats.memory.alloc import PageAllocator
from kho_formats.memory.image import PhysImage
from kho_formats.memory.pageset import PageSet
from kho_formats.model.memmap.radix import build_radix, read_radix

ROOT = Path(__file__).resolve().parent.parent
CC = shutil.which("cc")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    if CC is None:
        pytest.skip("no C compiler (cc) on this machine")
    out = tmp_path_factory.mktemp("cbase") / "kho_baseline"
    subprocess.run(
        [CC, "-O2", "-Wall", "-Werror", "-o", str(out), str(ROOT / "benchmarks/c/kho_baseline.c")], check=True
    )
    return out


def _walk(exe: Path, *args: str) -> dict:
    p = subprocess.run([str(exe), "radix-walk", *args], capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_radix_walk_callbacks_agree_with_the_parse(baseline, tmp_path):
    rng = np.random.default_rng(4)
    ps = 4096
    phys = np.unique(rng.integers(0, 1 << 28, size=5000, dtype=np.uint64)) << np.uint64(12)
    big = (np.arange(7, dtype=np.uint64) << np.uint64(34)) + np.uint64(1 << 40)
    pages = PageSet.from_arrays(ps, {0: phys + np.uint64(1 << 32), 9: big})
    geom = get_version("kho-v4").radix(ps)
    lay = layout(ps, "little")
    root, mp, _ = build_radix(pages, geom, lay, PageAllocator([(1 << 46, 1 << 30)], ps))
    image = PhysImage(mp)
    elf = tmp_path / "map.elf"
    elf.write_bytes(image.to_elf())
    args = [str(elf), hex(root), "12", str(geom.depth)]
    got = {}
    for mode in ("collect", "prealloc"):
        out = tmp_path / f"{mode}.bin"
        line = _walk(baseline, *args, *(["--prealloc"] if mode == "prealloc" else []), "--out", str(out))
        assert line["callback"] == mode and line["pages"] == pages.num_pages
        rec = np.fromfile(out, dtype="<u8").reshape(-1, 2)
        got[mode] = {int(o): np.sort(rec[rec[:, 1] == o, 0]) for o in np.unique(rec[:, 1])}
    counted = _walk(baseline, *args, "--count")
    assert counted["callback"] == "count" and counted["pages"] == pages.num_pages
    parsed, _ = read_radix(image, root, geom, lay)
    assert parsed == pages
    for mode, by_order in got.items():
        assert sorted(by_order) == sorted(pages.orders), mode
        for o, arr in by_order.items():
            assert np.array_equal(arr, np.sort(pages.pages_of_order(o))), (mode, o)
    p = subprocess.run([str(baseline), "radix-walk", *args, "--count", "--prealloc"], capture_output=True, text=True)
    assert p.returncode == 2 and "two different callbacks" in p.stderr


def test_selftest_passes(baseline):
    p = subprocess.run([str(baseline), "selftest", "2000"], capture_output=True, text=True)
    assert p.returncode == 0 and '"ok":true' in p.stdout
