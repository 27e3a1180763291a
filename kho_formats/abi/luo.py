"""``include/linux/kho/abi/luo.h``: the Live Update Orchestrator's serialized state: ``struct luo_ser``
(the ``LUO`` sub-blob), the session and file entries of its blocks, and the FLB page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import construct as cs

from .struct import Typed, declare

if TYPE_CHECKING:  # pragma: no cover
    from .layout import Layout


@dataclass(frozen=True)
class LuoSer:
    """``struct luo_ser`` (the ``LUO`` sub-blob); ``compatible`` raw bytes."""

    compatible: bytes
    liveupdate_num: int
    sessions_pa: int
    flbs_pa: int


@dataclass(frozen=True)
class LuoSessionSer:
    """``struct luo_session_ser``: ``name`` raw bytes, ``file_set_ser`` flattened."""

    name: bytes
    files: int
    count: int


@dataclass(frozen=True)
class LuoFileSer:
    compatible: bytes
    data: int
    token: int


@dataclass(frozen=True)
class LuoFlbHeaderSer:
    pgcnt: int
    count: int


@dataclass(frozen=True)
class LuoFlbSer:
    name: bytes
    data: int
    count: int


#: ``LUO_KHO_ENTRY_NAME``: the KHO sub-blob holding ``struct luo_ser``
LUO_KHO_ENTRY_NAME = "LUO"
#: ``LUO_ABI_COMPATIBLE`` of Linux 7.3 and ``ALIGN(sizeof(it), 8)``, the size of ``luo_ser.compatible``
LUO_ABI_COMPATIBLE = "luo-v5"
LUO_ABI_COMPAT_LEN = 8
#: ``LIVEUPDATE_SESSION_NAME_LENGTH``, ``LIVEUPDATE_HNDL_COMPAT_LENGTH``, ``LIVEUPDATE_FLB_COMPAT_LENGTH``
LIVEUPDATE_SESSION_NAME_LENGTH = 64
LIVEUPDATE_HNDL_COMPAT_LENGTH = 48
LIVEUPDATE_FLB_COMPAT_LENGTH = 48


#: what every ``LIVEUPDATE_TEST_FLB_COMPATIBLE(i)`` starts with
LIVEUPDATE_TEST_FLB_PREFIX = "liveupdate-test-flb-v"


def liveupdate_test_flb_compatible(i: int) -> str:
    """``LIVEUPDATE_TEST_FLB_COMPATIBLE(i)``: the FLBs ``lib/tests/liveupdate.c`` registers."""
    return f"{LIVEUPDATE_TEST_FLB_PREFIX}{i}"


@declare("luo_ser")
def _luo_ser(lay: Layout) -> cs.Construct:
    """``__packed struct luo_ser`` (include/linux/kho/abi/luo.h): the raw ``LUO`` sub-blob."""
    return Typed(
        cs.Struct(
            "compatible" / cs.Bytes(LUO_ABI_COMPAT_LEN) * 'char compatible[LUO_ABI_COMPAT_LEN]: "luo-v5", NUL padded',
            "liveupdate_num" / lay.u64 * "number of live updates so far (this one included)",
            "sessions_pa" / lay.u64 * "phys of the first session block (kho_block_header_ser); 0 until serialized",
            "flbs_pa" / lay.u64 * "phys of the FLB page (luo_flb_header_ser)",
        ),
        LuoSer,
    )


@declare("luo_session_ser")
def _luo_session_ser(lay: Layout) -> cs.Construct:
    """``__packed struct luo_session_ser``: one entry of a session block."""
    return Typed(
        cs.Struct(
            "name" / cs.Bytes(LIVEUPDATE_SESSION_NAME_LENGTH) * "char name[LIVEUPDATE_SESSION_NAME_LENGTH]",
            "files" / lay.u64 * "file_set_ser.files: phys of the session's first file block, 0 = none",
            "count" / lay.u64 * "file_set_ser.count: files in the session at serialization",
        ),
        LuoSessionSer,
    )


@declare("luo_file_ser")
def _luo_file_ser(lay: Layout) -> cs.Construct:
    """``__packed struct luo_file_ser``: one entry of a file block."""
    return Typed(
        cs.Struct(
            "compatible" / cs.Bytes(LIVEUPDATE_HNDL_COMPAT_LENGTH) * "char compatible[48]: the file handler",
            "data" / lay.u64 * "the handler's opaque handle (memfd-v2: phys of struct memfd_luo_ser)",
            "token" / lay.u64 * "the token userspace gave the file",
        ),
        LuoFileSer,
    )


@declare("luo_flb_header_ser")
def _luo_flb_header_ser(lay: Layout) -> cs.Construct:
    """``__packed struct luo_flb_header_ser`` at ``luo_ser.flbs_pa``; entries follow."""
    return Typed(
        cs.Struct(
            "pgcnt" / lay.u64 * "pages of the FLB region, this header included (LUO_FLB_PGCNT = 1)",
            "count" / lay.u64 * "luo_flb_ser entries that follow",
        ),
        LuoFlbHeaderSer,
    )


@declare("luo_flb_ser")
def _luo_flb_ser(lay: Layout) -> cs.Construct:
    """``__packed struct luo_flb_ser``: one File-Lifecycle-Bound global object."""
    return Typed(
        cs.Struct(
            "name" / cs.Bytes(LIVEUPDATE_FLB_COMPAT_LENGTH) * "char name[48]: the FLB's compatible string",
            "data" / lay.u64 * "the opaque handle its .preserve() returned",
            "count" / lay.u64 * "preserved files depending on it",
        ),
        LuoFlbSer,
    )
