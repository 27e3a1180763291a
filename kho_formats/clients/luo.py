"""``LUO``: the Live Update Orchestrator's state (Linux 7.3, ``luo-v5``).

The ``LUO`` sub-node points at a raw 32-byte ``struct luo_ser`` (not an
FDT): ``compatible`` ("luo-v5"), ``liveupdate_num``, ``sessions_pa`` and
``flbs_pa``.  From there:

* ``sessions_pa``: a chain of KHO serialization blocks
  (:mod:`.blocks`) of ``struct luo_session_ser`` entries (name, and the
  session's ``file_set_ser``: first file block and file count);
* each session's files: another block chain of ``struct luo_file_ser``
  (handler ``compatible``, ``data`` handle, userspace ``token``); the
  handler named by ``compatible`` decodes ``data`` -- :data:`FILE_HANDLERS`,
  a second registry keyed by compatible string (``memfd-v2``:
  :mod:`.memfd`); a file whose handler is unknown is kept with its
  compatible, token and data handle;
* ``flbs_pa``: one page, ``struct luo_flb_header_ser`` (pgcnt, count) then
  ``struct luo_flb_ser`` entries (name, data, count) -- not a chain.

LUO writes the sessions, files and FLBs at reboot (``liveupdate_reboot()``);
before that ``sessions_pa`` is 0 and the blocks are allocated but zero, so
such a capture decodes with ``serialized`` false, no sessions and a note.

Decoding is tolerant below the session chain: a session whose file chain
is broken, or a file whose handler data does not decode, keeps its error
(typed, with the address) and the rest is still decoded; everything a
reader of untrusted state should refuse is a :class:`LuoProblem` that
``kho check`` reports as a finding naming the address.  A broken session
chain (loop, pointer outside the image, count above the block's capacity)
fails the whole client with a :class:`~kho_formats.errors.BlockError`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import ClientError, KhoFormatError
from ..findings import ERROR, INFO, WARNING, Finding
from ..image import PhysImage
from ..layout import (
    LUO_ABI_COMPATIBLE,
    Layout,
    LuoFileSer,
    LuoFlbHeaderSer,
    LuoFlbSer,
    LuoSer,
    LuoSessionSer,
)
from ..limits import Budget
from .base import CheckContext, Client, DecodeContext, Registry
from .blocks import KHO_MAX_BLOCKS, Block, read_block_chain
from .vmalloc import VmallocArea

NAME = "LUO"
#: findings of one kind listed one by one before the rest are summed up
MAX_DETAILED = 64


def c_string(raw: bytes) -> tuple[str, bool]:
    """A ``char[N]`` field -> (text up to the first NUL, whether a NUL was there).
    Bytes that are not UTF-8 are kept as ``\\xNN`` escapes."""
    head, nul, _ = raw.partition(b"\0")
    return head.decode("utf-8", "backslashreplace"), bool(nul)


@dataclass(frozen=True)
class LuoProblem:
    """Something a reader of this LUO state must not accept (or should know)."""

    severity: str
    code: str
    message: str
    phys: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "message": self.message, "phys": self.phys}


def problem_of(exc: KhoFormatError, code: str) -> LuoProblem:
    return LuoProblem(ERROR, code, str(exc), exc.phys)


# -- file handlers ------------------------------------------------------------------------------


class FileHandler:
    """Decodes the ``data`` handle of a ``luo_file_ser`` whose ``compatible``
    is :attr:`compatible`.  Subclass and register in :data:`FILE_HANDLERS`."""

    compatible: ClassVar[str] = ""
    #: the key of every file's JSON that holds this handler's decoded form
    #: (``null`` for files of other handlers); None: no key
    json_key: ClassVar[str | None] = None

    def decode(self, file: LuoFileSer, ctx: DecodeContext) -> Any:
        return None

    def to_json(self, result: Any) -> Any:
        return None

    def areas(self, result: Any) -> list[VmallocArea]:
        return []

    def findings(self, result: Any, ctx: CheckContext, path: str) -> list[Finding]:
        return []

    def referenced(self, result: Any, page_size: int) -> list[tuple[int, int]]:
        """Byte ranges the file's data lives in (``kho capture`` keeps them)."""
        return []

    def summary(self, file_json: dict[str, Any]) -> tuple[str, str, str]:
        """(size, folios, seals) columns of the text report."""
        return ("", "", "")

    def index_json(self, result: Any) -> dict[str, Any]:
        """What ``kho luo extract`` records of the file in ``index.json``."""
        return {}

    def content_size(self, result: Any) -> int | None:
        """Bytes of file contents ``extract`` writes (None: not extractable)."""
        return None

    def contents(self, result: Any, image: PhysImage, page_size: int) -> Iterator[tuple[int, memoryview]]:
        """``(file offset, bytes)`` pieces of the contents, each at most a few
        MiB, never the whole file at once; offsets not covered are zeros."""
        return iter(())


class UnknownFileHandler(FileHandler):
    """The fallback: a handler this library does not know (the file is
    shown with its compatible, token and data handle)."""


#: LUO file handlers keyed by ``compatible``; unknown ones fall back to :class:`UnknownFileHandler`
FILE_HANDLERS: Registry[FileHandler] = Registry("LUO file handlers", lambda h: h.compatible, UnknownFileHandler())


# -- the decoded state --------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockInfo:
    phys: int
    next: int
    count: int
    capacity: int

    def to_json(self) -> dict[str, Any]:
        return {"phys": self.phys, "next": self.next, "count": self.count, "capacity": self.capacity}


@dataclass
class LuoFile:
    entry_phys: int
    ser: LuoFileSer
    compatible: str
    handler: FileHandler
    decoded: Any = None
    error: KhoFormatError | None = None

    @property
    def token(self) -> int:
        return self.ser.token

    @property
    def data(self) -> int:
        return self.ser.data

    @property
    def known(self) -> bool:
        return not isinstance(self.handler, UnknownFileHandler)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"token": self.token, "compatible": self.compatible, "data": self.data}
        for h in FILE_HANDLERS:
            if h.json_key:
                out[h.json_key] = None
        if self.handler.json_key and self.decoded is not None:
            out[self.handler.json_key] = self.handler.to_json(self.decoded)
        out["entry_phys"] = self.entry_phys
        out["error"] = str(self.error) if self.error else None
        return out


@dataclass
class LuoSession:
    entry_phys: int
    ser: LuoSessionSer
    name: str
    blocks: list[BlockInfo] = field(default_factory=list)
    files: list[LuoFile] = field(default_factory=list)
    error: KhoFormatError | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "files": [f.to_json() for f in self.files],
            "entry_phys": self.entry_phys,
            "files_pa": self.ser.files,
            "file_count": self.ser.count,
            "file_blocks": [b.to_json() for b in self.blocks],
            "error": str(self.error) if self.error else None,
        }


@dataclass(frozen=True)
class LuoFlb:
    entry_phys: int
    ser: LuoFlbSer
    name: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "data": self.ser.data, "count": self.ser.count, "entry_phys": self.entry_phys}


@dataclass
class LuoState:
    """The decoded ``LUO`` sub-blob and everything it points at."""

    phys: int
    ser: LuoSer
    compatible: str
    #: a compatible this library reads (else nothing below luo_ser was read)
    known: bool
    #: the state is in the image (False: debugfs only, nothing below luo_ser read)
    read: bool = True
    session_blocks: list[BlockInfo] = field(default_factory=list)
    sessions: list[LuoSession] = field(default_factory=list)
    flb_header: LuoFlbHeaderSer | None = None
    flb_capacity: int = 0
    flbs: list[LuoFlb] = field(default_factory=list)
    problems: list[LuoProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def serialized(self) -> bool:
        """LUO wrote its sessions (``sessions_pa`` != 0): the capture was
        taken after ``liveupdate_reboot()``."""
        return self.ser.sessions_pa != 0

    def files(self) -> Iterator[tuple[LuoSession, LuoFile]]:
        for s in self.sessions:
            for f in s.files:
                yield s, f

    def to_json(self) -> dict[str, Any]:
        """The sub-blob's ``decoded`` form (a summary; the whole state is the top-level ``luo`` key)."""
        return {
            "compatible": self.compatible,
            "liveupdate_num": self.ser.liveupdate_num,
            "serialized": self.serialized,
            "sessions": len(self.sessions),
            "files": sum(len(s.files) for s in self.sessions),
            "flbs": len(self.flbs),
            "problems": len(self.problems),
        }

    def report_json(self) -> dict[str, Any]:
        """The top-level ``luo`` key of ``kho inspect --json``."""
        return {
            "phys": self.phys,
            "compatible": self.compatible,
            "liveupdate_num": self.ser.liveupdate_num,
            "sessions_pa": self.ser.sessions_pa,
            "flbs_pa": self.ser.flbs_pa,
            "serialized": self.serialized,
            "sessions": [s.to_json() for s in self.sessions],
            "flbs": [f.to_json() for f in self.flbs],
            "session_blocks": [b.to_json() for b in self.session_blocks],
            "flb_header": (
                None
                if self.flb_header is None
                else {"pgcnt": self.flb_header.pgcnt, "count": self.flb_header.count, "capacity": self.flb_capacity}
            ),
            "problems": [p.to_json() for p in self.problems],
            "notes": list(self.notes),
        }


# -- decoding -----------------------------------------------------------------------------------


def _entries(blocks: list[Block], struct: str, lay: Layout) -> Iterator[tuple[int, Any]]:
    size = lay.sizeof(struct)
    head = lay.kho_block_header_size
    for b in blocks:
        for k in range(b.count):
            phys = b.phys + head + k * size
            yield phys, lay.parse(struct, b.payload[k * size : (k + 1) * size], phys=phys, error=ClientError)


def _block_infos(blocks: list[Block], cap: int, what: str, out: list[LuoProblem]) -> list[BlockInfo]:
    infos = []
    for b in blocks:
        infos.append(BlockInfo(b.phys, b.next, b.count, cap))
        if b.count == 0:
            out.append(
                LuoProblem(ERROR, "luo-block-empty", f"{what} block holds no entries (the kernel refuses it)", b.phys)
            )
    return infos


def decode(blob: bytes, ctx: DecodeContext, *, phys: int | None = None) -> LuoState:
    lay = ctx.layout
    where = ctx.where or NAME
    size = lay.sizeof("luo_ser")
    if len(blob) < size:
        raise ClientError(f"{where}: {len(blob)} bytes", path=where, expected=f"{size} bytes (struct luo_ser)")
    if phys is None:
        sb = ctx.state.subblob(NAME) if ctx.state is not None else None
        phys = sb.phys if sb is not None else 0
    ser: LuoSer = lay.parse("luo_ser", bytes(blob[:size]), phys=phys, error=ClientError)
    compat, nul = c_string(ser.compatible)
    st = LuoState(phys=phys, ser=ser, compatible=compat, known=nul and compat == LUO_ABI_COMPATIBLE)
    if not nul:
        st.problems.append(LuoProblem(ERROR, "luo-name-unterminated", "luo_ser.compatible has no NUL", phys))
    if not st.known:
        st.problems.append(
            LuoProblem(
                ERROR,
                "luo-compatible",
                f"unknown LUO ABI {compat!r} (the next kernel panics; expected {LUO_ABI_COMPATIBLE!r})",
                phys,
            )
        )
        return st
    if not st.serialized:
        st.notes.append(
            "LUO state not serialized (sessions_pa = 0): the capture was taken before liveupdate_reboot(), "
            "which writes the sessions, files and FLBs; their blocks exist but are still zero"
        )
    if ctx.image is None:
        st.read = False
        st.notes.append("no memory image: sessions, files and FLBs were not read")
        return st
    budget = ctx.budget or Budget()
    ctx = DecodeContext(lay, ctx.image, budget, where, ctx.registry, ctx.state)
    if st.serialized:
        _decode_sessions(st, ctx)
    if ser.flbs_pa:
        _decode_flbs(st, ctx)
    return st


def _decode_sessions(st: LuoState, ctx: DecodeContext) -> None:
    lay, image = ctx.layout, ctx.image
    assert image is not None
    scap = lay.kho_block_entries_per_page(lay.sizeof("luo_session_ser"))
    fcap = lay.kho_block_entries_per_page(lay.sizeof("luo_file_ser"))
    blocks = read_block_chain(
        image,
        st.ser.sessions_pa,
        lay,
        entry_size=lay.sizeof("luo_session_ser"),
        budget=ctx.budget,
        where=f"{ctx.where}: session blocks",
        max_blocks=KHO_MAX_BLOCKS,
    )
    st.session_blocks = _block_infos(blocks, scap, "session", st.problems)
    for k, (ephys, sser) in enumerate(_entries(blocks, "luo_session_ser", lay)):
        name, nul = c_string(sser.name)
        sess = LuoSession(ephys, sser, name)
        st.sessions.append(sess)
        if not nul:
            st.problems.append(
                LuoProblem(ERROR, "luo-name-unterminated", f"session {k} name has no NUL in its 64 bytes", ephys)
            )
        if sser.files == 0:
            if sser.count:
                st.problems.append(
                    LuoProblem(
                        ERROR,
                        "luo-file-count",
                        f"session {name!r} counts {sser.count} files but has no file block",
                        ephys,
                    )
                )
            continue
        try:
            fblocks = read_block_chain(
                image,
                sser.files,
                lay,
                entry_size=lay.sizeof("luo_file_ser"),
                budget=ctx.budget,
                where=f"{ctx.where}: session {k} file blocks",
                max_blocks=KHO_MAX_BLOCKS,
            )
        except KhoFormatError as exc:
            sess.error = exc
            st.problems.append(problem_of(exc, "luo-file-blocks"))
            continue
        sess.blocks = _block_infos(fblocks, fcap, f"session {name!r} file", st.problems)
        got = sum(b.count for b in fblocks)
        if got != sser.count:
            st.problems.append(
                LuoProblem(
                    ERROR,
                    "luo-file-count",
                    f"session {name!r} counts {sser.count} files, its file blocks hold {got}",
                    ephys,
                )
            )
        for j, (fphys, fser) in enumerate(_entries(fblocks, "luo_file_ser", lay)):
            sess.files.append(_decode_file(st, fphys, fser, ctx.at(f"{ctx.where}:/session/{k}/file/{j}")))
        dup = [t for t, n in Counter(f.token for f in sess.files).items() if n > 1]
        for t in dup[:MAX_DETAILED]:
            st.problems.append(
                LuoProblem(ERROR, "luo-token-duplicate", f"session {name!r} has token {t:#x} more than once", ephys)
            )
    dup_names = [n for n, c in Counter(s.ser.name for s in st.sessions).items() if c > 1]
    for raw in dup_names[:MAX_DETAILED]:
        first = next(s for s in st.sessions if s.ser.name == raw)
        st.problems.append(
            LuoProblem(
                ERROR, "luo-session-duplicate", f"session name {first.name!r} is used more than once", first.entry_phys
            )
        )


def _decode_file(st: LuoState, fphys: int, fser: LuoFileSer, ctx: DecodeContext) -> LuoFile:
    compat, nul = c_string(fser.compatible)
    handler = FILE_HANDLERS.lookup(compat) if nul else FILE_HANDLERS.fallback
    assert handler is not None
    f = LuoFile(fphys, fser, compat, handler)
    if not nul:
        st.problems.append(
            LuoProblem(ERROR, "luo-name-unterminated", "file handler compatible has no NUL in its 48 bytes", fphys)
        )
    if not f.known:
        return f
    try:
        f.decoded = handler.decode(fser, ctx)
    except KhoFormatError as exc:
        f.error = exc
        st.problems.append(
            LuoProblem(ERROR, "luo-file-data", f"file {f.token:#x}: {exc}", exc.phys if exc.phys is not None else fphys)
        )
    return f


def _decode_flbs(st: LuoState, ctx: DecodeContext) -> None:
    lay, image = ctx.layout, ctx.image
    assert image is not None and ctx.budget is not None
    pa = st.ser.flbs_pa
    if pa % lay.page_size:
        st.problems.append(LuoProblem(ERROR, "luo-flb-page", "FLB header is not page aligned", pa))
        return
    try:
        ctx.budget.page(pa, "LUO FLB page")
        page = image.read(pa, lay.page_size, "LUO FLB page")
    except KhoFormatError as exc:
        st.problems.append(problem_of(exc, "luo-flb-page"))
        return
    head = lay.sizeof("luo_flb_header_ser")
    esize = lay.sizeof("luo_flb_ser")
    hdr: LuoFlbHeaderSer = lay.parse("luo_flb_header_ser", page[:head], phys=pa, error=ClientError)
    st.flb_header = hdr
    st.flb_capacity = cap = (lay.page_size - head) // esize
    if hdr.count > cap:
        st.problems.append(
            LuoProblem(ERROR, "luo-flb-count", f"FLB count {hdr.count} is above the page's capacity {cap}", pa)
        )
    if st.serialized and hdr.pgcnt != 1:
        st.problems.append(
            LuoProblem(WARNING, "luo-flb-pgcnt", f"FLB header pgcnt {hdr.pgcnt} (the kernel writes 1)", pa)
        )
    n = min(hdr.count, cap)
    ctx.budget.entries_add(n, "LUO FLBs", pa)
    for k in range(n):
        ephys = pa + head + k * esize
        fser: LuoFlbSer = lay.parse(
            "luo_flb_ser", page[head + k * esize : head + (k + 1) * esize], phys=ephys, error=ClientError
        )
        name, nul = c_string(fser.name)
        if not nul:
            st.problems.append(LuoProblem(ERROR, "luo-name-unterminated", f"FLB {k} name has no NUL", ephys))
        st.flbs.append(LuoFlb(ephys, fser, name))


# -- the client ---------------------------------------------------------------------------------


def _s(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class LuoClient(Client):
    name = NAME
    report_key = "luo"

    def decode(self, blob: bytes, ctx: DecodeContext) -> LuoState:
        return decode(blob, ctx)

    def to_json(self, result: LuoState) -> dict[str, Any]:
        return result.to_json()

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
            f"{d['compatible']}, live update {d['liveupdate_num']}, {_s(d['sessions'], 'session')}, "
            f"{_s(d['files'], 'file')}, {_s(d['flbs'], 'FLB')}"
        )

    def report_text(self, value: Any) -> list[str]:
        v = value
        L = [
            f"Live Update (LUO {v['compatible']} at {v['phys']:#x}): live update {v['liveupdate_num']}, "
            + (
                f"{_s(len(v['sessions']), 'session')}, {_s(len(v['flbs']), 'FLB')}"
                if v["serialized"]
                else "not serialized (sessions_pa = 0)"
            )
        ]
        for s in v["sessions"]:
            L.append(
                f"  session {s['name']!r}: {_s(len(s['files']), 'file')}" + (f" -- {s['error']}" if s["error"] else "")
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
                L += _table(rows, ("token", "handler", "size", "folios", "seals"), "    ")
        if v["flbs"]:
            L.append(f"  FLBs ({len(v['flbs'])}):")
            L += _table(
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


def _table(rows: Sequence[Sequence[str]], header: tuple[str, ...], indent: str) -> list[str]:
    from ..report import _table as table

    return table(list(rows), header, indent)


CLIENT = LuoClient()
