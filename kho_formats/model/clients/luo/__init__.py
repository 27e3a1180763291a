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

The package, one module per job: :mod:`.handlers` (the file-handler protocol and registry),
:mod:`.model` (the decoded state), :mod:`.decode`, :mod:`.build` (spec keys, building,
re-encoding), :mod:`.diff`, :mod:`.boot` (what ``kho boot`` checks) and :mod:`.client` (the
registry entry).  The names are re-exported here.
"""

from __future__ import annotations

from . import boot
from .build import (
    DEFAULT_HANDLER,
    FILE_FIELDS,
    FLB_FIELDS,
    SESSION_FIELDS,
    SPEC,
    LuoFileSpec,
    LuoFlbSpec,
    LuoParams,
    LuoSessionSpec,
    build_luo,
    luo_params,
    reencode,
)
from .client import (
    CLIENT,
    LuoClient,
)
from .decode import (
    TEST_FLB_PREFIX,
    decode,
)
from .diff import (
    diff,
    diff_text,
)
from .handlers import (
    FILE_HANDLERS,
    FileBuildContext,
    FileBuilt,
    FileHandler,
    UnknownFileHandler,
)
from .model import (
    MAX_DETAILED,
    NAME,
    BlockInfo,
    Hasher,
    LuoFile,
    LuoFlb,
    LuoProblem,
    LuoSession,
    LuoState,
    c_string,
    content_digest,
    content_runs_digest,
    problem_of,
)

__all__ = [
    "boot",
    "DEFAULT_HANDLER",
    "LuoFileSpec",
    "LuoSessionSpec",
    "LuoFlbSpec",
    "LuoParams",
    "FILE_FIELDS",
    "SESSION_FIELDS",
    "FLB_FIELDS",
    "SPEC",
    "luo_params",
    "build_luo",
    "reencode",
    "LuoClient",
    "CLIENT",
    "decode",
    "TEST_FLB_PREFIX",
    "diff",
    "diff_text",
    "FileBuildContext",
    "FileBuilt",
    "FileHandler",
    "UnknownFileHandler",
    "FILE_HANDLERS",
    "NAME",
    "MAX_DETAILED",
    "c_string",
    "LuoProblem",
    "problem_of",
    "Hasher",
    "content_digest",
    "content_runs_digest",
    "BlockInfo",
    "LuoFile",
    "LuoSession",
    "LuoFlb",
    "LuoState",
]
