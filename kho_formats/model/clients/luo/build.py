"""Building LUO state from a spec (the ``[[blob]] type = "LUO"`` keys, :func:`build_luo`) and
encoding a decoded state again (:func:`reencode`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ....abi.layout import Layout
from ....abi.luo import (
    LIVEUPDATE_FLB_COMPAT_LENGTH,
    LIVEUPDATE_HNDL_COMPAT_LENGTH,
    LIVEUPDATE_SESSION_NAME_LENGTH,
    LUO_ABI_COMPAT_LEN,
    LUO_ABI_COMPATIBLE,
)
from ....abi.memfd import MEMFD_LUO_FH_COMPATIBLE
from ....errors import ClientError, SpecError, input_kind
from ....memory.pageset import PageSet
from ...specfields import ANY, BOOL, INT, STR, ListOf, SpecField, SpecRow, SpecTable, Table, validate
from ..base import BuildContext, BuiltBlob, Segment
from ..blocks import block_chain, block_pages
from .handlers import FILE_HANDLERS, FileBuildContext
from .model import NAME, LuoState

#: the ``handler`` of a spec file when none is given
DEFAULT_HANDLER = MEMFD_LUO_FH_COMPATIBLE


@dataclass(frozen=True)
class LuoFileSpec:
    token: int
    handler: str
    #: the handler's own params (``FileHandler.spec_params``)
    params: Any = None


@dataclass(frozen=True)
class LuoSessionSpec:
    name: str
    files: tuple[LuoFileSpec, ...] = ()


@dataclass(frozen=True)
class LuoFlbSpec:
    name: str
    data: int = 0
    count: int = 1


@dataclass(frozen=True)
class LuoParams:
    liveupdate_num: int = 1
    compatible: str = LUO_ABI_COMPATIBLE
    serialized: bool = True
    sessions: tuple[LuoSessionSpec, ...] = ()
    flbs: tuple[LuoFlbSpec, ...] = ()


FILE_FIELDS = (
    SpecField("token", INT, doc="the file's userspace token (u64, unique in its session)", required=True),
    SpecField("handler", STR, DEFAULT_HANDLER, doc="file handler compatible"),
)
SESSION_FIELDS = (
    SpecField("name", STR, doc="session name (1..63 bytes, unique)", required=True),
    SpecField("files", ListOf(ANY, "a list of file tables"), [], doc="files in preservation order"),
)
FLB_FIELDS = (
    SpecField("name", STR, doc=f"FLB compatible name (< {LIVEUPDATE_FLB_COMPAT_LENGTH} bytes)", required=True),
    SpecField("data", INT, 0, doc="the FLB's opaque data handle"),
    SpecField("count", INT, 1, doc="files that use it"),
)

SPEC = SpecTable(
    NAME,
    (
        SpecField("liveupdate_num", INT, 1, doc="luo_ser.liveupdate_num"),
        SpecField("compatible", STR, LUO_ABI_COMPATIBLE, doc="luo_ser.compatible"),
        SpecField("serialized", BOOL, True, doc="LUO wrote its sessions (false: a capture before reboot)"),
        SpecField(
            "sessions",
            ListOf(Table(SESSION_FIELDS), "a list (TOML [[blob.sessions]] / YAML sequence)"),
            [],
            doc="sessions in creation order",
        ),
        SpecField("flbs", ListOf(Table(FLB_FIELDS), "a list of {name, data, count} tables"), [], doc="FLBs"),
    ),
    title=f'`type = "{NAME}"`:',
    rows=(
        SpecRow(
            ("liveupdate_num", "compatible", "serialized", "flbs"),
            f'`type = "{NAME}"`: `liveupdate_num`, `compatible`, `serialized`, `flbs = [{{name, data, count}}]`',
            f'`1`, `"{LUO_ABI_COMPATIBLE}"`, `true`, `[]`',
            "Live Update state: the 32-byte `struct luo_ser` sub-blob (`blob-size` 32), its FLB page, session and "
            "file blocks, laid out and preserved as Linux 7.3 LUO does (order-0 pages, blocks filled to capacity "
            "in order); `serialized = false` is the state before `liveupdate_reboot()` (`sessions_pa` 0, blocks "
            "zero)",
        ),
        SpecRow(
            ("sessions",),
            "`[[blob.sessions]]` `name`, `files = [{token, handler, ...}]`",
            f'`handler = "{DEFAULT_HANDLER}"`; memfd: `size` = the `hex`/`file` length else 0, `pos = 0`, `seals = 0`, '
            "`folio_order = 0`, `folio_flags = 3`",
            f"sessions and their files in order; a `{DEFAULT_HANDLER}` file: `size`, `pos`, `seals`, `folio_order` or "
            "`folios = [{index, order, flags}]`, `folio_flags`, contents `seed` (SHAKE-256, default) or `hex` / "
            '`file` (the first bytes) then `fill` (`seed` or `zero`), or `fill = "absent"`: the folios are allocated, '
            "recorded and preserved but their contents are not in the image (a metadata-only handover: 1 TiB of "
            "guest memory costs what its metadata costs; extracting the file fails); folios are placed at their order and "
            "generated folio by folio. The defaults are a new memfd's (size 0, pos 0; dirty and up-to-date "
            "folios as memfd_luo records them) except `seals`: 0 is what `memfd_create(name, MFD_ALLOW_SEALING)` "
            "gives; `memfd_create(name, 0)`, as the liveupdate selftests call it, gives 1 (`F_SEAL_SEAL`): write "
            "`seals = 1` (the shipped fixtures keep 0)",
        ),
    ),
)


def _cstr(text: str, n: int, what: str, where: str) -> bytes:
    raw = text.encode()
    if not raw or len(raw) > n - 1 or b"\0" in raw:
        raise SpecError(f"{where}: {what} {text!r}", expected=f"1..{n - 1} bytes without NUL")
    return raw


def luo_params(values: dict[str, Any], where: str, base_dir: Path | None) -> LuoParams:
    _cstr(values["compatible"], LUO_ABI_COMPAT_LEN, "compatible", f"{where}.compatible")
    if not 0 <= values["liveupdate_num"] < 1 << 64:
        raise SpecError(f"{where}.liveupdate_num: {values['liveupdate_num']}", expected="a u64")
    sessions = []
    names: set[str] = set()
    for i, sv in enumerate(values["sessions"]):
        sw = f"{where}.sessions[{i}]"
        _cstr(sv["name"], LIVEUPDATE_SESSION_NAME_LENGTH, "session name", f"{sw}.name")
        if sv["name"] in names:
            raise SpecError(f"{sw}.name: duplicate session name {sv['name']!r} (the kernel refuses it: -EEXIST)")
        names.add(sv["name"])
        files = []
        tokens: dict[int, int] = {}
        for j, fv in enumerate(sv["files"]):
            fw = f"{sw}.files[{j}]"
            if not isinstance(fv, dict):
                raise SpecError(f"{fw}: expected a table/mapping, got {input_kind(fv)}")
            common = validate(FILE_FIELDS, {k: fv[k] for k in ("token", "handler") if k in fv}, fw)
            h = FILE_HANDLERS.get(common["handler"])
            buildable = [x.compatible for x in FILE_HANDLERS if x.spec_fields is not None]
            if h is None or h.spec_fields is None:
                raise SpecError(
                    f"{fw}.handler: unknown LUO file handler {common['handler']!r}", expected=", ".join(buildable)
                )
            own = [f.name for f in h.spec_fields]
            for k in fv:
                if k not in own and k not in ("token", "handler"):
                    raise SpecError(f"{fw}.{k}: not a key of a {h.compatible} file", expected=", ".join(own))
            token = common["token"]
            if not 0 <= token < 1 << 64:
                raise SpecError(f"{fw}.token: {token}", expected="a u64")
            if token in tokens:
                raise SpecError(
                    f"{fw}.token: {token:#x} is already used by files[{tokens[token]}] of session {sv['name']!r} "
                    "(the kernel refuses it: -EEXIST)"
                )
            tokens[token] = j
            params = h.spec_params(validate(h.spec_fields, {k: fv[k] for k in own if k in fv}, fw), fw, base_dir)
            files.append(LuoFileSpec(token, h.compatible, params))
        sessions.append(LuoSessionSpec(sv["name"], tuple(files)))
    flbs = []
    for k, fv in enumerate(values["flbs"]):
        fw = f"{where}.flbs[{k}]"
        _cstr(fv["name"], LIVEUPDATE_FLB_COMPAT_LENGTH, "FLB name", f"{fw}.name")
        for key in ("data", "count"):
            if not 0 <= fv[key] < 1 << 64:
                raise SpecError(f"{fw}.{key}: {fv[key]}", expected="a u64")
        flbs.append(LuoFlbSpec(fv["name"], fv["data"], fv["count"]))
    return LuoParams(values["liveupdate_num"], values["compatible"], values["serialized"], tuple(sessions), tuple(flbs))


def _page_at(phys: int, data: bytes, ps: int) -> tuple[int, bytes]:
    """The page holding ``data`` at ``phys`` (zeros around it)."""
    base = phys - phys % ps
    return base, (bytes(phys - base) + data).ljust(ps, b"\0")


def _flb_page(pgcnt: int, flbs: Sequence[bytes], lay: Layout, phys: int) -> bytes:
    hdr = lay.build("luo_flb_header_ser", dict(pgcnt=pgcnt, count=len(flbs)), phys=phys, error=ClientError)
    body = hdr + b"".join(flbs)
    if len(body) > lay.page_size:
        raise SpecError(f"{len(flbs)} FLBs do not fit the FLB page", phys=phys)
    return body.ljust(lay.page_size, b"\0")


def build_luo(entry: Any, ctx: BuildContext) -> BuiltBlob:
    """LUO state as Linux 7.3 leaves it: ``luo_ser`` and the FLB page at init,
    the files' folios before they are preserved (largest first), then per
    session its block (when the last one is full) and per file its block and
    the handler's pages, in creation order."""
    p: LuoParams = entry.params
    lay, alloc, ps = ctx.layout, ctx.alloc, ctx.page_size
    seed = ctx.seed_for(entry.seed)
    luo_phys = entry.phys if entry.phys is not None else alloc.alloc(what="luo_ser page")
    flbs_pa = alloc.alloc(what="LUO FLB page")
    preserve = PageSet(ps)
    preserve.add(luo_phys, 0)
    preserve.add(flbs_pa, 0)
    segments: list[Segment] = []
    # the files' data folios exist before LUO preserves them
    where_of = {}
    want: list[tuple[int, int, int, int]] = []
    # what the folios need, in closed form, before any is listed: a 1 TiB memfd in 16 MiB of alloc is refused here
    room = sum(b - a for a, b in alloc.regions)
    need_n = need_bytes = 0
    for s in p.sessions:
        for f in s.files:
            n, nb = FILE_HANDLERS.lookup(f.handler).folio_demand(f.params, ps)
            need_n, need_bytes = need_n + n, need_bytes + nb
            if need_bytes > room:
                raise SpecError(
                    f"{ctx.where}: blob {entry.name!r}: the files' folios need {need_bytes} bytes or more "
                    f"(at session {s.name!r} file {f.token:#x}), more than the {room} bytes of the alloc regions",
                    expected="files whose folios fit the [[alloc]] regions",
                )
    for si, s in enumerate(p.sessions):
        for fi, f in enumerate(s.files):
            where_of[si, fi] = f"{ctx.where}: blob {entry.name!r} session {s.name!r} file {f.token:#x}"
            h = FILE_HANDLERS.lookup(f.handler)
            want += [(o, si, fi, k) for k, o in enumerate(h.folio_orders(f.params, ps, where_of[si, fi]))]
    folio_phys: dict[tuple[int, int], dict[int, int]] = {}
    for o, si, fi, k in sorted(want, key=lambda w: -w[0]):
        size = ps << o
        folio_phys.setdefault((si, fi), {})[k] = alloc.alloc(size, align=size, what="LUO file folio")
    # sessions and files in creation order
    scap = lay.kho_block_entries_per_page(lay.sizeof("luo_session_ser"))
    fcap = lay.kho_block_entries_per_page(lay.sizeof("luo_file_ser"))
    sblocks: list[int] = []
    sentries: list[bytes] = []
    for si, s in enumerate(p.sessions):
        if si + 1 > len(sblocks) * scap:
            sblocks.append(alloc.alloc(what="LUO session block"))
        fblocks: list[int] = []
        fentries: list[bytes] = []
        for fi, f in enumerate(s.files):
            if fi + 1 > len(fblocks) * fcap:
                fblocks.append(alloc.alloc(what="LUO file block"))
            h = FILE_HANDLERS.lookup(f.handler)
            fctx = FileBuildContext(lay, alloc, seed, f"{entry.name}/{s.name}/{f.token:016x}", where_of[si, fi])
            got = folio_phys.get((si, fi), {})
            built = h.build_file(f.params, fctx, [got[k] for k in range(len(got))])
            segments += built.segments
            preserve.update(built.preserve)
            fentries.append(
                lay.build(
                    "luo_file_ser",
                    dict(
                        compatible=f.handler.encode().ljust(LIVEUPDATE_HNDL_COMPAT_LENGTH, b"\0"),
                        data=built.data,
                        token=f.token,
                    ),
                    error=SpecError,
                )
            )
        for phys, page in block_pages(
            fentries, block_chain(fblocks, len(fentries), fcap, filled=p.serialized), lay, error=ClientError
        ):
            segments.append((phys, page, f"LUO file block of session {s.name!r}"))
            preserve.add(phys, 0)
        files_pa = fblocks[0] if fblocks and p.serialized else 0
        sentries.append(
            lay.build(
                "luo_session_ser",
                dict(
                    name=s.name.encode().ljust(LIVEUPDATE_SESSION_NAME_LENGTH, b"\0"),
                    files=files_pa,
                    count=len(s.files),
                ),
                error=SpecError,
            )
        )
    for phys, page in block_pages(
        sentries, block_chain(sblocks, len(sentries), scap, filled=p.serialized), lay, error=ClientError
    ):
        segments.append((phys, page, "LUO session block"))
        preserve.add(phys, 0)
    flbs = [
        lay.build(
            "luo_flb_ser",
            dict(name=f.name.encode().ljust(LIVEUPDATE_FLB_COMPAT_LENGTH, b"\0"), data=f.data, count=f.count),
            error=SpecError,
        )
        for f in p.flbs
    ]
    cap = (ps - lay.sizeof("luo_flb_header_ser")) // lay.sizeof("luo_flb_ser")
    if len(flbs) > cap:
        raise SpecError(f"{ctx.where}: blob {entry.name!r}: {len(flbs)} FLBs, the FLB page holds {cap}")
    segments.append((flbs_pa, _flb_page(1, flbs if p.serialized else [], lay, flbs_pa), "LUO FLB page"))
    sessions_pa = sblocks[0] if sblocks and p.serialized else 0
    blob = lay.build(
        "luo_ser",
        dict(
            compatible=p.compatible.encode().ljust(LUO_ABI_COMPAT_LEN, b"\0"),
            liveupdate_num=p.liveupdate_num,
            sessions_pa=sessions_pa,
            flbs_pa=flbs_pa,
        ),
        error=SpecError,
    )
    segments.append((luo_phys, blob.ljust(ps, b"\0"), f"sub-blob {entry.name} (luo_ser page)"))
    return BuiltBlob(blob, luo_phys, segments, preserve)


def reencode(st: LuoState, lay: Layout) -> list[tuple[int, bytes]]:
    """Every LUO page of a decoded state encoded again at the addresses the
    decode recorded: the ``luo_ser`` page, session and file blocks (with
    their recorded counts and links), the FLB page and each known file's
    handler pages (not the files' data).  A capture laid out by the kernel
    gives its own pages back byte for byte."""
    ps = lay.page_size
    s = st.ser
    out = [
        _page_at(
            st.phys,
            lay.build(
                "luo_ser",
                dict(
                    compatible=s.compatible,
                    liveupdate_num=s.liveupdate_num,
                    sessions_pa=s.sessions_pa,
                    flbs_pa=s.flbs_pa,
                ),
            ),
            ps,
        )
    ]
    if not st.read or not st.known:
        return out
    sentries = [
        lay.build("luo_session_ser", dict(name=x.ser.name, files=x.ser.files, count=x.ser.count)) for x in st.sessions
    ]
    out += block_pages(sentries, [(b.phys, b.next, b.count) for b in st.session_blocks], lay, error=ClientError)
    for x in st.sessions:
        fentries = [
            lay.build("luo_file_ser", dict(compatible=f.ser.compatible, data=f.ser.data, token=f.ser.token))
            for f in x.files
        ]
        out += block_pages(fentries, [(b.phys, b.next, b.count) for b in x.blocks], lay, error=ClientError)
        for f in x.files:
            if f.decoded is not None:
                out += f.handler.reencode(f.decoded, lay)
    if st.flb_header is not None:
        flbs = [lay.build("luo_flb_ser", dict(name=f.ser.name, data=f.ser.data, count=f.ser.count)) for f in st.flbs]
        page = _flb_page(st.flb_header.pgcnt, flbs, lay, s.flbs_pa)
        if st.flb_header.count != len(flbs):  # keep the recorded count (above capacity: only what fits was read)
            head = lay.build("luo_flb_header_ser", dict(pgcnt=st.flb_header.pgcnt, count=st.flb_header.count))
            page = head + page[len(head) :]
        out.append((s.flbs_pa, page))
    return out
