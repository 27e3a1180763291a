"""Physical-memory images (``image``, ``kdump``, ``kcore``) and page sets (``pageset``, ``bits``, ``alloc``,
``chain``).  Imports only the base modules and :mod:`kho_formats.abi`."""
