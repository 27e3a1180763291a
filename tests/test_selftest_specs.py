"""fixtures/specs/selftests/: the stage-1 end state of the Linux 7.3 liveupdate selftests.

The committed specs must be what ``scripts/gen_selftest_specs.py`` writes, and
each must build into a handover that holds exactly what the test's stage 1
creates (session names in order, tokens, one-page memfds with their string
then zeros, seals 1, pos 0, the three test FLBs with one reference per file).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from kho_formats.findings import ERROR, WARNING
from kho_formats.model.clients import decode_clients
from kho_formats.model.clients.luo import LuoState
from kho_formats.model.spec import build_spec, load_spec
from kho_formats.model.state import parse
from kho_formats.ops.check import check

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "fixtures" / "specs" / "selftests"


def _gen():
    spec = importlib.util.spec_from_file_location("gen_selftest_specs", ROOT / "scripts" / "gen_selftest_specs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_selftest_specs", mod)
    spec.loader.exec_module(mod)
    return mod


GEN = _gen()
TESTS = [t.test for t in GEN.SELFTESTS]


def test_committed_specs_are_current(tmp_path):
    written = GEN.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in SPECS.glob("*.toml"))
    for p in written:
        assert (SPECS / p.name).read_bytes() == p.read_bytes(), f"{p.name} is stale: run scripts/gen_selftest_specs.py"


def luo_of_fixture(fx) -> LuoState:
    st = parse(fx.root_fdt, fx.image, page_size=fx.page_size, byteorder=fx.state.byteorder)
    rep = decode_clients(st, fx.image)["LUO"]
    assert rep.error is None, rep.error
    assert isinstance(rep.decoded, LuoState)
    return rep.decoded


@pytest.mark.parametrize("test", TESTS)
@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_spec_builds_what_stage_1_creates(test, arch):
    t = next(t for t in GEN.SELFTESTS if t.test == test)
    sp = load_spec(SPECS / f"{test}.toml")
    sp.arch = arch
    fx = build_spec(sp)
    st = luo_of_fixture(fx)
    assert [s.ser.name.partition(b"\0")[0].decode() for s in st.sessions] == [s.name for s in t.all_sessions()]
    want = {(s.name, tok): text for s in t.all_sessions() for tok, text in s.files}
    got = {}
    for s in st.sessions:
        name = s.ser.name.partition(b"\0")[0].decode()
        for f in s.files:
            d = f.decoded
            assert d.ser.size == 4096 and d.ser.seals == 1 and d.ser.pos == 0, (name, f.token)
            data = b"".join(bytes(v) for _, v in f.handler.contents(d, fx.image, 4096))
            assert len(data) == 4096
            text, nul, rest = data.partition(b"\0")
            assert nul and rest == bytes(len(rest)), (name, f.token)
            got[(name, f.token)] = text.decode()
    assert got == want
    assert [(f.name, f.ser.data, f.ser.count) for f in st.flbs] == [
        (f"liveupdate-test-flb-v{i}", 0xFEEDF00DCAFEBEE0 + i, t.nr_files()) for i in range(3)
    ]
    assert st.ser.liveupdate_num == 1
    parsed = parse(fx.root_fdt, fx.image, page_size=fx.page_size, byteorder=fx.state.byteorder)
    assert not [f for f in check(parsed, fx.image) if f.severity in (ERROR, WARNING)]
