"""The ``LUO`` client: the registry entry that ties decode, JSON, text, findings, diff and build together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ....abi.layout import Layout
from ....findings import ERROR, INFO, Finding
from ....memory.image import PhysImage
from ....text import plural, table
from ..base import BuildContext, BuiltBlob, CheckContext, Client, DecodeContext
from ..vmalloc import VmallocArea
from .boot import BOOT_RULE
from .build import SPEC, LuoParams, build_luo, luo_params, reencode
from .decode import decode
from .diff import diff, diff_text
from .handlers import FILE_HANDLERS, UnknownFileHandler
from .model import NAME, LuoState


class LuoClient(Client):
    name = NAME
    report_key = "luo"
    diff_key = "luo"
    spec_type = NAME
    spec_table = SPEC
    #: ``liveupdate=on``, the initramfs's session list, and the restored files compared with the fixture
    boot_rule = BOOT_RULE

    def spec_params(self, values: dict[str, Any], where: str, base_dir: Path | None) -> LuoParams:
        return luo_params(values, where, base_dir)

    def build(self, entry: Any, ctx: BuildContext) -> BuiltBlob:
        return build_luo(entry, ctx)

    def reencode(self, result: LuoState, lay: Layout) -> list[tuple[int, bytes]]:
        return reencode(result, lay)

    def decode(self, blob: bytes, ctx: DecodeContext) -> LuoState:
        return decode(blob, ctx)

    def to_json(self, result: LuoState) -> dict[str, Any]:
        return result.to_json()

    def diff(
        self,
        a: LuoState | None,
        b: LuoState | None,
        images: tuple[PhysImage | None, PhysImage | None],
        page_sizes: tuple[int, int],
        errors: tuple[str | None, str | None],
    ) -> dict[str, Any]:
        return diff(a, b, images, page_sizes, errors)

    def diff_text(self, value: dict[str, Any]) -> list[str]:
        return diff_text(value)

    def report(self, result: LuoState) -> dict[str, Any]:
        return result.report_json()

    def areas(self, result: LuoState) -> list[VmallocArea]:
        return [a for _, f in result.files() if f.decoded is not None for a in f.handler.areas(f.decoded)]

    def referenced(self, result: LuoState, page_size: int) -> list[tuple[int, int]]:
        """The session and file blocks, the FLB page and every file's data
        (memfd-v2: its ``memfd_luo_ser``, folio array and folios)."""
        pages = [b.phys for b in result.session_blocks]
        pages += [b.phys for s in result.sessions for b in s.blocks]
        if result.ser.flbs_pa:
            pages.append(result.ser.flbs_pa)
        out = [(p, p + page_size) for p in pages]
        for _, f in result.files():
            if f.decoded is not None:
                out += f.handler.referenced(f.decoded, page_size)
        return out

    def summary(self, decoded: Any) -> str:
        d = decoded
        if not d["serialized"]:
            return f"{d['compatible']}, live update {d['liveupdate_num']}, not serialized yet"
        return (
            f"{d['compatible']}, live update {d['liveupdate_num']}, {plural(d['sessions'], 'session')}, "
            f"{plural(d['files'], 'file')}, {plural(d['flbs'], 'FLB')}"
        )

    def report_text(self, value: Any) -> list[str]:
        v = value
        L = [
            f"Live Update (LUO {v['compatible']} at {v['phys']:#x}): live update {v['liveupdate_num']}, "
            + (
                f"{plural(len(v['sessions']), 'session')}, {plural(len(v['flbs']), 'FLB')}"
                if v["serialized"]
                else "not serialized (sessions_pa = 0)"
            )
        ]
        for s in v["sessions"]:
            L.append(
                f"  session {s['name']!r}: {plural(len(s['files']), 'file')}"
                + (f" -- {s['error']}" if s["error"] else "")
            )
            rows = []
            for f in s["files"]:
                h = FILE_HANDLERS.lookup(f["compatible"])
                size, folios, seals = h.summary(f)
                if isinstance(h, UnknownFileHandler):
                    size = f"data {f['data']:#x}"
                if f["error"]:
                    size, folios, seals = "ERROR", "", f["error"]
                rows.append((f"{f['token']:#x}", f["compatible"], size, folios, seals))
            if rows:
                L += table(rows, ("token", "handler", "size", "folios", "seals"), "    ")
        if v["flbs"]:
            L.append(f"  FLBs ({len(v['flbs'])}):")
            L += table(
                [(f["name"], f"{f['data']:#x}", str(f["count"])) for f in v["flbs"]], ("name", "data", "count"), "    "
            )
        for p in v["problems"]:
            where = f" @ {p['phys']:#x}" if p["phys"] is not None else ""
            L.append(f"  {p['severity']}: [{p['code']}]{where} {p['message']}")
        for n in v["notes"]:
            L.append(f"  note: {n}")
        L.append("")
        return L

    def findings(self, result: LuoState, ctx: CheckContext) -> list[Finding]:
        out = [Finding(p.severity, p.code, p.message, phys=p.phys, path=ctx.path) for p in result.problems]
        pages = [(b.phys, "session block") for b in result.session_blocks]
        for s in result.sessions:
            pages += [(b.phys, f"file block of session {s.name!r}") for b in s.blocks]
        if result.flb_header is not None:
            pages.append((result.ser.flbs_pa, "FLB page"))
        for phys, what in pages:
            if not ctx.preserved_as(phys, 0):
                out.append(
                    Finding(
                        ERROR,
                        "luo-page-not-preserved",
                        f"LUO {what} is not preserved as an order-0 page",
                        phys,
                        ctx.path,
                    )
                )
        for i, s in enumerate(result.sessions):
            for j, f in enumerate(s.files):
                path = f"{ctx.path}/sessions/{i}/files/{j}"
                if not f.known:
                    out.append(
                        Finding(
                            INFO,
                            "luo-file-unknown-handler",
                            f"file {f.token:#x} of session {s.name!r}: handler {f.compatible!r} is not known here; "
                            f"data {f.data:#x} not decoded",
                            f.entry_phys,
                            path,
                        )
                    )
                elif f.decoded is not None:
                    out.extend(f.handler.findings(f.decoded, ctx, path))
        return out


CLIENT = LuoClient()
