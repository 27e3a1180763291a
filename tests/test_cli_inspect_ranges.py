"""``kho inspect`` lists a bounded number of ranges by default, counts all of
them, and lists every one on request."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from kho_formats.memory.pageset import PageSet
from kho_formats.model.state import KhoState, build


def _fixture(tmp_path, nruns: int):
    # every other page: nruns separate one-page ranges
    phys = (np.arange(nruns, dtype=np.uint64) * np.uint64(2 * 4096)) + np.uint64(1 << 32)
    st = KhoState(version="kho-v4", preserved=PageSet.from_arrays(4096, {0: phys}), root_fdt_phys=1 << 30)
    b = build(st, alloc=[(1 << 36, 1 << 30)])
    (tmp_path / "root.dtb").write_bytes(b.root_fdt)
    (tmp_path / "image.elf").write_bytes(b.image.to_elf())
    return tmp_path / "root.dtb", tmp_path / "image.elf"


def _inspect(*args):
    r = subprocess.run(
        [sys.executable, "-m", "kho_formats.cli", "inspect", *map(str, args)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_json_ranges_capped_and_counted(tmp_path):
    root, img = _fixture(tmp_path, 300)
    rep = json.loads(_inspect(root, "--mem", img, "--json", "--max-ranges", "7"))
    p = rep["preserved"]
    assert p["ranges_total"] == 300 and p["ranges_truncated"] is True
    assert [r["start"] for r in p["ranges"]] == [(1 << 32) + 2 * 4096 * i for i in range(7)]
    assert p["pages"] == 300


def test_all_ranges_lists_every_range(tmp_path):
    root, img = _fixture(tmp_path, 300)
    p = json.loads(_inspect(root, "--mem", img, "--json", "--all-ranges"))["preserved"]
    assert len(p["ranges"]) == 300 and p["ranges_truncated"] is False
    assert p["ranges"][-1]["end"] == (1 << 32) + 2 * 4096 * 299 + 4096


def test_table_says_how_many_more(tmp_path):
    root, img = _fixture(tmp_path, 50)
    out = _inspect(root, "--mem", img, "--max-ranges", "10")
    assert "50 ranges" in out
    assert "... 40 more ranges" in out


def test_json_output_is_json_dumps_indent_2_exactly(tmp_path):
    # the fast writer lays long record lists out from a template: it must
    # still be byte for byte what json.dumps(indent=2) writes
    root, img = _fixture(tmp_path, 300)
    out = _inspect(root, "--mem", img, "--json", "--all-ranges")
    assert out == json.dumps(json.loads(out), indent=2) + "\n"


def test_dumps_json_matches_json_on_awkward_values():
    from kho_formats.ops.report import dumps_json

    recs = [{"start": i, "end": i + 1, "size": 1} for i in range(100)]
    cases = [
        {},
        [],
        {"a": {}, "b": [], "c": [[]], "d": [{}]},
        {"ranges": recs, "pages": [i * 4096 for i in range(200)]},
        {1: "int key", 2.5: "float key", None: "none key", 'é\n"%d': "ünïcode %s"},
        {False: "bool key"},
        [{"a": 1, "b": True}] * 80,  # bools are not ints here: json writes true
        [{"a": 1, "b": 2}] * 70 + [{"b": 2, "a": 1}],  # a different key order ends the template
        [{"a": 1, "b": None}] * 70,
        [{"x": 1.5}] * 70,
        [{"%d": 1, 'q"': -7}] * 65,
        ({"t": (1, 2, 3)}, "tuple", 1e300, -0.0, float("inf")),
    ]
    for c in cases:
        assert dumps_json(c) == json.dumps(c, indent=2), c
