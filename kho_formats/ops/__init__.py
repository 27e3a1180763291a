"""Operations over handovers: capture and locate, check, migrate, extract, live capture, reports.
Imports the lower layers (base, :mod:`kho_formats.abi`, :mod:`kho_formats.memory`, :mod:`kho_formats.model`)."""
