"""``include/linux/kho/abi/kexec_metadata.h``: ``struct kho_kexec_metadata`` (the ``kexec-metadata``
sub-blob)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import construct as cs

from .struct import FixedString, Typed, declare

if TYPE_CHECKING:  # pragma: no cover
    from .layout import Layout


@dataclass(frozen=True)
class KexecMetadata:
    version: int
    previous_release: str
    kexec_count: int


#: ``KHO_KEXEC_METADATA_VERSION``
KEXEC_METADATA_VERSION = 1
#: ``KHO_METADATA_NODE_NAME``: the sub-node name
KHO_METADATA_NODE_NAME = "kexec-metadata"


@declare("kexec_metadata")
def _kexec_metadata(lay: Layout) -> cs.Construct:
    """``__packed { u32 version; char previous_release[65]; u32 kexec_count; }``."""
    return Typed(
        cs.Struct(
            "version" / lay.u32 * "KEXEC_METADATA_VERSION (1)",
            "previous_release" / FixedString(65) * "char previous_release[65]: uname -r of the previous kernel",
            "kexec_count" / lay.u32 * "number of kexecs so far",
        ),
        KexecMetadata,
    )
