"""Decoders for the sub-blobs of known KHO clients.

:func:`decode_clients` decodes every sub-blob whose name it knows
(``kexec-metadata``, ``memblock``, ``kho_test``) and passes anything else
through as bytes.  A client that fails to decode is reported with its error,
not raised, so one bad client does not hide the rest of a capture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import KhoFormatError
from ..image import PhysImage
from ..limits import Budget
from . import kexec_metadata, kho_test, memblock
from .vmalloc import VmallocArea, read_vmalloc

if TYPE_CHECKING:  # pragma: no cover
    from ..state import KhoState

KNOWN = (kexec_metadata.NAME, memblock.NAME, kho_test.NAME)


@dataclass
class ClientReport:
    name: str
    kind: str  # "kexec-metadata" | "memblock" | "kho_test" | "unknown" | "missing"
    decoded: Any = None
    error: KhoFormatError | None = None
    vmalloc: list[VmallocArea] = field(default_factory=list)

    def to_json(self) -> dict:
        dec = self.decoded
        if hasattr(dec, "to_json"):
            dec = dec.to_json()
        return {
            "name": self.name,
            "kind": self.kind,
            "decoded": dec,
            "error": str(self.error) if self.error else None,
            "vmalloc": [v.to_json() for v in self.vmalloc],
        }


def decode_clients(
    state: KhoState, image: PhysImage | None = None, *, budget: Budget | None = None
) -> dict[str, ClientReport]:
    lay = state.layout
    out: dict[str, ClientReport] = {}
    for sb in state.subblobs:
        kind = sb.name if sb.name in KNOWN else "unknown"
        rep = ClientReport(sb.name, kind)
        out[sb.name] = rep
        if sb.data is None:
            rep.kind = "missing" if kind == "unknown" else kind
            continue
        try:
            if kind == kexec_metadata.NAME:
                rep.decoded = kexec_metadata.to_json(kexec_metadata.decode(sb.data, lay, where=sb.name))
            elif kind == memblock.NAME:
                rep.decoded = memblock.to_json(memblock.decode(sb.data, state.byteorder, where=sb.name))
            elif kind == kho_test.NAME:
                kt = kho_test.decode(sb.data, lay, image, budget=budget, where=sb.name)
                rep.decoded = kt
                if kt.area is not None:
                    rep.vmalloc.append(kt.area)
            else:
                rep.decoded = {"size": len(sb.data), "head": sb.data[:16].hex()}
        except KhoFormatError as exc:
            rep.error = exc
    return out


__all__ = ["decode_clients", "ClientReport", "VmallocArea", "read_vmalloc", "KNOWN"]
