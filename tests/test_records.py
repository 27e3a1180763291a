"""Records (numpy columns standing for a JSON list of integer records) and the
streaming JSON writer: the same text as ``json.dumps(indent=2)``, whatever
the chunking, without one dict per record."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kho_formats
from kho_formats.ops import report
from kho_formats.records import Records, lazy_records, records

ROOT = Path(__file__).resolve().parents[1]


def _cols(n: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    rng = np.random.default_rng(seed)
    order = rng.integers(-1, 12, n)
    return (
        {
            "phys": rng.integers(0, 1 << 63, n, dtype=np.uint64) * np.uint64(2) + np.uint64(1),  # past 2**63 too
            "order": order,
            "index": np.arange(n, dtype=np.uint64),
            "flags": rng.integers(0, 4, n).astype(np.uint64),
        },
        {"order": -1},
    )


def test_records_outside_lazy_are_the_plain_list() -> None:
    cols, nulls = _cols(5, 1)
    got = records(cols, nulls)
    assert isinstance(got, list)
    want = [
        {"phys": int(p), "order": None if int(o) == -1 else int(o), "index": int(i), "flags": int(f)}
        for p, o, i, f in zip(cols["phys"], cols["order"], cols["index"], cols["flags"])
    ]
    assert got == want
    assert any(r["order"] is None for r in _plain(200, 2))  # the generator does make nulls
    assert all(type(v) is int for r in got for v in r.values() if v is not None)


def _plain(n: int, seed: int) -> list[dict]:
    cols, nulls = _cols(n, seed)
    return Records(cols, nulls).to_list()


def test_records_are_a_sequence_equal_to_their_list() -> None:
    cols, nulls = _cols(300, 3)
    with lazy_records():
        r = records(cols, nulls)
    assert isinstance(r, Records)
    plain = r.to_list()
    assert len(r) == 300 and r == plain and list(r) == plain
    assert r[0] == plain[0] and r[-1] == plain[-1] and r[10:20] == plain[10:20]
    with pytest.raises(IndexError):
        r[300]
    assert records(cols, nulls) == plain  # the block ended: lists again


@pytest.mark.parametrize(
    ("cols", "msg"),
    [
        ({}, "at least one column"),
        ({"a": np.zeros(2, np.int64), "b": np.zeros(3, np.int64)}, "one length"),
        ({"a": np.zeros((2, 2), np.int64)}, "1-D"),
        ({"a": np.zeros(2, np.float64)}, "not an integer"),
    ],
)
def test_records_refuse_what_json_integers_cannot_hold(cols: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        Records(cols)
    with pytest.raises(ValueError, match="not there"):
        Records({"a": np.zeros(1, np.int64)}, {"b": 0})


def _doc(n: int, seed: int, lazy: bool) -> dict:
    cols, nulls = _cols(n, seed)
    folios = Records(cols, nulls) if lazy else Records(cols, nulls).to_list()
    ranges = [{"start": i * 4096, "end": i * 4096 + 4096} for i in range(n % 97)]
    return {
        "schema": "kho-formats/inspect/1",
        "name": 'a "quoted" % name\u2028',
        "empty": [],
        "nested": {"luo": {"sessions": [{"files": [{"memfd": {"folios": folios, "size": n << 12}}]}]}},
        "ranges": ranges,
        "mixed": [1, None, True, "x", {"k": 1.5}],
        3: "int key",
    }


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 1000, 20_000])
@pytest.mark.parametrize("chunks", [(8192, 1 << 20), (7, 100), (1, 1)])
def test_write_json_is_json_dumps_indent_2(n: int, chunks: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "RECORD_CHUNK", chunks[0])
    monkeypatch.setattr(report, "WRITE_CHUNK", chunks[1])
    want = json.dumps(_doc(n, n, lazy=False), indent=2) + "\n"
    pieces: list[str] = []
    report.write_json(_doc(n, n, lazy=True), pieces.append)
    assert "".join(pieces) == want
    assert report.dumps_json(_doc(n, n, lazy=True)) + "\n" == want
    if chunks[1] > 1 and len(want) > 4 * chunks[1] + 4096:
        assert len(pieces) > 2  # written as it goes, not as one string
        assert max(map(len, pieces)) < chunks[1] + 4096


def test_write_json_makes_no_dict_per_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer formats rows of the columns; the per-record dict paths are never taken."""

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("a per-record dict was made")

    doc = _doc(5000, 9, lazy=True)
    want = json.dumps(_doc(5000, 9, lazy=False), indent=2) + "\n"
    monkeypatch.setattr(Records, "to_list", refuse)
    monkeypatch.setattr(Records, "__iter__", refuse)
    monkeypatch.setattr(Records, "__getitem__", refuse)
    out = io.StringIO()
    report.write_json(doc, out.write)
    assert out.getvalue() == want


@pytest.mark.parametrize(
    "fixture", sorted(p.name for p in (ROOT / "fixtures").iterdir() if (p / "manifest.json").exists())
)
def test_handover_write_json_is_its_to_json(fixture: str) -> None:
    h = kho_formats.open(ROOT / "fixtures" / fixture)
    out = io.StringIO()
    h.write_json(out)
    assert out.getvalue() == json.dumps(h.to_json(), indent=2) + "\n"
    assert isinstance(h.to_json(), dict)
    json.dumps(h.to_json())  # to_json stays plain JSON: no Records leak out of write_json


def test_kho_inspect_json_prints_the_library_document() -> None:
    fx = ROOT / "fixtures" / "v4-4k-luo"
    h = kho_formats.open(fx)
    doc = h.to_json()
    files = [f for s in doc["luo"]["sessions"] for f in s["files"] if f.get("memfd")]
    assert any(f["memfd"]["folios"] for f in files)  # the fixture does list folios
    got = subprocess.run(
        [sys.executable, "-m", "kho_formats.cli", "inspect", str(fx), "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    assert got == json.dumps(doc, indent=2) + "\n"
