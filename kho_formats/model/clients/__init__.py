"""KHO clients: one module per client, found through :data:`registry`.

:func:`decode_clients` decodes every sub-blob with the client registered
under its sub-node name (``kexec-metadata``, ``memblock``, ``kho_test``) and
passes anything else to the registry's fallback (:class:`~.raw.RawBlob`).
``LUO`` (:mod:`.luo`) holds a second registry, of file handlers keyed by
compatible (``memfd-v2``: :mod:`.memfd`).  A client that fails to decode is reported with its error, not raised, so
one bad client does not hide the rest of a capture.

Adding a client: a module with a :class:`~.base.Client` subclass (decode,
JSON, text, findings, spec fields, build) and ``registry.register(...)``
(built-in ones are registered below).  See :mod:`.base` for the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import KhoFormatError
from ...limits import Budget
from ...memory.image import PhysImage
from . import kexec_metadata, kho_test, luo, memblock, memfd, raw
from .base import (
    BootLog,
    BootRule,
    BuildContext,
    BuiltBlob,
    CheckContext,
    Client,
    ClientRegistry,
    DecodeContext,
    Registry,
)
from .raw import RawBlob
from .vmalloc import VmallocArea, read_vmalloc

if TYPE_CHECKING:  # pragma: no cover
    from ..state import KhoState

#: the clients, keyed by sub-node name; unknown names decode as raw bytes
registry = ClientRegistry(fallback=raw.CLIENT)
for _c in (kho_test.CLIENT, memblock.CLIENT, kexec_metadata.CLIENT, luo.CLIENT):
    registry.register(_c)
del _c
#: LUO's file handlers, keyed by compatible (unknown ones are shown, not decoded)
luo.FILE_HANDLERS.register(memfd.HANDLER)

#: the built-in client names (the registry may hold more)
KNOWN = (kexec_metadata.NAME, memblock.NAME, kho_test.NAME, luo.NAME)


@dataclass
class ClientReport:
    name: str
    kind: str  # the client's kind ("kexec-metadata", "memblock", "kho_test", ...) | "unknown" | "missing"
    #: the client's typed result (None when the blob is missing or did not decode)
    decoded: Any = None
    error: KhoFormatError | None = None
    vmalloc: list[VmallocArea] = field(default_factory=list)
    #: the client that decoded it (the registry's fallback for unknown blobs)
    client: Client | None = None

    def decoded_json(self) -> Any:
        if self.decoded is None or self.client is None:
            return None
        return self.client.to_json(self.decoded)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "decoded": self.decoded_json(),
            "error": str(self.error) if self.error else None,
            "vmalloc": [v.to_json() for v in self.vmalloc],
        }


def decode_clients(
    state: KhoState,
    image: PhysImage | None = None,
    *,
    budget: Budget | None = None,
    clients: ClientRegistry | None = None,
) -> dict[str, ClientReport]:
    reg = registry if clients is None else clients
    out: dict[str, ClientReport] = {}
    for sb in state.subblobs:
        client = reg.get(sb.name)
        rep = ClientReport(sb.name, client.kind if client is not None else "unknown", client=client or reg.fallback)
        out[sb.name] = rep
        if sb.data is None:
            if client is None:
                rep.kind = "missing"
            continue
        if rep.client is None:
            continue
        ctx = DecodeContext(state.layout, image, budget, where=sb.name, registry=reg, state=state)
        try:
            rep.decoded = rep.client.decode(sb.data, ctx)
            rep.vmalloc = list(rep.client.areas(rep.decoded))
        except KhoFormatError as exc:
            rep.error = exc
            rep.decoded = None
    return out


__all__ = [
    "decode_clients",
    "ClientReport",
    "registry",
    "Client",
    "ClientRegistry",
    "Registry",
    "DecodeContext",
    "CheckContext",
    "BuildContext",
    "BuiltBlob",
    "BootLog",
    "BootRule",
    "RawBlob",
    "VmallocArea",
    "read_vmalloc",
    "KNOWN",
]
