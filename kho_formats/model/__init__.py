"""The handover model: the FDT (``fdt``), the parsed state (``state``), memory maps (``memmap/``),
clients (``clients/``), specs (``spec/``, ``specfields``) and fixtures (``fixture``).  Imports only the
base modules, :mod:`kho_formats.abi` and :mod:`kho_formats.memory`."""
