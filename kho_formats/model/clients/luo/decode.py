"""Decoding the ``LUO`` sub-blob: ``luo_ser``, the session and file block chains, the FLB page."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from ....abi.layout import Layout
from ....abi.luo import (
    LIVEUPDATE_HNDL_COMPAT_LENGTH,
    LIVEUPDATE_SESSION_NAME_LENGTH,
    LIVEUPDATE_TEST_FLB_PREFIX,
    LUO_ABI_COMPATIBLE,
    LuoFileSer,
    LuoFlbHeaderSer,
    LuoFlbSer,
    LuoSer,
)
from ....errors import ClientError, KhoFormatError
from ....findings import ERROR, WARNING
from ....limits import Budget
from ....memory.distinct import distinct
from ..base import DecodeContext
from ..blocks import KHO_MAX_BLOCKS, Block, read_block_chain
from .handlers import FILE_HANDLERS
from .model import (
    MAX_DETAILED,
    NAME,
    BlockInfo,
    LuoFile,
    LuoFlb,
    LuoProblem,
    LuoSession,
    LuoState,
    c_string,
    problem_of,
)


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
            "which writes the sessions, files and FLBs (their blocks exist but are still zero), or no session "
            "was preserved (luo_session_serialize() leaves sessions_pa 0 then)"
        )
    if ctx.image is None:
        st.read = False
        st.notes.append("no memory image: sessions, files and FLBs were not read")
        return st
    budget = ctx.budget or Budget()
    ctx = DecodeContext(lay, ctx.image, budget, where, ctx.registry, ctx.state)
    if st.serialized:
        _decode_sessions(st, ctx)
        _check_sharing(st)
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


def _check_sharing(st: LuoState) -> None:
    """Structures that two owners claim (Linux 7.3's restore code says what happens):

    * one file-block chain in two sessions: ``kho_block_set_restore`` only
      maps the blocks (nothing marks them taken), so both sessions
      deserialize the same files, and ``kho_block_set_destroy`` frees each
      block once per session (a double free);
    * one ``memfd_luo_ser`` (a file's ``data``) in two files:
      ``memfd_luo_retrieve`` frees it (``kho_restore_free``) after the first
      file, so the second reads freed memory and frees it again;
    * one folio in two memfds: ``kho_restore_folio`` clears the page's KHO
      magic on the first restore, so the second memfd's
      ``memfd_luo_retrieve_folios`` fails ('Unable to restore folio', -EIO)
      and that file is not restored."""
    import numpy as np

    owner: dict[int, str] = {}
    for s in st.sessions:
        for b in s.blocks:
            if b.phys in owner and owner[b.phys] != s.name:
                st.problems.append(
                    LuoProblem(
                        ERROR,
                        "luo-file-blocks-shared",
                        f"file block is in the chains of sessions {owner[b.phys]!r} and {s.name!r}: the next kernel "
                        "deserializes its files for both and kho_block_set_destroy frees the block twice",
                        b.phys,
                    )
                )
            owner.setdefault(b.phys, s.name)
    data: dict[int, str] = {}
    folio_owner: list[tuple[np.ndarray, str]] = []
    for s in st.sessions:
        for f in s.files:
            if f.decoded is None or not f.data:
                continue
            who = f"session {s.name!r} file {f.token:#x}"
            if f.data in data:
                st.problems.append(
                    LuoProblem(
                        ERROR,
                        "luo-file-data-shared",
                        f"{who} has the data (memfd_luo_ser) of {data[f.data]}: the next kernel's memfd_luo_retrieve "
                        "frees it after the first, then reads the freed memory and frees it again for the second",
                        f.data,
                    )
                )
                continue
            data[f.data] = who
            phys = getattr(f.decoded, "phys", None)
            if isinstance(phys, np.ndarray) and phys.size:
                folio_owner.append((distinct(phys[phys != 0]), who))
    if len(folio_owner) > 1:
        allp = np.concatenate([p for p, _ in folio_owner])
        who_of = np.repeat(np.arange(len(folio_owner)), [p.size for p, _ in folio_owner])
        order = np.argsort(allp, kind="stable")
        srt = allp[order]
        again = np.flatnonzero(srt[1:] == srt[:-1]) + 1
        for k in again[:MAX_DETAILED].tolist():
            a, b = folio_owner[int(who_of[order[k - 1]])][1], folio_owner[int(who_of[order[k]])][1]
            st.problems.append(
                LuoProblem(
                    ERROR,
                    "memfd-folio-shared",
                    f"folio {int(srt[k]):#x} is listed by {a} and by {b}: the next kernel restores it for the first; "
                    "kho_restore_folio refuses the second ('Unable to restore folio'), memfd_luo_retrieve_folios "
                    "fails with -EIO and that file is not restored",
                    int(srt[k]),
                )
            )
        if again.size > MAX_DETAILED:
            st.problems.append(
                LuoProblem(
                    ERROR,
                    "memfd-folio-shared",
                    f"... and {again.size - MAX_DETAILED} more folios listed by two memfds",
                    int(srt[again[MAX_DETAILED]]),
                )
            )


#: the FLBs lib/tests/liveupdate.c (CONFIG_LIVEUPDATE_TEST) registers with every file handler
TEST_FLB_PREFIX = LIVEUPDATE_TEST_FLB_PREFIX


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
                LuoProblem(
                    ERROR,
                    "luo-name-unterminated",
                    f"session {k} name has no NUL in its {LIVEUPDATE_SESSION_NAME_LENGTH} bytes",
                    ephys,
                )
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
            LuoProblem(
                ERROR,
                "luo-name-unterminated",
                f"file handler compatible has no NUL in its {LIVEUPDATE_HNDL_COMPAT_LENGTH} bytes",
                fphys,
            )
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
