"""The second live update in a row (fixtures/captures/linux-7.3-x86_64-second-update,
taken by scripts/live/again.py): kernel 2 was itself booted through KHO, so Linux 7.3
gave it no debugfs ``kho/out/fdt`` (``kho_init()`` adds it only on a cold boot); its
outgoing root FDT is found in the memory image, passing over the one ``kho/in``
describes (kernel 1's, still in memory), and the choice is explained in text and JSON.
``next-kernel-in-fdt`` is kernel 3's debugfs ``kho/in/fdt``: what was really handed over.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from _kcore import write_kcore

import kho_formats
from kho_formats.cli import main
from kho_formats.errors import KhoFormatError
from kho_formats.memory.image import PhysImage
from kho_formats.ops import locate
from kho_formats.ops.capture import load_capture, strip_ranges
from kho_formats.ops.live import live_capture
from kho_formats.ops.root_choice import choose_outgoing

ROOT = Path(__file__).resolve().parents[1]
CAP = ROOT / "fixtures" / "captures" / "linux-7.3-x86_64-second-update"
DBG = CAP / "debugfs" / "kho"
IMAGE = CAP / "image.elf"
ANSWER = (CAP / "next-kernel-in-fdt").read_bytes()
INCOMING = (DBG / "in" / "fdt").read_bytes()


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def candidates() -> dict[str, int]:
    """``{"out": phys, "in": phys}`` of the two root FDTs in the image, by their bytes."""
    img = PhysImage.from_elf(IMAGE)
    found = {c.phys: locate.read_fdt_at(img, c.phys) for c in locate.scan_root_fdts(img)}
    assert len(found) == 2
    return {
        "out": next(p for p, b in found.items() if b == ANSWER),
        "in": next(p for p, b in found.items() if b == INCOMING),
    }


def test_the_capture_is_what_it_says():
    assert not (DBG / "out" / "fdt").exists() and (DBG / "out" / "scratch_phys").is_file()
    assert sorted(p.name for p in (DBG / "out" / "sub_fdts").iterdir()) == ["LUO", "kexec-metadata"]
    c = candidates()
    assert c["out"] != c["in"] and ANSWER != INCOMING
    run_json = json.loads((CAP / "run.json").read_text())
    assert run_json["passed"] is True and run_json["booted"] == [1, 2, 3]
    console = (CAP / "console.log").read_text(errors="replace")
    for n in (1, 2):  # kernel n + 1 read the handover of the n-th kexec
        assert f"KHO: exec from: 7.3.4-kho-live (count {n})" in console
    assert "luo: Retrieved live update data, liveupdate number: 2" in console


def test_inspect_takes_the_outgoing_root_fdt_and_says_why():
    c = candidates()
    rc, out, err = run("inspect", str(DBG), "--mem", str(IMAGE))
    assert rc == 0, err
    assert f"root FDT:        {c['out']:#x} ({len(ANSWER)} bytes)" in out
    assert "kho/out has no fdt (a kernel booted through KHO)" in out
    assert f"{c['in']:#x} is the root FDT of kho/in (the handover this kernel received" in out
    assert "its sub-blobs LUO, kexec-metadata match kho/out/sub_fdts" in out
    assert "kexec count 2" in out  # kernel 2's own kexec-metadata: the second kexec


def test_json_names_the_choice_and_every_candidate():
    c = candidates()
    rc, out, _ = run("inspect", str(DBG), "--mem", str(IMAGE), "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["root_fdt"] == {"phys": c["out"], "size": len(ANSWER)}
    choice = doc["sources"]["root_fdt_choice"]
    assert choice["phys"] == c["out"] and "taken as the outgoing handover" in choice["reason"]
    by_phys = {x["phys"]: x for x in choice["candidates"]}
    assert by_phys[c["out"]]["incoming"] is False and by_phys[c["in"]]["incoming"] is True
    assert by_phys[c["out"]]["sub_fdts_matching"] == ["LUO", "kexec-metadata"]
    assert doc["sources"]["incoming_root_fdt"].endswith("kho/in/fdt")
    assert any("taken as the outgoing handover" in n for n in doc["notes"])


def test_every_way_in_reads_the_same_handover(tmp_path):
    ways = [
        kho_formats.open(DBG, mem=[str(IMAGE)]),
        kho_formats.open(CAP / "debugfs", mem=[str(IMAGE)]),
        kho_formats.open(DBG / "out", mem=[str(IMAGE)]),  # kho/out itself: kho/in beside it
        kho_formats.open(CAP),  # the capture directory: its own image.elf
    ]
    for h in ways:
        assert h.root_fdt == ANSWER
        assert [s.name for s in h.state.subblobs] == ["LUO", "kexec-metadata"]
    rc, out, _ = run("capture", "--from-dump", str(IMAGE), str(DBG), "-o", str(tmp_path / "c"))
    assert rc == 0 and "taken as the outgoing handover" in out
    assert (tmp_path / "c" / "root.dtb").read_bytes() == ANSWER


def test_check_reports_the_choice_as_information():
    rc, out, _ = run("check", str(DBG), "--mem", str(IMAGE))
    assert rc == 0
    assert "info: [note]" in out and "taken as the outgoing handover" in out


def test_without_an_image_the_error_says_what_to_give():
    rc, _, err = run("inspect", str(DBG))
    assert rc != 0
    assert "kho/out has no fdt: this kernel was booted through KHO" in err and "--mem IMAGE" in err
    with pytest.raises(KhoFormatError, match="booted through KHO"):
        kho_formats.open(DBG)


def _swapped(tmp_path: Path) -> Path:
    """The debugfs copy with kho/in and the answer swapped: kho/in now names kernel 2's root FDT."""
    d = tmp_path / "kho"
    shutil.copytree(DBG, d)
    (d / "in" / "fdt").write_bytes(ANSWER)
    return d


def test_the_kho_in_rule_wins_over_the_address(tmp_path):
    c = candidates()
    assert c["out"] < c["in"]  # in the real capture the lowest address is also right: swap the roles
    cap = load_capture(_swapped(tmp_path), [str(IMAGE)])  # kernel 1's map is not in the image: not parsed
    assert cap.root_fdt == INCOMING and cap.root_fdt_phys == c["in"]
    assert any(f"{c['out']:#x} is the root FDT of kho/in" in n for n in cap.notes)


def _with_kernel_1s_blobs() -> PhysImage:
    """The shipped image with kernel 1's sub-blobs (debugfs kho/in/sub_fdts) put back where its root names them."""
    img = PhysImage.from_elf(IMAGE)
    stale = kho_formats.open(DBG / "in", mem=[str(IMAGE)], root_phys=candidates()["in"])
    extra = PhysImage()
    for sb in stale.state.subblobs:
        data = (DBG / "in" / "sub_fdts" / sb.name).read_bytes()
        if not img.has(sb.phys, len(data)):
            extra.add(sb.phys, data)
    return img.merged(extra)


def test_the_sub_fdts_rule_wins_over_the_address():
    """Kernel 1's sub-blobs put back into the image and given as kho/out/sub_fdts, no kho/in:
    the higher candidate (kernel 1's root FDT) matches them and is taken."""
    c = candidates()
    both = _with_kernel_1s_blobs()
    assert len(both.covered()) >= len(PhysImage.from_elf(IMAGE).covered()) + 2
    files = {p.name: (lambda p=p: p.read_bytes()) for p in (DBG / "in" / "sub_fdts").iterdir()}
    choice = choose_outgoing(both, locate.scan_root_fdts(both), out_sub_fdts=files)
    assert choice.phys == c["in"]
    assert "match kho/out/sub_fdts" in choice.reason
    plain = choose_outgoing(both, locate.scan_root_fdts(both))  # no debugfs at all: the newest by the image
    assert plain.phys == c["out"]
    assert (
        "it is the newest by the image (kexec count 2, liveupdate number 2; "
        f"{c['in']:#x}: kexec count 1, liveupdate number 1)" in plain.reason
    )


def _moved_up(img: PhysImage, at: int) -> PhysImage:
    """``img`` with kernel 2's root FDT page moved to ``at`` (above kernel 1's: the lowest address is wrong)."""
    c = candidates()
    page = img.read(c["out"], 4096)
    out = strip_ranges(img, [(c["out"], c["out"] + 4096)])
    out.add(at, page)
    return out


MOVED = 0x3000000


@pytest.mark.parametrize("kernel_1s_blobs", [True, False], ids=["both-counts", "one-count"])
def test_a_dump_alone_takes_the_newest_root_by_its_counts(tmp_path, kernel_1s_blobs):
    """No debugfs: of two root FDTs, the one whose kexec-metadata / LUO counts are higher, whatever
    the address; a candidate whose counts are not in the image ranks after one whose are."""
    c = candidates()
    base = _with_kernel_1s_blobs() if kernel_1s_blobs else PhysImage.from_elf(IMAGE)
    img = _moved_up(base, MOVED)
    assert c["in"] < MOVED
    (tmp_path / "dump.elf").write_bytes(img.to_elf())
    h = kho_formats.open(tmp_path / "dump.elf")
    assert h.root_fdt == ANSWER and h.capture.root_fdt_phys == MOVED
    note = next(n for n in h.capture.notes if "2 KHO root FDTs found in the image" in n)
    older = "kexec count 1, liveupdate number 1" if kernel_1s_blobs else "no kexec-metadata or LUO count in the image"
    assert f"root FDT at {MOVED:#x} (285 bytes, kho-v4) taken as the outgoing handover" in note
    assert f"it is the newest by the image (kexec count 2, liveupdate number 2; {c['in']:#x}: {older})" in note
    by_phys = {x["phys"]: x for x in h.capture.sources["root_fdt_choice"]["candidates"]}
    assert by_phys[MOVED]["kexec_count"] == 2 and by_phys[MOVED]["liveupdate_num"] == 2
    assert by_phys[c["in"]]["kexec_count"] == (1 if kernel_1s_blobs else None)
    rc, out, _ = run("inspect", str(tmp_path / "dump.elf"), "--json")
    assert rc == 0 and json.loads(out)["root_fdt"]["phys"] == MOVED
    assert [s.name for s in h.state.subblobs] == ["LUO", "kexec-metadata"]


def test_a_dump_alone_with_equal_counts_takes_the_lowest_and_says_so(tmp_path):
    img = PhysImage.from_elf(IMAGE)
    img.add(MOVED, img.read(candidates()["out"], 4096))  # the same root FDT twice
    choice = choose_outgoing(img, locate.scan_root_fdts(img))
    assert choice.phys == candidates()["out"]
    assert f"{MOVED:#x} rank the same (kexec count 2, liveupdate number 2): the lowest address taken" in choice.reason


def test_only_the_incoming_root_fdt_in_the_image_is_refused(tmp_path):
    """Kernel 2's own root FDT cut out of the image: what is left is kernel 1's (kho/in), never taken."""
    c = candidates()
    img = strip_ranges(PhysImage.from_elf(IMAGE), [(c["out"], c["out"] + 4096)])
    (tmp_path / "image.elf").write_bytes(img.to_elf())
    with pytest.raises(KhoFormatError, match="the one kho/in describes") as exc:
        choose_outgoing(img, locate.scan_root_fdts(img), incoming_fdt=INCOMING)
    assert exc.value.phys == c["in"] and "--root-phys" in str(exc.value)
    assert "the stale one is not taken in its place" in str(exc.value)
    with pytest.raises(KhoFormatError, match=r"the only KHO root FDT in the image \(0x1e04000\) is the one kho/in"):
        kho_formats.open(DBG, mem=[str(tmp_path / "image.elf")])
    rc, out, err = run("inspect", str(DBG), "--mem", str(tmp_path / "image.elf"))
    assert rc != 0 and out == "" and "kho/in describes" in err and "--root-phys ADDR" in err
    # --root-phys is the way to read it anyway, on purpose
    h = kho_formats.open(DBG, mem=[str(tmp_path / "image.elf")], root_phys=c["in"])
    assert h.root_fdt == INCOMING


def test_live_capture_of_a_kernel_booted_through_kho(tmp_path):
    dbg = tmp_path / "kho"
    shutil.copytree(DBG, dbg)
    kcore = write_kcore(tmp_path / "kcore", PhysImage.from_elf(IMAGE), [(0x1000, 0x9E000), (0x100000, 0x3FEE0000)])
    cap = live_capture(kcore=kcore, debugfs=dbg / "out")
    assert cap.root_fdt == ANSWER and cap.root_fdt_phys == candidates()["out"]
    assert any("taken as the outgoing handover" in n for n in cap.notes)
