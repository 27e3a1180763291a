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
from pathlib import Path
from typing import Any, ClassVar

from ...abi.layout import (
    LUO_ABI_COMPAT_LEN,
    LUO_ABI_COMPATIBLE,
    Layout,
    LuoFileSer,
    LuoFlbHeaderSer,
    LuoFlbSer,
    LuoSer,
    LuoSessionSer,
)
from ...errors import ClientError, KhoFormatError, SpecError
from ...findings import ERROR, INFO, WARNING, Finding
from ...limits import Budget
from ...memory.alloc import PageAllocator
from ...memory.image import PhysImage
from ...memory.pageset import PageSet
from ..specfields import ANY, BOOL, INT, STR, ListOf, SpecField, SpecRow, SpecTable, Table, validate
from .base import BuildContext, BuiltBlob, CheckContext, Client, DecodeContext, Registry, Segment
from .blocks import KHO_MAX_BLOCKS, Block, read_block_chain
from .digest import Hasher, digest_with_holes, runs_digest
from .luo_boot import BOOT_RULE
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


@dataclass
class FileBuildContext:
    """What a file handler's ``build_file`` gets from the LUO builder."""

    layout: Layout
    alloc: PageAllocator
    #: the seed of generated data (the blob's, or the spec's)
    seed: int
    #: a label unique to the file (``<blob>/<session>/<token>``): generated data depends on it
    label: str
    #: spec path for error messages
    where: str

    @property
    def page_size(self) -> int:
        return self.layout.page_size


@dataclass
class FileBuilt:
    """A built file: its ``luo_file_ser.data`` handle, the segments to put in
    the image and the pages it preserves."""

    data: int
    segments: list[Segment]
    preserve: PageSet


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

    # building (a handler with ``spec_fields`` can be built from a LUO spec)

    #: the keys of a spec file of this handler, besides ``token`` and ``handler`` (None: not buildable)
    spec_fields: ClassVar[tuple[SpecField, ...] | None] = None

    def spec_params(self, values: dict[str, Any], where: str, base_dir: Path | None) -> Any:
        """The validated keys of :attr:`spec_fields` -> the handler's params."""
        return values

    def folio_orders(self, params: Any, page_size: int, where: str) -> list[int]:
        """Orders of the data folios the file holds before LUO preserves it
        (the builder allocates them first, largest first, and passes their
        addresses to :meth:`build_file` in this order)."""
        return []

    def folio_demand(self, params: Any, page_size: int) -> tuple[int, int]:
        """``(folios, bytes)`` :meth:`folio_orders` will list, in closed form
        (checked against the free regions before anything is listed)."""
        return 0, 0

    def build_file(self, params: Any, ctx: FileBuildContext, folio_phys: Sequence[int]) -> FileBuilt:
        raise SpecError(f"{ctx.where}: LUO file handler {self.compatible!r} cannot be built from a spec")

    def reencode(self, result: Any, lay: Layout) -> list[tuple[int, bytes]]:
        """The handler's own pages of a decoded file, encoded again at the
        addresses the decode recorded (not the file's data folios)."""
        return []


class UnknownFileHandler(FileHandler):
    """The fallback: a handler this library does not know (the file is
    shown with its compatible, token and data handle)."""


#: LUO file handlers keyed by ``compatible``; unknown ones fall back to :class:`UnknownFileHandler`
FILE_HANDLERS: Registry[FileHandler] = Registry("LUO file handlers", lambda h: h.compatible, UnknownFileHandler())


def content_digest(f: LuoFile, image: PhysImage, page_size: int, hasher: Hasher | None = None) -> str | None:
    """SHA-256 (or ``hasher``'s digest, e.g. :class:`~.digest.Fnv1a64`) of
    a file's contents as ``kho luo extract`` writes them (gaps are zeros,
    exactly ``content_size`` bytes), streamed piece by piece; None when the
    handler has no contents or the file did not decode, and (SHA-256) when
    the holes would cost more than :data:`~.digest.EXACT_HOLE_MAX` bytes of
    padding (FNV-1a takes holes in closed form: see :mod:`.digest`)."""
    import hashlib

    if f.decoded is None:
        return None
    size = f.handler.content_size(f.decoded)
    if size is None:
        return None
    h: Hasher = hashlib.sha256() if hasher is None else hasher
    return digest_with_holes(f.handler.contents(f.decoded, image, page_size), size, h)


def content_runs_digest(f: LuoFile, image: PhysImage, page_size: int) -> str | None:
    """:func:`~.digest.runs_digest` of a file's contents (what ``kho diff``
    compares when an exact SHA-256 would hash too many hole bytes)."""
    if f.decoded is None:
        return None
    size = f.handler.content_size(f.decoded)
    if size is None:
        return None
    return runs_digest(f.handler.contents(f.decoded, image, page_size), size)


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
        if st.serialized:
            _check_flb_references(st)
    return st


def _check_flb_references(st: LuoState) -> None:
    """An FLB's ``count`` is the outgoing refcount the sending kernel wrote
    (kernel/liveupdate/luo_flb.c): one reference per preserved file whose
    handler uses the FLB, plus any ``liveupdate_flb_get_outgoing()`` still
    held; only FLBs with a count above 0 are written.  The next kernel starts
    its incoming refcount there and drops one as each such file finishes,
    calling the FLB's ``.finish()`` at 0.  So:

    * 0 cannot come from a kernel, and the first drop underflows (error);
    * above the number of preserved files, the count never reaches 0 and
      ``.finish()`` never runs unless some driver drops references of its
      own (warning);
    * below the number of files that use it, the refcount underflows as they
      finish.  Which handlers use an FLB is not in the bytes, except for the
      test FLBs of ``CONFIG_LIVEUPDATE_TEST`` (``liveupdate-test-flb-v*``),
      which that option attaches to every file handler: for them a count
      below the number of files is a warning (a ``refcount_t`` WARNING in
      ``liveupdate_flb_put_incoming`` on a real 7.3 kernel with the option:
      count 3 for 68 memfds)."""
    nfiles = sum(1 for _ in st.files())
    for f in st.flbs:
        n = f.ser.count
        if n == 0:
            st.problems.append(
                LuoProblem(
                    ERROR,
                    "luo-flb-refs",
                    f"FLB {f.name!r} has count 0 (the kernel writes only held FLBs)",
                    f.entry_phys,
                )
            )
        elif n > nfiles:
            st.problems.append(
                LuoProblem(
                    WARNING,
                    "luo-flb-refs",
                    f"FLB {f.name!r} has count {n} but only {nfiles} files are preserved: the next kernel's count "
                    "never reaches 0 as they finish, so the FLB's finish() does not run",
                    f.entry_phys,
                )
            )
        elif n < nfiles and f.name.startswith(TEST_FLB_PREFIX):
            st.problems.append(
                LuoProblem(
                    WARNING,
                    "luo-flb-refs",
                    f"test FLB {f.name!r} has count {n} for {nfiles} files: CONFIG_LIVEUPDATE_TEST attaches it to "
                    "every file handler, so each file holds a reference and the next kernel's refcount underflows "
                    "as they finish",
                    f.entry_phys,
                )
            )


#: the FLBs lib/tests/liveupdate.c (CONFIG_LIVEUPDATE_TEST) registers with every file handler
TEST_FLB_PREFIX = "liveupdate-test-flb-v"


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


# -- building -----------------------------------------------------------------------------------

#: the ``handler`` of a spec file when none is given
DEFAULT_HANDLER = "memfd-v2"
#: ``LIVEUPDATE_SESSION_NAME_LENGTH`` (the name and its NUL); ``luo_file_ser.compatible`` and ``luo_flb_ser.name``
SESSION_NAME_LEN = 64
COMPAT_LEN = 48


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
    SpecField("name", STR, doc="FLB compatible name (< 48 bytes)", required=True),
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
            '`handler = "memfd-v2"`',
            "sessions and their files in order; a `memfd-v2` file: `size`, `pos`, `seals`, `folio_order` or "
            "`folios = [{index, order, flags}]`, `folio_flags`, contents `seed` (SHAKE-256, default) or `hex` / "
            "`file` (the first bytes) then `fill` (`seed` or `zero`); folios are placed at their order and "
            "generated folio by folio",
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
        _cstr(sv["name"], SESSION_NAME_LEN, "session name", f"{sw}.name")
        if sv["name"] in names:
            raise SpecError(f"{sw}.name: duplicate session name {sv['name']!r} (the kernel refuses it: -EEXIST)")
        names.add(sv["name"])
        files = []
        tokens: dict[int, int] = {}
        for j, fv in enumerate(sv["files"]):
            fw = f"{sw}.files[{j}]"
            if not isinstance(fv, dict):
                raise SpecError(f"{fw}: expected a table/mapping, got {type(fv).__name__}")
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
        _cstr(fv["name"], COMPAT_LEN, "FLB name", f"{fw}.name")
        for key in ("data", "count"):
            if not 0 <= fv[key] < 1 << 64:
                raise SpecError(f"{fw}.{key}: {fv[key]}", expected="a u64")
        flbs.append(LuoFlbSpec(fv["name"], fv["data"], fv["count"]))
    return LuoParams(values["liveupdate_num"], values["compatible"], values["serialized"], tuple(sessions), tuple(flbs))


def _chain(phys: Sequence[int], n: int, cap: int, serialized: bool) -> list[tuple[int, int, int]]:
    """``(phys, next, count)`` of the blocks holding ``n`` entries, each block
    filled to ``cap`` before the next (the kernel's ``kho_block_set_it_reserve_entry``)."""
    out = []
    for i, p in enumerate(phys):
        count = max(0, min(cap, n - i * cap)) if serialized else 0
        out.append((p, phys[i + 1] if i + 1 < len(phys) else 0, count))
    return out


def block_pages(
    entries: Sequence[bytes], blocks: Sequence[tuple[int, int, int]], lay: Layout
) -> list[tuple[int, bytes]]:
    """Serialization block pages: each ``(phys, next, count)`` block holds the
    next ``count`` entries; the rest of the page is zero."""
    out = []
    i = 0
    for phys, nxt, count in blocks:
        hdr = lay.build("kho_block_header_ser", dict(next=nxt, count=count), phys=phys, error=ClientError)
        body = hdr + b"".join(entries[i : i + count])
        if len(body) > lay.page_size:
            raise ClientError(f"block of {count} entries does not fit a page", phys=phys)
        i += count
        out.append((phys, body.ljust(lay.page_size, b"\0")))
    return out


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
                    dict(compatible=f.handler.encode().ljust(COMPAT_LEN, b"\0"), data=built.data, token=f.token),
                    error=SpecError,
                )
            )
        for phys, page in block_pages(fentries, _chain(fblocks, len(fentries), fcap, p.serialized), lay):
            segments.append((phys, page, f"LUO file block of session {s.name!r}"))
            preserve.add(phys, 0)
        files_pa = fblocks[0] if fblocks and p.serialized else 0
        sentries.append(
            lay.build(
                "luo_session_ser",
                dict(name=s.name.encode().ljust(SESSION_NAME_LEN, b"\0"), files=files_pa, count=len(s.files)),
                error=SpecError,
            )
        )
    for phys, page in block_pages(sentries, _chain(sblocks, len(sentries), scap, p.serialized), lay):
        segments.append((phys, page, "LUO session block"))
        preserve.add(phys, 0)
    flbs = [
        lay.build(
            "luo_flb_ser",
            dict(name=f.name.encode().ljust(COMPAT_LEN, b"\0"), data=f.data, count=f.count),
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
    out += block_pages(sentries, [(b.phys, b.next, b.count) for b in st.session_blocks], lay)
    for x in st.sessions:
        fentries = [
            lay.build("luo_file_ser", dict(compatible=f.ser.compatible, data=f.ser.data, token=f.ser.token))
            for f in x.files
        ]
        out += block_pages(fentries, [(b.phys, b.next, b.count) for b in x.blocks], lay)
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


# -- diff ---------------------------------------------------------------------------------------


def _file_view(f: LuoFile, image: PhysImage | None, page_size: int) -> dict[str, Any]:
    """What ``kho diff`` compares of a file (addresses are not compared)."""
    out: dict[str, Any] = {"compatible": f.compatible}
    if f.error is not None:
        out["error"] = str(f.error)
    if not f.known or f.decoded is None:
        out["data"] = f.data
        return out
    out.update(f.handler.index_json(f.decoded))
    view = getattr(f.handler, "folio_view", None)  # compact, in numpy: a file may list 60 M folios
    folios = None if view is not None or not f.handler.json_key else f.handler.to_json(f.decoded).get("folios")
    if view is not None:
        out["folios"] = view(f.decoded)
    elif folios is not None:
        out["folios"] = sorted((x["index"], -1 if x["order"] is None else x["order"]) for x in folios)
    if image is not None:
        out["sha256"] = content_digest(f, image, page_size)  # None: too many hole bytes to hash
        out["runs"] = content_runs_digest(f, image, page_size)
    return out


def _side(st: LuoState | None, error: str | None) -> dict[str, Any] | None:
    if st is None:
        return None if error is None else {"error": error}
    return {
        "compatible": st.compatible,
        "liveupdate_num": st.ser.liveupdate_num,
        "serialized": st.serialized,
        "sessions": len(st.sessions),
        "files": sum(len(s.files) for s in st.sessions),
        "flbs": len(st.flbs),
        "error": error,
    }


def diff(
    a: LuoState | None,
    b: LuoState | None,
    images: tuple[PhysImage | None, PhysImage | None],
    page_sizes: tuple[int, int],
    errors: tuple[str | None, str | None] = (None, None),
) -> dict[str, Any]:
    """LUO state of two handovers compared: sessions by name, files by token
    (handler, size, pos, seals, flags, folio indexes and orders, and the
    SHA-256 of the contents when both images are given), FLBs by name."""
    out: dict[str, Any] = {"identical": True, "a": _side(a, errors[0]), "b": _side(b, errors[1])}
    fields: list[str] = []
    sessions: list[dict[str, Any]] = []
    flbs: list[dict[str, Any]] = []
    if a is None or b is None:
        out.update(identical=a is None and b is None and errors[0] == errors[1], fields=["presence"])
        out.update(sessions=sessions, flbs=flbs)
        return out
    for key, va, vb in (
        ("compatible", a.compatible, b.compatible),
        ("liveupdate_num", a.ser.liveupdate_num, b.ser.liveupdate_num),
        ("serialized", a.serialized, b.serialized),
    ):
        if va != vb:
            fields.append(key)
    if errors[0] != errors[1]:
        fields.append("error")
    sa = {s.name: s for s in a.sessions}
    sb = {s.name: s for s in b.sessions}
    if [s.name for s in a.sessions if s.name in sb] != [s.name for s in b.sessions if s.name in sa]:
        fields.append("session_order")
    for name in list(sa) + [n for n in sb if n not in sa]:
        x, y = sa.get(name), sb.get(name)
        if x is None or y is None:
            sessions.append({"name": name, "change": "only-" + ("b" if x is None else "a")})
            continue
        fa = {f.token: f for f in x.files}
        fb = {f.token: f for f in y.files}
        files = []
        for t in list(fa) + [t for t in fb if t not in fa]:
            f, g = fa.get(t), fb.get(t)
            if f is None or g is None:
                files.append({"token": t, "change": "only-" + ("b" if f is None else "a")})
                continue
            va = _file_view(f, images[0], page_sizes[0])
            vb = _file_view(g, images[1], page_sizes[1])
            if va.get("sha256") is None or vb.get("sha256") is None:
                # no exact digest on one side (no image, or holes too big to hash): compare the runs digests
                va.pop("sha256", None)
                vb.pop("sha256", None)
            else:
                va.pop("runs", None)
                vb.pop("runs", None)
            changed = [k for k in dict.fromkeys(list(va) + list(vb)) if va.get(k) != vb.get(k)]
            if changed:
                files.append(
                    {
                        "token": t,
                        "change": "differs",
                        "fields": ["contents" if k in ("sha256", "runs") else k for k in changed],
                        "a": va,
                        "b": vb,
                    }
                )
        if files:
            sessions.append({"name": name, "change": "differs", "files": files})
    la = {f.name: f for f in a.flbs}
    lb = {f.name: f for f in b.flbs}
    for name in list(la) + [n for n in lb if n not in la]:
        p, q = la.get(name), lb.get(name)
        if p is None or q is None:
            flbs.append({"name": name, "change": "only-" + ("b" if p is None else "a")})
        elif (p.ser.data, p.ser.count) != (q.ser.data, q.ser.count):
            flbs.append(
                {
                    "name": name,
                    "change": "differs",
                    "a": {"data": p.ser.data, "count": p.ser.count},
                    "b": {"data": q.ser.data, "count": q.ser.count},
                }
            )
    out.update(identical=not (fields or sessions or flbs), fields=fields, sessions=sessions, flbs=flbs)
    return out


def diff_text(d: dict[str, Any]) -> list[str]:
    """Lines of the text diff for a ``luo`` key that is not identical."""
    if d["identical"]:
        return []
    L = []
    if "presence" in d["fields"]:
        return [f"  LUO: only in {'A' if d['b'] is None else 'B'}"]
    for k in d["fields"]:
        va, vb = (d[s].get(k) if k != "session_order" else None for s in ("a", "b"))
        L.append(f"  LUO: {k} differs" + (f" (A {va!r}, B {vb!r})" if k != "session_order" else ""))
    for s in d["sessions"]:
        if s["change"] != "differs":
            L.append(f"  LUO session {s['name']!r}: only in {s['change'][-1].upper()}")
            continue
        for f in s["files"]:
            what = f"  LUO session {s['name']!r} file {f['token']:#x}"
            if f["change"] != "differs":
                L.append(f"{what}: only in {f['change'][-1].upper()}")
                continue
            parts = []
            for k in f["fields"]:
                if k in ("contents", "folios", "error"):
                    parts.append(k)
                else:
                    parts.append(f"{k} {f['a'].get(k)!r} -> {f['b'].get(k)!r}")
            L.append(f"{what}: {', '.join(parts)} differ")
    for x in d["flbs"]:
        where = f"only in {x['change'][-1].upper()}" if x["change"] != "differs" else "data/count differ"
        L.append(f"  LUO FLB {x['name']!r}: {where}")
    return L


# -- the client ---------------------------------------------------------------------------------


def _s(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class LuoClient(Client):
    name = NAME
    report_key = "luo"
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
    from ...ops.report import _table as table

    return table(list(rows), header, indent)


CLIENT = LuoClient()
