"""kho-formats: read, build, check and convert Linux Kexec HandOver data.

The library face is a handful of names (:mod:`kho_formats.api`)::

    >>> import kho_formats
    >>> h = kho_formats.open("fixtures/v4-4k")
    >>> h.version, h.page_size, h.byteorder
    ('kho-v4', 4096, 'little')

``open`` reads any input the ``kho`` command takes and returns a
:class:`~kho_formats.api.Handover` (``open_live``: the running system's, as
root); ``build`` makes one from a spec,
``load_spec`` reads a spec.  The names are imported on first use (PEP 562),
so ``import kho_formats.abi.layout`` does not import the whole package.

The package is layered; a module imports only from its own layer or a lower one:

- base (this folder): ``errors``, ``_types``, ``_version``, ``limits``, ``findings``, ``safeio``, ``outdir``,
  ``text`` (text helpers), ``keyed`` (the keyed diff walk), ``progress`` (progress bars)
- ``abi/``: the kernel ABI (versions, one module per header, ``struct`` declarations aggregated by ``Layout``)
- ``memory/``: physical-memory images and page sets
- ``model/``: the handover model (FDT, state, memory maps, clients, specs, fixtures)
- ``ops/``: operations (capture, locate, check, migrate, extract, report, live, target kernels, the JSON
  documents)
- ``api``: the library face over them; ``cli``, ``boot/``: the command line and the boot harness
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from .api import Diff, Findings, Handover, Luo, build, load_spec, open, open_live
    from .errors import KhoFormatError

#: the public names, and the module each one lives in (imported when first asked for)
_FACE = {
    "open": "api",
    "open_live": "api",
    "build": "api",
    "load_spec": "api",
    "Handover": "api",
    "Luo": "api",
    "Findings": "api",
    "Diff": "api",
    "KhoFormatError": "errors",
}

__all__ = [
    "open",
    "open_live",
    "build",
    "load_spec",
    "Handover",
    "Luo",
    "Findings",
    "Diff",
    "KhoFormatError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    mod = _FACE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
