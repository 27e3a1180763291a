"""kho-formats: read, build, check and convert Linux Kexec HandOver data.

The package is layered; a module imports only from its own layer or a lower one:

- base (this folder): ``errors``, ``_types``, ``_version``, ``limits``, ``findings``, ``safeio``, ``outdir``
- ``abi/``: the kernel ABI (versions, struct layouts)
- ``memory/``: physical-memory images and page sets
- ``model/``: the handover model (FDT, state, memory maps, clients, specs, fixtures)
- ``ops/``: operations (capture, locate, check, migrate, extract, report, live)
- ``cli``, ``boot/``: the command line and the boot harness
"""

from ._version import __version__

__all__ = ["__version__"]
