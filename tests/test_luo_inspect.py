"""``kho inspect`` of LUO state: the top-level ``luo`` key (exact shape, kernel
order), ``null`` without a ``LUO`` sub-node, the text section, and timing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from _luo import LUO_CAP, TRUTH, h

from kho_formats.cli import main

FIX = Path(__file__).resolve().parent.parent / "fixtures"

TOP = ["phys", "compatible", "liveupdate_num", "sessions_pa", "flbs_pa", "serialized", "sessions", "flbs"]
FILE = ["token", "compatible", "data", "memfd"]
MEMFD = ["size", "pos", "seals", "flags", "nr_folios", "folios"]


def inspect_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["inspect", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_luo_key_shape_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    j = inspect_json(capsys, str(LUO_CAP))
    lu = j["luo"]
    assert list(lu)[: len(TOP)] == TOP  # more keys may follow
    t = TRUTH["luo_ser"]
    assert (lu["phys"], lu["compatible"], lu["liveupdate_num"], lu["sessions_pa"], lu["flbs_pa"], lu["serialized"]) == (
        h(t["phys"]),
        "luo-v5",
        1,
        h(t["sessions_pa"]),
        h(t["flbs_pa"]),
        True,
    )
    assert [s["name"] for s in lu["sessions"]] == ["vm-a"]
    for s, ts in zip(lu["sessions"], TRUTH["sessions"]):
        assert list(s)[:2] == ["name", "files"]
        for f, tf in zip(s["files"], ts["files"], strict=True):
            assert list(f)[:4] == FILE
            assert (f["token"], f["compatible"], f["data"]) == (h(tf["token"]), tf["compatible"], h(tf["data"]))
            m, tm = f["memfd"], tf["memfd"]
            assert list(m)[:6] == MEMFD
            assert [m[k] for k in MEMFD[:5]] == [tm[k] for k in MEMFD[:5]]
            assert m["folios"] == [
                {"phys": h(x["phys"]), "order": x["order"], "index": x["index"], "flags": x["flags"]}
                for x in tm["folios"]
            ]
    assert lu["flbs"] == [
        {"name": e["name"], "data": h(e["data"]), "count": e["count"], "entry_phys": lu["flbs"][i]["entry_phys"]}
        for i, e in enumerate(TRUTH["flbs"]["entries"])
    ]
    assert [list(f)[:3] for f in lu["flbs"]] == [["name", "data", "count"]] * 3
    # the sub-blob row summarizes, the memfd folio arrays are listed as vmalloc areas
    sub = {s["name"]: s for s in j["subblobs"]}["LUO"]
    assert sub["kind"] == "LUO" and sub["decoded"]["files"] == 3 and sub["error"] is None
    assert [v["client"] for v in j["vmalloc"]] == ["LUO", "LUO", "kho_test"]
    # the existing keys keep their order; luo comes last
    assert list(j)[-2:] == ["notes", "luo"]


@pytest.mark.parametrize("name", ["captures/linux-7.3-x86_64-kho-v4", "v4-4k", "v1-512-4k"])
def test_luo_is_null_without_the_subnode(capsys: pytest.CaptureFixture[str], name: str) -> None:
    j = inspect_json(capsys, str(FIX / name))
    assert j["luo"] is None and list(j)[-1] == "luo"
    assert main(["inspect", str(FIX / name)]) == 0
    assert "Live Update" not in capsys.readouterr().out


def test_text_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(LUO_CAP)]) == 0
    out = capsys.readouterr().out
    assert "Live Update (LUO luo-v5 at 0x1e8f000): live update 1, 1 session, 3 FLBs" in out
    assert "session 'vm-a': 3 files" in out
    lines = [ln.split() for ln in out.splitlines()]
    assert ["0x1001", "memfd-v2", "12.1", "KiB", "4", "(order", "0)", "0x1", "seal"] in lines
    assert ["0xffffffffffffffff", "memfd-v2", "64", "KiB", "1", "(order", "4)", "0x7", "seal|shrink|grow"] in lines
    assert ["liveupdate-test-flb-v2", "0xfeedf00dcafebee2", "3"] in lines


def test_pre_serialization_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A capture whose LUO blob is the debugfs one (sessions_pa = 0)."""
    from kho_formats.memory.image import PhysImage

    img = PhysImage.from_elf(LUO_CAP / "image.elf").copy()
    img.write(h(TRUTH["luo_ser"]["phys"]), (LUO_CAP / "debugfs/kho/out/sub_fdts/LUO").read_bytes())
    (tmp_path / "pre.elf").write_bytes(img.to_elf())
    j = inspect_json(capsys, str(LUO_CAP), "--mem", str(tmp_path / "pre.elf"))
    lu = j["luo"]
    assert lu["serialized"] is False and lu["sessions"] == [] and lu["sessions_pa"] == 0
    assert any("not serialized" in n for n in lu["notes"])
    assert main(["inspect", str(LUO_CAP), "--mem", str(tmp_path / "pre.elf")]) == 0
    out = capsys.readouterr().out
    assert "not serialized (sessions_pa = 0)" in out and "note: LUO state not serialized" in out
    assert main(["check", str(LUO_CAP), "--mem", str(tmp_path / "pre.elf")]) == 0


def test_decode_is_fast() -> None:
    from kho_formats.model.clients import decode_clients
    from kho_formats.ops.capture import load_capture, parse_capture

    t = time.perf_counter()
    cap = load_capture(LUO_CAP)
    st = parse_capture(cap)
    decode_clients(st, cap.image)
    assert time.perf_counter() - t < 1.0
