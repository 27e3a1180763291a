"""The client registry: a test-only client registered from here is decoded,
reported by inspect (JSON and text) and check, built from a spec, then
unregistered; a nested client (a raw struct pointing at a chain of KHO
serialization blocks whose entries are decoded by per-compatible handlers,
one holding a vmalloc area) shows the protocol carries LUO-shaped clients."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fuzz.blocks import build_block_chain
from kho_formats.errors import ClientError, SpecError
from kho_formats.findings import ERROR, WARNING, Finding
from kho_formats.memory.pageset import PageSet
from kho_formats.model import state as kstate
from kho_formats.model.clients import (
    BuildContext,
    BuiltBlob,
    CheckContext,
    Client,
    DecodeContext,
    RawBlob,
    Registry,
    decode_clients,
    kexec_metadata,
    kho_test,
    memblock,
    registry,
)
from kho_formats.model.clients.base import gen_bytes
from kho_formats.model.clients.blocks import read_block_chain
from kho_formats.model.clients.vmalloc import VmallocArea, build_vmalloc, read_vmalloc
from kho_formats.model.spec import build_spec, loads_spec, readme_table
from kho_formats.model.specfields import INT, STR, ListOf, SpecField, SpecTable, Table
from kho_formats.ops.check import check
from kho_formats.ops.report import inspect_report, render_inspect

# -- a flat test-only client ------------------------------------------------------------------

COUNTER_MAGIC = 0x544E4354  # "TCNT"


@dataclass(frozen=True)
class Counter:
    value: int
    page: int

    def to_json(self) -> dict:
        return {"value": self.value, "page": self.page}


@dataclass(frozen=True)
class CounterParams:
    value: int
    label: str


class CounterClient(Client):
    """Blob: ``u32 magic; u32 value; u64 page`` -- a page of generated data."""

    name = "test_counter"
    spec_type = "test_counter"
    spec_table = SpecTable(
        "test_counter",
        (SpecField("value", INT, 7, doc="the counter"), SpecField("label", STR, "c", doc="page data label")),
        title='`type = "test_counter"`:',
    )

    def decode(self, blob: bytes, ctx: DecodeContext) -> Counter:
        if len(blob) < 16:
            raise ClientError(f"{ctx.where}: {len(blob)} bytes", path=ctx.where, expected="16 bytes")
        magic, value, page = struct.unpack(("<" if ctx.byteorder == "little" else ">") + "IIQ", blob[:16])
        if magic != COUNTER_MAGIC:
            raise ClientError(f"{ctx.where}: magic {magic:#x}", path=ctx.where)
        return Counter(value, page)

    def summary(self, decoded: Any) -> str:
        return f"counter {decoded['value']} (page {decoded['page']:#x})"

    def details(self, name: str, decoded: Any) -> list[str]:
        return [f"  {name} counter detail: {decoded['value']}"]

    def findings(self, result: Counter, ctx: CheckContext) -> list[Finding]:
        out = []
        if result.value % 2:
            out.append(Finding(WARNING, "counter-odd", f"counter {result.value} is odd", path=ctx.path))
        if not ctx.preserved_as(result.page, 0):
            out.append(Finding(ERROR, "counter-page", "counter page is not preserved", phys=result.page, path=ctx.path))
        return out

    def spec_params(self, values: dict[str, Any], where: str, base_dir: Path | None) -> CounterParams:
        return CounterParams(values["value"], values["label"])

    def build(self, entry: Any, ctx: BuildContext) -> BuiltBlob:
        p: CounterParams = entry.params
        page = ctx.alloc.alloc(what="counter page")
        fmt = "<IIQ" if ctx.layout.byteorder == "little" else ">IIQ"
        data = struct.pack(fmt, COUNTER_MAGIC, p.value, page)
        phys, seg = ctx.place(data, entry.phys, f"sub-blob {entry.name}")
        segs = [(page, gen_bytes(ctx.seed_for(entry.seed), p.label, ctx.page_size), "counter page"), seg]
        return BuiltBlob(data, phys, segs, PageSet.from_pages(ctx.page_size, [(page, 0), (phys, 0)]))


@pytest.fixture
def counter() -> Iterator[CounterClient]:
    c = registry.register(CounterClient())
    try:
        yield c
    finally:
        registry.unregister(c.name)
    assert "test_counter" not in registry


def handover(spec_text: str) -> tuple[kstate.KhoState, Any]:
    fx = build_spec(loads_spec(spec_text))
    st = kstate.parse(fx.root_fdt, fx.image, root_fdt_phys=fx.fdt_phys, scratch=fx.state.scratch)
    return st, fx


SPEC = """
seed = 3
[[blob]]
name = "test_counter"
value = "0x5"
[[blob]]
name = "memblock"
regions = [{ name = "r", start = "0x3000000", size = "8K" }]
"""


def test_builtin_clients_are_registered() -> None:
    assert registry.keys() == ["kho_test", "memblock", "kexec-metadata", "LUO"]
    assert registry.get("memblock") is memblock.CLIENT and registry.lookup("nope") is registry.fallback
    assert registry.by_spec_type("raw") is registry.fallback and registry.fallback.kind == "unknown"
    assert registry.spec_types() == ["kho_test", "memblock", "kexec-metadata", "LUO", "raw"]
    assert [c.kind for c in registry] == ["kho_test", "memblock", "kexec-metadata", "LUO"]
    assert [c.report_key for c in registry.everyone() if c.report_key] == ["luo"]
    with pytest.raises(ValueError, match="already registered"):
        registry.register(kho_test.KhoTestClient())
    assert kexec_metadata.CLIENT.boot_rule is not None


def test_registered_client_decoded_reported_checked_built(counter: CounterClient) -> None:
    st, fx = handover(SPEC)
    reps = decode_clients(st, fx.image)
    rep = reps["test_counter"]
    assert rep.kind == "test_counter" and rep.client is counter and rep.error is None
    assert isinstance(rep.decoded, Counter) and rep.decoded.value == 5
    assert isinstance(reps["memblock"].decoded, memblock.Memblock)
    # inspect: JSON from the client's to_json, text from its summary and details
    j = inspect_report(st, fx.image, reps)
    sub = {s["name"]: s for s in j["subblobs"]}["test_counter"]
    assert sub["kind"] == "test_counter" and sub["decoded"] == {"value": 5, "page": rep.decoded.page}
    text = render_inspect(j)
    assert f"counter 5 (page {rep.decoded.page:#x})" in text and "  test_counter counter detail: 5" in text
    assert "r: 0x3000000+8 KiB" in text  # memblock's summary, asked of the memblock client
    # check: the client's findings, nothing else new
    codes = [(f.severity, f.code) for f in check(st, fx.image, clients=reps)]
    assert (WARNING, "counter-odd") in codes and not [c for c in codes if c[0] == ERROR]
    # not preserved: the client's own error finding, and the generic blob one
    st2, fx2 = handover(SPEC.replace('value = "0x5"', "value = 4\npreserve = false"))
    codes = {f.code for f in check(st2, fx2.image) if f.severity == ERROR}
    assert codes == {"counter-page", "blob-not-preserved"}
    # its spec keys are in the docs table while it is registered
    assert '`type = "test_counter"`: `value`' in readme_table()


def test_unregistered_client_is_unknown_again() -> None:
    c = registry.register(CounterClient())
    st, fx = handover(SPEC)
    registry.unregister(c.name)
    rep = decode_clients(st, fx.image)["test_counter"]
    assert rep.kind == "unknown" and isinstance(rep.decoded, RawBlob) and rep.decoded.size == 16
    assert rep.to_json()["decoded"] == {"size": 16, "head": rep.decoded.data.hex()}
    with pytest.raises(SpecError, match=r"unknown key\(s\) value"):
        loads_spec(SPEC)
    with pytest.raises(SpecError, match="type"):
        loads_spec('[[blob]]\nname = "x"\ntype = "test_counter"\n')
    assert "test_counter" not in readme_table()


def test_client_decode_error_is_reported_not_raised(counter: CounterClient) -> None:
    st, fx = handover(SPEC)
    sb = st.subblob("test_counter")
    sb.data = b"\0" * 16
    rep = decode_clients(st, fx.image)["test_counter"]
    assert isinstance(rep.error, ClientError) and rep.decoded is None
    assert rep.to_json()["decoded"] is None and "magic 0x0" in rep.to_json()["error"]
    assert any(f.code == "client" and f.severity == ERROR for f in check(st, fx.image))


# -- a nested client: raw struct -> block chain -> per-compatible file handlers ------------------

LUO_MAGIC = 0x4C554F54  # "LUOT"
ENTRY = 32  # char compatible[24]; u64 phys


@dataclass
class MemfdFile:
    area: VmallocArea

    def to_json(self) -> dict:
        return {"pages": self.area.nr_pages}


class MemfdHandler:
    """``memfd-test-v1``: ``phys`` is a page holding a ``struct kho_vmalloc``."""

    compatible = "memfd-test-v1"

    def decode(self, phys: int, ctx: DecodeContext) -> MemfdFile:
        assert ctx.image is not None
        raw = ctx.image.read(phys, ctx.layout.kho_vmalloc.sizeof(), "memfd descriptor")
        desc = ctx.layout.kho_vmalloc.parse(raw)
        return MemfdFile(read_vmalloc(ctx.image, desc, ctx.layout, budget=ctx.budget, where=ctx.where))

    def to_json(self, result: MemfdFile) -> Any:
        return result.to_json()

    def areas(self, result: MemfdFile) -> list[VmallocArea]:
        return [result.area]


class UnknownFileHandler:
    compatible = ""

    def decode(self, phys: int, ctx: DecodeContext) -> dict:
        return {"phys": phys}

    def to_json(self, result: Any) -> Any:
        return result

    def areas(self, result: Any) -> list[VmallocArea]:
        return []


FILE_HANDLERS: Registry[Any] = Registry("file handlers", lambda h: h.compatible, fallback=UnknownFileHandler())
FILE_HANDLERS.register(MemfdHandler())


@dataclass
class LuoFile:
    compatible: str
    handler: Any
    decoded: Any


@dataclass
class LuoTest:
    files: list[LuoFile] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "blocks": self.blocks,
            "files": [{"compatible": f.compatible, "decoded": f.handler.to_json(f.decoded)} for f in self.files],
        }


class LuoTestClient(Client):
    name = "test_luo"
    spec_type = "test_luo"
    spec_table = SpecTable(
        "test_luo",
        (
            SpecField(
                "files",
                ListOf(Table((SpecField("compatible", STR, "memfd-test-v1"), SpecField("pages", INT, 1)))),
                [],
            ),
        ),
    )

    def decode(self, blob: bytes, ctx: DecodeContext) -> LuoTest:
        assert ctx.registry is registry  # nested decoders can reach every client
        bo = "<" if ctx.byteorder == "little" else ">"
        magic, first = struct.unpack(bo + "QQ", blob[:16])
        if magic != LUO_MAGIC:
            raise ClientError(f"{ctx.where}: magic {magic:#x}", path=ctx.where)
        out = LuoTest()
        if ctx.image is None:
            return out
        chain = read_block_chain(ctx.image, first, ctx.layout, entry_size=ENTRY, budget=ctx.budget, where=ctx.where)
        for b in chain:
            out.blocks.append(b.phys)
            for k in range(b.count):
                e = b.payload[k * ENTRY : (k + 1) * ENTRY]
                compat = e[:24].rstrip(b"\0").decode()
                (phys,) = struct.unpack(bo + "Q", e[24:])
                h = FILE_HANDLERS.lookup(compat)
                dec = h.decode(phys, ctx.at(f"{ctx.where}:/file/{len(out.files)}"))
                out.files.append(LuoFile(compat, h, dec))
        return out

    def areas(self, result: LuoTest) -> list[VmallocArea]:
        return [a for f in result.files for a in f.handler.areas(f.decoded)]

    def summary(self, decoded: Any) -> str:
        return f"{len(decoded['files'])} files in {len(decoded['blocks'])} blocks"

    def build(self, entry: Any, ctx: BuildContext) -> BuiltBlob:
        lay, ps = ctx.layout, ctx.page_size
        bo = "<" if lay.byteorder == "little" else ">"
        segs: list[tuple[int, bytes, str]] = []
        pres = PageSet(ps)
        entries = []
        for k, f in enumerate(entry.params["files"]):
            groups = [ctx.alloc.alloc(what="memfd page") for _ in range(f["pages"])]
            segs += [(g, gen_bytes(1, f"memfd{k}/{i}", ps), "memfd page") for i, g in enumerate(groups)]
            desc, chunks, vpres = build_vmalloc(groups, 0, lay, ctx.alloc)
            segs += [(p, d, "memfd chunk") for p, d in chunks]
            pres.update(vpres)
            dphys, seg = ctx.place(lay.kho_vmalloc.build(desc), None, "memfd descriptor")
            segs.append(seg)
            pres.add(dphys, 0)
            entries.append(f["compatible"].encode().ljust(24, b"\0") + struct.pack(bo + "Q", dphys))
        first, blocks = build_block_chain(entries, ENTRY, lay, ctx.alloc)
        segs += [(p, d, "luo block") for p, d in blocks]
        pres.update(PageSet.from_pages(ps, [(p, 0) for p, _ in blocks]))
        data = struct.pack(bo + "QQ", LUO_MAGIC, first)
        phys, seg = ctx.place(data, entry.phys, "luo struct")
        segs.append(seg)
        pres.add(phys, 0)
        return BuiltBlob(data, phys, segs, pres)


LUO_SPEC = """
[[blob]]
name = "test_luo"
files = [{ compatible = "memfd-test-v1", pages = 3 }, { compatible = "other-v1" }, { pages = 2 }]
"""


@pytest.fixture
def luo() -> Iterator[LuoTestClient]:
    c = registry.register(LuoTestClient())
    try:
        yield c
    finally:
        registry.unregister(c.name)


def test_nested_client_with_file_handlers(luo: LuoTestClient) -> None:
    st, fx = handover(LUO_SPEC)
    rep = decode_clients(st, fx.image)["test_luo"]
    assert rep.error is None, rep.error
    files = rep.decoded.files
    assert [f.compatible for f in files] == ["memfd-test-v1", "other-v1", "memfd-test-v1"]
    assert isinstance(files[0].decoded, MemfdFile) and files[0].decoded.area.nr_pages == 3
    assert isinstance(files[1].handler, UnknownFileHandler)
    # the nested vmalloc areas are the client's areas: listed by inspect, checked by check
    assert [a.nr_pages for a in rep.vmalloc] == [3, 2]
    j = inspect_report(st, fx.image, {"test_luo": rep})
    assert [(v["client"], v["total_pages"]) for v in j["vmalloc"]] == [("test_luo", 3), ("test_luo", 2)]
    assert j["subblobs"][0]["decoded"]["files"][0] == {"compatible": "memfd-test-v1", "decoded": {"pages": 3}}
    assert "3 files in 1 blocks" in render_inspect(j)
    assert not [f for f in check(st, fx.image) if f.severity == ERROR]
    # unpreserved: the generic vmalloc checks fire for the nested areas
    st2, fx2 = handover(LUO_SPEC.replace('name = "test_luo"', 'name = "test_luo"\npreserve = false'))
    codes = {f.code for f in check(st2, fx2.image) if f.severity == ERROR}
    assert {"vmalloc-chunk-not-preserved", "vmalloc-group-not-preserved", "blob-not-preserved"} <= codes


def test_boot_rules() -> None:
    from kho_formats.model.clients import BootLog

    ok = ["test_kho: KHO restore succeeded", "KHO: exec from: 7.3.4 (count 1)"]
    assert kho_test.CLIENT.boot_rule is not None and kexec_metadata.CLIENT.boot_rule is not None
    assert kho_test.CLIENT.boot_rule.judge(BootLog(ok, True)) == ("ok", None)
    said = BootLog(["test_kho: csum mismatch"], True)
    assert kho_test.CLIENT.boot_rule.judge(said) == ("failed", "test_kho: csum mismatch")
    assert kexec_metadata.CLIENT.boot_rule.judge(BootLog(ok, True)) == ("ok", None)
    assert kexec_metadata.CLIENT.boot_rule.judge(BootLog([], False)) == ("not-reported", None)
    rule = memblock.CLIENT.boot_rule
    assert rule is not None and rule.cmdline is not None
    regions = memblock.Memblock([memblock.ReserveMem("trace_buf", 0x7C000000, 4 << 20)])
    assert rule.cmdline(regions) == [("trace_buf", "reserve_mem=4194304:4096:trace_buf")]
    revived = BootLog(["Revived memory reservation 'trace_buf' from KHO"], True, ("trace_buf",))
    assert rule.judge(revived) == ("ok", None)
    assert rule.judge(BootLog([], True, ("trace_buf",)))[0] == "failed"
    assert rule.judge(BootLog([], True))[0] == "not-exercised"
