"""The decoded LUO state (:class:`LuoState`, its sessions, files and FLBs), the problems a decode
records (:class:`LuoProblem`) and the content digest of a file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ....abi.luo import LUO_KHO_ENTRY_NAME, LuoFileSer, LuoFlbHeaderSer, LuoFlbSer, LuoSer, LuoSessionSer
from ....errors import KhoFormatError
from ....findings import ERROR
from ....memory.image import PhysImage
from ..digest import Hasher, digest_with_holes, runs_digest
from .handlers import FILE_HANDLERS, FileHandler, UnknownFileHandler

NAME = LUO_KHO_ENTRY_NAME
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


def content_digest(f: LuoFile, image: PhysImage, page_size: int, hasher: Hasher | None = None) -> str | None:
    """SHA-256 (or ``hasher``'s digest, e.g. :class:`~..digest.Fnv1a64`) of
    a file's contents as ``kho luo extract`` writes them (gaps are zeros,
    exactly ``content_size`` bytes), streamed piece by piece; None when the
    handler has no contents or the file did not decode, and (SHA-256) when
    the holes would cost more than :data:`~..digest.EXACT_HOLE_MAX` bytes of
    padding (FNV-1a takes holes in closed form: see :mod:`..digest`)."""
    import hashlib

    if f.decoded is None:
        return None
    size = f.handler.content_size(f.decoded)
    if size is None:
        return None
    h: Hasher = hashlib.sha256() if hasher is None else hasher
    return digest_with_holes(f.handler.contents(f.decoded, image, page_size), size, h)


def content_runs_digest(f: LuoFile, image: PhysImage, page_size: int) -> str | None:
    """:func:`~..digest.runs_digest` of a file's contents (what ``kho diff``
    compares when an exact SHA-256 would hash too many hole bytes)."""
    if f.decoded is None:
        return None
    size = f.handler.content_size(f.decoded)
    if size is None:
        return None
    return runs_digest(f.handler.contents(f.decoded, image, page_size), size)


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
